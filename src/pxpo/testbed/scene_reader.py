"""Read a scenes-world picture into its parts, with no learned model: the sky, the ground, the objects.

The scenes world (:mod:`pxpo.testbed.scenes`) paints every part in a palette colour, and an object's
colour always differs from the sky's and the ground's. So a picture is read in four steps:

1. every pixel's nearest palette colour (:func:`pxpo.testbed.colours.classify_colours`);
2. the sky's colour is the most common one in the top band (rows above 30% of the height, always
   sky in the world), the ground's in the bottom band (below 70%);
3. the horizon is the row that best splits the sky-coloured pixels from the ground-coloured ones
   (fewest ground pixels above it plus sky pixels below it);
4. every other pixel belongs to an object; objects are the 8-connected components of those pixels
   of at least ``MIN_AREA`` pixels and ``MIN_SIDE`` rows and columns (smaller specks, and the thin
   seams of mixed colour along a blurred horizon, are left to the background), numbered left to
   right by their centroid.

The part map has the world's ids: 0 the sky (above the horizon), 1 the ground, 2 + k the k-th object
from the left. The reward regions of the scenes tasks (:func:`part_masks`) are read from it:
``sky``, ``ground``, ``objects``, ``object-left`` / ``object-right`` (the leftmost / rightmost object
of a picture with at least two), ``small-objects`` / ``large-objects`` (below / above
``SMALL_AREA`` of the picture), and ``background`` (sky and ground).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pxpo.testbed.colours import as_numpy as _as_numpy, classify_colours
from pxpo.testbed.scenes import GROUND, SKY
from pxpo.testbed.world import COLOURS, PALETTE

MIN_AREA = 12  # pixels (of a 64 x 64 picture; scaled with the area): smaller specks are not objects
MIN_SIDE = 3  # pixels: thinner ones neither (mixed colours along a blurred horizon)
SMALL_AREA = 0.035  # share of the picture below which an object is small (the world's small ones are under 0.038)
TOP_BAND, BOTTOM_BAND = 0.3, 0.7  # the world's horizon lies within 35-65% of the height
PART_REGIONS = (
    "sky",
    "ground",
    "background",
    "objects",
    "object-left",
    "object-right",
    "small-objects",
    "large-objects",
)


@dataclass
class Reading:
    parts: np.ndarray  # [B, H, W] int64: 0 sky, 1 ground, 2 + k object k from the left
    sky: list[str]  # the sky's colour per picture
    ground: list[str]
    horizon: np.ndarray  # [B] the first ground row
    objects: list[list[dict]]  # per picture, left to right: colour, area (share), cx, cy (fractions), box

    def fill(self) -> torch.Tensor:
        """[B, 3, H, W] the pictures with every object painted over by the background around it (the
        sky's colour above the horizon, the ground's below): what "remove the objects" asks for."""
        b, h, w = self.parts.shape
        rows = np.arange(h)[None, :, None] < self.horizon[:, None, None]  # [B, H, 1]
        sky = np.array([PALETTE[c] for c in self.sky], dtype=np.float32)[:, :, None, None] / 255.0
        ground = np.array([PALETTE[c] for c in self.ground], dtype=np.float32)[:, :, None, None] / 255.0
        return torch.from_numpy(np.where(rows[:, None], sky, ground)).expand(b, 3, h, w).contiguous()


def components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected components of a bool mask [B, H, W] -> int64 [B, H, W]: 0 off the mask, else a label
    shared by exactly the pixels of one component (the largest flat index it holds, plus one)."""
    b, h, w = mask.shape
    idx = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w).expand(b, h, w)
    lab = torch.where(mask, idx, torch.zeros(()))
    for _ in range(h * w):  # converges in at most the longest path; usually a few dozen rounds
        grown = F.max_pool2d(lab[:, None], 3, stride=1, padding=1)[:, 0]
        new = torch.where(mask, grown, torch.zeros(()))
        if torch.equal(new, lab):
            break
        lab = new
    return lab.long()


def _mode(classes: np.ndarray) -> np.ndarray:
    """Most common palette index per picture: [B, N] -> [B]."""
    counts = np.stack([(classes == k).sum(1) for k in range(len(COLOURS))], axis=1)
    return counts.argmax(1)


