"""``scene-parts``: per-part feedback on scenes-world pictures ("the sky blue, the ground kept").

Each ``[part, target]`` pair asks something of one part of the picture, read by
:mod:`pxpo.testbed.scene_reader` on the *reference* picture (the starting model's picture of the same
prompt and noise, which ``pxpo train`` draws): so "the sky" is the sky as the model first drew it,
and moving a boundary earns nothing. Per pixel of the part, with ``d`` the colour distance
(CIELAB by default, as the colour reward's)::

    colour name        r = 1 - d(x, target) / d_max(target)      (the colour reward's score)
    "background"       r = 1 - d(x, fill) / diameter              (remove: look like the sky or ground around it)
    "keep"             r = 1 - d(x, ref) / diameter               (stay as drawn; these pixels are also held)

A part is a scene part (``sky``, ``ground``, ``background``, ``objects``, ``object-left``,
``object-right``, ``small-objects``, ``large-objects``) or a fixed region of the colour reward (``top``,
``top-left``, a box ``[x0, y0, x1, y1]``, ...). Where parts overlap the later pair wins. Pixels no pair
names are kept (``outside: keep``: scored and held as "keep") or left without an opinion
(``outside: neutral``: weight 0, so PXPO gives them no credit, and the KL anchors them).

``info["target_in_region"]`` is the mean score over the pixels the pairs name that do not ask to keep.
"""

from __future__ import annotations

import torch

from pxpo.rewards.base import RewardError, RewardResult, register
from pxpo.rewards.boxes import register_detector
from pxpo.rewards.colour import (
    BOXES,
    _parse_255,
    closeness_to,
    colour_distance,
    max_distance,
    reference_images,
    region_mask,
)
from pxpo.testbed import scene_reader

SPECIAL = ("keep", "background")


def _part_mask(part, reading, h: int, w: int) -> torch.Tensor:
    """Float [B, H, W] of a scene part or a fixed region."""
    if isinstance(part, str) and part in scene_reader.PART_REGIONS:
        return torch.from_numpy(scene_reader.part_masks(part, reading)).float()
    return region_mask(part, h, w).expand(len(reading.sky), h, w)


def check_parts(parts) -> list[tuple]:
    if not parts or any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in parts):
        raise RewardError(
            f"scene-parts: parts must be a list of [part, target] pairs, e.g. [[sky, blue]], got {parts!r}"
        )
    out = []
    for part, target in parts:
        if not (isinstance(part, str) and (part in scene_reader.PART_REGIONS or part in BOXES)):
            try:
                region_mask(part, 8, 8)
            except RewardError:
                raise RewardError(
                    f"scene-parts: unknown part {part!r}; use a scene part "
                    f"({', '.join(scene_reader.PART_REGIONS)}), a fixed region ({', '.join(BOXES)}) "
                    "or a box [x0, y0, x1, y1] in fractions"
                ) from None
        if not (isinstance(target, str) and target in SPECIAL):
            _parse_255(target)  # a colour, or a clear error
        out.append((part, target))
    return out


@register("scene-parts", "Per-part targets on scenes-world pictures: a colour, 'background' (remove) or 'keep'")
def scene_parts(parts=(("sky", "blue"),), outside: str = "keep", space: str = "lab"):
    """See the module docstring. ``parts``: [[part, target], ...]; ``outside``: keep or neutral."""
    pairs = check_parts(parts)
    if outside not in ("keep", "neutral"):
        raise RewardError(
            f"scene-parts: unknown outside={outside!r}; use 'keep' (every pixel no pair names stays "
            "as drawn) or 'neutral' (no opinion there)"
        )
    if space not in ("lab", "rgb"):
        raise RewardError(f"scene-parts: unknown space {space!r}; use 'lab' or 'rgb'")

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult:
        b, _, h, w = images.shape
        refs = reference_images(metadata, images)  # [B, 3, H, W]
        reading = scene_reader.read(refs)
        keep = closeness_to(images, refs, space)  # [B, H, W]
        rmap = torch.zeros(b, h, w, dtype=images.dtype)
        named = torch.zeros_like(rmap)  # pixels some pair names
        held = torch.zeros_like(rmap)  # pixels a pair asks to keep
        for part, target in pairs:
            m = _part_mask(part, reading, h, w).to(images)
            if target == "keep":
                score = keep
            elif target == "background":
                score = closeness_to(images, reading.fill().to(images), space)
            else:
                rgb = torch.tensor(_parse_255(target), dtype=images.dtype) / 255.0
                score = (1 - colour_distance(images, rgb, space) / max_distance(tuple(rgb.tolist()), space)).clamp(0, 1)
            rmap = m * score + (1 - m) * rmap
            named = torch.maximum(named, m)
            held = m * float(target == "keep") + (1 - m) * held
        rest = 1 - named
        changing = named - held  # pixels asked to change
        in_region = (changing * rmap).sum((1, 2)) / changing.sum((1, 2)).clamp_min(1e-8)
        if outside == "keep":
            rmap = rmap + rest * keep
            held = held + rest
        weight = named if outside == "neutral" else None
        return RewardResult(
            map=rmap, info={"target_in_region": in_region}, weight=weight, hold=held if held.any() else None
        )

    reward.needs_reference = True
    return reward


@register_detector("scene-objects")
def scene_objects(
    images: torch.Tensor, prompts: list[str], metadata: list[dict], target: str = "yellow", importance: float = 1.0
) -> list[list[dict]]:
    """The scenes world's object detector for the ``boxes`` reward: a box around each object the scene
    reader finds, scored 1 when the object's colour is ``target`` and 0 otherwise."""
    if target not in scene_reader.COLOURS:
        raise RewardError(
            f"scene-objects: target {target!r} is not a palette colour ({', '.join(scene_reader.COLOURS)})"
        )
    reading = scene_reader.read(images)
    h, w = images.shape[-2:]
    return [
        [
            {
                "box": [o["box"][0] / w, o["box"][1] / h, o["box"][2] / w, o["box"][3] / h],
                "score": float(o["colour"] == target),
                "importance": importance,
            }
            for o in found
        ]
        for found in reading.objects
    ]
