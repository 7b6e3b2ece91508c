"""pxpo studio restarted in the middle of a round: in-process (a round committed, not trained) and a
real crash (SIGKILL while a round trains). The next start trains the round again."""

import json
import time

import pytest
import torch
from fastapi.testclient import TestClient

from pxpo.apps.studio import StudioConfig
from pxpo.apps.studio.app import create_app
from pxpo.apps.studio.store import Store
from studio_helpers import PROMPT, TINY, half_marks, new_session, wait_done


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_torch_threads")]


def test_restart_in_the_middle_of_a_round_resumes_it(tmp_path):
    root = tmp_path / "sessions"
    cfg = StudioConfig(dir=str(root), **TINY)
    with TestClient(create_app(cfg)) as c:
        sid = new_session(c)
        c.get(f"/api/sessions/{sid}/rounds/0/pictures/3.png")
        assert c.post(f"/api/sessions/{sid}/rounds", json={"parent": 0, "marks": [half_marks()]}).status_code == 202
        wait_done(c, 1)
    # the studio stops after committing round 2 and before training it (kill -9 mid-round), leaving
    # a half-written weights file behind
    store = Store(root / sid)
    rid = store.submit(1, {3: torch.full((64, 64), -1.0)}, store.meta()["settings"])
    (root / sid / "weights" / f"round_{rid:03d}.safetensors.tmp-999").write_bytes(b"half")
    assert store.round(rid)["status"] == "pending"
    with TestClient(create_app(cfg)) as c:  # a restart: the history is there, round 2 trains again
        p = wait_done(c, rid)
        assert p["state"] == "done", p
        rounds = c.get(f"/api/sessions/{sid}").json()["rounds"]
        assert [(r["id"], r["parent"], r["status"]) for r in rounds] == [
            (0, None, "done"),
            (1, 0, "done"),
            (2, 1, "done"),
        ]
        assert rounds[2]["model_version"].startswith("shapes-tiny@round1:")
        assert c.get(f"/api/sessions/{sid}/rounds/2/pictures/3.png").status_code == 200


def test_kill_9_in_the_middle_of_a_round_then_restart(tmp_path):
    """A real crash: `pxpo studio` killed (SIGKILL) while a round trains; the next start trains it."""
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    def start():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pxpo.cli",
                "studio",
                f"--dir={tmp_path}",
                f"--port={port}",
                "--threads=1",
                "--num_steps=3",
                "--epochs=20",
                "--variations=2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        proc.stdout.readline()
        return proc, f"http://127.0.0.1:{port}"

    def call(url, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        for _ in range(300):
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return json.loads(r.read()) if r.headers["content-type"] == "application/json" else r.read()
            except ConnectionError:
                time.sleep(0.1)
            except urllib.error.URLError as e:
                if not isinstance(e.reason, ConnectionError):
                    raise
                time.sleep(0.1)
        raise AssertionError(f"no answer from {url}")

    proc, url = start()
    try:
        sid = call(f"{url}/api/sessions", {"prompt": PROMPT})["id"]
        call(f"{url}/api/sessions/{sid}/rounds/0/pictures/3.png")
        assert call(f"{url}/api/sessions/{sid}/rounds", {"parent": 0, "marks": [half_marks()]}) == {"round": 1}
        while call(f"{url}/api/progress").get("epoch", 0) < 1:  # killed in the middle of its 20 epochs
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert Store(tmp_path / sid).round(1)["status"] == "pending"
    proc, url = start()  # the next start trains round 1 again, from its committed marks and settings
    try:
        s = call(f"{url}/api/sessions/{sid}")
        assert [r["status"] for r in s["rounds"]] == ["done", "pending"]
        t0 = time.time()
        while call(f"{url}/api/progress")["state"] != "done":
            assert time.time() - t0 < 300, "the resumed round did not finish"
            time.sleep(0.2)
        p = call(f"{url}/api/progress")
        assert (p["round"], p["epochs"], len(p["rewards"])) == (1, 20, 20), p
        s = call(f"{url}/api/sessions/{sid}")
        assert [r["status"] for r in s["rounds"]] == ["done", "done"] and s["rounds"][1]["marked_seeds"] == [3]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
