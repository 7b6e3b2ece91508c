"""DDIM as a stochastic policy: one denoising step with its per-element log-probability.

DDPO (Black et al. 2024) treats each DDIM step with eta > 0 as a Gaussian policy
``p(x_{t-1} | x_t, c) = N(mu_theta(x_t, t, c), (eta * sigma_t)^2 I)``. This module is the one place
that computes that density, for epsilon-, v- and sample-prediction models.

    x0_hat   = (x_t - sqrt(1 - abar_t) * eps_hat) / sqrt(abar_t)                     (epsilon)
    sigma_t^2 = (1 - abar_t') / (1 - abar_t) * (1 - abar_t / abar_t')                  t' = t - T/n
    std      = eta * sigma_t
    mu       = sqrt(abar_t') * x0_hat + sqrt(1 - abar_t' - std^2) * eps_hat
    x_{t-1}  = mu + std * z,  z ~ N(0, I)
    log p    = -(x_{t-1} - mu)^2 / (2 std^2) - log std - log sqrt(2 pi)     (per element)

``mu`` is exactly what ``diffusers.DDIMScheduler.step`` returns with ``eta=0``-style noise removed,
so the sampler stays the scheduler's; the log-probability (:mod:`pxpo.core.gaussian`) is kept per
element (not reduced) so that PXPO can credit each latent pixel on its own.

Precision: all of this runs in float32 (float64 if given float64) with autocast switched off,
whatever precision the UNet ran in (bf16/fp16 autocast or half weights): ``std`` is about 0.02 at
the last step of SD's schedule, so the squared residual over ``2 std^2`` needs fp32's mantissa
(memory modes, README).
"""

from __future__ import annotations

import torch

from pxpo.core.gaussian import at_least_fp32, draw
from pxpo.errors import UserError


def _per_sample(values: torch.Tensor, index: torch.Tensor, ndim: int) -> torch.Tensor:
    """Gather ``values[index]`` and shape it [B, 1, 1, ...] to broadcast over a sample of ``ndim`` dims."""
    out = values.to(index.device)[index.long()]
    return out.reshape(out.shape + (1,) * (ndim - out.dim()))


