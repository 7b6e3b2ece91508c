"""From the image grid to the latent grid: where a pixel reward lands in latent space.

PXPO credits each *latent* pixel (the policy acts on latents). A reward map at image resolution
[B, H, W] is reduced to the latent grid [B, h, w] by pooling over each latent pixel's f x f
footprint (f = the VAE factor). The paper does not say how; we use:
- ``area`` (default): the mean of the footprint. The VAE is local, so a latent pixel is mostly
  responsible for its footprint, and the mean keeps the map's overall value (a constant map stays
  the same constant).
- ``max``: the footprint's maximum, for sparse marks (a thin brush stroke should not be averaged away).
- ``min``: the footprint's minimum, for sparse negative marks.
Pixel-space models (h = H) get the map unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pxpo.errors import UserError

MODES = ("area", "max", "min")


def to_latent_grid(reward_map: torch.Tensor, size: tuple[int, int], mode: str = "area") -> torch.Tensor:
    """Pool a map [B, H, W] to [B, h, w] = ``size``; H, W must be multiples of h, w."""
    if mode not in MODES:
        raise ValueError(f"latent pooling mode {mode!r} is unknown; use one of {', '.join(MODES)}")
    b, hh, ww = reward_map.shape
    h, w = size
    if (hh, ww) == (h, w):
        return reward_map
    if hh % h or ww % w:
        raise UserError(f"a {hh}x{ww} reward map does not tile the {h}x{w} latent grid evenly")
    x = reward_map.unsqueeze(1).float()  # [B, 1, H, W]
    kernel = (hh // h, ww // w)
    if mode == "area":
        out = F.avg_pool2d(x, kernel)
    elif mode == "max":
        out = F.max_pool2d(x, kernel)
    else:
        out = -F.max_pool2d(-x, kernel)
    return out.squeeze(1)  # [B, h, w]


def _cat(parts: list) -> torch.Tensor | None:
    """Concatenate per-batch maps, or None unless every batch has one."""
    return torch.cat(parts).float() if parts and all(p is not None for p in parts) else None


def results_to_latent_grid(
    maps: list, weights: list, holds: list, size: tuple[int, int], mode: str = "area", hold_mode: str = "area"
):
    """Per-batch reward maps, opinion weights and hold maps [b, H, W] -> the latent grid [N, h, w].

    A latent pixel's reward is the mean over the pixels of its footprint that have an opinion (with
    weights; ``mode`` pooling otherwise), its weight the share of its footprint that has one, and its
    hold the share of its footprint to keep (``hold_mode="area"``) or 1 if any of it is kept (``max``:
    the decoder mixes neighbouring latents, so a latent pixel half on the object also paints it).
    Returns (maps, weights, holds); each is None unless every batch gave one.
    """
    rmap, weight, hold = _cat(maps), _cat(weights), _cat(holds)
    hold = to_latent_grid(hold, size, hold_mode) if hold is not None else None
    if rmap is None:
        return None, None, hold
    if weight is None or rmap is None:
        return to_latent_grid(rmap, size, mode), None, hold
    weight_l = to_latent_grid(weight, size, "area")
    if mode == "area":
        return to_latent_grid(rmap * weight, size, "area") / weight_l.clamp_min(1e-6), weight_l, hold
    return to_latent_grid(rmap, size, mode), weight_l, hold
