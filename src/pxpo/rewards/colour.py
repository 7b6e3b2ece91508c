"""Colour control (PXPO experiment 1): reward pixels of a region for having a target colour.

Per pixel, inside the region::

    r(x_ij) = 1 - d(x_ij, target) / d_max(target)        in [0, 1]

where ``d`` is Euclidean distance in the chosen colour space ("rgb": sRGB values in [0, 1];
"lab": CIELAB, i.e. ΔE*76) and ``d_max(target)`` is the largest distance from the target to any
sRGB colour, so 1 means exactly the target colour and 0 the farthest colour there is.
Outside the region the reward is 0 (``outside="neutral"``) or, with ``outside="keep"`` ("change
only here"), ``1 - d(x_ij, ref_ij) / diameter`` for a reference image given per sample in
``metadata[i]["reference"]`` (``diameter`` = the largest distance between two sRGB colours).
``pxpo train`` fills the reference with the frozen starting model's image for the same prompt and
the same noise, so "as it was" means "as the model drew it before training". With a reference,
the regions "object"/"background" are segmented on the reference image (the object as it was).
A soft mask m blends the two: ``map = m * r_inside + (1 - m) * r_outside``. With ``outside="neutral"``
the result's ``weight`` is m: the reward has no opinion outside the region, so PXPO neither credits
those pixels nor compares them with other samples' in-region pixels there.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Callable, Sequence

import torch

from pxpo.rewards.base import RewardError, RewardResult, register
from pxpo.rewards.palette import PALETTE

# Named regions as boxes [x0, y0, x1, y1] in fractions of width and height.
BOXES: dict[str, tuple[float, float, float, float]] = {
    "all": (0.0, 0.0, 1.0, 1.0),
    "left": (0.0, 0.0, 0.5, 1.0),
    "right": (0.5, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5),
    "bottom": (0.0, 0.5, 1.0, 1.0),
    "top-left": (0.0, 0.0, 0.5, 0.5),
    "top-right": (0.5, 0.0, 1.0, 0.5),
    "bottom-left": (0.0, 0.5, 0.5, 1.0),
    "bottom-right": (0.5, 0.5, 1.0, 1.0),
    "centre": (0.25, 0.25, 0.75, 0.75),
    "center": (0.25, 0.25, 0.75, 0.75),
}
BORDER = 0.125  # "border": pixels within this fraction of the width/height from an edge
MASK_REGIONS = ("object", "background")  # need a segmentation mask of the images
REGIONS = tuple(BOXES) + ("border",) + MASK_REGIONS
SPACES = ("rgb", "lab")


def parse_colour(target) -> tuple[float, float, float]:
    """A PALETTE name, an RGB triple 0..255 or ``"#rrggbb"`` -> RGB in [0, 1]."""
    return tuple(c / 255.0 for c in _parse_255(target))


def _parse_255(target) -> tuple[float, float, float]:
    """Like :func:`parse_colour` but in 0..255 (so images made as uint8 / 255 match it bit for bit)."""
    if isinstance(target, str):
        text = target.strip().lower()
        if text in PALETTE:
            return tuple(float(c) for c in PALETTE[text])
        if text.startswith("#") and len(text) == 7:
            try:
                return tuple(float(int(text[i : i + 2], 16)) for i in (1, 3, 5))
            except ValueError:
                pass
    elif (
        isinstance(target, Sequence)
        and len(target) == 3
        and all(isinstance(c, (int, float)) and not isinstance(c, bool) and 0 <= c <= 255 for c in target)
    ):
        return tuple(float(c) for c in target)
    raise RewardError(
        f"colour target {target!r} is not a colour; use a name ({', '.join(PALETTE)}), "
        "an RGB triple of numbers 0..255 such as [220, 30, 30], or a hex string such as '#dc1e1e'"
    )


def region_mask(region, height: int, width: int) -> torch.Tensor:
    """[H, W] float mask of a named region or a box ``[x0, y0, x1, y1]`` in fractions.

    Pixel (x, y) is inside a box when its centre satisfies ``x0 <= (x + 0.5) / W < x1`` and
    ``y0 <= (y + 0.5) / H < y1`` (``<= 1`` at the far edge). "border" is the complement of the
    box ``[BORDER, BORDER, 1 - BORDER, 1 - BORDER]``.
    """
    if isinstance(region, str):
        if region == "border":
            return 1.0 - region_mask([BORDER, BORDER, 1 - BORDER, 1 - BORDER], height, width)
        if region in MASK_REGIONS:
            raise RewardError(
                f"region {region!r} depends on the image; it needs a segmentation mask_fn, not a fixed region_mask"
            )
        if region not in BOXES:
            raise RewardError(
                f"unknown region {region!r}; use one of {', '.join(REGIONS)} "
                "or a box [x0, y0, x1, y1] in fractions of width and height"
            )
        region = BOXES[region]
    try:
        x0, y0, x1, y1 = (float(v) for v in region)
    except (TypeError, ValueError):
        raise RewardError(
            f"region {region!r} is neither a name ({', '.join(REGIONS)}) nor a box [x0, y0, x1, y1] of four numbers"
        ) from None
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise RewardError(
            f"region box {[x0, y0, x1, y1]} must satisfy 0 <= x0 < x1 <= 1 and "
            "0 <= y0 < y1 <= 1 (fractions of width and height)"
        )
    xs = (torch.arange(width) + 0.5) / width  # [W]
    ys = (torch.arange(height) + 0.5) / height  # [H]
    in_x = (xs >= x0) & ((xs < x1) | (x1 == 1.0))
    in_y = (ys >= y0) & ((ys < y1) | (y1 == 1.0))
    return (in_y[:, None] & in_x[None, :]).float()  # [H, W]


# sRGB (D65) -> CIE XYZ, IEC 61966-2-1, and the D65 reference white.
_RGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750), (0.0193339, 0.1191920, 0.9503041))
_WHITE = (0.95047, 1.0, 1.08883)


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], channels at dim -3 ([..., 3, H, W]) -> CIELAB (L in [0, 100]), same shape.

    1. linearise: ``c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4``;
    2. XYZ = M · linear (sRGB D65 matrix), divided by the D65 white (0.95047, 1, 1.08883);
    3. ``f(t) = t ** (1/3)`` if ``t > (6/29)**3`` else ``t / (3 (6/29)**2) + 4/29``;
    4. ``L = 116 f(Y) - 16``, ``a = 500 (f(X) - f(Y))``, ``b = 200 (f(Y) - f(Z))``.
    Written elementwise (no matmul) so equal pixels give bit-equal Lab values at any batch shape.
    """
    c = rgb.clamp(0, 1)
    lin = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    r, g, b = lin.unbind(dim=-3)
    x, y, z = ((m[0] * r + m[1] * g + m[2] * b) / w for m, w in zip(_RGB_TO_XYZ, _WHITE))
    delta = 6.0 / 29.0

    def f(t):
        return torch.where(t > delta**3, t.clamp_min(delta**3) ** (1.0 / 3.0), t / (3 * delta**2) + 4.0 / 29.0)

    fx, fy, fz = f(x), f(y), f(z)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-3)


