"""Sessions of ``pxpo refine``'s earlier format (``session.json``, ``traj_NNN.pt``, ``strokes_NNN.pt``,
``params.pt``), converted in place to the studio's (``store.py``), which ``pxpo refine`` and
``pxpo studio`` both read and write now."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path

import torch

from pxpo.apps.studio.store import DB, SESSION_ID, Store

logger = logging.getLogger(__name__)

LEGACY_STATE = "session.json"


def sync_refine(path: str | Path) -> Store:
    """Convert a folder of ``pxpo refine``'s earlier format (``session.json``) to a session, in place.

    Its rounds become a chain of rounds (round k's parent is k - 1), its strokes the marks, its
    pictures the pictures, its settings each round's settings. That format kept only the latest
    weights (``params.pt``): they become the latest round's weights, so the session can go on from
    the start or from the latest round (earlier rounds show their pictures and marks; their weights
    were not kept). Its files stay where they are; called again, it adds rounds written there since."""
    from safetensors.torch import save_file

    path = Path(path)
    state = json.loads((path / LEGACY_STATE).read_text())
    last = state.get("last_config", {})
    settings = {k: last.get(k, d) for k, d in (("epochs", 4), ("variations", 8), ("lr", 1e-4), ("replay", True))}
    seed = int(state["seed"])
    if not (path / DB).is_file():
        first = torch.load(path / "traj_000.pt", weights_only=False).images[0]
        store = Store.create(
            path,
            {
                "prompt": state["prompt"],
                "model": state["model"],
                "finetune": last.get("finetune", "auto"),
                "num_steps": state["num_steps"],
                "guidance": state["guidance"],
                "eta": state["eta"],
                "height": first.shape[-2],
                "width": first.shape[-1],
                "settings": settings,
                "from_refine": True,
            },
        )
        store.save_picture(0, seed, first)
    store = Store(path)
    meta = store.meta()
    have, parent = meta.get("refine_rounds", 0), meta.get("refine_last_round", 0)  # studio rounds may follow
    rounds = state["rounds"]
    for k in range(have + 1, len(rounds) + 1):
        r = rounds[k - 1]
        round_settings = {key: r.get(key, settings[key]) for key in settings}
        strokes = torch.load(path / f"strokes_{k - 1:03d}.pt", weights_only=True)
        rid = store.submit(parent, {seed: strokes}, round_settings, trainable=False)
        store.save_picture(rid, seed, torch.load(path / f"traj_{k:03d}.pt", weights_only=False).images[0])
        store.set_changes(rid, seed, {n: r.get(n) for n in ("change_liked", "change_disliked", "change_unmarked")})
        with store._db() as db:
            db.execute(
                "UPDATE rounds SET status = 'done', rewards = ?, finished = ? WHERE id = ?",
                (json.dumps(r.get("reward_per_epoch")), time.time(), rid),
            )
        parent = rid
    if len(rounds) > have and (path / "params.pt").is_file():
        name = f"weights/round_{parent:03d}.safetensors"
        tmp = path / (name + ".tmp")
        save_file({k: v.contiguous() for k, v in torch.load(path / "params.pt", weights_only=True).items()}, str(tmp))
        os.replace(tmp, path / name)
        with store._db() as db:
            db.execute("UPDATE rounds SET weights = ? WHERE id = ?", (name, parent))
    store.set_meta(refine_rounds=len(rounds), refine_last_round=parent)
    return store


def open_sessions(root: str | Path) -> list[str]:
    """The session ids under a sessions directory, newest first; folders of ``pxpo refine``'s
    earlier format there are converted in place (:func:`sync_refine`)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if not SESSION_ID.match(p.name):
            continue
        if (p / LEGACY_STATE).is_file() and (p / "traj_000.pt").is_file():
            try:
                sync_refine(p)  # converted in place, rounds added since the last conversion too
            except (OSError, ValueError, KeyError, RuntimeError, sqlite3.Error) as e:
                logger.warning(f"cannot open the pxpo refine session {p}: {type(e).__name__}: {e}")
        if (p / DB).is_file():
            found.append(p.name)
    return sorted(found, reverse=True)
