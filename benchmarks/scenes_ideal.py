"""What a perfect result scores on each scenes task: the measures' own ceiling and blind spots.

    python benchmarks/scenes_ideal.py [--n 256] [--seed 0] [--tasks TASK ...] [--nearest]

One row per task: the suite's measures (:func:`pxpo.bench.scenes.measures`) of a perfect result
(:mod:`pxpo.bench.scene_ideal`), on ``--n`` of the task's captions drawn exactly by the world. With
``--nearest``, of the nearest picture the world draws instead (the sky or the ground recoloured), for
the tasks that recolour a fixed region or a part.
"""

from __future__ import annotations

import argparse

from pxpo.bench.scene_ideal import ideal, nearest
from pxpo.bench.scenes import TASKS, UNSEEN


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", nargs="+", default=[*TASKS, *UNSEEN])
    ap.add_argument("--nearest", action="store_true", help="the nearest world picture instead of the literal one")
    a = ap.parse_args()
    print(
        "| task | target before | target after | locality (out/in) | tv ratio | parts kept (after - before) | healthy |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in a.tasks:
        m = nearest(name, a.n, a.seed) if a.nearest else ideal(name, a.n, a.seed)
        if m is None:
            continue
        print(
            f"| {name} | {m['target_before']:.3f} | {m['target_after']:.3f} | {m['locality']:.2f} | "
            f"{m['tv_ratio']:.2f} | {m['parts_after'] - m['parts_before']:+.3f} | {m['healthy']} |"
        )


if __name__ == "__main__":
    main()
