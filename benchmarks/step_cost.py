"""PXPO's training step against DDPO's on the same batch: prints both times and their ratio.

    python benchmarks/step_cost.py [--model=shapes-tiny] [--batch=16] [--steps=20] [--repeats=5]

A "training step" is what the trainer does per minibatch: for every timestep, recompute the
log-probabilities under the current UNet (with CFG), evaluate the clipped objective and back-propagate;
then one AdamW step. Both objectives run on the same stored trajectories and advantages, interleaved,
and the median over repeats is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pxpo.backends.registry import load_pipeline
from pxpo.core.objectives import default_clip_range, objective
from pxpo.core.trajectory import sample_trajectories, step_log_prob
from pxpo.backends import backbone_for


def train_step(pipe, traj, adv, algo, guidance, clip, opt):
    loss_fn = objective(algo, "clipped")
    n_steps = traj.log_probs.shape[1]
    for j in range(n_steps):
        lp = step_log_prob(backbone_for(pipe), traj, j, guidance)
        loss, _ = loss_fn(lp, traj.log_probs[:, j], adv, clip_range=clip)
        (loss / n_steps).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="shapes-tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, device=args.device)
    pipe.unet.requires_grad_(True)
    opt = torch.optim.AdamW(pipe.unet.parameters(), lr=0.0)  # lr 0: same weights for every repeat
    prompts = ["a red circle on a blue background"] * args.batch
    traj = sample_trajectories(
        backbone_for(pipe), prompts, num_steps=args.steps, generator=torch.Generator().manual_seed(0)
    )
    h, w = traj.latents.shape[-2:]
    adv_scalar = torch.randn(args.batch, device=args.device)
    adv_map = torch.randn(args.batch, h, w, device=args.device)
    times = {"ddpo": [], "pxpo": []}
    train_step(pipe, traj, adv_scalar, "ddpo", 5.0, 1e-4, opt)  # warm-up
    for _ in range(args.repeats):
        for algo, adv in (("ddpo", adv_scalar), ("pxpo", adv_map)):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            train_step(pipe, traj, adv, algo, 5.0, default_clip_range(algo, (h, w)), opt)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[algo].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"model={args.model} device={args.device} batch={args.batch} timesteps={args.steps} "
        f"repeats={args.repeats} threads={torch.get_num_threads()}"
    )
    for k in ("ddpo", "pxpo"):
        print(f"{k}: median {med[k]:.3f} s per training step (all: {', '.join(f'{t:.3f}' for t in times[k])})")
    print(f"pxpo / ddpo = {med['pxpo'] / med['ddpo']:.3f}")


if __name__ == "__main__":
    main()
