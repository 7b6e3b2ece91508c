"""Pictures read pixel by pixel against the worlds' palette (the shapes and scenes worlds share it):
the first step of the shapes evaluator (:mod:`pxpo.testbed.evaluate`), the scene reader and the suites'
measures."""

from __future__ import annotations

import numpy as np
import torch

from pxpo.testbed import world

PALETTE_RGB = np.array([world.PALETTE[c] for c in world.COLOURS], dtype=np.float32) / 255.0  # [K, 3]


def classify_colours(images: np.ndarray) -> np.ndarray:
    """Nearest palette colour index per pixel: float [B, 3, H, W] in [0, 1] -> int [B, H, W]."""
    pix = torch.from_numpy(np.ascontiguousarray(images))  # [B, 3, H, W]
    pal = torch.from_numpy(PALETTE_RGB)  # [K, 3]
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2; |p|^2 is the same for every c, so it drops out of the argmin
    d = (pal**2).sum(1)[None, :, None, None] - 2.0 * torch.einsum("bchw,kc->bkhw", pix, pal)  # [B, K, H, W]
    return d.argmin(1).numpy()


def as_numpy(images) -> np.ndarray:
    """Images as float32 numpy [B, 3, H, W] in [0, 1], or a ValueError naming the shape."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W] in [0, 1], got shape {images.shape}")
    return images