def ddim_variance(scheduler, timestep: torch.Tensor, prev_timestep: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(abar_t, abar_t', sigma_t^2) for integer timesteps (any shape); abar at t' < 0 is the final alpha."""
    acp = scheduler.alphas_cumprod
    final = scheduler.final_alpha_cumprod
    abar_t = acp.to(timestep.device)[timestep.long()]
    abar_prev = torch.where(
        prev_timestep >= 0,
        acp.to(timestep.device)[prev_timestep.clamp(min=0).long()],
        final.to(timestep.device) if torch.is_tensor(final) else torch.tensor(final),
    )
    variance = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)
    return abar_t, abar_prev, variance


def predict_x0_eps(scheduler, model_output, sample, abar_t):
    """(x0_hat, eps_hat) from the model output, by the scheduler's prediction type."""
    kind = scheduler.config.prediction_type
    beta_t = 1 - abar_t
    if kind == "epsilon":
        eps = model_output
        x0 = (sample - beta_t.sqrt() * eps) / abar_t.sqrt()
    elif kind == "sample":
        x0 = model_output
        eps = (sample - abar_t.sqrt() * x0) / beta_t.sqrt()
    elif kind == "v_prediction":
        x0 = abar_t.sqrt() * sample - beta_t.sqrt() * model_output
        eps = abar_t.sqrt() * model_output + beta_t.sqrt() * sample
    else:
        raise UserError(f"prediction_type {kind!r} is not supported: use epsilon, sample or v_prediction")
    return x0, eps


def _clip_x0(scheduler, x0: torch.Tensor) -> torch.Tensor:
    cfg = scheduler.config
    if getattr(cfg, "thresholding", False):
        return scheduler._threshold_sample(x0)
    if getattr(cfg, "clip_sample", False):
        r = cfg.clip_sample_range
        return x0.clamp(-r, r)
    return x0


def ddim_mean_std(
    scheduler, model_output: torch.Tensor, timestep, sample: torch.Tensor, eta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's Gaussian at x_t: (mean [B, C, h, w], std [B, 1, 1, 1]), at least float32; formulas in
    the module doc."""
    with torch.autocast(sample.device.type, enabled=False):
        return _ddim_mean_std(scheduler, at_least_fp32(model_output), timestep, at_least_fp32(sample), eta)


def _ddim_mean_std(scheduler, model_output, timestep, sample, eta):
    abar_t, abar_prev, std = _ddim_coefficients(scheduler, timestep, sample, eta)
    x0, eps = predict_x0_eps(scheduler, model_output, sample, abar_t)
    x0 = _clip_x0(scheduler, x0)
    mean = abar_prev.sqrt() * x0 + (1 - abar_prev - std**2).clamp(min=0).sqrt() * eps
    return mean, std


def ddim_ode_mean(scheduler, model_output: torch.Tensor, timestep, sample: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM (eta = 0): x_{t-1} = sqrt(abar_t') * x0_hat + sqrt(1 - abar_t') * eps_hat
    [B, C, h, w], at least float32. A step with no noise has no density: the sampler takes it for
    the steps it does not train (``sample.untrained_eta=0``), never for a trained one."""
    with torch.autocast(sample.device.type, enabled=False):
        model_output, sample = at_least_fp32(model_output), at_least_fp32(sample)
        abar_t, abar_prev, _ = _ddim_coefficients(scheduler, timestep, sample, 1.0)
        x0, eps = predict_x0_eps(scheduler, model_output, sample, abar_t)
        return abar_prev.sqrt() * _clip_x0(scheduler, x0) + (1 - abar_prev).clamp(min=0).sqrt() * eps


def step_gain(scheduler, timesteps: torch.Tensor, eta: float = 1.0) -> torch.Tensor:
    """How hard each step's log-probability pulls on the model output: |d mean / d output| / std,
    per timestep (any shape; float32).

    With x_{t-1} = mean + std * z, the score of one element is z / std * d mean / d output, so a
    step's policy gradient scales with this gain. Without clipping of x0_hat the mean is affine in
    the output (for epsilon prediction, d mean / d eps_hat = sqrt(1 - abar_t' - std^2) - sqrt(abar_t')
    sqrt(1 - abar_t) / sqrt(abar_t); likewise for v and x0 prediction). On SD's scaled-linear
    schedule at 10 steps the gain is 0.97-1.3 at every step but the second-to-last (t=101: 8.3),
    whose std (0.041) is small while its mean still moves (docs/recipe.md, finding 21); at 50 steps
    it is 3.3 against a median of 0.42.
    """
    t = torch.as_tensor(timesteps).long()
    prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    abar_t, abar_prev, variance = (v.float() for v in ddim_variance(scheduler, t, prev))
    std = eta * variance.clamp(min=0).sqrt()
    # the mean's slope: its value for output 1 at x_t = 0 (the mean is linear in both, x0_hat unclipped)
    x0, eps = predict_x0_eps(scheduler, torch.ones_like(abar_t), torch.zeros_like(abar_t), abar_t)
    slope = abar_prev.sqrt() * x0 + (1 - abar_prev - std**2).clamp(min=0).sqrt() * eps
    return slope.abs() / std.clamp(min=1e-12)


def balanced_step_weights(scheduler, timesteps: torch.Tensor, eta: float = 1.0) -> torch.Tensor:
    """Per-transition weights [B, n] that even out the schedule's share of each step's policy gradient:
    1 / step_gain, scaled so that each trajectory's weights average 1 (``experimental.step_weight=balanced``).
    The UNet's own share still differs by step (the last step's stays about 3x the others')."""
    w = 1.0 / step_gain(scheduler, timesteps, eta)  # [B, n]
    return w / w.mean(dim=-1, keepdim=True)


def ddim_std(scheduler, timestep, sample: torch.Tensor, eta: float = 1.0) -> torch.Tensor:
    """The policy's std at x_t [B, C, h, w] (std [B, 1, 1, 1], at least float32): the same numbers
    :func:`ddim_mean_std` returns, without a model output (it does not depend on one)."""
    with torch.autocast(sample.device.type, enabled=False):
        return _ddim_coefficients(scheduler, timestep, at_least_fp32(sample), eta)[2]


def _ddim_coefficients(scheduler, timestep, sample, eta):
    """(abar_t, abar_t', std), each [B, 1, 1, 1] in ``sample``'s dtype."""
    if eta is None or eta <= 0:
        raise ValueError(f"eta must be > 0 for a policy with a density (got {eta}); DDPO and PXPO use eta=1.0")
    if scheduler.num_inference_steps is None:
        raise ValueError("call scheduler.set_timesteps(num_steps) before stepping")
    b = sample.shape[0]
    t = torch.as_tensor(timestep, device=sample.device).long()
    t = t.expand(b) if t.dim() == 0 else t  # [B]
    prev_t = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    abar_t, abar_prev, variance = (
        _per_sample(v, torch.arange(b, device=sample.device), sample.dim()) for v in ddim_variance(scheduler, t, prev_t)
    )
    abar_t, abar_prev, variance = abar_t.to(sample.dtype), abar_prev.to(sample.dtype), variance.to(sample.dtype)
    std = eta * variance.clamp(min=0).sqrt()  # [B, 1, 1, 1]
    if (std <= 0).any():
        raise ValueError(
            "a DDIM step with zero variance has no log-probability (timestep "
            f"{t[(std.flatten() <= 0)].tolist()}); use set_alpha_to_one=False and steps_offset=1 in the "
            "scheduler config, as Stable Diffusion does"
        )
    return abar_t, abar_prev, std


def ddim_step_with_logprob(
    scheduler,
    model_output: torch.Tensor,
    timestep,
    sample: torch.Tensor,
    eta: float = 1.0,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
):
    """One DDIM step x_t -> x_{t-1} and its per-element log-probability.

    Args:
        scheduler: a ``DDIMScheduler`` on which ``set_timesteps`` was called.
        model_output: [B, C, h, w] the (guided) network output at ``timestep``.
        timestep: int, 0-dim tensor, or [B] tensor (one timestep per sample, for shuffled training).
        sample: [B, C, h, w] x_t.
        eta: DDIM's noise scale; must be > 0 (eta = 0 is deterministic and has no density).
        prev_sample: [B, C, h, w] a given x_{t-1} to score (training); drawn when None (sampling).
        generator: for drawing x_{t-1}.
        noise: [B, C, h, w] the standard normal draw to use instead (a process's rows of a larger draw).
    Returns:
        (prev_sample [B, C, h, w], log_prob [B, C, h, w]); the gradient reaches only the mean.
    """
    mean, std = ddim_mean_std(scheduler, model_output, timestep, sample, eta)  # at least float32
    return draw(mean, std, sample, prev_sample, generator, noise)
