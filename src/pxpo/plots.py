"""One place that draws a line plot to a PNG (training curves, benchmark curves): matplotlib without a
display, a grid, tight layout, the folder made, the figure closed."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path


@contextmanager
def line_plot(path: Path, size: tuple[float, float] = (6, 3.4), dpi: int = 110, legend: bool = False):
    """``with line_plot(path) as ax: ax.plot(...)`` writes ``path`` when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    try:
        yield ax
        ax.grid(alpha=0.3)
        if legend:
            ax.legend(fontsize=7)
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
