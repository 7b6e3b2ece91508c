"""How much does a picture change when the weights barely move? The floor under every locality number.

    python benchmarks/change_floor.py [--samples 32] [--scales 0.003 0.01 0.03 0.1 0.2] [--trained 5] [--seed 0]
    python benchmarks/change_floor.py --tasks sky-blue top-blue --samples 128 --scales 0.03 0.1   # null locality
    python benchmarks/change_floor.py --model shapes-scenes-flow --tasks sky-blue ...   # on the flow model

Draws scenes pictures from shapes-scenes (``--model``: another model of the scenes world) with the
training recipe's sampler (10 steps, the noisiest half at eta 1, the rest deterministic; ``--trained
10``: every step at eta 1), then again from the same noise through copies of the model
whose every weight tensor got Gaussian noise of ``scale`` times its own std. For each copy it prints
the KL per latent element of the sampled steps (the quantity the KL anchor holds, on the base
model's own trajectories) and the mean absolute change of the pictures (RGB in [0, 1]), the
measure the scenes suite's locality divides. A change that is large at a KL that small is a floor
no anchor can push locality under: the same noise through other weights draws another scene.

``--tasks``: the scenes suite's measures (:func:`pxpo.bench.scenes.measures`) of each noisy copy on
each task's own captions: the locality of a change that knows nothing of the task (its *null
locality*), against which a trained run's locality reads.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from pxpo.backends import backbone_for
from pxpo.backends.registry import load_pipeline
from pxpo.core.objectives import kl_to_reference
from pxpo.core.reuse import step_etas
from pxpo.core.trajectory import sample_trajectories, step_gaussian
from pxpo.prompts import get_prompts
from pxpo.training.config import SampleConfig, TrainConfig

SAMPLE = SampleConfig()  # the recipe's sampler: 10 steps, guidance 5, eta 1 where trained, 0 elsewhere
STEPS, GUIDANCE = SAMPLE.num_steps, SAMPLE.guidance


def recipe_etas(trained: int) -> float | list[float]:
    """The recipe's per-step etas when the update trains the first ``trained`` of the steps."""
    return step_etas(TrainConfig(timestep_fraction=trained / STEPS), SAMPLE)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1, 0.2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trained", type=int, default=5, help="the sampled (eta 1) steps; the rest are deterministic")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="shapes-scenes", help="a model of the scenes world (shapes-scenes-flow)")
    ap.add_argument("--tasks", nargs="+", default=[], help="scenes suite tasks: the null locality of each")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import pxpo.testbed.plugin  # noqa: F401  (registers the scenes world: its model and prompt source)

    backbone = backbone_for(load_pipeline(a.model))
    base = backbone.model
    prompts, _ = get_prompts("scenes")(a.samples, np.random.default_rng(a.seed))
    etas = recipe_etas(a.trained)

    def draw(model):
        return sample_trajectories(
            backbone,
            prompts,
            num_steps=STEPS,
            guidance=GUIDANCE,
            eta=etas,
            generator=torch.Generator().manual_seed(a.seed),
            model=model,
        )

    if a.tasks:
        null_localities(backbone, a)
        return
    before = draw(base)
    print("| weight noise (x std) | KL per element, sampled steps | mean abs change of the pictures |")
    print("|---|---|---|")
    for scale in a.scales:
        noisy = noisy_copy(base, scale, a.seed + 1)
        kl = []
        for j in range(a.trained):
            ref_mean, std, _ = step_gaussian(backbone, before, j, GUIDANCE, 1.0, model=base)
            mean, _, _ = step_gaussian(backbone, before, j, GUIDANCE, 1.0, model=noisy)
            kl.append(kl_to_reference(mean, ref_mean, std).mean())
        after = draw(noisy)
        change = (after.images - before.images).abs().mean()
        print(f"| {scale:g} | {float(torch.stack(kl).mean()):.4f} | {float(change):.3f} |")


def noisy_copy(model, scale: float, seed: int):
    """A copy of ``model`` whose every weight tensor got Gaussian noise of ``scale`` times its own std."""
    noisy = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    for p in noisy.parameters():
        if p.numel() > 1:
            p.add_(torch.randn(p.shape, generator=g) * p.float().std() * scale)
    return noisy


def draw_all(
    backbone, prompts: list[str], model, etas: float | list[float], seed: int, batch: int = 32
) -> torch.Tensor:
    """Pictures [N, 3, H, W] of ``prompts`` through ``model``, in batches, from one seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    return torch.cat(
        [
            sample_trajectories(
                backbone,
                prompts[i : i + batch],
                num_steps=STEPS,
                guidance=GUIDANCE,
                eta=etas,
                generator=gen,
                model=model,
            ).images
            for i in range(0, len(prompts), batch)
        ]
    )


@torch.no_grad()
def null_localities(backbone, a) -> None:
    from pxpo.bench import scenes as suite

    etas = recipe_etas(a.trained)
    print("| task | weight noise (x std) | change in | change out | null locality | target gain | tv ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in a.tasks:
        task = suite.get_task(name)
        prompts, _ = get_prompts("scenes", **task.overrides()["prompts"]["params"])(
            a.samples, np.random.default_rng(a.seed)
        )

        before = draw_all(backbone, prompts, backbone.model, etas, a.seed)
        for scale in a.scales:
            after = draw_all(backbone, prompts, noisy_copy(backbone.model, scale, a.seed + 1), etas, a.seed)
            m = suite.measures(task, before, after, prompts)
            print(
                f"| {name} | {scale:g} | {m['change_in']:.3f} | {m['change_out']:.3f} | {m['locality']:.2f} | "
                f"{m['target_gain']:+.3f} | {m['tv_ratio']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
