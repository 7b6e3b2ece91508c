"""Learning-rate schedule shared by the pretraining stages."""

from __future__ import annotations

import math

import torch


def warmup_cosine(opt: torch.optim.Optimizer, steps: int, warmup: float = 0.03, floor: float = 0.1):
    """Linear warm-up over ``warmup`` of the steps, then cosine decay to ``floor`` x the peak rate."""
    n_warm = max(1, int(warmup * steps))

    def factor(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        progress = (step - n_warm) / max(1, steps - n_warm)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
