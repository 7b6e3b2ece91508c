"""``boxes``: reward maps painted from boxes, a detector's or a person's, beside heatmaps and strokes.

A box is ``{"box": [x0, y0, x1, y1], "score": s, "importance": a}``: a rectangle in fractions of the
width and height, the reward its pixels earn, and how much the box counts (in [0, 1], default 1).
Boxes come from a *detector*, looked up by name (:func:`register_detector`) or as ``module:function``,
which reads each picture::

    detect(images [B, 3, H, W], prompts, metadata, **detector_params) -> per picture, a list of boxes

or from ``boxes``, the same boxes for every picture (a person's boxes on the picture being refined).
The map starts from ``base`` and each box is painted over it, the least important first:

    base a number b:  r_ij = b, then r_ij <- (1 - a_k) r_ij + a_k s_k for the pixels of box k;
                      the reward has an opinion everywhere (weight 1)
    base None:        r_ij = s_k of the most important box over (i, j), weight a_k there; no opinion
                      (weight 0) outside every box, so PXPO gives those pixels no credit

A box covers pixel (x, y) when its centre lies in it: ``x0 <= (x + 0.5) / W < x1`` (as the colour
reward's regions).
"""

from __future__ import annotations

from typing import Callable

import torch

from pxpo.rewards.base import RewardError, RewardResult, register

DETECTORS: dict[str, Callable] = {}


def register_detector(name: str):
    """Decorator: a detector ``(images, prompts, metadata, **params) -> per picture a list of boxes``."""

    def deco(fn):
        DETECTORS[name] = fn
        return fn

    return deco


def get_detector(name: str) -> Callable:
    from pxpo import plugins

    plugins.load()
    if name in DETECTORS:
        return DETECTORS[name]
    if ":" in name:
        return plugins.load_object(name, "boxes detector", RewardError)
    raise RewardError(
        f"unknown boxes detector {name!r}; registered: {', '.join(sorted(DETECTORS)) or 'none'}; "
        "or give your own as 'package.module:function'"
    )


def check_box(box) -> dict:
    """A box as a dict with floats, or a one-line error saying what a box must look like."""
    if isinstance(box, (list, tuple)) and len(box) in (5, 6):  # [x0, y0, x1, y1, score(, importance)]
        box = {"box": box[:4], "score": box[4], **({"importance": box[5]} if len(box) == 6 else {})}
    if not isinstance(box, dict) or "box" not in box or "score" not in box:
        raise RewardError(
            f"a box must be {{box: [x0, y0, x1, y1], score: s, importance: a}} or [x0, y0, x1, y1, s, a], got {box!r}"
        )
    try:
        x0, y0, x1, y1 = (float(v) for v in box["box"])
        score, importance = float(box["score"]), float(box.get("importance", 1.0))
    except (TypeError, ValueError):
        raise RewardError(f"box {box!r}: the corners, score and importance must be numbers") from None
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise RewardError(
            f"box {[x0, y0, x1, y1]} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 "
            "(fractions of width and height)"
        )
    if not 0 <= importance <= 1:
        raise RewardError(f"box importance {importance} must lie in [0, 1]")
    return {"box": (x0, y0, x1, y1), "score": score, "importance": importance}


def box_mask(box: tuple, h: int, w: int) -> torch.Tensor:
    """[H, W] bool: the pixels whose centres lie in ``box`` (fractions)."""
    x0, y0, x1, y1 = box
    xs, ys = (torch.arange(w) + 0.5) / w, (torch.arange(h) + 0.5) / h
    return ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]


def paint_boxes(
    boxes: list[list[dict]], h: int, w: int, base: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per picture's boxes (checked dicts) -> (map [B, H, W], weight [B, H, W]), as the module says."""
    b = len(boxes)
    reward = torch.full((b, h, w), float(base or 0.0))
    weight = torch.ones(b, h, w) if base is not None else torch.zeros(b, h, w)
    for i, picture in enumerate(boxes):
        for box in sorted(picture, key=lambda k: k["importance"]):  # the most important painted last
            m, a = box_mask(box["box"], h, w), box["importance"]
            if base is not None:
                reward[i][m] = (1 - a) * reward[i][m] + a * box["score"]
            else:
                reward[i][m], weight[i][m] = box["score"], a
    return reward, weight


@register("boxes", "a reward map painted from boxes: a detector's (by name) or given ones, over a base")
def boxes_reward(
    detector: str | None = None,
    detector_params: dict | None = None,
    boxes: list | None = None,
    base: float | None = None,
):
    if detector is None and not boxes:
        raise RewardError(
            "the boxes reward needs a detector (a registered name or 'module:function') or boxes "
            "[[x0, y0, x1, y1, score, importance], ...]"
        )
    detect = get_detector(detector) if detector is not None else None
    fixed = [check_box(b) for b in boxes or ()]
    if base is not None and not isinstance(base, (int, float)):
        raise RewardError(f"boxes base must be a number or null (no opinion outside the boxes), got {base!r}")

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult:
        found = [[] for _ in range(images.shape[0])]
        if detect is not None:
            found = detect(images, prompts, metadata, **(detector_params or {}))
            if not isinstance(found, (list, tuple)) or len(found) != images.shape[0]:
                raise RewardError(
                    f"detector {detector!r} must return one list of boxes per picture "
                    f"({images.shape[0]}), got {type(found).__name__}"
                )
        per_picture = [fixed + [check_box(b) for b in boxes_i] for boxes_i in found]
        reward_map, weight = paint_boxes(per_picture, images.shape[-2], images.shape[-1], base)
        count = torch.tensor([float(len(p)) for p in per_picture])
        return RewardResult(
            map=reward_map.to(images.device), weight=weight.to(images.device), info={"boxes_per_picture": count}
        )

    return reward
