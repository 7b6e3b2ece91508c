"""Rectified flow as a stochastic policy: Flow-GRPO's SDE step with the ODE's marginals.

A flow-matching model predicts a velocity v at noise level sigma (x_sigma = (1 - sigma) x_0 +
sigma * noise). The Euler ODE step from sigma to the next, smaller sigma' is deterministic; Flow-GRPO
(Liu et al. 2025, ``sde_type='sde'``) replaces it by an SDE step whose marginals match the ODE's, a
Gaussian policy with a density:

    dt   = sigma' - sigma                                                          (< 0)
    s    = a * sqrt(sigma / (1 - sigma))        (at sigma = 1: 1 - sigma_1, the schedule's second level)
    mean = x * (1 + s^2 / (2 sigma) * dt) + v * (1 + s^2 (1 - sigma) / (2 sigma)) * dt
    std  = s * sqrt(-dt)

``a`` is the noise level (Flow-GRPO's default 0.7; ``sample.eta`` carries it). ``a = 0`` is the Euler
ODE step ``x + v * dt`` (:func:`flow_ode_step`), which has no density: MixGRPO's window takes it on
the steps it does not train. The log-probability is :func:`pxpo.core.gaussian.gaussian_log_prob`,
kept per element (Flow-GRPO averages it over the picture; PXPO credits each latent pixel).
Everything runs in float32 (float64 if given float64) with autocast off.
"""

from __future__ import annotations

import torch

from pxpo.errors import ConfigError
from pxpo.backends.base import PipelineBackbone
from pxpo.core.gaussian import at_least_fp32


def flow_sde_mean_std(
    sample: torch.Tensor,
    velocity: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    noise_level: float,
    sigma_max: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The SDE step's Gaussian at x = ``sample`` [B, C, h, w] with velocity [B, C, h, w]: (mean
    [B, C, h, w], std [B, 1, 1, 1]). ``sigma``, ``sigma_next`` are [B] (or scalars); ``sigma_max``
    is the schedule's second level, which stands in for sigma in ``1 - sigma`` at sigma = 1."""
    if noise_level is None or noise_level <= 0:
        raise ValueError(
            f"the flow SDE step needs a noise level > 0 for a density (got {noise_level}); Flow-GRPO uses 0.7"
        )
    with torch.autocast(sample.device.type, enabled=False):
        x, v = at_least_fp32(sample), at_least_fp32(velocity)
        shape = (-1,) + (1,) * (x.dim() - 1)
        sigma, sigma_next, sigma_max = (
            torch.as_tensor(u, device=x.device).to(x.dtype).expand(x.shape[0]).reshape(shape)
            for u in (sigma, sigma_next, sigma_max)
        )
        dt = sigma_next - sigma  # [B, 1, 1, 1]
        s = noise_level * torch.sqrt(sigma / (1 - torch.where(sigma == 1, sigma_max, sigma)))
        mean = x * (1 + s**2 / (2 * sigma) * dt) + v * (1 + s**2 * (1 - sigma) / (2 * sigma)) * dt
        std = s * torch.sqrt(-dt)
        if (std <= 0).any():
            raise ValueError(
                "a flow step with zero variance has no log-probability (sigma "
                f"{sigma.flatten().tolist()} -> {sigma_next.flatten().tolist()})"
            )
        return mean, std


def flow_ode_step(
    sample: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor
) -> torch.Tensor:
    """The Euler ODE step x + v (sigma' - sigma) [B, C, h, w]: ``FlowMatchEulerDiscreteScheduler.step``."""
    with torch.autocast(sample.device.type, enabled=False):
        x, v = at_least_fp32(sample), at_least_fp32(velocity)
        shape = (-1,) + (1,) * (x.dim() - 1)
        sigma, sigma_next = (
            torch.as_tensor(u, device=x.device).to(x.dtype).expand(x.shape[0]).reshape(shape)
            for u in (sigma, sigma_next)
        )
        return x + (sigma_next - sigma) * v


def step_sigmas(scheduler, timestep) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sigma [B], sigma' [B], sigma_max) of the step at ``timestep`` (0-dim or [B]) of the schedule that
    ``scheduler.set_timesteps`` made: sigma' is the next level (0 after the last step)."""
    steps = scheduler.timesteps
    t = torch.as_tensor(timestep).to(steps.device).reshape(-1)
    hit = steps[None, :] == t[:, None]  # [B, n]
    if not hit.any(dim=1).all():
        raise ValueError(f"timestep {t.tolist()} is not in the scheduler's schedule; call set_timesteps first")
    k = hit.float().argmax(dim=1)  # [B]
    sigmas = scheduler.sigmas.to(steps.device)
    return sigmas[k], sigmas[k + 1], sigmas[1]


class RectifiedFlow(PipelineBackbone):
    """What every flow-matching backbone shares: the SDE / ODE steps on the scheduler's sigmas
    (``eta`` is the noise level), x_T as drawn and decoding. A subclass gives the text
    conditioning, the schedule and the network call."""

    def init_noise(self, x: torch.Tensor) -> torch.Tensor:
        return x  # x_T is the standard normal draw (sigma = 1)

    def gaussian(self, output, t, x, eta: float = 0.7):
        sigma, sigma_next, sigma_max = step_sigmas(self.pipe.scheduler, t)
        return flow_sde_mean_std(x, output, sigma, sigma_next, eta, sigma_max)

    def std(self, t, x, eta: float = 0.7):
        return self.gaussian(torch.zeros_like(x), t, x, eta)[1]

    def deterministic_step(self, output, t, x):
        sigma, sigma_next, _ = step_sigmas(self.pipe.scheduler, t)
        return flow_ode_step(x, output, sigma, sigma_next)

    def step_weights(self, timesteps: torch.Tensor, eta: float = 0.7) -> torch.Tensor:
        raise ConfigError(
            "experimental.step_weight=balanced is defined for DDIM's schedule only; use experimental.step_weight=none"
        )

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, h, w] -> images [B, 3, H, W] in [0, 1] (the VAE's scaling and shift factors)."""
        vae = self.pipe.vae
        z = latents.to(vae.dtype) / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        return (vae.decode(z).sample.float() / 2 + 0.5).clamp(0, 1)
