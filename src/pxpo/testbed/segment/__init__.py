"""The shapes-world segmenter: per-pixel class probabilities over ``world.LABELS``.

    seg = load_segmenter()            # shipped weights in pxpo/weights/segmenter/, cached
    p = seg.probs(images)             # [B, 3, H, W] in [0, 1] -> [B, C, H, W], sums to 1 over C
    m = seg.masks(images)             # [B, H, W] = 1 - P(background): the object mask

Trained by ``pxpo pretrain-segmenter`` (see :mod:`pxpo.testbed.segment.train`); scored by
``pxpo evaluate-segmenter``. It runs without gradients: rewards need no gradient through it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from pxpo.testbed.segment.model import SegmenterNet, load_net
from pxpo.errors import UserError

SHIPPED = Path(__file__).resolve().parent.parent / "weights" / "segmenter"
NATIVE_SIZE = 64  # the resolution the network was trained at


class Segmenter:
    """Inference wrapper around a :class:`SegmenterNet`.

    Images of another size than 64x64 are resized to 64x64 (the scale objects had in training)
    and the probabilities are resized back, so maps always match the input's height and width.
    """

    def __init__(self, net: SegmenterNet, path: Path | None = None):
        self.net = net.eval()
        self.path = path
        self.labels: tuple[str, ...] = tuple(net.config.labels)

    def _check(self, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"segmenter expects images [B, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> logits [B, C, H, W] (float32, on the images' device)."""
        self._check(images)
        h, w = images.shape[-2:]
        x = images.detach().float().clamp(0, 1)
        net = self.net.to(x.device)
        if (h, w) != (NATIVE_SIZE, NATIVE_SIZE):
            x = F.interpolate(x, size=(NATIVE_SIZE, NATIVE_SIZE), mode="bilinear", align_corners=False, antialias=True)
        out = net(x)
        if (h, w) != (NATIVE_SIZE, NATIVE_SIZE):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel class probabilities [B, C, H, W] over ``self.labels`` (sum to 1 over C)."""
        return self.logits(images).softmax(dim=1)

    def masks(self, images: torch.Tensor) -> torch.Tensor:
        """Soft object mask [B, H, W] = 1 - P(background)."""
        return 1.0 - self.probs(images)[:, 0]

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Hard label map [B, H, W] (0 = background, k = SHAPES[k-1])."""
        return self.logits(images).argmax(dim=1)

    def label_index(self, name: str) -> int:
        if name not in self.labels:
            raise UserError(f"segmenter has no class {name!r}; its classes are {', '.join(self.labels)}")
        return self.labels.index(name)


@lru_cache(maxsize=8)
def _load(path: str) -> Segmenter:
    return Segmenter(load_net(path), Path(path))


def load_segmenter(path: str | Path | None = None) -> Segmenter:
    """The segmenter saved at ``path`` (default: the shipped weights); loaded once per path."""
    return _load(str(Path(path or SHIPPED).resolve()))


__all__ = ["Segmenter", "SegmenterNet", "load_segmenter", "SHIPPED", "NATIVE_SIZE"]
