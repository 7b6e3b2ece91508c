"""Run every example config and write docs/examples.md with before/after grids and eval rewards.

    python examples/run_all.py [--only NAME ...] [--set KEY=VALUE ...] [--rebuild]

Each example trains with `pxpo train --config=examples/NAME.yaml --seed=0`; its before/after grid
is copied to docs/examples/NAME.png and its summary (eval reward on fixed prompts and noise, before
and after) goes into the table. Rows of examples not rerun are kept from the existing page.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from pxpo.cli import main as pxpo

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
PAGE = DOCS / "examples.md"
HEADER = """# Examples: each shipped per-pixel reward on the embedded model

Regenerate with `python examples/run_all.py` (all) or `python examples/run_all.py --only NAME`.
Each row is one `pxpo train --config=examples/NAME.yaml --seed=0` run on 2 CPU cores; rewards are
the mean over 16 fixed evaluation prompts and noise seeds, before and after training. "measured"
lists the reward's own diagnostics on the same evaluation images, before -> after (e.g.
`object_fraction`: share of the picture the segmenter calls object; `object_inside`: share of the
object inside the box; `colour_in_region`/`colour_on_object`: mean closeness to the target colour
there; `template_iou`: IoU with the target silhouette). "minutes": from the first to the last
evaluation of the run. `--rebuild` rewrites this page from the run directories without training.

Every row except `background_blue` was run before reward maps carried opinion weights and colour
regions were read on the reference picture (2026-11-29, see docs/recipe.md): region colour rewards with
`outside: neutral` (`colour_left_red`, `ddpo_colour_left_red`, `colour_left_red_hold`) and
`colour_object_blue` now train differently. Their configs pin the other settings those runs used;
rerun them with `python examples/run_all.py --only NAME` to refresh their rows.

| example | reward | before | after | measured (before -> after) | minutes | grid (top: before, bottom: after) |
|---|---|---|---|---|---|---|
"""


def old_rows() -> dict[str, str]:
    if not PAGE.is_file():
        return {}
    return {
        line.split("|")[1].strip(): line
        for line in PAGE.read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| example") and "`" in line.split("|")[1]
    }


OUT = HERE.parent / "runs" / "examples"


def run(name: str, extra: list[str]) -> str:
    if (OUT / name).exists():  # a run owns its folder: regenerating an example replaces its old run
        print(f"removing the previous run {OUT / name}")
        shutil.rmtree(OUT / name)
    code = pxpo(
        ["train", f"--config={HERE / (name + '.yaml')}", "--seed=0", f"--out_dir={OUT}", f"--run_name={name}", *extra]
    )
    if code:
        raise SystemExit(f"example {name} failed with exit code {code}")
    return row(name)


def _minutes(run_dir: Path) -> float:
    """Wall-clock minutes of the run's last training (from its first to its last metrics row)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    start = max(i for i, r in enumerate(rows) if r["epoch"] == 0)  # reruns append to the same file
    return (rows[-1]["time"] - rows[start]["time"]) / 60


def row(name: str) -> str:
    """The table row of an example from its run directory (runs/examples/NAME)."""
    summary = json.loads((OUT / name / "summary.json").read_text())
    reward = _reward(OUT / name)
    minutes = _minutes(OUT / name)
    DOCS.joinpath("examples").mkdir(parents=True, exist_ok=True)
    shutil.copy(OUT / name / "before_after.png", DOCS / "examples" / f"{name}.png")
    before, after = summary.get("eval_info_before", {}), summary.get("eval_info_after", {})
    measured = "<br>".join(f"{k}: {before[k]:.3f} -> {after[k]:.3f}" for k in before if k in after)
    return (
        f"| `{name}` | {reward} | {summary['eval_reward_before']:.4f} | {summary['eval_reward_after']:.4f} "
        f"| {measured} | {minutes:.1f} | ![{name}](examples/{name}.png) |"
    )


def _reward(run_dir: Path) -> str:
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    r = cfg["reward"]
    if r["weights"]:
        return " + ".join(f"{w}·{k}" for k, w in r["weights"].items())
    params = ", ".join(f"{k}={v}" for k, v in (r["params"] or {}).items())
    return f"{r['name']}({params}) [{cfg['train']['algorithm']}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", default=None, help="example names (default: all)")
    ap.add_argument("--set", nargs="*", default=[], help="extra --key=value overrides for every run")
    ap.add_argument("--rebuild", action="store_true", help="only rewrite the page from existing run directories")
    args = ap.parse_args()
    names = args.only or sorted(p.stem for p in HERE.glob("*.yaml"))
    rows = old_rows()
    for name in names:
        if args.rebuild:
            if (OUT / name / "summary.json").is_file():
                rows[f"`{name}`"] = row(name)
        else:
            rows[f"`{name}`"] = run(name, [s if s.startswith("--") else f"--{s}" for s in args.set])
        PAGE.write_text(HEADER + "\n".join(rows[k] for k in sorted(rows)) + "\n")
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
