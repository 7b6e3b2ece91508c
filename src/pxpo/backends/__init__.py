"""Model families behind the core's :class:`~pxpo.core.backbone.Backbone` interface: Stable
Diffusion 1.x/2.x and SDXL with DDIM (:mod:`pxpo.backends.sd`), Stable Diffusion 3 with Flow-GRPO's
SDE step (:mod:`pxpo.backends.sd3`) and FLUX.1 (:mod:`pxpo.backends.flux`), their loading by name (:mod:`pxpo.backends.registry`), presets,
text conditioning and fine-tuning modes."""

from __future__ import annotations


def backbone_for(pipe):
    """The backbone of a loaded diffusers pipeline (refused in words for a family pxpo does not train)."""
    name = type(pipe).__name__
    if getattr(pipe, "unet", None) is not None and hasattr(pipe, "vae"):
        from pxpo.backends.sd import StableDiffusion

        return StableDiffusion(pipe)
    if name == "StableDiffusion3Pipeline":
        from pxpo.backends.sd3 import StableDiffusion3

        return StableDiffusion3(pipe)
    if name == "FluxPipeline":
        from pxpo.backends.flux import Flux

        return Flux(pipe)
    from pxpo.errors import UserError

    raise UserError(
        f"pxpo trains StableDiffusionPipeline, StableDiffusionXLPipeline, StableDiffusion3Pipeline and "
        f"FluxPipeline; got {name}"
    )
