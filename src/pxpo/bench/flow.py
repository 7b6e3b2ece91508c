"""The flow suite: the three per-pixel credit designs and scalar GRPO on the embedded flow model.

    python benchmarks/flow.py --tasks bg-blue-parts --seeds 0          # run (cached per task, method, seed)
    python benchmarks/flow.py --table                                  # the table from the cache

Each run is the suite task's reward and captions (:mod:`pxpo.bench.tasks`) on ``shapes-flow`` with
``pxpo train``'s defaults (the recipe), only the credit design changed, at equal reward queries:

- ``pixel``: a per-location advantage with a per-location ratio (PXPO; BoxFlow-GRPO's design);
- ``detached``: the same advantages, a ratio whose value is the picture's and whose gradient is each
  location's (Flow-Factory's and DenseFlow-GRPO's option);
- ``mask``: one advantage per picture (the map's mean), kept only where the map has an opinion
  (DenseFlow-GRPO's use of a heatmap);
- ``grpo``: one scalar per picture, the map's mean, its advantage normalised within each prompt's
  group of 4 (Flow-GRPO; here the 4 share x_T and differ in their step noise, pxpo's shared-noise
  groups, where Flow-GRPO draws each from its own x_T), run to 3x the queries and read at B and at
  the end.

Measures as the efficiency suite's (:func:`pxpo.bench.tasks.measures`); records in
``benchmarks/results/flow/<task>/<method>/seed<k>.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


from pxpo.bench.efficiency import cache_path, run_one
from pxpo.bench.scene_tables import gain_at, mean_sd
from pxpo.bench.scenes import GRPO_RECIPE
from pxpo.bench.tasks import get_task

OUT = Path("benchmarks/results/flow")
MODEL = "shapes-flow"
# The whole background, a fixed half, the object, a fixed quarter, and a two-sided map (each half its own
# colour: the efficiency suite's multi-part task).
TASKS = ("bg-blue-parts", "top-blue-parts", "object-yellow-parts", "quarter-green-parts", "left-red-right-blue")
METHODS = {
    "pixel": {"train": {"algorithm": "pxpo", "credit": "pixel"}},
    "detached": {"train": {"algorithm": "pxpo", "credit": "detached"}},
    "mask": {"train": {"algorithm": "pxpo", "credit": "mask"}},
    "grpo": GRPO_RECIPE,
}
BUDGET = {"grpo": 3}  # times B
# The anchor every flow record was measured with (pxpo train's defaults then), so that a cached record
# stays what it was whatever the defaults become.
FLOW_RECIPE = {"train": {"kl_region": "unasked", "kl_target": 0.01, "kl_tighten_rate": 0.2, "kl_loosen_rate": 0.2}}


def table(records: list[dict], epochs: int) -> str:
    """Markdown: per task, each design's target gain at B and GRPO's at B and 3B, mean ± std over seeds,
    with locality and the healthy share."""

    def at(r, epoch):
        return get_task(r["task"]).sign * gain_at(r, epoch)

    head = ["pixel", "detached", "mask", "grpo"]
    lines = [
        "| task | " + " | ".join(f"{m} at B" for m in head) + " | grpo at 3B | locality (pixel / grpo 3B) | seeds |",
        "|---|" + "---|" * (len(head) + 3),
    ]
    for t in sorted({r["task"] for r in records}):
        rs = {m: [r for r in records if r["task"] == t and r["method"] == m] for m in head}
        cells = [mean_sd([at(r, epochs) for r in rs[m]]) for m in head]
        loc = [
            mean_sd([r["final"].get("locality", float("nan")) for r in rs[m]]).lstrip("+") for m in ("pixel", "grpo")
        ]
        n = "/".join(str(len(rs[m])) for m in head)
        lines.append(
            f"| {t} | " + " | ".join(cells) + f" | {mean_sd([r['final']['target_gain'] for r in rs['grpo']])} | "
            f"{loc[0]} / {loc[1]} | {n} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="benchmarks/flow.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=0, help="B in epochs (0 = pxpo train's default)")
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default=MODEL, help="the flow model (a name or a pipeline folder)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides, e.g. sample.eta=0.7")
    p.add_argument("--runs", default="runs/flow", help="where the runs' own folders go")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--table", action="store_true", help="only print the table of the cache")
    a = p.parse_args(argv)
    from pxpo.training.config import RunConfig

    out, epochs = Path(a.out), a.epochs or RunConfig().epochs
    for t in a.tasks:
        get_task(t)
    if not a.table:
        for task in a.tasks:
            for seed in a.seeds:
                for method in a.methods:
                    if cache_path(out, task, method, "", seed).is_file():
                        continue
                    n = epochs * BUDGET.get(method, 1)
                    extra = [f"--model.name={a.model}", *(f"--{kv}" for kv in a.set)]
                    r = run_one(
                        task,
                        method,
                        seed,
                        n,
                        extra,
                        out,
                        eval_every=a.eval_every,
                        threads=a.threads,
                        runs_dir=a.runs,
                        recipe=FLOW_RECIPE,
                        methods=METHODS,
                    )
                    f = r["final"]
                    print(
                        f"{task} {method} seed {seed}: target {f['target_before']:.3f} -> {f['target_after']:.3f}, "
                        f"locality {f.get('locality', float('nan')):.2f}, tv {f['tv_ratio']:.2f}, "
                        f"{r['seconds'] / 60:.1f} min",
                        flush=True,
                    )
    records = [json.loads(q.read_text()) for q in sorted(out.glob("*/*/seed*.json"))]
    print(table(records, epochs))
    return 0
