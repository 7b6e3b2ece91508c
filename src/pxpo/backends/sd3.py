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

from pxpo.backends.base import checked_size
from pxpo.backends.flow import RectifiedFlow
from pxpo.errors import ConfigError

KEYS = ("prompt_embeds", "negative_embeds", "pooled", "negative_pooled")


class StableDiffusion3(RectifiedFlow):
    """A ``StableDiffusion3Pipeline`` with a ``FlowMatchEulerDiscreteScheduler``."""

    def picture_size(self, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        f, patch = self.pipe.vae_scale_factor, self.pipe.transformer.config.patch_size
        size = self.pipe.transformer.config.sample_size * f
        return checked_size(height, width, size, f * patch, f"the VAE factor {f} times the transformer's patch size")

    def latent_shape(self, batch: int, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        height, width = self.picture_size(height, width)
        f = self.pipe.vae_scale_factor
        return batch, self.pipe.transformer.config.in_channels, height // f, width // f

    def encode(
        self,
        prompts: list[str],
        negative: str | list[str] = "",
        height: int | None = None,
        width: int | None = None,
        cache=None,
    ) -> dict[str, torch.Tensor]:
        if cache is not None:
            raise ConfigError("model.precompute_prompt_embeds is not supported for SD3 yet; leave it off")
        negative = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
        parts = self.pipe.encode_prompt(
            prompt=list(prompts),
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=negative,
        )
        cond, uncond, pooled, neg_pooled = (p.float() for p in parts)
        return dict(zip(KEYS, (cond, uncond, pooled, neg_pooled)))

    def set_steps(self, num_steps: int, shape: tuple[int, ...]) -> torch.Tensor:
        """The SD3 pipeline's schedule: its scheduler's, shifted by the picture's size when configured."""
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
            calculate_shift,
            retrieve_timesteps,
        )

        config, kw = self.pipe.scheduler.config, {}
        if config.get("use_dynamic_shifting", None):
            p = self.pipe.transformer.config.patch_size
            kw["mu"] = calculate_shift(
                (shape[-2] // p) * (shape[-1] // p),
                config.get("base_image_seq_len", 256),
                config.get("max_image_seq_len", 4096),
                config.get("base_shift", 0.5),
                config.get("max_shift", 1.16),
            )
        return retrieve_timesteps(self.pipe.scheduler, num_steps, self.device, **kw)[0]

    def guided_output(self, model, x: torch.Tensor, t, cond: dict, guidance: float) -> torch.Tensor:
        """The velocity [B, C, h, w] in float32, uncond + g (cond - uncond), as the SD3 pipeline computes it."""
        b = x.shape[0]
        dtype = getattr(model, "module", model).dtype
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(b) if t.dim() == 0 else t  # [B]
        if guidance == 1.0:
            return model(
                hidden_states=x.to(dtype),
                timestep=t,
                encoder_hidden_states=cond["prompt_embeds"].to(dtype),
                pooled_projections=cond["pooled"].to(dtype),
                return_dict=False,
            )[0].float()
        out = model(
            hidden_states=torch.cat([x, x]).to(dtype),
            timestep=torch.cat([t, t]),
            encoder_hidden_states=torch.cat([cond["negative_embeds"], cond["prompt_embeds"]]).to(dtype),
            pooled_projections=torch.cat([cond["negative_pooled"], cond["pooled"]]).to(dtype),
            return_dict=False,
        )[0].float()
        uncond, text = out.chunk(2)
        return uncond + guidance * (text - uncond)
