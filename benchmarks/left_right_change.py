"""How local is a run's change? Mean |change| per pixel of the evaluation pictures, left vs right half.

    python benchmarks/left_right_change.py runs/examples/colour_left_red [more run dirs ...]

Compares a run's first and last evaluation grids (samples/epoch_0000_before.png and the last
samples/epoch_NNNN.png: the same prompts and noise), RGB in [0, 1]. A reward on the left half that
changed only the left half would print a right-half change near 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pxpo.images import read_grid


def main(runs: list[str]) -> None:
    for run in map(Path, runs):
        grids = sorted((run / "samples").glob("epoch_*.png"))
        before, after = read_grid(run / "samples" / "epoch_0000_before.png"), read_grid(grids[-1])
        change = (after - before).abs().mean(dim=1)  # [N, H, W]
        half = change.shape[2] // 2
        print(
            f"{run.name}: left {change[:, :, :half].mean():.3f}  right {change[:, :, half:].mean():.3f}  "
            f"({grids[-1].name} vs epoch_0000_before.png)"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
