"""Segmenter quality: per-class IoU on world images, and the ``pxpo evaluate-segmenter`` command."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from pxpo.testbed import world


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Confusion counts [C, C] (rows: truth, columns: prediction) of label maps [B, H, W]."""
    idx = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(conf: torch.Tensor, labels: tuple[str, ...] | list[str]) -> dict[str, float]:
    """Per-class IoU = TP / (TP + FP + FN) and their mean over classes present; keys: labels + 'mean'."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    raw = {name: float(tp[k] / union[k]) for k, name in enumerate(labels) if union[k] > 0}
    out = {name: round(v, 4) for name, v in raw.items()}
    out["mean"] = round(sum(raw.values()) / max(1, len(raw)), 4)
    return out


@torch.no_grad()
def segmenter_miou(segmenter, n: int = 512, split: str = "heldout", seed: int = 10_000, batch: int = 64,
                   degraded: bool = False) -> dict[str, float]:
    """Per-class and mean IoU of ``segmenter`` on ``n`` world images of ``split``.

    ``degraded=True`` first applies the training degradations (blur, noise, JPEG, recolouring,
    wobble) with a fixed seed: a proxy for generated images, whose true label maps are unknown.
    """
    from pxpo.testbed.segment.augment import degrade

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


@torch.no_grad()
def generated_miou(segmenter, pipe, n: int = 128, seed: int = 0, steps: int = 20, guidance: float = 5.0,
                   split: str = "heldout") -> dict[str, dict[str, float]]:
    """IoU of ``segmenter`` on images *generated* by ``pipe``, against pseudo-labels.

    Generated images have no true label map; the model-free evaluator (:mod:`pxpo.testbed.evaluate`)
    supplies one: its object mask (pixels whose nearest palette colour differs from the
    background's, largest component) labelled with its template-matched shape. Only images whose
    shape the evaluator reads as the caption's are kept. Edge pixels are ambiguous in such labels (blended
    colours), so a second score ignores pixels within one pixel of the pseudo-label's edge.
    Returns ``{"all": {...}, "interior": {...}, "images": {"kept": k, "sampled": n}}``.
    """
    import torch.nn.functional as F

    from pxpo.testbed.evaluate import evaluate_pipeline, read_images

    res = evaluate_pipeline(pipe, n=n, steps=steps, guidance=guidance, seed=seed, split=split, return_images=True)
    images, prompts = res["images"], res["prompts"]
    reading = read_images(images, masks=True)
    ok = [i for i, (s, p) in enumerate(zip(reading["shape"], prompts)) if s == world.parse_caption(p)[0]]
    kinds = torch.tensor([world.SHAPES.index(reading["shape"][i]) + 1 for i in ok], dtype=torch.long)
    labels = torch.from_numpy(reading["object_mask"][ok]).long() * kinds[:, None, None]  # [k, H, W]
    pred = segmenter.predict(images[ok])
    obj = (labels > 0).float()[:, None]
    edge = (F.max_pool2d(obj, 3, 1, 1) + F.max_pool2d(-obj, 3, 1, 1))[:, 0] > 0  # dilation - erosion
    c = len(segmenter.labels)
    return {"all": iou_from_confusion(confusion(pred, labels, c), segmenter.labels),
            "interior": iou_from_confusion(confusion(pred[~edge], labels[~edge], c), segmenter.labels),
            "images": {"kept": len(ok), "sampled": n}}


def format_miou(result: dict[str, float], title: str) -> str:
    """A small table: one line per class, then the mean."""
    lines = [f"IoU on {title}:"]
    lines += [f"  {name:<12}{value:.4f}" for name, value in result.items() if name != "mean"]
    lines.append(f"  {'mean (mIoU)':<12}{result['mean']:.4f}")
    return "\n".join(lines)


@dataclass
class SegmenterEvalConfig:
    """the segmenter and the images it is scored on"""

    weights: str = ""
    """segmenter directory (empty: the shipped weights)"""
    n: int = 512
    """world images to score"""
    split: Literal["heldout", "train", "all"] = "heldout"
    """world split"""
    seed: int = 10_000
    """seed of the world images"""
    degraded: bool = False
    """also score degraded images (blur, noise, JPEG: a proxy for generated ones)"""
    model: str = ""
    """also score images generated by this pipeline (directory or name), against pseudo-labels from the model-free
    evaluator
    """
    model_n: int = 128
    """generated images to score with --model"""


def main(argv: list[str]) -> int:
    """Entry point of ``pxpo evaluate-segmenter``."""
    from pxpo.config import parse_overrides
    from pxpo.testbed.segment import load_segmenter

    cfg = parse_overrides(SegmenterEvalConfig(), argv, prog="pxpo evaluate-segmenter",
                          description="Per-class IoU of the segmenter on world images with exact label maps.")
    torch.set_num_threads(1)
    seg = load_segmenter(cfg.weights or None)
    print(format_miou(segmenter_miou(seg, cfg.n, cfg.split, cfg.seed), f"{cfg.n} {cfg.split} world images"))
    if cfg.degraded:
        res = segmenter_miou(seg, cfg.n, cfg.split, cfg.seed, degraded=True)
        print(format_miou(res, f"{cfg.n} {cfg.split} world images, degraded"))
    if cfg.model:
        from pxpo.backends.registry import load_pipeline

        res = generated_miou(seg, load_pipeline(cfg.model), n=cfg.model_n, seed=cfg.seed, split=cfg.split)
        kept = f"{res['images']['kept']}/{cfg.model_n}"
        print(format_miou(res["all"], f"{kept} generated images (pseudo-labels)"))
        print(format_miou(res["interior"], f"{kept} generated images, 1-px label edges ignored"))
    return 0
