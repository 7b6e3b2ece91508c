"""A compact UNet-like segmentation network for the shapes world (about 175k parameters).

Input: images ``[B, 3, H, W]`` in [0, 1] (H and W divisible by 8; trained at 64x64).
Output: logits ``[B, C, H, W]`` over ``world.LABELS`` (background + one class per shape).

Three downsampling levels (64 -> 32 -> 16 -> 8) with skip connections, plus a global-context
vector at the bottleneck: a pixel's shape class (is this patch of red part of a circle or of a
square?) depends on the whole object, which can span 44 pixels, so every pixel also sees a
pooled summary of the image.

Saved as ``model.safetensors`` (weights) + ``config.json`` (constructor arguments and labels).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pxpo.testbed import world
from pxpo.errors import MissingFile

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


@dataclass
class SegmenterConfig:
    channels: list[int] = field(default_factory=lambda: [8, 24, 48, 64])  # per level, full res first
    labels: list[str] = field(default_factory=lambda: list(world.LABELS))
    groups: int = 8  # GroupNorm groups (each channel count must be divisible by it)
    decoder_convs: int = 1  # 3x3 convs per decoder level (the encoder has two)


def _block(cin: int, cout: int, groups: int, convs: int = 2) -> nn.Sequential:
    """``convs`` x (3x3 conv + GroupNorm + SiLU): [B, cin, H, W] -> [B, cout, H, W]."""
    layers = []
    for i in range(convs):
        layers += [
            nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False),
            nn.GroupNorm(min(groups, cout), cout),
            nn.SiLU(),
        ]
    return nn.Sequential(*layers)


class SegmenterNet(nn.Module):
    """Encoder-decoder with skips: [B, 3, H, W] in [0, 1] -> logits [B, len(labels), H, W]."""

    def __init__(self, config: SegmenterConfig | None = None):
        super().__init__()
        self.config = config or SegmenterConfig()
        ch, g = self.config.channels, self.config.groups
        if any(c % g for c in ch):
            raise ValueError(f"every channel count {ch} must be divisible by groups={g}")
        self.downs = nn.ModuleList([_block(3, ch[0], g)])
        for cin, cout in zip(ch[:-1], ch[1:]):
            self.downs.append(_block(cin, cout, g))
        self.context = nn.Linear(ch[-1], ch[-1])  # global summary added back at the bottleneck
        self.ups = nn.ModuleList()
        for deep, skip in zip(ch[:0:-1], ch[-2::-1]):
            self.ups.append(_block(deep + skip, skip, g, self.config.decoder_convs))
        self.head = nn.Conv2d(ch[0], len(self.config.labels), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = images * 2.0 - 1.0  # [B, 3, H, W] in [-1, 1]
        skips = []
        for i, down in enumerate(self.downs):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            h = down(h)
            skips.append(h)  # level i: [B, ch[i], H / 2^i, W / 2^i]
        h = h + self.context(h.mean(dim=(2, 3)))[:, :, None, None]
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = up(torch.cat([h, skip], dim=1))
        return self.head(h)  # [B, C, H, W]


def num_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def save_segmenter(net: SegmenterNet, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``path/model.safetensors`` and ``path/config.json``; returns ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path / WEIGHTS_NAME))
    (path / WEIGHTS_NAME).chmod(0o644)  # safetensors writes 0600; shipped weights must be readable by all
    meta = {"config": asdict(net.config), "num_parameters": num_parameters(net), **(extra or {})}
    (path / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
    return path


def load_net(path: str | Path) -> SegmenterNet:
    """Read a network saved by :func:`save_segmenter`; errors say which file is missing."""
    from safetensors.torch import load_file

    path = Path(path)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not (path / name).is_file():
            raise MissingFile(
                f"segmenter directory {str(path)!r} has no {name}; give a directory written by "
                "`pxpo pretrain-segmenter --out=DIR`, or leave the path out to use the shipped weights"
            )
    meta = json.loads((path / CONFIG_NAME).read_text())
    net = SegmenterNet(SegmenterConfig(**meta["config"]))
    net.load_state_dict(load_file(str(path / WEIGHTS_NAME)))
    return net.eval()
