"""A session on disk, ``pxpo studio``'s and ``pxpo refine``'s alike: one SQLite database
(``studio.sqlite``) plus the files it references.

    SESSION/studio.sqlite            meta (prompt, model, sampler), rounds, marks, pictures
    SESSION/pictures/rNNN_sSEED.png  each round's picture of each seed (drawn with that round's weights)
    SESSION/marks/rNNN_sSEED.png     the marks a round was trained on (pxpo refine's strokes format:
                                     green = liked, red = disliked, alpha = strength)
    SESSION/weights/round_NNN.safetensors  the trained parameters after round NNN (full UNet or LoRA)

Rounds form a tree: round 0 is the starting model; every later round names its parent, the round
whose pictures were marked and whose weights it starts from. A submission (its marks, the pictures
they were painted on, the settings and the model version) is committed as a ``pending`` round
*before* training starts, so a crash loses no marks: a pending round is trained again when the
studio next opens the session. Weights are written to a temporary file and moved into place
(``os.replace``), so a round's weights file is either whole or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sqlite3
import time
from pathlib import Path

import numpy as np
import torch

from pxpo.errors import UserError

DB = "studio.sqlite"
SESSION_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,63}$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY,          -- 0: the starting model
    parent INTEGER,                  -- the round whose pictures were marked and whose weights it starts from
    status TEXT NOT NULL,            -- done | pending (committed, not yet trained) | failed
    settings TEXT NOT NULL,          -- JSON: epochs, variations, lr, replay, kl_coef, timestep_fraction
    model_version TEXT NOT NULL,     -- the weights it started from: model name, parent round, sha256
    weights TEXT,                    -- file (relative to the session) after training
    rewards TEXT,                    -- JSON: the strokes reward per epoch
    error TEXT,
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS marks (
    round INTEGER NOT NULL, seed INTEGER NOT NULL,
    picture TEXT NOT NULL,           -- the picture the marks were painted on (the parent round's)
    marks TEXT NOT NULL,             -- the marks file
    changes TEXT,                    -- JSON: mean |change| on liked / disliked / unmarked pixels
    PRIMARY KEY (round, seed)
);
CREATE TABLE IF NOT EXISTS pictures (
    round INTEGER NOT NULL, seed INTEGER NOT NULL, file TEXT NOT NULL, PRIMARY KEY (round, seed)
);
"""


class StoreError(UserError):
    """A request the session cannot serve, in words a person understands."""


