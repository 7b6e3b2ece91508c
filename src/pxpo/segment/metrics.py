"""Segmenter quality: per-class IoU on world images, and the ``pxpo evaluate-segmenter`` command."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pxpo import world
from pxpo.config import opt


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Confusion counts [C, C] (rows: truth, columns: prediction) of label maps [B, H, W]."""
    idx = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(conf: torch.Tensor, labels: tuple[str, ...] | list[str]) -> dict[str, float]:
    """Per-class IoU = TP / (TP + FP + FN) and their mean over classes present; keys: labels + 'mean'."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    out = {}
    for k, name in enumerate(labels):
        if union[k] > 0:
            out[name] = round(float(tp[k] / union[k]), 4)
    out["mean"] = round(sum(out.values()) / max(1, len(out)), 4)
    return out


@torch.no_grad()
def segmenter_miou(segmenter, n: int = 512, split: str = "heldout", seed: int = 10_000, batch: int = 64,
                   degraded: bool = False) -> dict[str, float]:
    """Per-class and mean IoU of ``segmenter`` on ``n`` world images of ``split``.

    ``degraded=True`` first applies the training degradations (blur, noise, JPEG, recolouring,
    wobble) with a fixed seed: a proxy for generated images, whose true label maps are unknown.
    """
    from pxpo.segment.augment import degrade

    labels = tuple(segmenter.labels)
    conf = torch.zeros(len(labels), len(labels), dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    done = 0
    while done < n:
        b = min(batch, n - done)
        images, target = world.sample(b, seed=seed + done, split=split).tensors()
        if degraded:
            images, target = degrade(images, target, g, p=1.0)
        conf += confusion(segmenter.predict(images), target, len(labels))
        done += b
    return iou_from_confusion(conf, labels)


def format_miou(result: dict[str, float], title: str) -> str:
    """A small table: one line per class, then the mean."""
    lines = [f"IoU on {title}:"]
    lines += [f"  {name:<12}{value:.4f}" for name, value in result.items() if name != "mean"]
    lines.append(f"  {'mean (mIoU)':<12}{result['mean']:.4f}")
    return "\n".join(lines)


@dataclass
class SegmenterEvalConfig:
    weights: str = opt("", "segmenter directory (empty: the shipped weights)")
    n: int = opt(512, "world images to score")
    split: str = opt("heldout", "world split: heldout, train or all")
    seed: int = opt(10_000, "seed of the world images")
    degraded: bool = opt(False, "also score degraded images (blur, noise, JPEG: a proxy for generated ones)")


def main(argv: list[str]) -> int:
    """Entry point of ``pxpo evaluate-segmenter``."""
    from pxpo.config import parse_overrides
    from pxpo.segment import load_segmenter

    cfg = parse_overrides(SegmenterEvalConfig(), argv, prog="pxpo evaluate-segmenter",
                          description="Per-class IoU of the segmenter on world images with exact label maps.")
    torch.set_num_threads(1)
    seg = load_segmenter(cfg.weights or None)
    print(format_miou(segmenter_miou(seg, cfg.n, cfg.split, cfg.seed), f"{cfg.n} {cfg.split} world images"))
    if cfg.degraded:
        res = segmenter_miou(seg, cfg.n, cfg.split, cfg.seed, degraded=True)
        print(format_miou(res, f"{cfg.n} {cfg.split} world images, degraded"))
    return 0
