"""Stable Diffusion 1.x / 2.x and SDXL with DDIM, behind the core's :class:`~pxpo.core.backbone.Backbone`.

The network is the pipeline's ``UNet2DConditionModel``; its output goes through classifier-free
guidance (cond and uncond in one forward, as diffusers does) and DDIM's Gaussian step
(:mod:`pxpo.backends.ddim`). Text conditioning (SDXL's added conditioning too) is
:mod:`pxpo.backends.conditioning`; which weights train is :mod:`pxpo.backends.finetune`.
"""

from __future__ import annotations

import torch

from pxpo.backends.conditioning import encode, unet_added_kwargs
from pxpo.backends.ddim import balanced_step_weights, ddim_mean_std, ddim_ode_mean, ddim_std
from pxpo.backends.base import PipelineBackbone, checked_size

# the conditioning keys of the trajectories (SDXL adds text_embeds, negative_text_embeds, time_ids)
COND, UNCOND = "prompt_embeds", "negative_embeds"


class StableDiffusion(PipelineBackbone):
    """A ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` whose scheduler is DDIM."""

    def picture_size(self, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        f = self.pipe.vae_scale_factor
        return checked_size(height, width, self.pipe.unet.config.sample_size * f, f, f"the VAE factor {f}")

    def latent_shape(self, batch: int, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        height, width = self.picture_size(height, width)
        f = self.pipe.vae_scale_factor
        return batch, self.pipe.unet.config.in_channels, height // f, width // f

    def encode(
        self,
        prompts: list[str],
        negative: str | list[str] = "",
        height: int | None = None,
        width: int | None = None,
        cache=None,
    ) -> dict[str, torch.Tensor]:
        cond, uncond, added = encode(self.pipe, prompts, negative, height, width, self.device, cache)
        return {COND: cond.float(), UNCOND: uncond.float(), **{k: v.float() for k, v in added.items()}}

    def set_steps(self, num_steps: int, shape: tuple[int, ...] = ()) -> torch.Tensor:
        self.pipe.scheduler.set_timesteps(num_steps, device=self.device)
        return self.pipe.scheduler.timesteps

    def init_noise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.pipe.scheduler.init_noise_sigma

    def guided_output(self, model, x: torch.Tensor, t, cond: dict, guidance: float) -> torch.Tensor:
        """The scheduler's model input at x_t, then :func:`guided_output` with the trajectories' conditioning."""
        added = {k: v for k, v in cond.items() if k not in (COND, UNCOND)}
        x = self.pipe.scheduler.scale_model_input(x, t)
        return guided_output(model, x, t, cond[COND], cond[UNCOND], guidance, added)

    def gaussian(self, output, t, x, eta: float = 1.0):
        return ddim_mean_std(self.pipe.scheduler, output, t, x, eta)

    def std(self, t, x, eta: float = 1.0):
        return ddim_std(self.pipe.scheduler, t, x, eta)

    def deterministic_step(self, output, t, x):
        return ddim_ode_mean(self.pipe.scheduler, output, t, x)

    def step_weights(self, timesteps: torch.Tensor, eta: float = 1.0) -> torch.Tensor:
        return balanced_step_weights(self.pipe.scheduler, timesteps, eta)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, h, w] -> images [B, 3, H, W] in [0, 1]."""
        vae = self.pipe.vae
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return (images.float() / 2 + 0.5).clamp(0, 1)


def guided_output(
    unet, latents, t, prompt_embeds, negative_embeds, guidance: float, added: dict | None = None
) -> torch.Tensor:
    """Classifier-free guidance, cond and uncond in one forward: eps_u + g (eps_c - eps_u).

    latents [B, C, h, w]; t int, 0-dim or [B]; embeds [B, L, D]; ``added``: SDXL's added
    conditioning (backends.conditioning) -> [B, C, h, w] in float32: the network may run in bf16/fp16
    (autocast or half weights), the guidance and the DDIM/log-prob arithmetic after it run in fp32.
    """
    b = latents.shape[0]
    dtype = getattr(unet, "module", unet).dtype  # the network's own dtype, through a DDP wrapper too
    t = torch.as_tensor(t, device=latents.device)
    t2 = t.expand(b).repeat(2) if t.dim() == 0 else t.repeat(2)  # [2B]
    if guidance == 1.0:
        return unet(
            latents.to(dtype), t2[:b], prompt_embeds.to(dtype), **unet_added_kwargs(added, False, dtype)
        ).sample.float()
    out = unet(
        torch.cat([latents, latents]).to(dtype),
        t2,
        torch.cat([negative_embeds, prompt_embeds]).to(dtype),
        **unet_added_kwargs(added, True, dtype),
    ).sample.float()
    uncond, cond = out.chunk(2)
    return uncond + guidance * (cond - uncond)