def to_space(rgb: torch.Tensor, space: str) -> torch.Tensor:
    """[..., 3, H, W] sRGB in [0, 1] -> the same in ``space`` ("rgb" or "lab")."""
    return srgb_to_lab(rgb) if space == "lab" else rgb


def colour_distance(images: torch.Tensor, target: torch.Tensor, space: str) -> torch.Tensor:
    """Euclidean distance in ``space`` between images [B, 3, H, W] and target [3] or [B, 3, H, W] -> [B, H, W]."""
    if target.dim() == 1:
        target = target.view(1, 3, 1, 1).expand(images.shape[0], 3, *images.shape[2:])
    diff = to_space(images, space) - to_space(target.to(images), space)
    return diff.pow(2).sum(dim=1).sqrt()


def _srgb_grid(n: int) -> torch.Tensor:
    """[n**3, 3, 1, 1] sRGB colours on a regular grid of the cube, corners included."""
    v = torch.linspace(0, 1, n, dtype=torch.float64)
    return torch.cartesian_prod(v, v, v).view(-1, 3, 1, 1)


@lru_cache(maxsize=64)
def max_distance(target: tuple[float, float, float], space: str) -> float:
    """Largest distance from ``target`` to any sRGB colour (searched on a 33³ grid with corners)."""
    grid = _srgb_grid(33)
    d = colour_distance(grid, torch.tensor(target, dtype=torch.float64), space)
    return float(d.max())


