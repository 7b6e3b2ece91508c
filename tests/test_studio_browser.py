"""pxpo studio end to end in a real headless browser (Debian's chromium driven by Playwright):
pick a prompt and a seed, paint a dislike stroke over the object and a like stroke over the
background with the mouse, mark a second seed, train a round on both, check what changed, restart the server, check the history,
reopen round 0 and branch from it.

Set PXPO_STUDIO_SCREENSHOT=docs/studio.png to keep the screenshot taken after round 1."""

import io
import json
import os
import shutil
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no chromium browser: install one with "
        "`apt-get install -y chromium` (Debian/Ubuntu) to run the studio's browser test",
    ),
    pytest.mark.usefixtures("keep_torch_threads"),
    pytest.mark.slow,
    pytest.mark.browser,
]
PROMPT = "a red square on a blue background"
SEED, SEED2 = 3, 5
SETTINGS = dict(num_steps=6, epochs=2, variations=6, threads=1)


class Server:
    """The studio's uvicorn server in a thread, stoppable like Ctrl-C."""

    def __init__(self, root):
        import uvicorn

        from pxpo.apps.studio import StudioConfig
        from pxpo.apps.studio.app import create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        app = create_app(StudioConfig(dir=str(root), port=self.port, **SETTINGS))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            assert time.time() - t0 < 60, "the studio did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=120) as r:
            return r.read()

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=60)


def picture(server, sid, rid):
    return (
        np.asarray(
            Image.open(io.BytesIO(server.get(f"/api/sessions/{sid}/rounds/{rid}/pictures/{SEED}.png"))),
            dtype=np.float32,
        )
        / 255
    )


def drag(page, box, points, scale):
    page.mouse.move(box["x"] + points[0][0] * scale, box["y"] + points[0][1] * scale)
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=8)
    page.mouse.up()