def read(images) -> Reading:
    """The parts of scenes-world pictures ([B, 3, H, W] in [0, 1], tensor or array). See the module docstring."""
    cls = classify_colours(_as_numpy(images))  # [B, H, W]
    b, h, w = cls.shape
    top, bottom = max(1, int(TOP_BAND * h)), min(h - 1, int(BOTTOM_BAND * h))
    sky = _mode(cls[:, :top].reshape(b, -1))
    ground = _mode(cls[:, bottom:].reshape(b, -1))
    is_sky = cls == sky[:, None, None]
    is_ground = (cls == ground[:, None, None]) & ~is_sky
    # cost of horizon r: ground pixels above r + sky pixels at or below r; r in [1, h - 1]
    g_rows, s_rows = is_ground.sum(2), is_sky.sum(2)  # [B, H]
    above = np.concatenate([np.zeros((b, 1)), np.cumsum(g_rows, 1)], 1)  # [B, H + 1]: ground in rows < r
    below = s_rows.sum(1, keepdims=True) - np.concatenate([np.zeros((b, 1)), np.cumsum(s_rows, 1)], 1)
    cost = (above + below)[:, 1:h]
    horizon = cost.argmin(1) + 1  # [B]
    rows = np.arange(h)[None, :, None]
    parts = np.where(rows < horizon[:, None, None], SKY, GROUND).astype(np.int64)
    parts = np.broadcast_to(parts, (b, h, w)).copy()
    labels = components(torch.from_numpy(~(is_sky | is_ground))).numpy()
    min_area = max(2, int(round(MIN_AREA * h * w / 4096)))  # the world's smallest object: about 50
    objects: list[list[dict]] = []
    ys, xs = np.mgrid[0:h, 0:w]
    for i in range(b):
        found = []
        for lab in np.unique(labels[i]):
            if lab == 0:
                continue
            m = labels[i] == lab
            area = int(m.sum())
            box = (int(xs[m].min()), int(ys[m].min()), int(xs[m].max()) + 1, int(ys[m].max()) + 1)
            if area < min_area or min(box[2] - box[0], box[3] - box[1]) < MIN_SIDE:
                continue
            colour = COLOURS[np.bincount(cls[i][m], minlength=len(COLOURS)).argmax()]
            found.append(
                {
                    "mask": m,
                    "colour": colour,
                    "area": area / (h * w),
                    "cx": float(xs[m].mean() + 0.5) / w,
                    "cy": float(ys[m].mean() + 0.5) / h,
                    "box": box,
                }
            )
        found.sort(key=lambda o: o["cx"])
        for k, o in enumerate(found):
            parts[i][o.pop("mask")] = 2 + k
        objects.append(found)
    return Reading(parts, [COLOURS[k] for k in sky], [COLOURS[k] for k in ground], horizon, objects)


def part_masks(region: str, reading: Reading) -> np.ndarray:
    """Bool [B, H, W]: the pixels of a named part (``PART_REGIONS``) in each read picture."""
    p = reading.parts
    if region == "sky":
        return p == SKY
    if region == "ground":
        return p == GROUND
    if region == "background":
        return p < 2
    if region == "objects":
        return p >= 2
    out = np.zeros(p.shape, dtype=bool)
    for i, objs in enumerate(reading.objects):
        n = len(objs)
        if region == "object-left" and n >= 2:
            out[i] = p[i] == 2
        elif region == "object-right" and n >= 2:
            out[i] = p[i] == 1 + n
        elif region in ("small-objects", "large-objects"):
            for k, o in enumerate(objs):
                if (o["area"] < SMALL_AREA) == (region == "small-objects"):
                    out[i] |= p[i] == 2 + k
        elif region not in ("object-left", "object-right"):
            raise ValueError(f"unknown scene part {region!r}; use one of {', '.join(PART_REGIONS)}")
    return out


def mask_fn(region: str):
    """``images -> [B, H, W]`` float mask of ``region`` (a ``mask_fn`` for the colour reward)."""
    if region not in PART_REGIONS:
        raise ValueError(f"unknown scene part {region!r}; use one of {', '.join(PART_REGIONS)}")

    def masks(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(part_masks(region, read(images))).to(images.device, images.dtype)

    return masks
