"""A scripted person refines one picture round after round with `pxpo refine` (brush strokes).

    python examples/refine_demo.py [--rounds=3] [--seed=3]

The "person" wants the object gone: on each new picture they paint the object (as the shipped
segmenter sees it, grown by 2 pixels) red = disliked and the background green = liked, exactly as
someone would with a brush. Writes docs/refine.png (picture, strokes, picture, ... ) and
docs/refine.md (per-round change on liked/disliked pixels and the object's area).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pxpo.bench.refine import PROMPTS, run_session
from pxpo.images import labelled_rows, make_grid, save
from pxpo.apps.studio.store import Store

ROOT = Path(__file__).resolve().parent.parent
PROMPT = PROMPTS[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "runs" / "refine_demo"))
    args = ap.parse_args()
    out = Path(args.out)
    rec = run_session(out, PROMPT, args.seed, args.rounds, [])  # the scripted person (pxpo.bench.refine.paint)
    tiles, areas = rec["tiles"], rec["object_area"]
    store = Store(out)
    minutes = rec["minutes"]
    labels = " | ".join([f"round {k}" + (" | strokes" if k < args.rounds else "") for k in range(args.rounds + 1)])
    save(
        labelled_rows([make_grid(torch.stack(tiles), nrow=len(tiles), scale=3)], [labels]), ROOT / "docs" / "refine.png"
    )
    rounds = store.rounds()[1:]
    rows = [
        f"| {k + 1} | {r['changes'][args.seed]['change_disliked']:.3f} | {r['changes'][args.seed]['change_liked']:.3f} "
        f"| {areas[k]:.3f} -> {areas[k + 1]:.3f} | {r['rewards'][0]:.3f} -> {r['rewards'][-1]:.3f} |"
        for k, r in enumerate(rounds)
    ]
    (ROOT / "docs" / "refine.md").write_text(
        f"""# Refining one picture from brush strokes (`pxpo refine`)

Made by `python examples/refine_demo.py --rounds={args.rounds} --seed={args.seed}` ({minutes:.1f} min on 2 CPU
cores, while other jobs shared them; `pxpo refine` defaults: 4 PXPO epochs x 8 variations per round,
lr 1e-4, every step trained, the liked pixels held by the KL anchor (kl_coef 1.0) to the previous
round's weights, earlier strokes replayed). Prompt: "{PROMPT}", seed {args.seed}. A scripted person wants the object gone: on every
new picture they paint the object (the shipped segmenter's mask, grown by 2 px) as disliked (red)
and the background as liked (green).

![rounds](refine.png)

Mean |change| per pixel (RGB in [0, 1]) from the previous round's picture, on the pixels the person
disliked and liked; the object's area (share of the picture the segmenter calls object); the
strokes reward (mean over variations) at the first and last epoch of the round.

| round | change, disliked | change, liked | object area | strokes reward |
|---|---|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
    )
    print(f"wrote docs/refine.md and docs/refine.png ({minutes:.1f} min)")


if __name__ == "__main__":
    main()