def test_studio_in_a_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    root = tmp_path / "sessions"
    server = Server(root)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        try:
            page.goto(server.url)
            # 1. an unknown word is refused in words, then prompt + seed
            page.fill("#prompt", "a red dragon")
            assert '"dragon"' in page.text_content("#prompt-check") and page.is_disabled("#start")
            page.fill("#prompt", PROMPT)
            page.fill("#seed", str(SEED))
            page.click("#start")
            page.wait_for_function(
                f"document.getElementById('stage-caption').textContent.startsWith('round 0, seed {SEED} (')",
                timeout=120_000,
            )
            sid = page.evaluate("S.sid")
            before = picture(server, sid, 0)
            # 2. strokes with the mouse: dislike over the (red) object, like over the background
            red = (before[..., 0] > 0.5) & (before[..., 2] < 0.4)
            assert red.sum() > 20, "no red object in the picture"
            ys, xs = np.nonzero(red)
            box = page.locator("#marks").bounding_box()
            scale = box["width"] / 64
            page.check("input[value=dislike]")
            page.fill("#size", "12")
            y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
            drag(
                page,
                box,
                [
                    (x0 + 2, y0 + 2),
                    (x1 - 2, y0 + 2),
                    (x1 - 2, y1 - 2),
                    (x0 + 2, y1 - 2),
                    (x0 + 2, y0 + 2),
                    (x1 - 2, y1 - 2),
                ],
                scale,
            )
            far_x = 8 if xs.mean() > 32 else 56  # the background on the other side of the object
            page.check("input[value=like]")
            marks_now = "Array.from(S.marks[S.seed])"
            disliked_only = page.evaluate(marks_now)
            drag(page, box, [(xs.mean(), ys.mean()), (far_x, ys.mean())], scale)  # a slip over the object...
            assert page.evaluate(marks_now) != disliked_only
            page.click("#undo")  # ...undone
            assert page.evaluate(marks_now) == disliked_only
            page.click("#clear")
            assert not any(page.evaluate(marks_now))
            page.click("#undo")
            assert page.evaluate(marks_now) == disliked_only
            page.check("input[value=erase]")
            drag(page, box, [(x0, y0), (x0, y0)], scale)
            assert page.evaluate(f"S.marks[S.seed][{y0 * 64 + x0}]") == 0
            page.click("#undo")
            assert page.evaluate(marks_now) == disliked_only
            page.check("input[value=like]")
            drag(page, box, [(far_x, 4), (far_x, 60)], scale)
            marks = np.array(page.evaluate(marks_now)).reshape(64, 64)
            disliked, liked = marks < 0, marks > 0
            assert disliked[red].mean() > 0.8 and liked.sum() > 100 and not (liked & red).any()
            # a second seed of the same prompt, marked in the same round
            page.fill("#seed", str(SEED2))
            page.click("#add-seed")
            page.wait_for_function(
                f"document.getElementById('stage-caption').textContent.startsWith('round 0, seed {SEED2} (')"
            )
            page.check("input[value=dislike]")
            drag(page, box, [(4, 32), (60, 32)], scale)
            assert page.evaluate(f"S.marks[{SEED}].some((v) => v !== 0) && S.marks[{SEED2}].some((v) => v < 0)")
            assert page.locator(".seed-tab", has_text="(marked)").count() == 2
            # 3. submit, progress shows, round 1 arrives
            t0 = time.time()
            page.click("#submit")
            page.wait_for_selector("#progress-box:not([hidden])")
            page.wait_for_function(
                "document.getElementById('stage-caption').textContent.startsWith('round 1,')", timeout=600_000
            )
            seconds = time.time() - t0
            after = picture(server, sid, 1)
            change = np.abs(after - before).mean(axis=-1)
            print(
                f"submit -> round 1 picture: {seconds:.1f} s; mean |change| disliked "
                f"{change[disliked].mean():.3f}, liked {change[liked].mean():.3f}"
            )
            # 4. the picture changed more under the dislike marks; history and comparison show both rounds
            assert change[disliked].mean() > change[liked].mean(), (change[disliked].mean(), change[liked].mean())
            assert page.locator("#history .round").count() == 2
            assert page.locator("#history .round[data-round='1'] .marked").count() == 2  # both seeds' marks
            r1 = json.loads(server.get(f"/api/sessions/{sid}"))["rounds"][1]
            assert (r1["marked_seeds"], r1["picture_seeds"]) == ([SEED, SEED2], [SEED, SEED2])
            page.wait_for_function("document.querySelectorAll('#compare figure').length === 2")
            assert page.text_content("#error") == "" and page.is_hidden("#error")
            page.screenshot(path=str(tmp_path / "studio.png"), full_page=True)
            if os.environ.get("PXPO_STUDIO_SCREENSHOT"):
                shutil.copyfile(tmp_path / "studio.png", os.environ["PXPO_STUDIO_SCREENSHOT"])
            # 5. restart the server: the session and its history are still there
            server.stop()
            server = Server(root)
            page.goto(server.url)
            page.wait_for_function(f"document.querySelector('#sessions option[value=\"{sid}\"]') !== null")
            page.select_option("#sessions", sid)
            page.wait_for_function("document.querySelectorAll('#history .round').length === 2")
            assert "round 1 (from 0) done" in page.text_content("#history")
            page.wait_for_function("document.getElementById('stage-caption').textContent.startsWith('round 1,')")
            # 6. reopen round 0 from the history and branch from it
            page.click("#history .round[data-round='0']")
            page.wait_for_function("document.getElementById('stage-caption').textContent.startsWith('round 0,')")
            assert not any(page.evaluate("Array.from(S.marks[S.seed])"))  # round 1's marks do not carry over
            page.check("input[value=like]")
            drag(page, box, [(4, 4), (60, 4), (60, 60)], scale)
            page.click("#submit")
            page.wait_for_function(
                "document.getElementById('stage-caption').textContent.startsWith('round 2,')", timeout=600_000
            )
            page.wait_for_function("document.getElementById('history').textContent.includes('round 2 (from 0) done')")
            page.wait_for_function("document.querySelectorAll('#compare figure').length === 2")  # 0 and 2, not 1
            assert [f.text_content() for f in page.locator("#compare figcaption").all()] == ["round 0", "round 2"]
        finally:
            browser.close()
            server.stop()
