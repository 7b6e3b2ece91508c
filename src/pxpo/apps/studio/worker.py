"""Rounds run one at a time, in a worker thread, while the web app keeps answering.

One model sits in memory (the CPU has room for one round at a time anyway), guarded by one lock:
a round holds it while it trains and redraws; drawing a picture or saving weights for download
takes it only if it is free, and otherwise the request is answered "busy" (HTTP 409) at once
instead of hanging. Progress (epoch, reward per epoch, seconds) is kept for the page to poll.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from contextlib import contextmanager
from pathlib import Path

from pxpo.apps.studio.engine import Engine
from pxpo.apps.studio.store import Store


class Busy(Exception):
    """A round is training: the request would wait for minutes. The message says which round."""


class Runner:
    def __init__(self, root: Path):
        self.root = root
        self.model = threading.Lock()  # the model in memory
        self.state = threading.Lock()  # the queue and the progress
        self.queue: deque[tuple[str, int]] = deque()
        self.engine: Engine | None = None
        self.progress: dict = {"state": "idle"}
        self.thread: threading.Thread | None = None

    def busy_message(self) -> str:
        p = self.progress
        if p.get("state") in ("training", "drawing", "loading"):
            where = f" (epoch {p.get('epoch', 0)} of {p.get('epochs', '?')})" if p["state"] == "training" else ""
            return (
                f"busy: round {p['round']} of session {p['session']} is {p['state']}{where}; "
                "wait for it to finish, then try again"
            )
        return "busy: the model is in use; try again in a few seconds"

    def _engine(self, store: Store) -> Engine:
        """The session's model (loaded when another session's is in memory). Call with ``model`` held."""
        if self.engine is None or self.engine.store.path != store.path:
            self.engine = None  # free the previous model first
            self.engine = Engine(store)
        return self.engine

    @contextmanager
    def use_model(self, store: Store):
        """The session's engine for a short job (a picture, a download); Busy if a round holds it."""
        if not self.model.acquire(blocking=False):
            raise Busy(self.busy_message())
        try:
            yield self._engine(store)
        finally:
            self.model.release()

    def running(self) -> bool:
        return bool(self.queue) or self.progress.get("state") in ("queued", "loading", "training", "drawing")

    def submit(self, store: Store, commit) -> int:
        """``commit()`` stores the submission and returns its round id; it runs only when no round is
        queued or training, so a refused submission leaves nothing behind (the page keeps the marks)."""
        with self.state:
            if self.running():
                raise Busy(self.busy_message())
            rid = commit()
            self._enqueue(store.id, rid)
        return rid

    def resume(self, store: Store) -> list[int]:
        """Queue a session's pending rounds (committed before a stop or crash, never finished)."""
        with self.state:
            queued = {(s, r) for s, r in self.queue}
            cur = (self.progress.get("session"), self.progress.get("round"))
            todo = [
                r
                for r in store.pending()
                if (store.id, r) not in queued and not (cur == (store.id, r) and self.running())
            ]
            for rid in todo:
                self._enqueue(store.id, rid)
        return todo

    def _enqueue(self, sid: str, rid: int) -> None:
        self.queue.append((sid, rid))
        if self.progress.get("state") not in ("loading", "training", "drawing"):
            self.progress = {"state": "queued", "session": sid, "round": rid}
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(target=self._work, name="pxpo-studio-rounds", daemon=True)
            self.thread.start()

    def _work(self) -> None:
        while True:
            with self.state:
                if not self.queue:
                    return
                sid, rid = self.queue.popleft()
            self._run(sid, rid)

    def _run(self, sid: str, rid: int) -> None:
        store = Store(self.root / sid)
        t0 = time.time()
        epochs = store.round(rid)["settings"]["epochs"]
        self.progress = {
            "state": "loading",
            "session": sid,
            "round": rid,
            "epoch": 0,
            "epochs": epochs,
            "rewards": [],
            "started": t0,
        }

        def on_epoch(epoch: int, reward: float) -> None:
            p = self.progress
            self.progress = {
                **p,
                "state": "drawing" if epoch == epochs else "training",
                "epoch": epoch,
                "rewards": p["rewards"] + [reward],
                "seconds": time.time() - t0,
            }

        try:
            with self.model:
                engine = self._engine(store)
                self.progress = {**self.progress, "state": "training"}
                engine.train(rid, on_epoch)
            self.progress = {**self.progress, "state": "done", "seconds": time.time() - t0}
        except Exception as e:  # the round fails in words; the marks stay committed
            traceback.print_exc()
            message = f"round {rid} failed: {type(e).__name__}: {e}"
            store.fail(rid, message)
            self.progress = {**self.progress, "state": "failed", "error": message}
            with self.model:
                self.engine = None  # its weights may be half-updated: reload next time
