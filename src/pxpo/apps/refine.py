"""``pxpo refine``: a person's brush strokes on one picture, refined round after round (PXPO's
human-feedback experiment), from the command line. Its sessions are ``pxpo studio``'s: one folder
with ``studio.sqlite`` (``pxpo.apps.studio.store``), so a session started in either continues in the other,
with its history.

1. ``pxpo refine --dir=D --prompt="..." --seed=S`` starts a session and draws the picture of the
   seed (DDIM, eta > 0): ``D/pictures/r000_sS.png``.
2. The person paints on it and saves the strokes (format below).
3. ``pxpo refine --dir=D --strokes=FILE`` commits the strokes as a round of the session (before
   training, as the studio does), turns them (liked +, disliked -) into a per-pixel reward and runs
   a few PXPO epochs on *variations* of the picture: the same x_T (so the same layout) with fresh
   step noise (:mod:`pxpo.apps.rounds`: the reward, the strokes formats). Then the *same seed* is
   redrawn with the updated model: ``D/pictures/r001_sS.png``, and ``D/compare/r001_sS.png`` shows
   previous | strokes | new. Repeat from 2.

``--round=N`` paints on round N's picture instead of the newest round's (a branch, as reopening a
round in the studio); ``--seed`` chooses the picture when the round has several (studio rounds can).
``pxpo refine --dir=D`` without strokes prints (and draws, if needed) that picture. A ``pxpo studio``
session folder (``runs/studio/ID``) works as ``--dir``; folders of the earlier ``session.json``
format are converted in place.

With ``replay=true`` (default) every round also scores against its earlier rounds' pictures and
strokes (the mean of the rounds' maps), so a later round does not undo what an earlier one asked.

Strokes files: PNG with alpha (green = liked, red = disliked), grey PNG (128 = no opinion) or
``.npy`` in [-1, 1]; :mod:`pxpo.apps.rounds` says more.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from pxpo.apps.rounds import RoundOptions, check_round_options, read_strokes, round_settings, strokes_overlay
from pxpo.errors import MissingFile, UserError

logger = logging.getLogger(__name__)

AT_START = ("prompt", "model", "num_steps", "guidance", "eta", "finetune")  # fixed when a session starts


@dataclass
class RefineConfig(RoundOptions):
    """the session, the picture the strokes were painted on, and its rounds"""

    dir: str = "runs/refine"
    """the session folder (studio.sqlite, pictures/, marks/, weights/, compare/); a `pxpo studio` session folder works
    too
    """
    strokes: str = ""
    """strokes painted on the picture of --round and --seed (PNG or .npy, see `pxpo refine --help`); empty: start the
    session, or show the picture to paint on
    """
    round: int = -1
    """the round whose picture the strokes were painted on; the new round starts from its weights (-1: the newest
    finished round)
    """
    seed: int = -1
    """the noise seed of the picture (-1: 0 for a new session, else the round's only seed)"""
    prompt: str = "a red square on a blue background"
    """the prompt (fixed when the session starts)"""


def start_session(cfg: RefineConfig):
    """A new session in ``cfg.dir`` (the studio's format), its settings fixed from ``cfg``."""
    from pxpo.apps.studio.engine import picture_size
    from pxpo.backends.registry import world_of
    from pxpo.apps.studio.store import Store

    height, width = picture_size(cfg.model)  # refuses an unknown model in words
    world = world_of(cfg.model)
    if world is not None:  # the shapes models know only their world's words
        world.check_prompts([cfg.prompt])
    return Store.create(
        cfg.dir,
        {
            "prompt": " ".join(cfg.prompt.split()),
            "model": cfg.model,
            "finetune": cfg.finetune,
            "num_steps": cfg.num_steps,
            "guidance": cfg.guidance,
            "eta": cfg.eta,
            "height": height,
            "width": width,
            "settings": round_settings(cfg),
        },
    )


def open_session(cfg: RefineConfig):
    """The session in ``cfg.dir``: opened (an earlier ``session.json`` folder converted), or started
    when there is none and no strokes were given."""
    from pxpo.apps.studio.legacy import LEGACY_STATE, sync_refine
    from pxpo.apps.studio.store import DB, Store

    d = Path(cfg.dir)
    if (d / LEGACY_STATE).is_file():
        sync_refine(d)
    if not (d / DB).is_file():
        if cfg.strokes:
            raise MissingFile(
                f'{d} holds no session ({DB}); start one first: pxpo refine --dir={d} --prompt="..." --seed=N'
            )
        return start_session(cfg), True
    store, defaults, meta = Store(d), RefineConfig(), Store(d).meta()
    given = {k: " ".join(cfg.prompt.split()) if k == "prompt" else getattr(cfg, k) for k in AT_START}
    differ = [k for k in AT_START if getattr(cfg, k) != getattr(defaults, k) and given[k] != meta[k]]
    if differ:
        k = differ[0]
        raise UserError(
            f"the session in {d} was started with {k}={meta[k]!r}, fixed since; drop --{k}={getattr(cfg, k)!r} "
            "or choose another --dir for a new session"
        )
    return store, False


def choose(store, round_: int, seed: int, new: bool) -> tuple[int, int]:
    """(round, seed) of the picture the strokes are painted on; refused in words when unclear."""
    rounds = store.rounds()
    done = [r["id"] for r in rounds if r["status"] == "done"]
    rid = done[-1] if round_ < 0 else round_
    if rid not in done:
        have = next((r for r in rounds if r["id"] == rid), None)
        raise UserError(
            f"--round={rid}: the session has no such round (finished rounds: {', '.join(map(str, done))})"
            if have is None
            else f"--round={rid}: round {rid} is {have['status']}; choose a finished round "
            f"({', '.join(map(str, done))})"
        )
    if seed >= 0:
        return rid, seed
    seeds = store.round(rid)["picture_seeds"]
    if new or (rid == 0 and not seeds):
        return rid, 0
    if len(seeds) != 1:
        raise UserError(f"round {rid} has pictures of seeds {', '.join(map(str, seeds))}: choose one with --seed=N")
    return rid, seeds[0]


def save_compare(store, rid: int, seed: int) -> Path:
    """``compare/rNNN_sSEED.png``: the marked picture | its strokes | the round's new picture."""
    from pxpo.images import labelled_rows, make_grid, save

    r = store.round(rid)
    before, strokes = store.marks(rid)[seed]
    after = store.read_picture(store.picture_name(rid, seed))
    grid = make_grid(torch.stack([before, strokes_overlay(before, strokes), after]), scale=4)
    path = store.path / "compare" / f"r{rid:03d}_s{seed}.png"
    path.parent.mkdir(exist_ok=True)
    save(labelled_rows([grid], [f"round {r['parent']} | strokes | round {rid} (seed {seed})"]), path)
    return path


def main(argv: list[str]) -> int:
    from pxpo.config import parse_overrides
    from pxpo.apps.studio.engine import Engine

    cfg = parse_overrides(RefineConfig(), argv, prog="pxpo refine", description=__doc__)
    check_round_options(cfg)
    torch.set_num_threads(cfg.threads)
    store, new = open_session(cfg)
    rid, seed = choose(store, cfg.round, cfg.seed, new)
    engine = Engine(store)
    for pending in store.pending():  # committed by a run that stopped before it finished
        logger.warning(f"round {pending} was committed but not trained (a stop or crash); training it first")
        engine.train(pending)
    picture = engine.picture(rid, seed)  # drawn the first time it is asked for
    if not cfg.strokes:
        where = (f" --round={rid}" if cfg.round >= 0 else "") + (
            f" --seed={seed}" if store.round(rid)["picture_seeds"] != [seed] else ""
        )
        print(
            f"round {rid}, seed {seed}: {picture}  (paint strokes on it, then: pxpo refine --dir={cfg.dir}"
            f"{where} --strokes=FILE)"
        )
        return 0
    meta = store.meta()
    strokes = read_strokes(cfg.strokes, meta["height"], meta["width"])
    new_round = store.submit(rid, {seed: strokes}, round_settings(cfg))  # committed before training
    engine.train(new_round)
    r = store.round(new_round)
    changes = ", ".join(
        f"{n} {v:.3f}"
        for n in ("liked", "disliked", "unmarked")
        if (v := r["changes"][seed]["change_" + n]) is not None
    )
    print(
        f"round {new_round} (from {rid}), seed {seed}: {store.picture_file(new_round, seed)}, "
        f"{save_compare(store, new_round, seed)}  (mean |change| per pixel: {changes})"
    )
    return 0
