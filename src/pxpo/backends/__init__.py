"""Model families behind the core's :class:`~pxpo.core.backbone.Backbone` interface: Stable
Diffusion 1.x/2.x and SDXL with DDIM (:mod:`pxpo.backends.sd`), their loading by name
(:mod:`pxpo.backends.registry`), presets, text conditioning and fine-tuning modes."""
from __future__ import annotations


def backbone_for(pipe):
    """The backbone of a loaded diffusers pipeline (refused in words for a family pxpo does not train)."""
    from pxpo.backends.sd import StableDiffusion

    name = type(pipe).__name__
    if getattr(pipe, "unet", None) is not None and hasattr(pipe, "vae"):
        return StableDiffusion(pipe)
    raise ValueError(f"pxpo trains StableDiffusionPipeline and StableDiffusionXLPipeline (a UNet and a VAE); "
                     f"got {name}")
