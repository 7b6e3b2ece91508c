"""How local is a run's change? Mean |change| per pixel of the evaluation pictures, left vs right half.

    python benchmarks/left_right_change.py runs/examples/colour_left_red [more run dirs ...]

Compares a run's first and last evaluation grids (samples/epoch_0000_before.png and the last
samples/epoch_NNNN.png: the same prompts and noise), RGB in [0, 1]. A reward on the left half that
changed only the left half would print a right-half change near 0.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def tiles(path: Path, size: int = 64, pad: int = 2) -> np.ndarray:
    """The pictures of a grid written by pxpo.images.make_grid (any integer upscale) -> [N, size, size, 3]."""
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    scale = next(s for s in (1, 2, 3, 4) if a.shape[1] % s == 0 and (a.shape[1] // s - pad) % (size + pad) == 0
                 and (a.shape[0] // s - pad) % (size + pad) == 0)
    a = a[::scale, ::scale]  # make_grid upscales with nearest neighbours: undo it exactly
    rows, cols = (a.shape[0] - pad) // (size + pad), (a.shape[1] - pad) // (size + pad)
    return np.stack([a[pad + r * (size + pad):pad + r * (size + pad) + size,
                       pad + c * (size + pad):pad + c * (size + pad) + size] for r in range(rows) for c in range(cols)])


def main(runs: list[str]) -> None:
    for run in map(Path, runs):
        grids = sorted((run / "samples").glob("epoch_*.png"))
        before, after = tiles(run / "samples" / "epoch_0000_before.png"), tiles(grids[-1])
        change = np.abs(after - before).mean(axis=3)  # [N, H, W]
        half = change.shape[2] // 2
        print(f"{run.name}: left {change[:, :, :half].mean():.3f}  right {change[:, :, half:].mean():.3f}  "
              f"({grids[-1].name} vs epoch_0000_before.png)")


if __name__ == "__main__":
    main(sys.argv[1:])
