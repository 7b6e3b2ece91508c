"""The scenes suite (pxpo.bench.scenes): per-part tasks on shapes-scenes, pxpo train's recipe and its variants.

    python benchmarks/scenes.py --tasks sky-blue top-blue --variants fixed-hold adaptive --seeds 0 1
    python benchmarks/scenes.py --table          # the markdown table of every cached run
    python benchmarks/scenes.py --remeasure      # every cached record's measures again, from its run's grids
    python benchmarks/scenes.py --tasks top-blue --variants ddpo-adaptive --epochs 90   # DDPO to 3B queries
    python benchmarks/scenes.py --efficiency adaptive ddpo-adaptive   # PXPO at B against DDPO at B and 3B
    python benchmarks/scenes.py --efficiency slow-tighten ddpo-slow-tighten --large   # B against 3B, 128 pictures
    python benchmarks/scenes.py --compare adaptive adaptive-tight     # variants on the same tasks and seeds
    python benchmarks/scenes.py --by-seed adaptive  # each task's seeds by gain, with the anchor's final weight
    python benchmarks/scenes.py --compare adaptive slow-tighten --large   # from the final measures on 128 pictures
    python benchmarks/scenes.py --bars slow-tighten   # the gain and locality bars on 16 and on 128 pictures
    python benchmarks/scenes.py --curves         # plot every cached run of 5B or more to docs/results/scenes/

Each (task, variant, seed) is cached in benchmarks/results/scenes/<task>/<variant>/seed<k>.json; a cached
one is skipped unless --force. Two of these processes with --threads 1 share a 2-core machine well.
"""

import argparse
import json
from pathlib import Path

from pxpo.bench.scene_tables import bars, by_seed, compare, efficiency, load_records, plot_curve, table
from pxpo.bench.scene_runs import B_EPOCHS, FINAL_N, cache_path, remeasure, run_one
from pxpo.bench.scenes import OUT, TASKS, VARIANTS, get_task


RUN_VARIANTS = ["fixed-hold", "adaptive"]  # what a plain run trains when --variants is not given


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", help="tasks to run (default: the twelve); with --table, the rows")
    ap.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        help=f"variants to run (default: {' '.join(RUN_VARIANTS)}); with --table, the rows",
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--efficiency", nargs=2, metavar=("PXPO", "DDPO"), help="the efficiency table of two variants")
    ap.add_argument("--compare", nargs="+", metavar="VARIANT", help="variants on the (task, seed) runs they share")
    ap.add_argument("--by-seed", metavar="VARIANT", help="a variant's seeds by gain, with the anchor's final weight")
    ap.add_argument("--curves", action="store_true", help="plot the curves of cached runs of 5B or more")
    ap.add_argument("--remeasure", action="store_true", help="recompute cached records' measures from their runs")
    ap.add_argument("--bars", metavar="VARIANT", help="a variant's bars on 16 and on --final-n pictures")
    ap.add_argument("--final-n", type=int, default=FINAL_N, help="pictures of the final measures on more pictures")
    ap.add_argument("--runs", default="runs/scenes", help="where the runs are written")
    ap.add_argument(
        "--large",
        action="store_true",
        help="--compare, --by-seed, --table and --efficiency (B against 3B; DDPO at B is on the curve's 16 "
        "pictures only) from the final measures on --final-n pictures (runs that have them)",
    )
    a = ap.parse_args()
    records = load_records()
    if a.large:
        records = [{**r, "final": r["final_large"]} for r in records if "final_large" in r]
    if a.remeasure:
        for r in load_records():
            path = cache_path(OUT, r["task"], r["variant"], r["seed"], r["epochs"])
            path.write_text(json.dumps(remeasure(r), indent=1))
        print(table(load_records()))
        return
    if a.efficiency:
        # DDPO at B is read on its run's curve (16 pictures); with --large, B against 3B on 128 pictures only
        print(efficiency(records if a.large else load_records(), *a.efficiency, ddpo_at_b=not a.large))
        return
    if a.curves:
        for r in load_records():
            if r["epochs"] >= 5 * B_EPOCHS:
                name = f"{r['task']}-{r['variant']}-s{r['seed']}-e{r['epochs']}.png"
                print(plot_curve(r, Path("docs/results/scenes") / name))
        return
    if a.compare:
        print(compare(records, a.compare))
        return
    if a.bars:
        print(bars(load_records(), a.bars))
        return
    if a.by_seed:
        print(by_seed(records, a.by_seed))
        return
    if a.table:
        print(table([r for r in records if r["variant"] in (a.variants or VARIANTS)], a.tasks))
        return
    for seed in a.seeds:
        for task in a.tasks or list(TASKS):
            for variant in a.variants or RUN_VARIANTS:
                if cache_path(OUT, task, variant, seed, a.epochs).is_file() and not a.force:
                    continue
                if variant == "unasked" and get_task(task).outside == "keep":
                    continue  # the reward has an opinion everywhere: unasked anchors what hold does
                r = run_one(task, variant, seed, a.epochs, threads=a.threads, runs_dir=a.runs, final_n=a.final_n)
                f = r["final"]
                print(
                    f"{task} {variant} s{seed}: target {f['target_before']:.3f} -> {f['target_after']:.3f}, "
                    f"locality {f['locality']:.2f}, tv {f['tv_ratio']:.2f}, parts {f['parts_before']:.2f} -> "
                    f"{f['parts_after']:.2f}, kl_coef {r['kl_coef_last']}, {r['seconds']:.0f}s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