@lru_cache(maxsize=2)
def diameter(space: str) -> float:
    """Largest distance between two sRGB colours (searched on a 9³ grid with corners)."""
    pts = to_space(_srgb_grid(9), space).view(-1, 3)
    return float(torch.cdist(pts, pts).max())


def closeness_to(images: torch.Tensor, refs: torch.Tensor, space: str = "lab") -> torch.Tensor:
    """Per-pixel ``1 - d(x, ref) / diameter`` in [0, 1]: images, refs [B, 3, H, W] -> [B, H, W]
    (1 = unchanged; the ``keep`` score, and ``pxpo refine``'s closeness to the picture)."""
    return (1.0 - colour_distance(images, refs, space) / diameter(space)).clamp(0, 1)


def default_segmenter() -> Callable[[torch.Tensor], torch.Tensor]:
    """``pxpo.testbed.segment.load_segmenter()``: images [B, 3, H, W] -> object mask [B, H, W] in [0, 1]."""
    try:
        return importlib.import_module("pxpo.testbed.segment").load_segmenter().masks
    except (ImportError, AttributeError) as e:
        raise RewardError(
            "colour reward: regions 'object'/'background' need a segmenter; pass "
            "mask_fn=callable(images)->[B, H, W] mask in [0, 1] (the shipped "
            f"segmenter, pxpo.testbed.segment.load_segmenter(), failed to load: {e})"
        ) from None


def _object_mask(images: torch.Tensor, mask_fn) -> torch.Tensor:
    """Foreground mask [B, H, W] in [0, 1] from ``mask_fn``, checked."""
    b, _, h, w = images.shape
    mask = mask_fn(images)
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (b, h, w):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise RewardError(f"colour reward: mask_fn returned {got}; expected a tensor [B, H, W]=[{b}, {h}, {w}]")
    mask = mask.to(device=images.device, dtype=images.dtype)
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise RewardError("colour reward: mask_fn must return values in [0, 1] (1 = object)")
    return mask


def reference_images(metadata: list[dict], images: torch.Tensor) -> torch.Tensor:
    """Stack ``metadata[i]["reference"]`` ([3, H, W] in [0, 1]) -> [B, 3, H, W]."""
    shape = tuple(images.shape[1:])
    refs = []
    for i, m in enumerate(metadata):
        ref = m.get("reference") if isinstance(m, dict) else None
        if not isinstance(ref, torch.Tensor) or tuple(ref.shape) != shape:
            got = tuple(ref.shape) if isinstance(ref, torch.Tensor) else type(ref).__name__
            raise RewardError(
                f"colour reward with outside='keep' needs a reference image: metadata[{i}]"
                f"['reference'] must be a tensor {list(shape)} in [0, 1], got {got}. "
                "Use outside='neutral' when there is no reference"
            )
        refs.append(ref.to(images))
    return torch.stack(refs)