def new_session_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def marks_to_rgba(marks: torch.Tensor) -> np.ndarray:
    """Signed marks [H, W] in [-1, 1] -> RGBA (green liked, red disliked, alpha = strength)."""
    m = marks.numpy()
    rgba = np.zeros((*m.shape, 4), np.uint8)
    rgba[m > 0, 1] = 255
    rgba[m < 0, 0] = 255
    rgba[..., 3] = np.round(np.abs(m) * 255).astype(np.uint8)
    return rgba


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class Store:
    """One session directory. Every method opens its own connection, so threads may share a Store."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / DB).is_file():
            raise StoreError(f"{self.path.name} is not a studio session (no {DB})")

    @classmethod
    def create(cls, path: str | Path, meta: dict) -> "Store":
        path = Path(path)
        for sub in ("pictures", "marks", "weights"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path / DB) as db:
            db.executescript(SCHEMA)
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in {**meta, "created": time.time()}.items()],
            )
            db.execute(
                "INSERT OR IGNORE INTO rounds (id, parent, status, settings, model_version, created, finished)"
                " VALUES (0, NULL, 'done', '{}', ?, ?, ?)",
                (f"{meta['model']}@start", time.time(), time.time()),
            )
        return cls(path)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path / DB, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    @property
    def id(self) -> str:
        return self.path.name

    def meta(self) -> dict:
        with self._db() as db:
            return {r["key"]: json.loads(r["value"]) for r in db.execute("SELECT key, value FROM meta")}

    def set_meta(self, **values) -> None:
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])

    # rounds ---------------------------------------------------------------------------------------
    def round(self, rid: int) -> dict:
        with self._db() as db:
            row = db.execute("SELECT * FROM rounds WHERE id = ?", (rid,)).fetchone()
            if row is None:
                raise StoreError(f"session {self.id} has no round {rid}")
            marks = db.execute("SELECT seed, changes FROM marks WHERE round = ? ORDER BY seed", (rid,)).fetchall()
            pics = db.execute("SELECT seed FROM pictures WHERE round = ? ORDER BY seed", (rid,)).fetchall()
        out = {k: row[k] for k in row.keys()}
        for k in ("settings", "rewards"):
            out[k] = json.loads(out[k]) if out[k] else None
        out["marked_seeds"] = [m["seed"] for m in marks]
        out["changes"] = {m["seed"]: json.loads(m["changes"]) for m in marks if m["changes"]}
        out["picture_seeds"] = [p["seed"] for p in pics]
        return out

    def rounds(self) -> list[dict]:
        with self._db() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM rounds ORDER BY id")]
        return [self.round(i) for i in ids]

    def pending(self) -> list[int]:
        with self._db() as db:
            return [r[0] for r in db.execute("SELECT id FROM rounds WHERE status = 'pending' ORDER BY id")]

    def lineage(self, rid: int) -> list[int]:
        """The rounds from the first submission down to ``rid`` (round 0 excluded)."""
        chain = []
        while rid:
            chain.append(rid)
            rid = self.round(rid)["parent"]
        return chain[::-1]

    def weights_file(self, rid: int) -> Path | None:
        """The parameters after round ``rid``; None for round 0 (the starting model)."""
        if rid == 0:
            return None
        r = self.round(rid)
        if r["status"] != "done" or not r["weights"]:
            raise StoreError(
                f"round {rid} is {r['status']}: it has no weights yet"
                if r["status"] != "done"
                else f"round {rid}'s weights were not kept; choose a later round"
            )
        return self.path / r["weights"]

    def submit(self, parent: int, marks: dict[int, torch.Tensor], settings: dict, trainable: bool = True) -> int:
        """Commit a submission as a pending round: the marks per seed, painted on ``parent``'s pictures
        (``trainable=False``: a round imported from pxpo refine, whose parent's weights were not kept)."""
        from PIL import Image

        p = self.round(parent)
        if p["status"] != "done":
            raise StoreError(f"round {parent} is {p['status']}; marks can only be painted on a finished round")
        missing = [s for s in marks if s not in p["picture_seeds"]]
        if missing:
            raise StoreError(f"round {parent} has no picture for seed {missing[0]}: open it first")
        if trainable:
            self.weights_file(parent)  # refused in words when the parent's weights are missing
        wf = self.path / p["weights"] if p["weights"] else None
        version = f"{self.meta()['model']}@" + (
            "start" if parent == 0 else f"round{parent}:{sha256(wf) if wf else 'weights-not-kept'}"
        )
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO rounds (parent, status, settings, model_version, created) VALUES (?, 'pending', ?, ?, ?)",
                (parent, json.dumps(settings), version, time.time()),
            )
            rid = cur.lastrowid
            for seed, m in marks.items():
                name = f"marks/r{rid:03d}_s{seed}.png"
                Image.fromarray(marks_to_rgba(m), "RGBA").save(self.path / name)
                db.execute(
                    "INSERT INTO marks (round, seed, picture, marks) VALUES (?, ?, ?, ?)",
                    (rid, seed, self.picture_name(parent, seed), name),
                )
        return rid

    def marks(self, rid: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """{seed: (picture [3, H, W] the marks were painted on, marks [H, W])} of a round."""
        from pxpo.apps.rounds import read_strokes

        with self._db() as db:
            rows = db.execute("SELECT seed, picture, marks FROM marks WHERE round = ? ORDER BY seed", (rid,)).fetchall()
        out = {}
        for r in rows:
            pic = self.read_picture(r["picture"])
            out[r["seed"]] = (pic, read_strokes(self.path / r["marks"], *pic.shape[-2:]))
        return out

    def marks_file(self, rid: int, seed: int) -> Path:
        with self._db() as db:
            row = db.execute("SELECT marks FROM marks WHERE round = ? AND seed = ?", (rid, seed)).fetchone()
        if row is None:
            raise StoreError(f"round {rid} holds no marks for seed {seed}")
        return self.path / row["marks"]

    def finish(self, rid: int, weights: dict[str, torch.Tensor], rewards: list[float]) -> None:
        """Save a round's weights atomically (temporary file, fsync, os.replace), then mark it done."""
        from safetensors.torch import save_file

        name = f"weights/round_{rid:03d}.safetensors"
        tmp = self.path / (name + f".tmp-{os.getpid()}")
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path / name)
        with self._db() as db:
            db.execute(
                "UPDATE rounds SET status = 'done', weights = ?, rewards = ?, error = NULL, finished = ? WHERE id = ?",
                (name, json.dumps(rewards), time.time(), rid),
            )

    def fail(self, rid: int, error: str) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE rounds SET status = 'failed', error = ?, finished = ? WHERE id = ?", (error, time.time(), rid)
            )

    def set_changes(self, rid: int, seed: int, changes: dict) -> None:
        with self._db() as db:
            db.execute("UPDATE marks SET changes = ? WHERE round = ? AND seed = ?", (json.dumps(changes), rid, seed))

    # pictures -------------------------------------------------------------------------------------
    @staticmethod
    def picture_name(rid: int, seed: int) -> str:
        return f"pictures/r{rid:03d}_s{seed}.png"

    def picture_file(self, rid: int, seed: int) -> Path | None:
        with self._db() as db:
            row = db.execute("SELECT file FROM pictures WHERE round = ? AND seed = ?", (rid, seed)).fetchone()
        return self.path / row["file"] if row else None

    def read_picture(self, name: str) -> torch.Tensor:
        from PIL import Image

        from pxpo.images import from_uint8

        return from_uint8(np.array(Image.open(self.path / name).convert("RGB"))[None])[0]

    def save_picture(self, rid: int, seed: int, image: torch.Tensor) -> Path:
        from pxpo.images import to_uint8
        from PIL import Image

        name = self.picture_name(rid, seed)
        tmp = self.path / (name + ".tmp.png")
        Image.fromarray(to_uint8(image[None])[0]).save(tmp)
        os.replace(tmp, self.path / name)
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO pictures VALUES (?, ?, ?)", (rid, seed, name))
        return self.path / name

    # export ---------------------------------------------------------------------------------------
    def export(self, out: str | Path) -> Path:
        """The session's marks, pictures and prompts as a plain dataset: ``pictures/`` and ``marks/``
        (PNG) and ``data.jsonl``, one row per marked picture."""
        import shutil

        out = Path(out)
        (out / "pictures").mkdir(parents=True, exist_ok=True)
        (out / "marks").mkdir(parents=True, exist_ok=True)
        meta = self.meta()
        rows = []
        with self._db() as db:
            marks = db.execute("SELECT * FROM marks ORDER BY round, seed").fetchall()
        for m in marks:
            r = self.round(m["round"])
            for sub, name in (("pictures", m["picture"]), ("marks", m["marks"])):
                shutil.copyfile(self.path / name, out / sub / Path(name).name)
            after = self.picture_file(m["round"], m["seed"])
            if after is not None:
                shutil.copyfile(after, out / "pictures" / after.name)
            rows.append(
                {
                    "session": self.id,
                    "round": m["round"],
                    "parent": r["parent"],
                    "seed": m["seed"],
                    "prompt": meta["prompt"],
                    "model": meta["model"],
                    "model_version": r["model_version"],
                    "picture": f"pictures/{Path(m['picture']).name}",
                    "marks": f"marks/{Path(m['marks']).name}",
                    "picture_after": f"pictures/{after.name}" if after else None,
                    "marks_format": "RGBA PNG: green = liked, red = disliked, alpha = strength",
                    "settings": r["settings"],
                    "status": r["status"],
                    "rewards": r["rewards"],
                    "changes": json.loads(m["changes"]) if m["changes"] else None,
                }
            )
        (out / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return out
