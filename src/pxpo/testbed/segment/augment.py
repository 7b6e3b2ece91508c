"""Augmentations that make clean world images look like *generated* ones.

Images from a small latent diffusion model are softer (the VAE blurs edges), their flat regions
are blotchy and colour-noisy, object colours drift off the palette, and edges wobble. Each
function below imitates one of these; :func:`degrade` chains them with random strengths. Labels
only move in :func:`wobble` (the one geometric change), so they are returned alongside.

All functions take images ``[B, 3, H, W]`` in [0, 1] and a ``torch.Generator`` for determinism.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def _u(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    """``n`` uniform draws in [lo, hi): [n]."""
    return lo + (hi - lo) * torch.rand(n, generator=g)


def recolour(
    images: torch.Tensor, labels: torch.Tensor, g: torch.Generator, jitter: float = 0.08, p_random: float = 0.2
) -> torch.Tensor:
    """Shift the object's and the background's colours independently (per image, per channel).

    With probability ``p_random`` an image gets two fresh random colours instead, so the network
    learns shape from contrast rather than from the palette. [B,3,H,W], labels [B,H,W] -> [B,3,H,W].
    """
    b = images.shape[0]
    fg = (labels > 0).float()[:, None]  # [B, 1, H, W]
    d_fg = (torch.rand(b, 3, 1, 1, generator=g) * 2 - 1) * jitter
    d_bg = (torch.rand(b, 3, 1, 1, generator=g) * 2 - 1) * jitter
    out = images + d_fg * fg + d_bg * (1 - fg)
    pick = torch.rand(b, generator=g) < p_random
    if pick.any():
        c_fg = torch.rand(b, 3, 1, 1, generator=g)
        c_bg = torch.rand(b, 3, 1, 1, generator=g)
        # keep the two colours apart: push the background away when they are too close
        close = (c_fg - c_bg).norm(dim=1, keepdim=True) < 0.35
        c_bg = torch.where(close, 1.0 - c_fg, c_bg)
        fresh = c_fg * fg + c_bg * (1 - fg)
        out = torch.where(pick[:, None, None, None], fresh, out)
    return out.clamp(0, 1)


def blotches(images: torch.Tensor, g: torch.Generator, amp: float = 0.08) -> torch.Tensor:
    """Add smooth low-frequency colour noise (upsampled 4x4..8x8 noise), random amplitude."""
    b, _, h, w = images.shape
    cells = int(torch.randint(3, 9, (1,), generator=g))
    noise = torch.randn(b, 3, cells, cells, generator=g)
    noise = F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)
    return (images + noise * _u(g, b, 0, amp)[:, None, None, None]).clamp(0, 1)


def gaussian_blur(images: torch.Tensor, g: torch.Generator, max_sigma: float = 1.4) -> torch.Tensor:
    """Blur each image with its own Gaussian, sigma uniform in [0, max_sigma] (separable)."""
    b, c, h, w = images.shape
    sigma = _u(g, b, 0.05, max_sigma)  # [B]
    radius = 4
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    k = torch.exp(-(x[None] ** 2) / (2 * sigma[:, None] ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # [B, 2r+1]
    k = k.repeat_interleave(c, dim=0)  # [B*C, 2r+1]
    flat = images.reshape(1, b * c, h, w)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, k[:, None, None, :], groups=b * c)
    flat = F.conv2d(flat, k[:, None, :, None], groups=b * c)
    return flat.reshape(b, c, h, w)


def soften(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Down- then up-sample by 2 (bilinear): the softness a VAE decoder leaves on edges."""
    h, w = images.shape[-2:]
    small = F.interpolate(images, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def pixel_noise(images: torch.Tensor, g: torch.Generator, max_std: float = 0.06) -> torch.Tensor:
    """Add i.i.d. Gaussian noise with a random std in [0, max_std] per image."""
    b = images.shape[0]
    std = _u(g, b, 0, max_std)[:, None, None, None]
    return (images + torch.randn(images.shape, generator=g) * std).clamp(0, 1)


def jpeg(images: torch.Tensor, g: torch.Generator, quality: tuple[int, int] = (20, 80)) -> torch.Tensor:
    """Round-trip every image through JPEG at a random quality: blocky, ringing artefacts."""
    out = []
    arr = images.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for im in arr:
        q = int(torch.randint(quality[0], quality[1] + 1, (1,), generator=g))
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=q)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


def wobble(images: torch.Tensor, labels: torch.Tensor, g: torch.Generator, max_px: float = 1.5):
    """Warp images and labels with one smooth random displacement field (up to ``max_px`` pixels).

    Returns (images [B,3,H,W], labels [B,H,W]); labels are resampled by nearest neighbour.
    """
    b, _, h, w = images.shape
    disp = torch.randn(b, 2, 4, 4, generator=g)
    disp = F.interpolate(disp, size=(h, w), mode="bicubic", align_corners=False)
    disp = disp * (_u(g, b, 0, max_px)[:, None, None, None] * 2 / h)  # pixels -> grid units
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    grid = torch.stack([xs, ys], dim=-1)[None] + disp.permute(0, 2, 3, 1)  # [B, H, W, 2]
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)
    lab = F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=True)
    return images, lab[:, 0].long()


def degrade(images: torch.Tensor, labels: torch.Tensor, g: torch.Generator, p: float = 0.8):
    """Apply a random chain of the degradations above; a fraction ``1 - p`` of batches stay clean
    (apart from a horizontal flip, which every shape in the world survives; vertical flips would
    turn the triangle upside down). Returns (images [B,3,H,W], labels [B,H,W])."""
    flip = torch.rand(images.shape[0], generator=g) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    labels = torch.where(flip[:, None, None], labels.flip(-1), labels)
    if float(torch.rand(1, generator=g)) > p:
        return images, labels
    images = recolour(images, labels, g)
    if float(torch.rand(1, generator=g)) < 0.5:
        images, labels = wobble(images, labels, g)
    if float(torch.rand(1, generator=g)) < 0.5:
        images = blotches(images, g)
    if float(torch.rand(1, generator=g)) < 0.3:
        images = soften(images, g)
    if float(torch.rand(1, generator=g)) < 0.7:
        images = gaussian_blur(images, g)
    images = pixel_noise(images, g)
    if float(torch.rand(1, generator=g)) < 0.3:
        images = jpeg(images, g)
    return images.clamp(0, 1), labels
