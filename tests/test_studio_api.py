"""pxpo studio's JSON API (FastAPI TestClient), tiny settings: every endpoint, bad inputs, busy,
weights and export, branching, and sessions shared with pxpo refine (restarts: test_studio_restart.py)."""

import io
import json
import time
import zipfile

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from pxpo.cli import main
from pxpo.apps.studio import StudioConfig
from pxpo.apps.studio.app import MAX_BODY, create_app
from pxpo.apps.studio.store import Store
from studio_helpers import PROMPT, TINY, half_marks, new_session, wait_done


pytestmark = pytest.mark.usefixtures("keep_torch_threads")


@pytest.fixture
def studio(tmp_path):
    with TestClient(create_app(StudioConfig(dir=str(tmp_path / "sessions"), **TINY))) as c:
        yield c, tmp_path / "sessions"


def test_page_assets_info_and_prompts(studio):
    c, _ = studio
    page = c.get("/")
    assert page.status_code == 200 and "studio.js" in page.text
    for name in ("studio.js", "studio.css"):
        asset = c.get(f"/static/{name}")
        assert asset.status_code == 200 and "http://" not in asset.text and "https://" not in asset.text  # no CDN
    assert "image-rendering: pixelated" in c.get("/static/studio.css").text
    assert c.get("/static/../app.py").status_code == 404
    info = c.get("/api/info").json()
    assert info["height"] == info["width"] == 64 and "circle" in info["vocabulary"]
    r = c.post("/api/sessions", json={"prompt": "a red dragon on a blue background"})
    assert r.status_code == 400 and "'dragon'" in r.json()["detail"] and "circle" in r.json()["detail"]
    assert c.post("/api/sessions", json={"prompt": "x" * 400}).status_code == 422
    sid = new_session(c, "")  # the empty caption is allowed (open captions)
    sid2 = new_session(c, "  a red   square on a blue background ")
    listed = {s["id"]: s for s in c.get("/api/sessions").json()}
    assert listed[sid]["prompt"] == "" and listed[sid2]["prompt"] == PROMPT and listed[sid2]["rounds"] == 0
    assert c.get("/api/sessions/nope").status_code == 404
    assert c.get("/api/sessions/..%2F..%2Fetc").status_code == 404


