"""Per-pixel rewards read from the shapes-world segmenter (PXPO's "rewards from a segmentation model").

With ``p = segmenter.probs(images)`` ([B, C, H, W] over ``world.LABELS``) and the soft object
mask ``m = 1 - p[background]`` ([B, H, W]), every reward is a map [B, H, W]:

- ``segment-colour``:  ``m * closeness(x, target)``, closeness = ``1 - d(x, target) / d_max`` in
  [0, 1] (the ``colour`` reward's distance, CIELAB by default). Object pixels score by their
  colour; background pixels score ~0. Note: more object pixels also mean more reward, so the
  mean rewards a larger object too; pair it with ``segment-shrink`` in a composite to hold size.
- ``segment-grow``:    ``+m`` (in [0, 1]): every pixel is paid for looking like object.
- ``segment-shrink``:  ``-m`` (in [-1, 0]): every pixel pays for looking like object.
- ``segment-inside-box``: ``+m`` inside the box, ``-m`` outside (in [-1, 1]): the object should
  move into the box (and fill it); background pixels are neutral wherever they are.
- ``segment-shape``:   ``p[target] - sum(p[other shapes])`` (in [-1, 1]). Since the shape
  probabilities sum to ``m``, this equals ``m * (2 P(target | object) - 1)``: ~0 on background,
  +m where the segmenter reads the object as the target shape, -m where it reads another shape.

Targets (colour or shape) may be ``"caption"``: read per image from a shapes-world prompt.
``segmenter``: None (the shipped one), a directory, or a :class:`pxpo.segment.Segmenter`.
The segmenter runs without gradients; it is loaded lazily, once, on first call.
"""
from __future__ import annotations

import torch

from pxpo import world
from pxpo.rewards.base import RewardError, RewardResult, register
from pxpo.rewards.colour import SPACES, _parse_255, colour_distance, max_distance, region_mask


def _segmenter_loader(segmenter):
    """A function returning the segmenter, loading it on first use."""
    held = [segmenter if not isinstance(segmenter, str) or segmenter else None]

    def get():
        if held[0] is None or isinstance(held[0], str):
            from pxpo.segment import load_segmenter

            try:
                held[0] = load_segmenter(held[0])
            except FileNotFoundError as e:
                raise RewardError(f"segment rewards: {e}") from None
        return held[0]

    return get


def _per_image(target, prompts: list[str], index: int, allowed: tuple[str, ...], what: str) -> list[str]:
    """The target of every image: fixed, or read from each prompt (``index`` into parse_caption)."""
    if target != "caption":
        return [target] * len(prompts)
    out = []
    for p in prompts:
        try:
            out.append(world.parse_caption(p)[index])
        except ValueError as e:
            raise RewardError(f"{what}='caption' needs shapes-world prompts: {e}; or give a fixed {what}") from None
    return out


def _object_stats(m: torch.Tensor) -> dict:
    return {"object_fraction": m.mean(dim=(1, 2))}


@register("segment-colour", "Object pixels (segmenter) scored by closeness to a target colour; 0 on background")
def segment_colour(target="red", space: str = "lab", segmenter=None):
    """``map = P(object) * (1 - d(x, target) / d_max)``; see the module docstring.

    target: a PALETTE name, RGB 0..255, "#rrggbb", or "caption" (the prompt's object colour).
    info: ``colour_on_object`` [B] = the m-weighted mean closeness over the object.
    """
    if space not in SPACES:
        raise RewardError(f"segment-colour: unknown space {space!r}; use 'lab' or 'rgb'")
    if target != "caption":
        _parse_255(target)  # fail at configuration time on a bad colour
    get = _segmenter_loader(segmenter)

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult:
        m = get().masks(images).to(images.dtype)  # [B, H, W]
        targets = _per_image(target, prompts, 1, world.COLOURS, "target")
        rgb = torch.tensor([_parse_255(t) for t in targets], dtype=images.dtype, device=images.device) / 255.0
        close = torch.stack([
            1.0 - colour_distance(images[i:i + 1], rgb[i], space)[0] / max_distance(tuple(rgb[i].tolist()), space)
            for i in range(len(images))]).clamp(0, 1)  # [B, H, W]
        rmap = m * close
        on_obj = rmap.sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp_min(1e-8)
        return RewardResult(map=rmap, info={"colour_on_object": on_obj, **_object_stats(m)})

    return reward


def _grow_or_shrink(sign: float, segmenter):
    get = _segmenter_loader(segmenter)

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult:
        m = get().masks(images).to(images.dtype)  # [B, H, W]
        return RewardResult(map=sign * m, info=_object_stats(m))

    return reward


@register("segment-grow", "+P(object) per pixel: a larger object earns more")
def segment_grow(segmenter=None):
    """``map = P(object)`` in [0, 1]; its mean is the (soft) fraction of the image the object covers."""
    return _grow_or_shrink(1.0, segmenter)


@register("segment-shrink", "-P(object) per pixel: a smaller object earns more")
def segment_shrink(segmenter=None):
    """``map = -P(object)`` in [-1, 0]; its mean is minus the object's (soft) area fraction."""
    return _grow_or_shrink(-1.0, segmenter)


@register("segment-inside-box", "+P(object) inside a box, -P(object) outside: move the object into the box")
def segment_inside_box(box=(0.0, 0.0, 0.5, 0.5), segmenter=None):
    """``map = P(object) * (+1 inside box, -1 outside)`` in [-1, 1].

    box: [x0, y0, x1, y1] in fractions of width and height (or a named region of the ``colour``
    reward, e.g. "left", "top-right"). info: ``object_inside`` [B] = share of the object's
    (soft) mass inside the box.
    """
    region_mask(box, 8, 8)  # fail at configuration time on a bad box
    get = _segmenter_loader(segmenter)

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult:
        b, _, h, w = images.shape
        m = get().masks(images).to(images.dtype)  # [B, H, W]
        inside = region_mask(box, h, w).to(m)  # [H, W]
        rmap = m * (2.0 * inside - 1.0)
        share = (m * inside).sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp_min(1e-8)
        return RewardResult(map=rmap, info={"object_inside": share, **_object_stats(m)})

    return reward


@register("segment-shape", "P(target shape) - P(other shapes) per pixel: the object should be the target shape")
def segment_shape(target="circle", segmenter=None):
    """``map = p[target] - sum(p[other shapes])`` in [-1, 1]; ~0 on background (module docstring).

    target: one of ``world.SHAPES`` or "caption" (the prompt's shape).
    info: ``shape_agreement`` [B] = P(target | object), m-weighted over the image.
    """
    if target != "caption" and target not in world.SHAPES:
        raise RewardError(f"segment-shape: unknown target {target!r}; use one of {', '.join(world.SHAPES)} "
                          "or 'caption'")
    get = _segmenter_loader(segmenter)

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult:
        seg = get()
        p = seg.probs(images).to(images.dtype)  # [B, C, H, W]
        idx = torch.tensor([seg.label_index(t) for t in _per_image(target, prompts, 0, world.SHAPES, "target")],
                           device=p.device)
        p_target = p[torch.arange(len(p), device=p.device), idx]  # [B, H, W]
        m = 1.0 - p[:, seg.label_index("background")]  # [B, H, W] = sum of all shape probabilities
        rmap = 2.0 * p_target - m
        agree = p_target.sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp_min(1e-8)
        return RewardResult(map=rmap, info={"shape_agreement": agree, **_object_stats(m)})

    return reward
