"""Refinement from brush strokes, measured: a scripted person refines pictures with ``pxpo refine``.

    python benchmarks/refine.py --seeds 3 4 5                                  # refine's defaults
    python benchmarks/refine.py --seeds 3 4 5 --tag half --set timestep_fraction=0.5
    python benchmarks/refine.py --table                                        # docs/refine_bench.md

The person wants the object gone: on each new picture they paint the object (as the shipped
segmenter sees it, grown by 2 pixels) disliked and the background liked, as someone would with a
brush (:func:`paint`). Each (variant, seed) session, ``--rounds`` rounds of ``pxpo refine`` with
the variant's options, is cached in its own JSON file (``OUT/<tag>/seed<k>.json``); the prompt
is ``PROMPTS[seed % 3]``, so seeds also vary the colours and the shape. Per session it records,
between the first picture and the last one:

* ``object_area``: the share of the picture the segmenter calls object (the person's goal: down);
* ``change_disliked`` / ``change_liked``: mean |change| per pixel (RGB in [0, 1]) on the pixels the
  first strokes disliked / liked (the liked ones should hold);
* per round, refine's own change on the round's marks and the strokes reward.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

OUT = Path("benchmarks/results/refine")
PROMPTS = (
    "a red square on a blue background",
    "a yellow circle on a black background",
    "a green triangle on a white background",
)


# What a cached variant was, where its options do not say it all.
NOTES = {
    "default-anchor-at-start": "made before the KL anchor moved to the parent round (commit 9936094): liked "
    "pixels anchored to the session's starting model",
    "half-anchor-at-start": "as default-anchor-at-start, with timestep_fraction=0.5",
    "studio": "pxpo studio's round settings, run through pxpo refine (the same train_round)",
    "studio-half": "pxpo studio's round settings with timestep_fraction=0.5",
}


def object_marks(image: torch.Tensor, segmenter) -> tuple[torch.Tensor, float]:
    """The scripted person's marks on a picture [3, H, W]: -1 (disliked) on the object as the
    segmenter sees it, grown by 2 pixels, +1 (liked) elsewhere [H, W]; and the object's area
    (share of the picture). ``pxpo refine``'s strokes (:func:`paint`) and the studio demo's marks."""
    mask = segmenter.masks(image[None])[0] > 0.5  # [H, W]
    grown = F.max_pool2d(mask[None, None].float(), 5, stride=1, padding=2)[0, 0] > 0
    return torch.where(grown, -1.0, 1.0), float(mask.float().mean())


def paint(image: torch.Tensor, segmenter) -> tuple[np.ndarray, float]:
    """:func:`object_marks` as a strokes PNG's RGBA [H, W, 4]: red (disliked), green (liked)."""
    marks, area = object_marks(image, segmenter)
    disliked = (marks < 0).numpy()
    rgba = np.zeros((*marks.shape, 4), np.uint8)
    rgba[disliked] = (255, 0, 0, 255)
    rgba[~disliked] = (0, 255, 0, 255)
    return rgba, area


def run_session(out: Path, prompt: str, seed: int, rounds: int, options: list[str]) -> dict:
    """``rounds`` rounds of ``pxpo refine`` in a fresh session folder ``out`` with ``options``
    (``--name=value``), the scripted person painting each new picture. Returns the record, with
    ``tiles`` (picture, strokes overlay, picture, ...) for a figure."""
    from PIL import Image

    from pxpo.cli import main as pxpo
    from pxpo.apps.rounds import read_strokes, strokes_overlay
    from pxpo.testbed.segment import load_segmenter
    from pxpo.apps.studio.store import Store

    shutil.rmtree(out, ignore_errors=True)
    seg = load_segmenter()
    t0 = time.time()
    if pxpo(["refine", f"--dir={out}", f"--prompt={prompt}", f"--seed={seed}", *options]) != 0:
        raise RuntimeError(f"pxpo refine could not start a session in {out}")
    tiles, areas, pictures, first = [], [], [], None
    store = Store(out)  # pxpo refine's session: the studio's format
    for k in range(rounds + 1):
        picture = store.read_picture(store.picture_name(k, seed))  # round k is round k - 1's child
        rgba, area = paint(picture, seg)
        areas.append(area)
        pictures.append(picture)
        tiles.append(picture)
        if k == rounds:
            break
        strokes = out / "strokes" / f"{k:03d}.png"  # the person's files, beside the session's own
        strokes.parent.mkdir(exist_ok=True)
        Image.fromarray(rgba, "RGBA").save(strokes)
        marks = read_strokes(strokes, *picture.shape[-2:])
        first = marks if first is None else first
        tiles.append(strokes_overlay(picture, marks))
        if pxpo(["refine", f"--dir={out}", f"--strokes={strokes}", *options]) != 0:
            raise RuntimeError(f"pxpo refine failed on round {k + 1} in {out}")
    change = (pictures[-1] - pictures[0]).abs().mean(dim=0)  # [H, W] first picture -> last
    per_round = [
        {
            "change_disliked": r["changes"][seed]["change_disliked"],
            "change_liked": r["changes"][seed]["change_liked"],
            "reward_first": r["rewards"][0],
            "reward_last": r["rewards"][-1],
        }
        for r in store.rounds()[1:]
    ]
    return {
        "prompt": prompt,
        "seed": seed,
        "rounds": rounds,
        "options": options,
        "minutes": round((time.time() - t0) / 60, 2),
        "object_area": areas,
        "change_disliked": float(change[first < 0].mean()),
        "change_liked": float(change[first > 0].mean()),
        "per_round": per_round,
        "tiles": tiles,
    }