@pytest.mark.slow
def test_pictures_submit_busy_weights_export_branch(studio):
    c, root = studio
    sid = new_session(c)
    base = f"/api/sessions/{sid}"
    pic = c.get(f"{base}/rounds/0/pictures/3.png")
    assert pic.status_code == 200 and Image.open(io.BytesIO(pic.content)).size == (64, 64)
    assert c.get(f"{base}/rounds/0/pictures/3.png").content == pic.content  # stored, not redrawn
    assert c.get(f"{base}/rounds/0/pictures/-1.png").status_code == 400
    assert c.get(f"{base}/rounds/9/pictures/3.png").status_code == 400
    # bad submissions, each refused in words, none committed
    bad = [
        ({"parent": 0, "marks": [{"seed": 3, "values": [1] * 10}]}, 400, "64x64"),
        ({"parent": 0, "marks": [{"seed": 3, "values": [101] * 4096}]}, 400, "-100"),
        ({"parent": 0, "marks": [{"seed": 3, "values": [0] * 4096}]}, 400, "nothing is marked"),
        ({"parent": 0, "marks": [half_marks(), half_marks()]}, 400, "once per round"),
        ({"parent": 0, "marks": [half_marks(s) for s in range(5)]}, 422, ""),
        ({"parent": 7, "marks": [half_marks()]}, 400, "no round 7"),
        ({"parent": 0, "marks": [half_marks(seed=5)]}, 400, "no picture for seed 5"),
        ({"parent": 0, "marks": []}, 422, ""),
    ]
    for body, code, words in bad:
        r = c.post(f"{base}/rounds", json=body)
        assert r.status_code == code and words in str(r.json()["detail"]), (body["marks"][:1], r.text)
    big = c.post(f"{base}/rounds", content=b"{" + b" " * MAX_BODY + b"}", headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and "too large" in big.json()["detail"]
    chunked = c.post(f"{base}/rounds", content=iter([b'{"parent": 0}']), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 411
    assert len(Store(root / sid).rounds()) == 1
    # a round, and a second submission while it runs: busy
    r = c.post(f"{base}/rounds", json={"parent": 0, "marks": [half_marks()]})
    assert r.status_code == 202 and r.json() == {"round": 1}
    again = c.post(f"{base}/rounds", json={"parent": 0, "marks": [half_marks()]})
    assert again.status_code == 409 and "busy" in again.json()["detail"]
    assert c.get(f"{base}/rounds/1/pictures/3.png").status_code in (400, 200)  # pending: refused in words
    p = wait_done(c, 1)
    assert p["state"] == "done" and p["epochs"] == 1 and len(p["rewards"]) == 1, p
    s = c.get(base).json()
    r1 = s["rounds"][1]
    assert (r1["parent"], r1["status"], r1["marked_seeds"]) == (0, "done", [3])
    assert r1["model_version"] == "shapes-tiny@start" and r1["settings"]["epochs"] == 1
    assert set(r1["changes"]["3"]) == {"change_liked", "change_disliked", "change_unmarked"}
    assert (root / sid / r1["weights"]).is_file() and not list((root / sid / "weights").glob("*.tmp*"))
    marks = np.asarray(Image.open(io.BytesIO(c.get(f"{base}/rounds/1/marks/3.png").content)))
    assert tuple(marks[0, 0]) == (255, 0, 0, 255) and tuple(marks[-1, -1]) == (0, 255, 0, 153)
    assert c.get(f"{base}/rounds/1/marks/4.png").status_code == 400
    new_pic = c.get(f"{base}/rounds/1/pictures/3.png")
    assert new_pic.status_code == 200 and new_pic.content != pic.content
    # weights in a form diffusers loads, with round 1's UNet
    z = c.get(f"{base}/rounds/1/weights.zip")
    assert z.status_code == 200 and "model_index.json" in zipfile.ZipFile(io.BytesIO(z.content)).namelist()
    out = root.parent / "weights"
    zipfile.ZipFile(io.BytesIO(z.content)).extractall(out)
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None, requires_safety_checker=False)
    saved = load_file(str(root / sid / r1["weights"]))
    name = next(iter(saved))
    assert torch.equal(dict(pipe.unet.named_parameters())[name].detach(), saved[name])
    assert c.get(f"{base}/rounds/5/weights.zip").status_code == 400
    # a branch from round 0 with two seeds marked: replays no marks of round 1, starts from the start
    assert c.get(f"{base}/rounds/0/pictures/4.png").status_code == 200
    r = c.post(f"{base}/rounds", json={"parent": 0, "marks": [{"seed": 3, "values": [100] * 4096}, half_marks(4)]})
    assert r.status_code == 202 and wait_done(c, 2)["state"] == "done"
    assert Store(root / sid).lineage(2) == [2] and Store(root / sid).lineage(1) == [1]
    r2 = c.get(base).json()["rounds"][2]
    assert (r2["parent"], r2["marked_seeds"], r2["picture_seeds"], sorted(r2["changes"])) == (
        0,
        [3, 4],
        [3, 4],
        ["3", "4"],
    )
    # the export: PNG + JSONL
    e = c.get(f"{base}/export.zip")
    zf = zipfile.ZipFile(io.BytesIO(e.content))
    rows = [json.loads(line) for line in zf.read("data.jsonl").decode().splitlines()]
    assert [(r["round"], r["parent"], r["seed"], r["prompt"]) for r in rows] == [
        (1, 0, 3, PROMPT),
        (2, 0, 3, PROMPT),
        (2, 0, 4, PROMPT),
    ]
    for row in rows:
        for key in ("picture", "marks", "picture_after"):
            Image.open(io.BytesIO(zf.read(row[key])))


@pytest.mark.slow
def test_refine_and_the_studio_share_sessions(tmp_path, capsys):
    root = tmp_path / "sessions"
    d = root / "mine"
    refine = ["refine", f"--dir={d}", "--epochs=1", "--variations=2", "--threads=1"]
    assert main([*refine, f"--prompt={PROMPT}", "--seed=3", "--num_steps=3"]) == 0
    np.save(tmp_path / "s.npy", np.concatenate([-np.ones((32, 64)), np.ones((32, 64))]).astype(np.float32))
    assert main([*refine, f"--strokes={tmp_path / 's.npy'}"]) == 0
    with TestClient(create_app(StudioConfig(dir=str(root), **TINY))) as c:
        # a round made by refine is in the studio's history, with its marks and picture
        assert [s["id"] for s in c.get("/api/sessions").json()] == ["mine"]
        s = c.get("/api/sessions/mine").json()
        assert s["prompt"] == PROMPT and s["num_steps"] == 3
        assert [(r["id"], r["parent"], r["status"], r["marked_seeds"]) for r in s["rounds"]] == [
            (0, None, "done", []),
            (1, 0, "done", [3]),
        ]
        m = np.asarray(Image.open(io.BytesIO(c.get("/api/sessions/mine/rounds/1/marks/3.png").content)))
        assert tuple(m[0, 0]) == (255, 0, 0, 255) and tuple(m[-1, 0]) == (0, 255, 0, 255)
        assert c.get("/api/sessions/mine/rounds/1/pictures/3.png").content == (d / "pictures/r001_s3.png").read_bytes()
        # the studio goes on from refine's round 1, with two seeds
        assert c.get("/api/sessions/mine/rounds/1/pictures/4.png").status_code == 200
        r = c.post("/api/sessions/mine/rounds", json={"parent": 1, "marks": [half_marks(3), half_marks(4)]})
        assert r.status_code == 202 and wait_done(c, 2)["state"] == "done"
    # refine goes on from the studio's round 2 (the newest); it has two seeds, so refine asks which
    assert main([*refine, f"--strokes={tmp_path / 's.npy'}"]) == 2
    assert "seeds 3, 4: choose one with --seed=N" in capsys.readouterr().err
    assert main([*refine, f"--strokes={tmp_path / 's.npy'}", "--seed=4"]) == 0
    assert "round 3 (from 2), seed 4" in capsys.readouterr().out
    with TestClient(create_app(StudioConfig(dir=str(root), **TINY))) as c:
        rounds = c.get("/api/sessions/mine").json()["rounds"]
        assert [(r["id"], r["parent"], r["status"], r["marked_seeds"]) for r in rounds][2:] == [
            (2, 1, "done", [3, 4]),
            (3, 2, "done", [4]),
        ]
        assert rounds[3]["model_version"].startswith("shapes-tiny@round2:") and rounds[3]["settings"]["epochs"] == 1
    # the session as a plain dataset, from the command line
    out = tmp_path / "dataset"
    assert main(["studio", "export", f"--session={d}", f"--out={out}"]) == 0
    assert f"{out / 'data.jsonl'} (4 marked pictures)" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert [(r["round"], r["parent"], r["seed"], r["prompt"]) for r in rows] == [
        (1, 0, 3, PROMPT),
        (2, 1, 3, PROMPT),
        (2, 1, 4, PROMPT),
        (3, 2, 4, PROMPT),
    ]
    marks = np.asarray(Image.open(out / rows[0]["marks"]))
    assert tuple(marks[0, 0]) == (255, 0, 0, 255) and tuple(marks[-1, 0]) == (0, 255, 0, 255)
    assert (out / rows[-1]["picture"]).read_bytes() == (d / "pictures/r002_s4.png").read_bytes()
    assert (out / rows[-1]["picture_after"]).read_bytes() == (d / "pictures/r003_s4.png").read_bytes()
    for args, words in (
        ([f"--session={d}", f"--out={out}"], "not an empty folder"),
        ([f"--session={tmp_path}", f"--out={tmp_path / 'x'}"], "not a session folder"),
        ([f"--session={d}"], "--out=DATASET"),
    ):
        assert main(["studio", "export", *args]) == 2 and words in capsys.readouterr().err, args


def test_a_refine_folder_of_the_earlier_format_is_converted(tmp_path, capsys):
    """Folders of pxpo refine's earlier format (session.json, traj_NNN.pt, strokes_NNN.pt, params.pt)
    open in the studio and in pxpo refine, converted in place."""
    from types import SimpleNamespace

    from pxpo.backends.registry import load_pipeline

    root = tmp_path / "sessions"
    d = root / "old"
    d.mkdir(parents=True)
    pics = torch.rand(2, 3, 64, 64)
    for k in range(2):
        torch.save(SimpleNamespace(images=pics[k : k + 1]), d / f"traj_{k:03d}.pt")
    strokes = torch.cat([-torch.ones(32, 64), torch.ones(32, 64)])
    torch.save(strokes, d / "strokes_000.pt")
    params = {n: p.detach().clone() for n, p in load_pipeline("shapes-tiny").unet.named_parameters()}
    torch.save(params, d / "params.pt")
    (d / "session.json").write_text(
        json.dumps(
            {
                "prompt": PROMPT,
                "model": "shapes-tiny",
                "seed": 3,
                "num_steps": 3,
                "guidance": 5.0,
                "eta": 1.0,
                "rounds": [
                    {
                        "strokes": "s.png",
                        "epochs": 1,
                        "variations": 2,
                        "lr": 1e-4,
                        "replay": True,
                        "reward_per_epoch": [0.5],
                        "change_liked": 0.1,
                        "change_disliked": 0.2,
                        "change_unmarked": None,
                    }
                ],
                "last_config": {"finetune": "auto"},
            }
        )
    )
    broken = root / "broken"  # a damaged folder is skipped with a message, not fatal
    broken.mkdir()
    (broken / "session.json").write_text("{")
    (broken / "traj_000.pt").write_bytes(b"")
    with TestClient(create_app(StudioConfig(dir=str(root), **TINY))) as c:
        assert [s["id"] for s in c.get("/api/sessions").json()] == ["old"]
        rounds = c.get("/api/sessions/old").json()["rounds"]
        assert [(r["id"], r["parent"], r["status"], r["rewards"]) for r in rounds] == [
            (0, None, "done", None),
            (1, 0, "done", [0.5]),
        ]
        got = np.asarray(Image.open(io.BytesIO(c.get("/api/sessions/old/rounds/1/pictures/3.png").content)))
        assert np.abs(got / 255.0 - pics[1].permute(1, 2, 0).numpy()).max() < 1 / 255 + 1e-6
    assert "cannot open" in capsys.readouterr().err
    store = Store(d)
    assert torch.equal(store.marks(1)[3][1], strokes)
    assert store.weights_file(1).is_file()  # params.pt: the latest round's weights
    # pxpo refine continues it in the one format
    np.save(tmp_path / "s.npy", strokes.numpy())
    assert (
        main(["refine", f"--dir={d}", f"--strokes={tmp_path / 's.npy'}", "--epochs=1", "--variations=2", "--threads=1"])
        == 0
    )
    assert [(r["id"], r["parent"], r["status"]) for r in Store(d).rounds()][2:] == [(2, 1, "done")]


def test_studio_command_line_errors(capsys):
    assert main(["studio", "--port=0"]) == 2
    assert "--port=0" in capsys.readouterr().err
    assert main(["studio", "--variations=1"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert main(["studio", "--model=/no/such/model"]) == 2
    assert "/no/such/model" in capsys.readouterr().err


def test_a_failed_round_is_reported_in_words_and_keeps_its_marks(studio, monkeypatch):
    from pxpo.apps.studio.engine import Engine

    c, root = studio
    sid = new_session(c)
    c.get(f"/api/sessions/{sid}/rounds/0/pictures/3.png")

    def broken(self, rid, on_epoch=None):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(Engine, "train", broken)
    assert c.post(f"/api/sessions/{sid}/rounds", json={"parent": 0, "marks": [half_marks()]}).status_code == 202
    p = wait_done(c, 1)
    assert p["state"] == "failed" and "out of memory (simulated)" in p["error"]
    r1 = c.get(f"/api/sessions/{sid}").json()["rounds"][1]
    assert r1["status"] == "failed" and "simulated" in r1["error"] and r1["marked_seeds"] == [3]
    assert (root / sid / "marks" / "r001_s3.png").is_file()
    assert c.get(f"/api/sessions/{sid}/rounds/1/weights.zip").status_code == 400
    monkeypatch.undo()  # the studio takes the next submission
    assert c.post(f"/api/sessions/{sid}/rounds", json={"parent": 0, "marks": [half_marks()]}).json() == {"round": 2}
    assert wait_done(c, 2)["state"] == "done"


@pytest.mark.slow
def test_pxpo_studio_prints_its_address_and_serves(tmp_path):
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pxpo.cli", "studio", f"--dir={tmp_path}", f"--port={port}", "--threads=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=5) as r:
                    assert json.loads(r.read())["model"] == "shapes-tiny"
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("pxpo studio did not answer")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_an_sd_directory_trains_lora_adapters(tmp_path, random_pipe_dir):
    cfg = StudioConfig(dir=str(tmp_path / "sessions"), model=str(random_pipe_dir), **TINY)
    with TestClient(create_app(cfg)) as c:
        assert c.get("/api/info").json()["vocabulary"] is None  # any prompt: no word list to check against
        sid = new_session(c, "a photo of a dragon")
        base = f"/api/sessions/{sid}"
        assert c.get(f"{base}/rounds/0/pictures/3.png").status_code == 200
        assert c.post(f"{base}/rounds", json={"parent": 0, "marks": [half_marks()]}).status_code == 202
        assert wait_done(c, 1)["state"] == "done"
        z = zipfile.ZipFile(io.BytesIO(c.get(f"{base}/rounds/1/weights.zip").content))
        assert z.namelist() == ["pytorch_lora_weights.safetensors"]
        z.extractall(tmp_path / "lora")
        from pxpo.backends.registry import load_pipeline

        load_pipeline(str(random_pipe_dir)).load_lora_weights(str(tmp_path / "lora"))  # diffusers loads them
        from safetensors.torch import load_file

        saved = load_file(str(tmp_path / "sessions" / sid / "weights" / "round_001.safetensors"))
        assert saved and all("lora" in k for k in saved)
