"""pxpo: reinforcement learning of text-to-image diffusion models from rich (per-pixel) feedback.

The data flow, one module each: prompts (:mod:`pxpo.prompts`) -> sampler with per-element
log-probabilities (:mod:`pxpo.sampling`) -> decode -> rewards, maps or scalars (:mod:`pxpo.rewards`)
-> latent grid (:mod:`pxpo.latent_map`) -> advantages (:mod:`pxpo.advantages`) -> objectives, DDPO
and PXPO (:mod:`pxpo.objectives`) -> trainer (:mod:`pxpo.trainer`).
"""
__version__ = "0.1.0"
