"""``pxpo pretrain-segmenter``: train the shapes-world segmenter on exact label maps.

Training images come from ``world.stream(split="train")`` (held-out combinations are never seen,
so the held-out mIoU measures generalisation), degraded by :func:`pxpo.testbed.segment.augment.degrade`
so that the network also reads blurry, colour-noisy generated images. Loss: per-pixel cross
entropy. Optimiser: AdamW with linear warm-up and cosine decay. Writes the network
(safetensors + config.json) and ``train_log.json`` (command, seed, time, held-out mIoU).
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pxpo.testbed import world
from pxpo.testbed.segment.augment import degrade
from pxpo.testbed.segment.model import SegmenterConfig, SegmenterNet, num_parameters, save_segmenter


@dataclass
class SegmenterTrainConfig:
    """the segmenter's training run"""

    out: str = "runs/segmenter"
    """directory to write (model.safetensors, config.json, train_log.json)"""
    steps: int = 1500
    """optimisation steps"""
    batch: int = 16
    """images per step"""
    lr: float = 3e-3
    """peak learning rate (AdamW)"""
    weight_decay: float = 1e-4
    """AdamW weight decay"""
    warmup: int = 50
    """linear warm-up steps"""
    augment: float = 0.8
    """fraction of batches degraded to look generated (blur, noise, JPEG, ...)"""
    seed: int = 0
    """seed of the world stream, the augmentations and the initialisation"""
    eval_n: int = 512
    """held-out world images for the final mIoU"""
    log_every: int = 100
    """steps between progress lines"""
    threads: int = 1
    """torch CPU threads"""


def lr_at(step: int, cfg: SegmenterTrainConfig) -> float:
    """Linear warm-up to ``cfg.lr`` then cosine decay to 5% of it."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def train_segmenter(cfg: SegmenterTrainConfig, log=print) -> tuple[SegmenterNet, dict]:
    """Train from scratch; returns the network (eval mode) and a log dict."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    net = SegmenterNet(SegmenterConfig())
    optim = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    stream = world.stream(cfg.batch, seed=cfg.seed, split="train")
    t0, running = time.time(), None
    for step in range(cfg.steps):
        images, labels = next(stream).tensors()  # [B, 3, 64, 64], [B, 64, 64]
        images, labels = degrade(images, labels, g, p=cfg.augment)
        loss = F.cross_entropy(net(images), labels)
        for group in optim.param_groups:
            group["lr"] = lr_at(step, cfg)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optim.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            log(f"step {step + 1}/{cfg.steps}  loss {running:.4f}  {time.time() - t0:.0f}s")
    net.eval()
    return net, {
        "train_seconds": round(time.time() - t0, 1),
        "final_loss_ema": round(running, 5),
        "num_parameters": num_parameters(net),
    }


def pretrain_segmenter(cfg: SegmenterTrainConfig, argv: list[str] | None = None) -> Path:
    """Train, measure held-out mIoU (clean and degraded), save weights + ``train_log.json``."""
    from pxpo.testbed.segment import Segmenter
    from pxpo.testbed.segment.metrics import segmenter_miou

    net, log = train_segmenter(cfg)
    seg = Segmenter(net)
    clean = segmenter_miou(seg, n=cfg.eval_n, split="heldout", seed=10_000 + cfg.seed)
    noisy = segmenter_miou(seg, n=cfg.eval_n, split="heldout", seed=10_000 + cfg.seed, degraded=True)
    log.update(
        {
            "command": "pxpo pretrain-segmenter " + " ".join(sys.argv[2:] if argv is None else argv),
            "config": asdict(cfg),
            "seed": cfg.seed,
            "torch": torch.__version__,
            "machine": f"{platform.machine()} {platform.processor() or ''} {cfg.threads} thread(s)".strip(),
            "heldout_miou": clean,
            "heldout_miou_degraded": noisy,
        }
    )
    out = save_segmenter(net, cfg.out, extra={"heldout_mean_iou": clean["mean"]})
    (out / "train_log.json").write_text(json.dumps(log, indent=2))
    return out


def main(argv: list[str]) -> int:
    """Entry point of ``pxpo pretrain-segmenter``."""
    from pxpo.config import parse_overrides
    from pxpo.testbed.segment.metrics import format_miou

    cfg = parse_overrides(
        SegmenterTrainConfig(),
        argv,
        prog="pxpo pretrain-segmenter",
        description="Train the shapes-world segmenter (per-pixel background/shape classes).",
    )
    out = pretrain_segmenter(cfg, argv)
    log = json.loads((out / "train_log.json").read_text())
    print(format_miou(log["heldout_miou"], "held-out world images"))
    print(format_miou(log["heldout_miou_degraded"], "held-out world images, degraded"))
    print(f"saved segmenter to {out} ({log['num_parameters']} parameters, {log['train_seconds']} s)")
    return 0
