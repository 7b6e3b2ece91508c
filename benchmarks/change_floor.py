"""How much does a picture change when the weights barely move? The floor under every locality number.

    python benchmarks/change_floor.py [--samples 32] [--scales 0.003 0.01 0.03 0.1 0.2] [--trained 5] [--seed 0]

Draws scenes pictures from shapes-scenes with the training recipe's sampler (10 steps, the noisiest
half at eta 1, the rest deterministic; ``--trained 10``: every step at eta 1), then again from the same noise through copies of the model
whose every weight tensor got Gaussian noise of ``scale`` times its own std. For each copy it prints
the KL per latent element of the sampled steps (the quantity the KL anchor holds, on the base
model's own trajectories) and the mean absolute change of the pictures (RGB in [0, 1]), the
measure the scenes suite's locality divides. A change that is large at a KL that small is a floor
no anchor can push locality under: the same noise through other weights draws another scene.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from pxpo.backends import backbone_for
from pxpo.backends.registry import load_pipeline
from pxpo.core.objectives import kl_to_reference
from pxpo.core.trajectory import sample_trajectories, step_gaussian
from pxpo.prompts import get_prompts

STEPS, GUIDANCE = 10, 5.0


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1, 0.2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trained", type=int, default=5, help="the sampled (eta 1) steps; the rest are deterministic")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import pxpo.testbed.plugin  # noqa: F401  (registers the scenes world: its model and prompt source)

    backbone = backbone_for(load_pipeline("shapes-scenes"))
    base = backbone.model
    prompts, _ = get_prompts("scenes")(a.samples, np.random.default_rng(a.seed))
    etas = [1.0] * a.trained + [0.0] * (STEPS - a.trained)

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

    before = draw(base)
    print("| weight noise (x std) | KL per element, sampled steps | mean abs change of the pictures |")
    print("|---|---|---|")
    for scale in a.scales:
        noisy = copy.deepcopy(base)
        g = torch.Generator().manual_seed(a.seed + 1)
        for p in noisy.parameters():
            if p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=g) * p.float().std() * scale)
        kl = []
        for j in range(a.trained):
            ref_mean, std, _ = step_gaussian(backbone, before, j, GUIDANCE, 1.0, model=base)
            mean, _, _ = step_gaussian(backbone, before, j, GUIDANCE, 1.0, model=noisy)
            kl.append(kl_to_reference(mean, ref_mean, std).mean())
        after = draw(noisy)
        change = (after.images - before.images).abs().mean()
        print(f"| {scale:g} | {float(torch.stack(kl).mean()):.4f} | {float(change):.3f} |")


if __name__ == "__main__":
    main()