def summarise(records: list[dict]) -> dict:
    """Mean and spread over seeds of the final measures of one variant's sessions."""

    def ms(values):
        v = np.asarray(values, dtype=float)
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

    return {
        "n": len(records),
        "area_before": ms([r["object_area"][0] for r in records]),
        "area_after": ms([r["object_area"][-1] for r in records]),
        "change_disliked": ms([r["change_disliked"] for r in records]),
        "change_liked": ms([r["change_liked"] for r in records]),
        "ratio": ms([r["change_disliked"] / max(r["change_liked"], 1e-6) for r in records]),
        "minutes": ms([r["minutes"] for r in records]),
    }


def table(out: Path) -> str:
    """The markdown table of every cached variant (one row each, mean ± std over its seeds)."""
    rows = []
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        recs = [json.loads(f.read_text()) for f in sorted(d.glob("seed*.json"))]
        if not recs:
            continue
        s = summarise(recs)
        f = lambda k, n=3: f"{s[k][0]:.{n}f} ± {s[k][1]:.{n}f}"  # noqa: E731, B023 (called within this iteration)
        opts = " ".join(recs[0]["options"]) or "(refine's defaults)"
        rows.append(
            f"| {d.name} | `{opts}` | {', '.join(str(r['seed']) for r in recs)} | {s['area_before'][0]:.3f} -> "
            f"{f('area_after')} | {f('change_disliked')} | {f('change_liked')} | {f('ratio', 1)} | "
            f"{f('minutes', 1)} | {NOTES.get(d.name, '')} |"
        )
    return (
        "| variant | options | seeds | object area, first -> last | change, disliked | change, liked | "
        "ratio | minutes | note |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


DOC = """# Refinement from brush strokes, measured (`pxpo refine`)

Made by `{command}` from the sessions cached in `{out}` (each made by
`python benchmarks/refine.py --seeds ... [--tag T --set ...]`; runs share 2 CPU cores with other jobs, so
minutes are rough). A scripted person wants the object gone: on every new picture they paint the
object (the shipped segmenter's mask, grown by 2 px) disliked and the background liked, {rounds} rounds
per session. Prompt of seed k: `PROMPTS[k % 3]` in `pxpo.bench.refine` ({prompts}).

Measured between the first picture and the last one: the object's area (share of the picture the
segmenter calls object; the person's goal is 0), the mean |change| per pixel (RGB in [0, 1]) on the
pixels the first strokes disliked and liked, and their ratio (mean ± std over seeds).

{table}"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tag", default="default", help="the variant's name (its cache folder)")
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="pxpo refine options of the variant, e.g. timestep_fraction=0.5",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--runs", default="runs/refine_bench", help="where the sessions' folders go")
    ap.add_argument("--redo", action="store_true", help="rerun cached sessions")
    ap.add_argument("--table", action="store_true", help="only build the report from the cache")
    ap.add_argument("--doc", default="docs/refine_bench.md")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.rounds < 1:
        ap.error(f"--rounds={args.rounds}: at least 1")
    bad = [s for s in args.set if "=" not in s]
    if bad:
        ap.error(f"--set {bad[0]!r}: write NAME=VALUE, e.g. timestep_fraction=0.5")
    options = [f"--{s}" for s in args.set] + [f"--threads={args.threads}"]
    if not args.table:
        for seed in args.seeds:
            path = out / args.tag / f"seed{seed}.json"
            if path.is_file() and not args.redo:
                print(f"cached: {path}")
                continue
            rec = run_session(Path(args.runs) / f"{args.tag}-s{seed}", PROMPTS[seed % 3], seed, args.rounds, options)
            rec.pop("tiles")
            rec["options"] = [o for o in rec["options"] if not o.startswith("--threads=")]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rec, indent=1))
            print(
                f"{args.tag} seed {seed}: object area {rec['object_area'][0]:.3f} -> {rec['object_area'][-1]:.3f}, "
                f"change disliked {rec['change_disliked']:.3f} liked {rec['change_liked']:.3f} "
                f"({rec['minutes']:.1f} min)"
            )
    if out.is_dir():
        Path(args.doc).write_text(
            DOC.format(
                command="python benchmarks/refine.py --table",
                out=out,
                rounds=args.rounds,
                prompts="; ".join(f'"{p}"' for p in PROMPTS),
                table=table(out),
            )
        )
        print(f"wrote {args.doc}")
    return 0
