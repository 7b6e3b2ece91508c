"""How far bf16 autocast moves re-scored log-probabilities from fp32 ones, per DDIM step count.

Samples trajectories in fp32, re-scores every transition in fp32 and under bf16 autocast (pxpo keeps
the DDIM and log-prob arithmetic in fp32 either way, so the gap is the network's bf16 rounding), and
prints per step count the largest per-sample mean |log p_bf16 - log p_fp32| in nats, with the step
where it occurred and that step's std. Then it checks that sampling and re-scoring both under bf16
give the stored log-probabilities exactly (ratio 1).

    python benchmarks/bf16_logprob_gap.py --model=shapes-tiny --steps 2 4 10
"""

from __future__ import annotations

import argparse

import torch

from pxpo.backends.registry import load_pipeline
from pxpo.core.trajectory import sample_trajectories, step_gaussian, step_log_prob
from pxpo.backends import backbone_for


def gap(pipe, prompts: list[str], steps: int, seed: int) -> tuple[float, int, float]:
    """(largest per-sample mean |gap| in nats, the transition where, that transition's std)."""
    traj = sample_trajectories(
        backbone_for(pipe), prompts, num_steps=steps, generator=torch.Generator().manual_seed(seed)
    )
    worst = (0.0, -1, 0.0)
    for j in range(steps):
        with torch.no_grad():
            ref = step_log_prob(backbone_for(pipe), traj, j, 5.0)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                lp = step_log_prob(backbone_for(pipe), traj, j, 5.0)
            std = float(step_gaussian(backbone_for(pipe), traj, j, 5.0)[1].flatten()[0])
        g = float((lp - ref).mean(dim=(1, 2, 3)).abs().max())
        if g > worst[0]:
            worst = (g, j, std)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes-tiny")
    ap.add_argument("--steps", type=int, nargs="+", default=[2, 4, 10])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model)
    prompts = ["a red circle on a blue background", "a yellow square on a black background"]
    for steps in args.steps:
        g, j, std = gap(pipe, prompts, steps, args.seed)
        print(
            f"{steps:3d} steps: largest per-sample mean |log-prob gap| {g:.4f} nats at transition {j} (std {std:.4f})"
        )
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        traj = sample_trajectories(
            backbone_for(pipe), prompts, num_steps=4, generator=torch.Generator().manual_seed(args.seed)
        )
        j = torch.tensor([0, 3])
        same = torch.equal(step_log_prob(backbone_for(pipe), traj, j, 5.0), traj.log_probs[torch.arange(2), j])
    print(f"sampled and re-scored under bf16: log-probs equal the stored ones exactly: {same}")


if __name__ == "__main__":
    main()
