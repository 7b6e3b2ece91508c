"""The policy's Gaussian step, whatever model family gives its mean and std: drawing x_{t-1} and
its per-element log-probability (one equation, one place).

    x_{t-1} = mean + std * z,  z ~ N(0, I)
    log p   = -(x_{t-1} - mean)^2 / (2 std^2) - log std - log sqrt(2 pi)       (per element)

The log-probability is kept per element, not reduced, so that PXPO can credit each latent pixel on
its own; x_{t-1} is detached, so the gradient reaches the model only through the mean. Everything
runs in float32 (float64 if given float64) with autocast off: ``std`` is about 0.02 at the last step
of SD's schedule, so the squared residual over ``2 std^2`` needs fp32's mantissa.
"""

from __future__ import annotations

import math

import torch

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Half (bf16/fp16) tensors in float32; float32 and float64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def draw(
    mean: torch.Tensor,
    std: torch.Tensor,
    sample: torch.Tensor,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
):
    """x_{t-1} and its per-element log-probability from the policy's Gaussian (mean [B, C, h, w],
    std [B, 1, 1, 1]) at x_t = ``sample`` [B, C, h, w]: (prev_sample, log_prob), both at least float32.

    ``prev_sample``: a given x_{t-1} to score (training), else drawn: from ``noise`` (a standard
    normal draw, e.g. a process's rows of a larger one) or from ``generator``."""
    with torch.autocast(sample.device.type, enabled=False):
        if prev_sample is None:
            if noise is None:
                noise = torch.randn(sample.shape, generator=generator, device=sample.device, dtype=mean.dtype)
            noise = noise.to(sample.device, mean.dtype)
            prev_sample = mean + std * noise
        prev_sample = at_least_fp32(prev_sample.detach())
        return prev_sample, gaussian_log_prob(prev_sample, mean, std)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-element log N(x; mean, std^2): ``-(x - mean)^2 / (2 std^2) - log std - log sqrt(2 pi)``."""
    return -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - LOG_SQRT_2PI
