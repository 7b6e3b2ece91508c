"""Image helpers: tensors <-> PIL, and labelled grids for sample pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] floats in [0, 1] -> uint8 [B, H, W, 3]."""
    arr = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return arr.permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> [B, 3, H, W] floats in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2, scale: int = 1) -> Image.Image:
    """Tile [B, 3, H, W] images in [0, 1] into one picture, ``nrow`` per row, upscaled by ``scale``."""
    arr = to_uint8(images)
    b, h, w, _ = arr.shape
    ncol = min(nrow, b)
    rows = (b + ncol - 1) // ncol
    canvas = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(b):
        r, c = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y : y + h, x : x + w] = arr[i]
    img = Image.fromarray(canvas)
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def read_grid(path: str | Path, size: int = 64, pad: int = 2) -> torch.Tensor:
    """The pictures of a grid written by :func:`make_grid` (any integer upscale) -> [N, 3, size, size]
    in [0, 1]: the inverse of make_grid up to uint8 rounding."""
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    scale = next(
        s
        for s in (1, 2, 3, 4)
        if a.shape[1] % s == 0
        and (a.shape[1] // s - pad) % (size + pad) == 0
        and (a.shape[0] // s - pad) % (size + pad) == 0
    )
    a = a[::scale, ::scale]  # make_grid upscales with nearest neighbours: undo it exactly
    rows, cols = (a.shape[0] - pad) // (size + pad), (a.shape[1] - pad) // (size + pad)
    tiles = np.stack(
        [
            a[
                pad + r * (size + pad) : pad + r * (size + pad) + size,
                pad + c * (size + pad) : pad + c * (size + pad) + size,
            ]
            for r in range(rows)
            for c in range(cols)
        ]
    )
    return torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous()


def labelled_rows(grids: list[Image.Image], labels: list[str], height: int = 14) -> Image.Image:
    """Stack pictures vertically, each under a one-line text label (e.g. 'before' / 'after')."""
    width = max(g.width for g in grids)
    total = sum(g.height + height for g in grids)
    out = Image.new("RGB", (width, total), "white")
    draw = ImageDraw.Draw(out)
    y = 0
    for grid, label in zip(grids, labels):
        draw.text((4, y + 1), label, fill="black")
        out.paste(grid, (0, y + height))
        y += grid.height + height
    return out


def save(img: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
