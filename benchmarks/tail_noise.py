"""How much of a pixel's reward the untrained steps' noise decides, against the image's mean reward.

    python benchmarks/tail_noise.py [--threads=2] [--prefixes=4] [--tails=4] [pxpo train options]

With ``timestep_order=first`` the update credits only the first, trained steps; the rest of a
trajectory is still drawn. This samples the default run's captions (16 of them) from ``--prefixes``
different x_T and trained-step noises each, then finishes each prefix ``--tails`` times with fresh
noise at ``sample.eta`` on the untrained steps, scores every picture with the run's reward, and
splits each reward's variance over all draws of a caption into the part the tail's noise adds
(the mean variance over tails of one prefix) and the rest. Per pixel, it is read over the latent
pixels the reward asks to change (not held: the background of the default task), each over the
prefixes where it is one; for DDPO's scalar, over the image's mean reward. Nothing is trained;
the region and the reference picture are those of the prefix's deterministic finish (what
``sample.untrained_eta=0`` samples). docs/recipe.md, finding 23, printed its table (about 40 s).
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import numpy as np
import torch


def tail_share(values: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """values [P, M, ...]: P prefixes, M tails each; mask [P, ...] (1 where a prefix's value counts).
    Returns (within-prefix variance summed over the counted entries, total variance summed likewise):
    the tail's share of the variance is their ratio."""
    m = mask.unsqueeze(1).expand_as(values).float()  # [P, M, ...]
    within = values.var(dim=1, unbiased=False) * mask  # [P, ...]: tail noise, per prefix
    n = m.sum(dim=(0, 1))  # draws counted per entry
    mean = (values * m).sum(dim=(0, 1)) / n.clamp(min=1)
    total = (((values - mean) ** 2) * m).sum(dim=(0, 1)) / n.clamp(min=1)  # [...]
    keep = n >= 2 * values.shape[1]  # at least two prefixes, so there is a between-prefix part to compare
    within = (within.sum(dim=0) / mask.float().sum(dim=0).clamp(min=1))[keep]
    return float(within.sum()), float(total[keep].sum())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefixes", type=int, default=4)
    ap.add_argument("--tails", type=int, default=4)
    args, extra = ap.parse_known_args(argv)
    torch.set_num_threads(args.threads)

    from pxpo.config import parse_overrides
    from pxpo.core.latent_map import results_to_latent_grid
    from pxpo.backends.presets import apply_preset
    from pxpo.backends.ddim import ddim_step_with_logprob
    from pxpo.training.config import RunConfig
    from pxpo.core.reuse import trained_steps
    from pxpo.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_overrides(
            RunConfig(),
            [
                f"--out_dir={tmp}",
                "--run_name=tail",
                "--tensorboard=false",
                "--epochs=1",
                "--sample.untrained_eta=0",
                *extra,
            ],
            prog="tail_noise",
            description="",
            finalize=apply_preset,
        )
        trainer = Trainer(cfg)
        s, pipe = cfg.sample, trainer.pipe
        k = trained_steps(cfg.train, s)
        if cfg.train.timestep_order != "first" or k == s.num_steps:
            print(
                "tail_noise: the run trains every step (or shuffled ones): there is no untrained tail", file=sys.stderr
            )
            return 2
        prompts, meta = trainer.prompts(16, np.random.default_rng(cfg.eval_seed))
        maps, holds, scalars = [], [], []
        for p in range(args.prefixes):
            traj = trainer.sample(prompts, meta, torch.Generator().manual_seed(1000 + p))  # tail deterministic
            tails_map, tails_scalar, hold = [], [], None
            for m in range(args.tails):
                gen, x = torch.Generator().manual_seed(5000 + 100 * p + m), traj.latents[:, k]
                with torch.no_grad():
                    for t in pipe.scheduler.timesteps[k:]:
                        out = trainer.backbone.guided_output(pipe.unet, x, t, traj.cond, s.guidance)
                        x, _ = ddim_step_with_logprob(pipe.scheduler, out, t, x, eta=s.eta, generator=gen)
                    images = trainer.backbone.decode(x)
                r = trainer.reward.submit(images, traj.prompts, traj.metadata).result()
                lmap, _, hold = results_to_latent_grid(
                    [r.map], [r.weight], [r.hold], trainer.latent_hw, cfg.reward.latent_pool, cfg.experimental.hold_pool
                )
                tails_map.append(lmap)
                tails_scalar.append(r.scalar.float())
            maps.append(torch.stack(tails_map))  # [M, N, h, w]
            scalars.append(torch.stack(tails_scalar))  # [M, N]
            holds.append(hold if hold is not None else torch.zeros_like(lmap))  # the same for every tail
        maps, scalars, holds = torch.stack(maps), torch.stack(scalars), torch.stack(holds)  # [P, M, N, h, w] ...
        w_pix, t_pix = tail_share(maps, holds < 0.5)
        w_all, t_all = tail_share(maps, torch.ones_like(holds, dtype=torch.bool))
        w_img, t_img = tail_share(scalars, torch.ones(scalars.shape[0], scalars.shape[2], dtype=torch.bool))
        print(
            f"{len(prompts)} captions x {args.prefixes} prefixes (x_T and the {k} trained steps' noise) x "
            f"{args.tails} tails (steps {k}-{s.num_steps - 1} at eta {s.eta})"
        )
        print("| reward | variance over all draws | of which the tail's noise | tail's share |")
        print("|---|---|---|---|")
        for name, w, t in (
            ("per latent pixel, where the reward asks a change", w_pix, t_pix),
            ("per latent pixel, every pixel", w_all, t_all),
            ("the image's mean (DDPO's scalar)", w_img, t_img),
        ):
            print(f"| {name} | {t:.4f} | {w:.4f} | {w / t:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
