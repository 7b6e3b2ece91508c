"""The efficiency suite: PXPO against DDPO on per-pixel tasks, measured in reward queries.

    python benchmarks/efficiency.py --tasks bg-blue top-blue --seeds 0 1 2     # one part
    python benchmarks/efficiency.py --table                                   # table from the cache
    python benchmarks/efficiency.py --quick                                   # minutes: a smoke run

Each (task, method, seed) run trains the task's model with ``pxpo train``'s defaults (the recipe), every
timestep trained (``SUITE_RECIPE``: the defaults the suite was measured with), only the reward, the
captions and the method changed, and is cached in its own JSON file
(``OUT/<task>/<method>/seed<k>.json``); ``--table`` builds ``docs/efficiency.md`` and one learning-
curve PNG per task from whatever the cache holds, so the suite runs in parts. B is the default
run's reward queries (epochs x samples per epoch); DDPO runs to ``--ddpo-budget`` x B and is read at
B and at the end. Methods: ``ddpo`` (one scalar, the map's mean, per image; clipped), ``pxpo-sf``,
``pxpo-clipped``. ``--set KEY=VALUE`` changes the recipe for a variant (name it with ``--tag``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from pxpo.bench.report import write_report
from pxpo.bench.tasks import TASKS, get_task, healthy, measures, target_measure

METHODS = {
    "ddpo": {"train": {"algorithm": "ddpo", "objective": "clipped"}},
    "pxpo-sf": {"train": {"algorithm": "pxpo", "objective": "sf"}},
    "pxpo-clipped": {"train": {"algorithm": "pxpo", "objective": "clipped"}},
}
OUT = Path("benchmarks/results/efficiency")
# The recipe every untagged suite run was measured with: pxpo train's defaults before the default
# trained only the noisiest half of the steps (2026-11-29). Pinned so the cache stays one experiment,
# which makes a run here NOT pxpo train's default unless it says so: the default's runs are the variant
# tagged first-half-ode-lr2e-4 (--tag first-half-ode-lr2e-4 --set train.timestep_fraction=0.5
# train.timestep_order=first sample.untrained_eta=0 train.lr=2e-4; first-half-ode is the same at the
# previous lr 1e-4; a run without --set train.lr takes OUT/lr.json's), and tag_conflicts refuses a
# tagged run whose --set differs from its tag's cached runs.
# The KL is pinned too: the suite was measured with one fixed weight on what the reward keeps, before the
# default became the adaptive KL on the unasked pixels (2026-12-05; docs/results/scenes.md).
SUITE_RECIPE = {"train": {"timestep_fraction": 1.0, "timestep_order": "random", "kl_region": "hold", "kl_target": 0.0}}


def set_run(cfg, prog: str, name: str, epochs: int, seed: int, eval_every: int, threads: int, runs_dir, extra) -> None:
    """A suite run's settings on ``cfg``, then ``extra`` (a variant's or method's flags), as pxpo train
    parses them: the run is named ``name`` under ``runs_dir``, without TensorBoard."""
    from pxpo.config import parse_overrides

    flags = [f"--epochs={epochs}", f"--seed={seed}", f"--eval_every={eval_every}", f"--threads={threads}"]
    flags += [f"--out_dir={runs_dir}", f"--run_name={name}", "--tensorboard=false", *extra]
    parse_overrides(cfg, flags, prog=prog, description="")


def train_with_curve(cfg, target) -> tuple:
    """Train ``cfg`` (its run folder replaced: one owner each), reading ``target(images, before)`` at
    every evaluation. Returns the trainer, its run folder, the curve (epoch, queries, target), the
    rows of metrics.jsonl and the seconds training took. The efficiency and scenes suites' runs."""
    from pxpo.training.trainer import Trainer

    shutil.rmtree(Path(cfg.out_dir) / cfg.run_name, ignore_errors=True)
    trainer = Trainer(cfg)
    per_epoch = cfg.sample.batch_size * cfg.sample.num_batches
    curve, state = [], {}

    def hook(epoch, images):
        state.setdefault("before", images)
        m = target(images, state["before"])
        curve.append({"epoch": epoch, "queries": epoch * per_epoch, "target": m})
        return {"target": m}

    trainer.eval_hook = hook
    t0 = time.time()
    run_dir = trainer.train()
    seconds = time.time() - t0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return trainer, run_dir, curve, rows, seconds


