"""The model-independent RL core: trajectories from any :class:`~pxpo.core.backbone.Backbone`, the
latent grid, advantages, objectives, and the one policy-update step and epoch every caller shares.

It knows no model family (those are :mod:`pxpo.backends`) and no testbed or app (those depend on it)."""
