"""Stable Diffusion 3 / 3.5 (rectified flow) behind the core's :class:`~pxpo.core.backbone.Backbone`.

The network is the pipeline's ``SD3Transformer2DModel``, which predicts a velocity; classifier-free
guidance batches uncond and cond in one forward (as the diffusers pipeline does), and each step is
Flow-GRPO's SDE step (:mod:`pxpo.backends.flow`) with ``eta`` as its noise level, or the Euler ODE
step where the noise level is 0. The latents stay [B, C, h, w]: the transformer patchifies them
itself, so a reward map pools onto the same latent grid as for SD, and per-pixel credit needs
nothing more. Text: the pipeline's own ``encode_prompt`` (two CLIP encoders and, when present, T5).
"""
from __future__ import annotations

import torch

from pxpo.backends.finetune import prepare_unet, save_weights
from pxpo.backends.flow import flow_ode_step, flow_sde_mean_std, step_sigmas

KEYS = ("prompt_embeds", "negative_embeds", "pooled", "negative_pooled")


class StableDiffusion3:
    """A ``StableDiffusion3Pipeline`` with a ``FlowMatchEulerDiscreteScheduler``."""

    def __init__(self, pipe):
        self.pipe = pipe

    @property
    def model(self) -> torch.nn.Module:
        return self.pipe.transformer

    @property
    def device(self) -> torch.device:
        return self.pipe.transformer.device

    def picture_size(self, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        f = self.pipe.vae_scale_factor
        size = self.pipe.transformer.config.sample_size * f
        height, width = height or size, width or size
        step = f * self.pipe.transformer.config.patch_size
        if height % step or width % step:
            raise ValueError(f"height and width must be multiples of {step} (the VAE factor {f} times the "
                             f"transformer's patch size), got {height}x{width}")
        return height, width

    def latent_shape(self, batch: int, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        height, width = self.picture_size(height, width)
        f = self.pipe.vae_scale_factor
        return batch, self.pipe.transformer.config.in_channels, height // f, width // f

    def encode(self, prompts: list[str], negative: str | list[str] = "", height: int | None = None,
               width: int | None = None, cache=None) -> dict[str, torch.Tensor]:
        if cache is not None:
            raise ValueError("model.precompute_prompt_embeds is not supported for SD3 yet; leave it off")
        negative = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
        parts = self.pipe.encode_prompt(prompt=list(prompts), prompt_2=None, prompt_3=None, device=self.device,
                                        num_images_per_prompt=1, do_classifier_free_guidance=True,
                                        negative_prompt=negative)
        cond, uncond, pooled, neg_pooled = (p.float() for p in parts)
        return dict(zip(KEYS, (cond, uncond, pooled, neg_pooled)))

    def set_steps(self, num_steps: int) -> torch.Tensor:
        self.pipe.scheduler.set_timesteps(num_steps, device=self.device)
        return self.pipe.scheduler.timesteps

    def init_noise(self, x: torch.Tensor) -> torch.Tensor:
        return x  # x_T is the standard normal draw (sigma = 1)

    def guided_output(self, model, x: torch.Tensor, t, cond: dict, guidance: float) -> torch.Tensor:
        """The velocity [B, C, h, w] in float32, uncond + g (cond - uncond), as the SD3 pipeline computes it."""
        b = x.shape[0]
        dtype = getattr(model, "module", model).dtype
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(b) if t.dim() == 0 else t  # [B]
        if guidance == 1.0:
            return model(hidden_states=x.to(dtype), timestep=t, encoder_hidden_states=cond["prompt_embeds"].to(dtype),
                         pooled_projections=cond["pooled"].to(dtype), return_dict=False)[0].float()
        out = model(hidden_states=torch.cat([x, x]).to(dtype), timestep=torch.cat([t, t]),
                    encoder_hidden_states=torch.cat([cond["negative_embeds"], cond["prompt_embeds"]]).to(dtype),
                    pooled_projections=torch.cat([cond["negative_pooled"], cond["pooled"]]).to(dtype),
                    return_dict=False)[0].float()
        uncond, text = out.chunk(2)
        return uncond + guidance * (text - uncond)

    def gaussian(self, output, t, x, eta: float = 0.7):
        sigma, sigma_next, sigma_max = step_sigmas(self.pipe.scheduler, t)
        return flow_sde_mean_std(x, output, sigma, sigma_next, eta, sigma_max)

    def std(self, t, x, eta: float = 0.7):
        return self.gaussian(torch.zeros_like(x), t, x, eta)[1]

    def deterministic_step(self, output, t, x):
        sigma, sigma_next, _ = step_sigmas(self.pipe.scheduler, t)
        return flow_ode_step(x, output, sigma, sigma_next)

    def step_weights(self, timesteps: torch.Tensor, eta: float = 0.7) -> torch.Tensor:
        raise ValueError("train.step_weight=balanced is defined for DDIM's schedule only; use step_weight=none")

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, h, w] -> images [B, 3, H, W] in [0, 1] (SD3's VAE has a shift factor)."""
        vae = self.pipe.vae
        z = latents.to(vae.dtype) / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        return (vae.decode(z).sample.float() / 2 + 0.5).clamp(0, 1)

    def prepare_training(self, mode: str, rank: int = 4, alpha: float = 4.0, targets: list[str] | None = None,
                         gradient_checkpointing: bool = False, frozen_dtype: str = "fp32") -> list:
        return prepare_unet(self.pipe, mode, rank, alpha, targets, gradient_checkpointing, frozen_dtype)

    def save_weights(self, model, mode: str, directory):
        return save_weights(self.pipe, model, mode, directory)