def run_one(
    task_name: str,
    method: str,
    seed: int,
    epochs: int,
    extra: list[str],
    out: Path,
    tag: str = "",
    eval_every: int = 6,
    threads: int = 2,
    runs_dir: str = "runs/efficiency",
    recipe: dict | None = None,
    methods: dict | None = None,
) -> dict:
    """Train one (task, method, seed); return and cache its record. ``recipe`` (default ``SUITE_RECIPE``)
    and ``methods`` (default ``METHODS``) let another suite (:mod:`pxpo.bench.flow`) run its own."""
    from pxpo.config import apply_dict
    from pxpo.training.config import RunConfig

    task = get_task(task_name)
    cfg = RunConfig()
    apply_dict(cfg, SUITE_RECIPE if recipe is None else recipe)
    apply_dict(cfg, task.overrides())
    apply_dict(cfg, (METHODS if methods is None else methods)[method])
    name = f"{task_name}-{method}{'-' + tag if tag else ''}-s{seed}"
    set_run(cfg, "efficiency", name, epochs, seed, eval_every, threads, runs_dir, extra)
    trainer, run_dir, curve, rows, seconds = train_with_curve(cfg, lambda x, before: target_measure(task, x, before))
    per_epoch = cfg.sample.batch_size * cfg.sample.num_batches
    evals = {r["epoch"]: r["eval_reward"] for r in rows if "eval_reward" in r}
    for c in curve:
        c["eval_reward"] = evals.get(c["epoch"])
    prompts, _ = trainer.prompts(cfg.eval_samples, np.random.default_rng(cfg.eval_seed))
    record = {
        "task": task_name,
        "method": method,
        "tag": tag,
        "seed": seed,
        "epochs": epochs,
        "queries_per_epoch": per_epoch,
        "extra": extra,
        "seconds": round(seconds, 1),
        "captions": task.captions,
        "curve": curve,
        "run_dir": str(run_dir),
        "final": measures(task, trainer.before_images, trainer.after_images, prompts),
        "eval_reward_before": curve[0]["eval_reward"],
        "eval_reward_after": curve[-1]["eval_reward"],
    }
    path = cache_path(out, task_name, method, tag, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return record


def remeasure(path: Path) -> bool:
    """Recompute a cached record's measures from its run's evaluation grids (after the measures
    changed); False when the run folder is gone."""
    from pxpo.images import read_grid as load

    r = json.loads(path.read_text())
    samples = Path(r["run_dir"]) / "samples"
    if not (samples / "epoch_0000_before.png").is_file():
        return False
    task = get_task(r["task"])
    before = load(samples / "epoch_0000_before.png")
    for c in r["curve"]:
        grid = samples / (f"epoch_{c['epoch']:04d}.png" if c["epoch"] else "epoch_0000_before.png")
        if grid.is_file():
            c["target"] = target_measure(task, load(grid), before)
    last = samples / f"epoch_{r['curve'][-1]['epoch']:04d}.png"
    prompts = [""] * len(before) if r["captions"] == "open" else None
    if prompts is not None and last.is_file():
        r["final"] = measures(task, before, load(last), prompts)
    path.write_text(json.dumps(r, indent=1))
    return True


def cache_path(out: Path, task: str, method: str, tag: str, seed: int) -> Path:
    return out / task / (method + (f"@{tag}" if tag else "")) / f"seed{seed}.json"


def recipe_of(extra: list[str], lr: float) -> dict[str, str]:
    """A run's recipe overrides as {key: value}: the model folder left out (a task's own), the learning
    rate filled in with ``lr`` (the tuned one) when not given, numbers compared by value, options that
    moved (``RunConfig.MOVED``, e.g. train.part_scale) under their new names."""
    from pxpo.training.config import RunConfig

    kv = dict(e.lstrip("-").split("=", 1) for e in extra)
    kv = {RunConfig.MOVED.get(k, k): v for k, v in kv.items()}
    if kv.get("train.adv_norm") == "pixel-std":
        kv["train.adv_norm"], kv["experimental.adv_norm"] = "pixel", "pixel-std"
    kv.pop("model.name", None)
    kv.setdefault("train.lr", str(lr))

    def norm(v: str) -> str:
        try:
            return repr(float(v))
        except ValueError:
            return v

    return {k: norm(v) for k, v in kv.items()}


def tag_conflicts(out: Path, tag: str, extra: list[str], tuned: dict) -> list[str]:
    """Cached runs of ``tag`` whose recipe differs from this invocation's ``--set``: a variant's name
    must mean one recipe, or its rows compare different experiments (a tag's runs once went in
    without its ``--set``). The untagged legacy cache is not checked."""
    from pxpo.training.config import TrainConfig

    if not tag:
        return []
    bad = []
    for path in sorted(out.glob(f"*/*@{tag}/seed*.json")):
        r = json.loads(path.read_text())
        lr = tuned.get(r["method"], TrainConfig().lr)  # the lr a run without --train.lr gets
        if recipe_of(r["extra"], lr) != recipe_of(extra, lr):
            bad.append(f"{path} ran with {' '.join(r['extra']) or 'no --set'}")
    return bad


def load_cache(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*/*/seed*.json"))]


def sweep_lr(a, out: Path, epochs: int, extra: list[str]) -> dict:
    """Each method's learning rate from runs on the tuning seed (cached under OUT/tune, not reported)."""
    tune = out / "tune"
    picked = {}
    for method in a.methods:
        scores = {}
        for lr in a.sweep_lr:
            gains, ok = [], True
            for task in a.tasks:
                path = cache_path(tune, task, method, f"lr{lr:g}", a.tune_seed)
                r = (
                    json.loads(path.read_text())
                    if path.is_file()
                    else run_one(
                        task,
                        method,
                        a.tune_seed,
                        epochs,
                        [*extra, f"--train.lr={lr}"],
                        tune,
                        f"lr{lr:g}",
                        a.eval_every,
                        a.threads,
                        a.runs,
                    )
                )
                gains.append(r["final"]["target_gain"])
                ok &= healthy(get_task(task), r["final"])
            scores[lr] = (ok, float(np.mean(gains)))
            print(f"tune {method} lr {lr:g}: mean gain {scores[lr][1]:+.3f}, healthy {ok}", flush=True)
        picked[method] = max(scores, key=lambda lr: scores[lr])  # healthy first, then the larger gain
    # read just before writing: sweeps of other methods may run beside this one
    choice = {**(json.loads((out / "lr.json").read_text()) if (out / "lr.json").is_file() else {}), **picked}
    (out / "lr.json").write_text(json.dumps(choice, indent=1))
    return choice


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="benchmarks/efficiency.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", nargs="+", default=list(TASKS), help=f"suite tasks ({', '.join(TASKS)}) or unseen ones")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument(
        "--seeds",
        nargs="*",
        type=int,
        default=[0, 1, 2],
        help="reported seeds; given empty (--seeds --sweep-lr ...), only the learning-rate sweep runs",
    )
    p.add_argument(
        "--epochs", type=int, default=0, help="epochs of a run (0 = pxpo train's default); B = epochs x samples"
    )
    p.add_argument("--ddpo-budget", type=int, default=3, help="DDPO runs this many times B")
    p.add_argument("--eval-every", type=int, default=6)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides, e.g. train.lr=1e-4")
    p.add_argument("--tag", default="", help="name of a recipe variant (cached apart)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(OUT), help="the cache folder")
    p.add_argument("--runs", default="runs/efficiency", help="where the runs' own folders go")
    p.add_argument("--redo", action="store_true", help="rerun cached (task, method, seed) runs")
    p.add_argument("--table", action="store_true", help="only build the report from the cache")
    p.add_argument(
        "--remeasure",
        action="store_true",
        help="with --table: recompute cached measures from the "
        "runs' grids first (open-caption tasks whose run folders are still there)",
    )
    p.add_argument("--doc", default="docs/efficiency.md")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 tasks, 1 seed, 6 epochs, into OUT/quick")
    p.add_argument(
        "--sweep-lr",
        nargs="*",
        type=float,
        default=[],
        metavar="LR",
        help="first tune each method's learning rate on --tune-seed (not reported): the lr with the best "
        "mean gain over the tasks among healthy runs goes to OUT/lr.json, which later runs use",
    )
    p.add_argument("--tune-seed", type=int, default=100)
    a = p.parse_args(argv)
    from pxpo.training.config import RunConfig

    out = Path(a.out)
    if a.quick:
        a.tasks, a.seeds, a.epochs, a.eval_every, a.ddpo_budget = a.tasks[:2], a.seeds[:1], 6, 3, 1
        a.doc, out = str(out / "quick" / "efficiency.md"), out / "quick"
    for t in a.tasks:
        get_task(t)
    epochs = a.epochs or RunConfig().epochs
    if epochs % a.eval_every:
        p.error(f"--eval-every={a.eval_every} must divide the epochs ({epochs}) so every run is measured at B")
    extra = [f"--{kv}" for kv in a.set]
    if a.sweep_lr and not a.table:
        sweep_lr(a, out, epochs, extra)
    tuned = json.loads((out / "lr.json").read_text()) if (out / "lr.json").is_file() else {}
    if not a.table:
        if bad := tag_conflicts(out, a.tag, extra, tuned):
            p.error(
                f"--tag {a.tag} already names another recipe than --set {' '.join(a.set) or '(none)'}: "
                + "; ".join(bad[:3])
                + f"{' ...' if len(bad) > 3 else ''}. Pass the same --set as those runs, "
                "or name this variant with a new --tag"
            )
        for task in a.tasks:
            for seed in a.seeds:
                for method in a.methods:
                    if cache_path(out, task, method, a.tag, seed).is_file() and not a.redo:
                        continue
                    n = epochs * (a.ddpo_budget if method == "ddpo" else 1)
                    lr = (
                        [f"--train.lr={tuned[method]}"]
                        if method in tuned and not any("train.lr" in e for e in extra)
                        else []
                    )
                    r = run_one(task, method, seed, n, lr + extra, out, a.tag, a.eval_every, a.threads, a.runs)
                    f = r["final"]
                    print(
                        f"{task} {method}{'@' + a.tag if a.tag else ''} seed {seed}: target "
                        f"{f['target_before']:.3f} -> {f['target_after']:.3f}, locality {f.get('locality', float('nan')):.2f}, "
                        f"shape kept {f['shape_kept']:.2f}, tv {f['tv_ratio']:.2f}, {r['seconds'] / 60:.1f} min",
                        flush=True,
                    )
    if a.remeasure:
        for path in sorted(out.glob("*/*/seed*.json")):
            print(f"{path}: {'remeasured' if remeasure(path) else 'run folder gone, kept'}")
    doc = write_report(
        load_cache(out),
        epochs,
        Path(a.doc),
        " ".join(["python benchmarks/efficiency.py", *(argv or [])]),
        load_cache(out / "tune"),
        tuned,
    )
    print(f"wrote {doc}")
    return 0