@register("colour", "Per-pixel closeness to a target colour inside a region (PXPO colour control)")
def colour(
    target="red",
    region="all",
    space: str = "lab",
    outside: str = "neutral",
    mask_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    mask_from: str = "reference",
):
    """Colour-control reward. See the module docstring for the formula.

    target: a PALETTE name, an RGB triple 0..255, or "#rrggbb".
    region: "all", a named region (see ``REGIONS``), a box [x0, y0, x1, y1] in fractions, or
        "object"/"background" (mask from ``mask_fn``, else ``pxpo.testbed.segment.load_segmenter()``).
    space: "lab" (CIELAB ΔE*76, perceptual; default) or "rgb" (Euclidean on sRGB in [0, 1]).
    outside: "neutral" (0 outside the region) or "keep" (closeness to ``metadata[i]["reference"]``).
    mask_fn: callable images [B, 3, H, W] -> [B, H, W] in [0, 1], 1 on the object.
    mask_from: for "object"/"background", segment "reference" (the starting model's picture of the
        same noise in ``metadata[i]["reference"]``, which ``pxpo train`` then draws; the sample
        itself where none is given) or "sample". From the sample, moving the boundary pays: a
        shrinking object enlarges a rewarded background. From the reference, the region is fixed
        per noise, and growing or shrinking the object earns nothing.
    Returns map [B, H, W] in [0, 1]; scalar is its mean; info["colour_in_region"] is the mean
    reward inside the region per image ([B]; 0 for an empty region).
    """
    rgb255 = _parse_255(target)
    rgb = tuple(c / 255.0 for c in rgb255)
    if space not in SPACES:
        raise RewardError(f"colour reward: unknown space {space!r}; use 'lab' or 'rgb'")
    if outside not in ("neutral", "keep"):
        raise RewardError(
            f"colour reward: unknown outside={outside!r}; use 'neutral' (0 outside the "
            "region) or 'keep' (stay close to metadata[i]['reference'])"
        )
    by_mask = isinstance(region, str) and region in MASK_REGIONS
    if mask_from not in ("reference", "sample"):
        raise RewardError(
            f"colour reward: unknown mask_from={mask_from!r}; use 'reference' (segment the "
            "starting model's picture of the same noise) or 'sample' (the picture itself)"
        )
    if not by_mask:
        region_mask(region, 8, 8)  # fail now, at configuration time, on a bad region
    d_max = max_distance(rgb, space)
    segmenter = [mask_fn]  # loaded lazily, once, on first use when mask_fn is None

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult:
        b, _, h, w = images.shape
        refs = reference_images(metadata, images) if outside == "keep" else None  # [B, 3, H, W]
        if by_mask:
            if segmenter[0] is None:
                segmenter[0] = default_segmenter()
            # With a reference, "the object" is the object as it was: moving its boundary earns
            # nothing (and with outside=keep, growing it into the background costs keep-reward).
            source = images
            if mask_from == "reference" or refs is not None:
                given = all(isinstance(m, dict) and "reference" in m for m in metadata)
                source = refs if refs is not None else (reference_images(metadata, images) if given else images)
            mask = _object_mask(source, segmenter[0])  # [B, H, W]
            if region == "background":
                mask = 1.0 - mask
        else:
            mask = region_mask(region, h, w).to(images).expand(b, h, w)
        target_t = torch.tensor(rgb255, dtype=images.dtype, device=images.device) / 255.0
        inside = (1.0 - colour_distance(images, target_t, space) / d_max).clamp(0, 1)  # [B, H, W]
        if refs is not None:
            out = closeness_to(images, refs, space)
        else:
            out = torch.zeros_like(inside)
        rmap = mask * inside + (1.0 - mask) * out
        in_region = (mask * inside).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp_min(1e-8)
        # outside the region a neutral reward has no opinion; "keep" has one everywhere
        weight = mask if outside == "neutral" else None
        hold = 1.0 - mask if outside == "keep" else None
        return RewardResult(map=rmap, info={"colour_in_region": in_region}, weight=weight, hold=hold)

    # the trainer then samples reference images
    reward.needs_reference = outside == "keep" or (by_mask and mask_from == "reference")
    return reward


@register("colour-regions", "Several colour targets, each in its own region (e.g. left red, right blue)")
def colour_regions(
    parts=(("left", "red"), ("right", "blue")),
    space: str = "lab",
    mask_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    mask_from: str = "reference",
):
    """A two-sided (or many-sided) map: the sum of :func:`colour` maps over ``parts``, a list of
    ``[region, target]`` pairs whose regions should not overlap (each pixel then has one target).
    info["colour_in_region"] is the mean over the parts of each part's in-region closeness."""
    if not parts or any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in parts):
        raise RewardError(f"colour-regions: parts must be a list of [region, target] pairs, got {parts!r}")
    rewards = [colour(target=t, region=r, space=space, mask_fn=mask_fn, mask_from=mask_from) for r, t in parts]

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult:
        results = [rw(images, prompts, metadata) for rw in rewards]
        rmap = torch.stack([r.map for r in results]).sum(dim=0).clamp(0, 1)
        weight = torch.stack([r.weight for r in results]).sum(dim=0).clamp(0, 1)
        inside = torch.stack([r.info["colour_in_region"] for r in results]).mean(dim=0)
        return RewardResult(map=rmap, info={"colour_in_region": inside}, weight=weight)

    reward.needs_reference = any(getattr(rw, "needs_reference", False) for rw in rewards)
    return reward
