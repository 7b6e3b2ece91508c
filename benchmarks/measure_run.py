"""A run's pictures judged by an efficiency-suite task's measures, at every evaluation.

    python benchmarks/measure_run.py RUN_DIR --task bg-blue

Reads the run's evaluation grids (samples/epoch_0000_before.png and each samples/epoch_NNNN.png: the
same prompts and noise) and prints, per evaluation, the task's target measure, its gain, locality
(mean |change| outside the region / inside), shape kept and the total-variation ratio
(``pxpo.bench.tasks.measures``). Captions are read from the run's config when they are world captions.
``--floor`` adds, for the last evaluation, the locality that the VAE decoder alone would give if
only the region's latents had changed (``pxpo.bench.floor``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from pxpo.bench.tasks import eval_prompts, get_task, measures
from pxpo.images import read_grid

KEYS = (
    "target_before",
    "target_after",
    "target_gain",
    "change_in",
    "change_out",
    "locality",
    "shape_kept",
    "shape_acc_before",
    "shape_acc_after",
    "tv_ratio",
    "healthy",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--task", required=True, help="a task of pxpo.bench.tasks (e.g. bg-blue)")
    ap.add_argument("--json", action="store_true", help="print one JSON object per evaluation")
    ap.add_argument("--floor", action="store_true", help="also the decoder's locality floor for the last evaluation")
    a = ap.parse_args(argv)
    task = get_task(a.task)

    before = read_grid(a.run / "samples" / "epoch_0000_before.png")
    prompts = eval_prompts(a.run, len(before))
    grids = [g for g in sorted((a.run / "samples").glob("epoch_*.png")) if "before" not in g.name]
    for grid in grids:
        m = measures(task, before, read_grid(grid), prompts)
        if a.json:
            print(json.dumps({"grid": grid.name, **m}))
        else:
            print(
                grid.name,
                "  ".join(f"{k} {m[k]:.3f}" if isinstance(m[k], float) else f"{k} {m[k]}" for k in KEYS if k in m),
            )
    if a.floor and grids:
        import yaml

        from pxpo.bench.floor import decoder_floor
        from pxpo.backends.registry import load_pipeline

        model = yaml.safe_load((a.run / "config.yaml").read_text())["model"]["name"]  # the VAE is not trained
        f = decoder_floor(load_pipeline(model).vae, task, before, read_grid(grids[-1]))
        print(
            json.dumps({"grid": grids[-1].name, **f})
            if a.json
            else f"{grids[-1].name} through the VAE: locality {f['locality_vae']:.3f} "
            f"({f['change_out_vae']:.3f} / {f['change_in_vae']:.3f}); decoder floor, only the region's latents "
            f"changed: {f['locality_floor']:.3f} ({f['floor_change_out']:.3f} / {f['floor_change_in']:.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
