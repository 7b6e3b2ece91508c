"""pxpo: reinforcement learning of text-to-image diffusion models from rich (per-pixel) feedback.

The data flow, one module each: prompts (:mod:`pxpo.prompts`) -> sampler with per-element
log-probabilities (:mod:`pxpo.core.trajectory` over a :mod:`backend <pxpo.backends>`) -> decode ->
rewards, maps or scalars (:mod:`pxpo.rewards`) -> latent grid (:mod:`pxpo.core.latent_map`) ->
advantages (:mod:`pxpo.core.advantages`) -> objectives, DDPO and PXPO (:mod:`pxpo.core.objectives`) ->
the update and the epoch (:mod:`pxpo.core.policy`, :mod:`pxpo.core.epoch`) -> trainer
(:mod:`pxpo.training.trainer`). The shapes testbed (:mod:`pxpo.testbed`) and the feedback apps
(:mod:`pxpo.apps`) sit at the edges.
"""

__version__ = "0.1.0"
