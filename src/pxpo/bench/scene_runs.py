"""Running the scenes suite: one (task, variant, seed) trained with ``pxpo train``'s recipe plus the
variant's flags, measured by :func:`pxpo.bench.scenes.measures` and cached as a JSON record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pxpo.bench.efficiency import set_run, train_with_curve
from pxpo.bench.scenes import OUT, VARIANTS, get_task, measures, target_measure
from pxpo.errors import UserError

B_EPOCHS = 30  # pxpo train's default epochs: B reward queries (epochs x samples per epoch)
# The final measures also on this many pictures (the curve's evaluations keep pxpo train's 16): on 16,
# one picture's sky turning blue or not moves a task's target by 0.06, as much as the spread over seeds.
FINAL_N = 128


def cache_path(out: Path, task: str, variant: str, seed: int, epochs: int = B_EPOCHS) -> Path:
    return out / task / variant / (f"seed{seed}.json" if epochs == B_EPOCHS else f"seed{seed}-e{epochs}.json")


def run_name(task: str, variant: str, seed: int, epochs: int = B_EPOCHS) -> str:
    """The run folder's name: a longer run of the same (task, variant, seed) gets its own folder, so that
    it does not replace the B run's pictures that --remeasure reads."""
    return f"{task}-{variant}-s{seed}" + ("" if epochs == B_EPOCHS else f"-e{epochs}")


def run_one(
    task_name: str,
    variant: str,
    seed: int,
    epochs: int = 30,
    out: Path = OUT,
    threads: int = 1,
    runs_dir: str = "runs/scenes",
    eval_every: int = 5,
    final_n: int = 0,
) -> dict:
    """Train one (task, variant, seed) with pxpo train's defaults plus the variant; cache its record.
    ``final_n`` > 0: the final measures also on that many pictures (``record["final_large"]``)."""
    from pxpo.config import apply_dict
    from pxpo.training.config import RunConfig

    task = get_task(task_name)
    if variant not in VARIANTS:
        raise UserError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    cfg = RunConfig()
    apply_dict(cfg, task.overrides())
    name = run_name(task_name, variant, seed, epochs)
    extra = VARIANTS[variant]
    set_run(cfg, "scenes-suite", name, epochs, seed, eval_every, threads, runs_dir, extra)
    trainer, run_dir, curve, rows, seconds = train_with_curve(cfg, lambda x, before: target_measure(task, x, before))
    kl_coef = [r["kl_coef"] for r in rows if "kl_coef" in r]
    prompts, _ = trainer.prompts(cfg.eval_samples, np.random.default_rng(cfg.eval_seed))
    record = {
        "task": task_name,
        "variant": variant,
        "seed": seed,
        "epochs": epochs,
        "extra": extra,
        "seconds": round(seconds, 1),
        "curve": curve,
        "run_dir": str(run_dir),
        "kl_coef_last": kl_coef[-1] if kl_coef else None,
        "final": measures(task, trainer.before_images, trainer.after_images, prompts),
    }
    if final_n:
        before, after, prompts = paired_pictures(trainer, final_n)
        record["final_large"] = {"n": final_n, **measures(task, before, after, prompts)}
        trainer.run.grid("final_before.png", before, nrow=16)  # for remeasure
        trainer.run.grid("final_after.png", after, nrow=16)
    path = cache_path(out, task_name, variant, seed, epochs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return record


@torch.no_grad()
def paired_pictures(trainer, n: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` pictures of the starting model (before) and of the trained one (after) from the same
    captions and noise, drawn as the trainer's evaluation draws them (its first ``eval_samples`` are
    the evaluation's): the pairs of the final measures, on more pictures than the curve's."""
    cfg = trainer.cfg
    prompts, meta = trainer.prompts(n, np.random.default_rng(cfg.eval_seed))
    gen = torch.Generator().manual_seed(cfg.eval_seed)
    uses, trainer.use_reference = trainer.use_reference, True  # the reference draw is the starting model's
    before, after = [], []
    try:
        for i in range(0, n, cfg.sample.batch_size):
            tr = trainer.sample(prompts[i : i + cfg.sample.batch_size], meta[i : i + cfg.sample.batch_size], gen)
            after.append(tr.images.cpu())
            before.append(torch.stack([m["reference"] for m in tr.metadata]).cpu())
    finally:
        trainer.use_reference = uses
    return torch.cat(before), torch.cat(after), prompts


def remeasure(record: dict) -> dict:
    """``record``'s final measures again, from its run's saved grids (the first evaluation and the last)
    and the evaluation captions its config draws: for records made before a measure changed. The measures
    on more pictures (``final_large``) too, where the run saved their grids."""
    from pxpo.bench.tasks import eval_prompts
    from pxpo.images import read_grid

    run = Path(record["run_dir"])
    samples = run / "samples"
    before = read_grid(samples / "epoch_0000_before.png")
    after = read_grid(sorted(g for g in samples.glob("epoch_*.png") if "before" not in g.name)[-1])
    task = get_task(record["task"])
    out = {**record, "final": measures(task, before, after, eval_prompts(run, len(before)))}
    if "final_large" in record and (samples / "final_after.png").is_file():  # the grids of run_one's final_n
        before, after = read_grid(samples / "final_before.png"), read_grid(samples / "final_after.png")
        out["final_large"] = {"n": len(before), **measures(task, before, after, eval_prompts(run, len(before)))}
    return out
