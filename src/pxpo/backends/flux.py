"""FLUX.1 (rectified flow) behind the core's :class:`~pxpo.core.backbone.Backbone`.

FLUX's transformer reads the latents as tokens: each token packs a 2x2 patch of latent pixels,
16 channels each (``FluxPipeline._pack_latents``). pxpo keeps the trajectories unpacked, [B, C, h, w],
packs x_t for each network call and unpacks the velocity, so every latent pixel keeps its own
log-probability and a reward map pooled onto the [h, w] latent grid lands on exactly the token, and
the slot in it, that holds that pixel (token ``(i // 2) * (w // 2) + j // 2``, feature
``c * 4 + (i % 2) * 2 + j % 2``). Guidance is FLUX-dev's distilled guidance (an embedding, one forward,
no negative prompt); FLUX-schnell has none. Steps are Flow-GRPO's SDE step on FLUX's shifted schedule.
"""

from __future__ import annotations

import torch

from pxpo.backends.base import checked_size
from pxpo.backends.flow import RectifiedFlow
from pxpo.errors import ConfigError


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> FLUX's tokens [B, (h/2)(w/2), 4C] (``FluxPipeline._pack_latents``)."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """FLUX's tokens [B, (h/2)(w/2), 4C] -> [B, C, h, w] (the inverse of :func:`pack`)."""
    b, _, f = tokens.shape
    return tokens.view(b, h // 2, w // 2, f // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, f // 4, h, w)


class Flux(RectifiedFlow):
    """A ``FluxPipeline`` with its ``FlowMatchEulerDiscreteScheduler``."""

    def picture_size(self, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        f = self.pipe.vae_scale_factor
        why = f"for FLUX, the VAE factor {f} times the 2x2 latent patch of a token"
        return checked_size(height, width, self.pipe.default_sample_size * f, f * 2, why)

    def latent_shape(self, batch: int, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        height, width = self.picture_size(height, width)
        f = self.pipe.vae_scale_factor
        return batch, self.pipe.transformer.config.in_channels // 4, height // f, width // f

    def encode(
        self,
        prompts: list[str],
        negative: str | list[str] = "",
        height: int | None = None,
        width: int | None = None,
        cache=None,
        max_sequence_length: int = 512,
    ) -> dict[str, torch.Tensor]:
        """The T5 and pooled CLIP embeddings of each prompt (FLUX-dev takes no negative prompt)."""
        if cache is not None:
            raise ConfigError("model.precompute_prompt_embeds is not supported for FLUX yet; leave it off")
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=list(prompts),
            prompt_2=None,
            device=self.device,
            num_images_per_prompt=1,
            max_sequence_length=max_sequence_length,
        )
        return {"prompt_embeds": embeds.float(), "pooled": pooled.float()}

    def set_steps(self, num_steps: int, shape: tuple[int, ...]) -> torch.Tensor:
        """The FLUX pipeline's schedule: sigmas 1 .. 1/n, shifted by the number of image tokens."""
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

        config = self.pipe.scheduler.config
        sigmas = None if config.get("use_flow_sigmas", False) else np.linspace(1.0, 1 / num_steps, num_steps)
        mu = calculate_shift(
            (shape[-2] // 2) * (shape[-1] // 2),
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        return retrieve_timesteps(self.pipe.scheduler, num_steps, self.device, sigmas=sigmas, mu=mu)[0]

    def guided_output(self, model, x: torch.Tensor, t, cond: dict, guidance: float) -> torch.Tensor:
        """The velocity [B, C, h, w] in float32: x_t packed into tokens, one forward with the distilled
        guidance ``guidance`` (when the transformer embeds guidance), the output unpacked."""
        b, _, h, w = x.shape
        net = getattr(model, "module", model)
        dtype = net.dtype
        t = torch.as_tensor(t, device=x.device)
        t = (t.expand(b) if t.dim() == 0 else t).to(torch.float32)
        g = torch.full((b,), guidance, device=x.device, dtype=torch.float32) if net.config.guidance_embeds else None
        img_ids = self.pipe._prepare_latent_image_ids(b, h // 2, w // 2, x.device, dtype)
        txt_ids = torch.zeros(cond["prompt_embeds"].shape[1], 3, device=x.device, dtype=dtype)
        out = model(
            hidden_states=pack(x).to(dtype),
            timestep=t / 1000,
            guidance=g,
            pooled_projections=cond["pooled"].to(dtype),
            encoder_hidden_states=cond["prompt_embeds"].to(dtype),
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return unpack(out.float(), h, w)
