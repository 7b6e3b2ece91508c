"""Per-step gradient norms of PXPO's and DDPO's losses on one epoch of a run, and the angle between them.

    python benchmarks/step_norms.py [--threads=2] [pxpo train options, e.g. --seed=0 --sample.num_steps=20]

Samples one epoch as `pxpo train` would (its defaults, every step), computes the run's per-pixel
advantages (PXPO) and the batch-normalised mean reward (DDPO), and for each DDIM step alone
backpropagates each method's clipped loss at ratio 1 through the policy. It prints, per step: the
step's std, its gain (``sampling.step_gain``), both gradient norms and their cosine. Nothing is
trained. On the default run (seed 0) it printed docs/recipe.md's finding 21 (about 15 s here).
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    args, extra = ap.parse_known_args(argv)
    torch.set_num_threads(args.threads)

    from pxpo.config import parse_overrides
    from pxpo.backends.presets import apply_preset
    from pxpo.core.objectives import ddpo_clipped, pxpo_clipped
    from pxpo.backends.ddim import step_gain
    from pxpo.core.gaussian import gaussian_log_prob
    from pxpo.training.config import RunConfig
    from pxpo.training.trainer import Trainer
    from pxpo.core.trajectory import step_gaussian

    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_overrides(
            RunConfig(),
            [
                "--train.timestep_fraction=1.0",
                f"--out_dir={tmp}",
                "--run_name=norms",
                "--tensorboard=false",
                "--epochs=1",
                *extra,
            ],
            prog="step_norms",
            description="",
            finalize=apply_preset,
        )
        trainer = Trainer(cfg)
        traj, scalars, maps, _ = trainer.collect()
        adv = {
            "pxpo": trainer.advantages(traj, scalars, maps),  # [N, h, w]
            "ddpo": (scalars - scalars.mean()) / (scalars.std() + 1e-8),
        }  # [N]
        losses = {"pxpo": pxpo_clipped, "ddpo": ddpo_clipped}
        policy, n = trainer.policy, len(traj)
        gains = step_gain(policy.pipe.scheduler, traj.timesteps[0], cfg.sample.eta)
        print("| step (t) | std | gain | PXPO gradient norm | DDPO gradient norm | cosine |")
        print("|---|---|---|---|---|---|")
        for j in range(cfg.sample.num_steps):
            step = traj.transitions(torch.arange(n), torch.full((n,), j))
            mean, std, x_prev = step_gaussian(
                policy.backbone, step, 0, cfg.sample.guidance, cfg.sample.eta, model=policy.model
            )  # one network call serves both losses
            lp = gaussian_log_prob(x_prev, mean, std).float()
            grads = {}
            for name in ("pxpo", "ddpo"):
                policy.opt.zero_grad(set_to_none=True)
                loss, _ = losses[name](lp, step.log_probs[:, 0], adv[name].to(lp))
                loss.backward(retain_graph=name == "pxpo")
                grads[name] = torch.cat([p.grad.flatten() for p in policy.params if p.grad is not None])
            gp, gd = grads["pxpo"], grads["ddpo"]
            print(
                f"| {j} ({int(traj.timesteps[0, j])}) | {float(std.flatten()[0]):.3f} | {float(gains[j]):.2f} | "
                f"{float(gp.norm()):.2f} | {float(gd.norm()):.2f} | {float(gp @ gd / (gp.norm() * gd.norm())):.2f} |",
                flush=True,
            )
        policy.opt.zero_grad(set_to_none=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
