"""Per-pixel rewards read from the shapes-world segmenter (PXPO's "rewards from a segmentation model").

With ``p = segmenter.probs(images)`` ([B, C, H, W] over ``world.LABELS``) and the soft object
mask ``m = 1 - p[background]`` ([B, H, W]), every reward is a map [B, H, W]:

- ``segment-colour``:  ``m * closeness(x, target)``, closeness = ``1 - d(x, target) / d_max`` in
  [0, 1] (the ``colour`` reward's distance, CIELAB by default). Object pixels score by their
  colour; background pixels score ~0. Note: more object pixels also mean more reward, so the
  mean rewards a larger object too; pair it with ``segment-shrink`` in a composite to hold size.
- ``segment-grow``:    ``+m`` (in [0, 1]): every pixel is paid for looking like object.
- ``segment-shrink``:  ``-m`` (in [-1, 0]): every pixel pays for looking like object.
- ``segment-inside-box``: inside the box ``m - fill (1 - m)``, outside ``-m`` (in [-1, 1]): the
  object should move into the box and fill it.
- ``segment-shape``:   ``-|T - m| H W / (2 A)``, T the target shape's silhouette with the object's
  area A and centroid: per-pixel disagreement of the object/background call with the target
  shape, normalised by the object's size so that shrinking does not pay.

Targets (colour or shape) may be ``"caption"``: read per image from a shapes-world prompt.
``segmenter``: None (the shipped one), a directory, or a :class:`pxpo.testbed.segment.Segmenter`.
The segmenter runs without gradients; it is loaded lazily, once, on first call.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from pxpo.testbed import world
from pxpo.rewards.base import RewardError, RewardResult, register
from pxpo.rewards.colour import SPACES, _parse_255, reference_images, colour_distance, max_distance, region_mask


def _segmenter_loader(segmenter):
    """A function returning the segmenter, loading it on first use."""
    held = [segmenter if not isinstance(segmenter, str) or segmenter else None]

    def get():
        if held[0] is None or isinstance(held[0], str):
            from pxpo.testbed.segment import load_segmenter

            try:
                held[0] = load_segmenter(held[0])
            except FileNotFoundError as e:
                raise RewardError(f"segment rewards: {e}") from None
        return held[0]

    return get


def _per_image(target, prompts: list[str], index: int, allowed: tuple[str, ...], what: str) -> list[str]:
    """The target of every image: fixed, or read from each prompt (``index`` into parse_partial_caption)."""
    if target != "caption":
        return [target] * len(prompts)
    out = []
    for p in prompts:
        try:
            part = world.parse_partial_caption(p)[index]
        except ValueError as e:
            raise RewardError(f"{what}='caption' needs shapes-world prompts: {e}; or give a fixed {what}") from None
        if part is None:
            raise RewardError(
                f"{what}='caption' needs prompts that name the {what}; {p!r} leaves it open: "
                f"give a fixed {what} or captions that name it"
            )
        out.append(part)
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
        close = torch.stack(
            [
                1.0 - colour_distance(images[i : i + 1], rgb[i], space)[0] / max_distance(tuple(rgb[i].tolist()), space)
                for i in range(len(images))
            ]
        ).clamp(0, 1)  # [B, H, W]
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


@register(
    "segment-inside-box",
    "Object pixels inside a box earn, outside cost; box pixels left empty cost: move the object into the box",
)
def segment_inside_box(box=(0.0, 0.0, 0.5, 0.5), fill: float = 1.0, segmenter=None):
    """``map = inside * (m - fill * (1 - m)) - (1 - inside) * m`` in [-1, 1] (m = P(object)).

    Outside the box an object pixel costs 1; inside it an object pixel earns 1 and, with
    ``fill`` > 0, a background pixel costs ``fill``. Without the fill term (``fill=0``) the cheapest
    way to score is to shrink the object until only its part inside the box is left; with it the
    object is pulled into the box (and, for a box larger than the object, grown to fill it).
    box: [x0, y0, x1, y1] in fractions of width and height, or a named region of the ``colour``
    reward ("left", "top-right", ...). info: ``object_inside`` [B] = share of the object's (soft)
    mass inside the box; ``box_filled`` [B] = share of the box that is object.
    """
    region_mask(box, 8, 8)  # fail at configuration time on a bad box
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or fill < 0:
        raise RewardError(f"segment-inside-box: fill={fill!r}; use a number >= 0 (0 = ignore empty box pixels)")
    get = _segmenter_loader(segmenter)

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult:
        m = get().masks(images).to(images.dtype)  # [B, H, W]
        inside = region_mask(box, *images.shape[2:]).to(m)  # [H, W]
        rmap = inside * (m - fill * (1.0 - m)) - (1.0 - inside) * m
        share = (m * inside).sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp_min(1e-8)
        filled = (m * inside).sum(dim=(1, 2)) / inside.sum()
        return RewardResult(map=rmap, info={"object_inside": share, "box_filled": filled, **_object_stats(m)})

    return reward


@lru_cache(maxsize=None)
def _unit_shape(shape: str) -> tuple[float, float]:
    """(area / r**2, centroid's y offset / r) of a world silhouette of half-extent r (numerically)."""
    size, r = 512, 200.0
    mask = world.shape_masks(
        np.array([world.SHAPES.index(shape)]),
        np.array([256.0], dtype=np.float32),
        np.array([256.0], dtype=np.float32),
        np.array([r], dtype=np.float32),
        size,
    )[0]
    ys = np.nonzero(mask)[0] + 0.5
    return mask.sum() / r**2, (ys.mean() - 256.0) / r


def fitted_templates(m: torch.Tensor, shapes: list[str]) -> torch.Tensor:
    """Silhouettes [B, H, W] (0/1) of ``shapes`` with the area and centroid of the soft masks m [B, H, W].

    A shape of half-extent r has area ``k r**2`` and its centroid ``d r`` below its centre (both
    from :func:`_unit_shape`), so ``r = sqrt(area / k)`` and centre = centroid - (0, d r).
    An empty mask gives an empty template.
    """
    b, h, w = m.shape
    if h != w:
        raise RewardError(f"segment-shape draws templates on square images; got {h}x{w}")
    mass = m.sum(dim=(1, 2)).clamp_min(1e-8)  # [B]
    xs = torch.arange(w, dtype=m.dtype, device=m.device) + 0.5
    ys = torch.arange(h, dtype=m.dtype, device=m.device) + 0.5
    cx = (m.sum(dim=1) * xs).sum(dim=1) / mass  # [B]
    cy = (m.sum(dim=2) * ys).sum(dim=1) / mass  # [B]
    unit = [_unit_shape(s) for s in shapes]
    r = torch.stack([(mass[i] / unit[i][0]).sqrt() for i in range(b)])
    cy = cy - torch.tensor([u[1] for u in unit], dtype=m.dtype, device=m.device) * r
    kind = np.array([world.SHAPES.index(s) for s in shapes])
    f32 = [v.cpu().numpy().astype(np.float32) for v in (cx, cy, r)]
    out = world.shape_masks(kind, *f32, h)  # [B, h, h]
    empty = (mass < 0.5).cpu().numpy()
    out[empty] = False
    return torch.from_numpy(out).to(m)


@register(
    "segment-shape", "Per-pixel disagreement with the target shape's silhouette fitted to the object, size-normalised"
)
def segment_shape(target="circle", fit: str = "image", segmenter=None):
    """``map = -|T - m| * H W / (2 A)`` in [-H W / (2 A), 0]; 0 where the segmenter's object/background
    call (m = P(object)) agrees with the template T.

    T is the target shape's silhouette with the area A and the centroid of the object (m), so an
    image's mean is ``-(disagreeing area) / (2 A)``: 0 for a perfect target shape, about ``-(1 - IoU)``
    otherwise, whatever the object's size. Dividing by A is what stops shrinking from paying (a
    smaller wrong shape disagrees on fewer pixels, but on the same share of its area).
    fit: "image" (the object as it is now) or "reference" (T and A from the object as the starting
    model drew it from the same noise; then moving or resizing the object costs too).
    target: one of ``world.SHAPES`` or "caption" (the prompt's shape).
    info: ``template_iou`` [B] = soft IoU of m and T; ``shape_agreement`` [B] = the segmenter's
    classifier's P(target | object), m-weighted (a second opinion the reward does not use).
    """
    if target != "caption" and target not in world.SHAPES:
        raise RewardError(
            f"segment-shape: unknown target {target!r}; use one of {', '.join(world.SHAPES)} or 'caption'"
        )
    if fit not in ("reference", "image"):
        raise RewardError(
            f"segment-shape: fit={fit!r}; use 'image' (the object as it is now) or 'reference' "
            "(the object as the starting model drew it; needs reference images)"
        )
    get = _segmenter_loader(segmenter)

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult:
        seg = get()
        b, _, h, w = images.shape
        p = seg.probs(images).to(images.dtype)  # [B, C, H, W]
        m = 1.0 - p[:, seg.label_index("background")]  # [B, H, W]
        shapes = _per_image(target, prompts, 0, world.SHAPES, "target")
        m_fit = m if fit == "image" else seg.masks(reference_images(metadata, images)).to(m)
        t = fitted_templates(m_fit, shapes)  # [B, H, W]
        area = t.sum(dim=(1, 2)).clamp_min(1.0)  # [B] pixels
        rmap = -(t - m).abs() * (h * w / (2.0 * area))[:, None, None]
        idx = torch.tensor([seg.label_index(s) for s in shapes], device=p.device)
        p_target = p[torch.arange(len(p), device=p.device), idx]  # [B, H, W]
        agree = p_target.sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp_min(1e-8)
        iou = (m * t).sum(dim=(1, 2)) / (m + t - m * t).sum(dim=(1, 2)).clamp_min(1e-8)
        return RewardResult(map=rmap, info={"template_iou": iou, "shape_agreement": agree, **_object_stats(m)})

    reward.needs_reference = fit == "reference"
    return reward
