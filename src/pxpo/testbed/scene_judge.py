"""Judge scenes-world pictures against their captions, with no learned model involved.

The pictures are read by :mod:`pxpo.testbed.scene_reader` (sky, ground, objects left to right); each
object's shape is the world silhouette (``world.shape_masks``, the function that draws it) that best
overlaps it, centred on its box and sized to it. A caption is judged on what it names, and only there
(a caption that is not a scenes caption is skipped):

- ``sky`` / ``ground``: the colour read is the named one;
- ``count``: as many objects as the caption names (captions that name objects name all of them);
- ``object_colour`` / ``object_shape`` / ``object_size``: per named attribute of each object, in
  pictures with the right count (objects are matched left to right);
- ``parts``: the share of every named item above that the picture shows (the health measure
  "named parts kept").
"""

from __future__ import annotations

import numpy as np

from pxpo.testbed import scene_reader, scenes
from pxpo.testbed.world import COLOURS, SHAPES, shape_masks

ITEMS = ("sky", "ground", "count", "object_colour", "object_shape", "object_size")


def parse_caption(text: str) -> dict:
    """A scenes caption -> {"objects": [{size, colour, shape}, ...] (None where unsaid; [] when no object
    is named), "sky": colour or None, "ground": colour or None}. Raises ValueError naming what is wrong."""
    words = text.lower().split()
    out = {"objects": [], "sky": None, "ground": None}
    if len(words) >= 4 and words[-4:-2] == ["under", "a"] and words[-1] == "sky":
        out["sky"], words = words[-2], words[:-4]
    if len(words) >= 4 and words[-4:-2] == ["on", "a"] and words[-1] == "ground":
        out["ground"], words = words[-2], words[:-4]
    if words:
        for phrase in " ".join(words).split(" and "):
            w = phrase.split()
            if not w or w[0] != "a" or len(w) < 2:
                raise ValueError(
                    f"not a scenes caption: {text!r}; objects are 'a [small|large] [colour] <shape|shape>' "
                    "joined by 'and', then 'on a <colour> ground', then 'under a <colour> sky'"
                )
            obj = {"size": None, "colour": None, "shape": None}
            for word in w[1:]:
                key = (
                    "size"
                    if word in scenes.SIZES
                    else "colour"
                    if word in COLOURS
                    else "shape"
                    if word in SHAPES
                    else None
                    if word == "shape"
                    else "?"
                )
                if key == "?":
                    raise ValueError(f"not a scenes caption: {text!r}; {word!r} is not a size, colour or shape")
                if key:
                    obj[key] = word
            out["objects"].append(obj)
    for part in ("sky", "ground"):
        if out[part] is not None and out[part] not in COLOURS:
            raise ValueError(f"not a scenes caption: {text!r}; the {part} is {out[part]!r}, not a colour")
    return out


def object_shapes(reading: scene_reader.Reading) -> list[list[str]]:
    """Per picture, left to right: the world shape that best overlaps each object read."""
    b, h, w = reading.parts.shape
    out = []
    for i, objs in enumerate(reading.objects):
        names = []
        for k, o in enumerate(objs):
            m = reading.parts[i] == 2 + k
            x0, y0, x1, y1 = o["box"]
            cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2
            r = np.array([half, half / 0.85, half, half], dtype=np.float32)  # a square's box is 0.85 of its r
            kinds = np.arange(len(SHAPES))
            sil = shape_masks(kinds, np.full(4, cx, np.float32), np.full(4, cy, np.float32), r, h)[:, :, :w]
            iou = (sil & m).sum((1, 2)) / np.maximum((sil | m).sum((1, 2)), 1)
            names.append(SHAPES[int(iou.argmax())])
        out.append(names)
    return out


def judge(images, captions: list[str], items=ITEMS) -> dict:
    """Per-item accuracies of ``images`` against ``captions`` (items a caption names; absent when none
    does), and ``parts``: the share of the named ``items`` shown (all of them by default). See the
    module docstring."""
    reading = scene_reader.read(images)
    shapes = object_shapes(reading)
    hits: dict[str, list[bool]] = {k: [] for k in ITEMS}
    for i, text in enumerate(captions):
        try:
            c = parse_caption(text)
        except ValueError:  # not a scenes caption: nothing to judge it on
            continue
        for part in ("sky", "ground"):
            if c[part] is not None:
                hits[part].append(getattr(reading, part)[i] == c[part])
        if not c["objects"]:
            continue
        objs = reading.objects[i]
        hits["count"].append(len(objs) == len(c["objects"]))
        for o, named, shape in zip(objs, c["objects"], shapes[i]) if len(objs) == len(c["objects"]) else ():
            if named["colour"]:
                hits["object_colour"].append(o["colour"] == named["colour"])
            if named["shape"]:
                hits["object_shape"].append(shape == named["shape"])
            if named["size"]:
                hits["object_size"].append((o["area"] < scene_reader.SMALL_AREA) == (named["size"] == "small"))
    out = {k: float(np.mean(v)) for k, v in hits.items() if v}
    every = [h for k, v in hits.items() if k in items for h in v]
    if every:
        out["parts"] = float(np.mean(every))
    return out


def evaluate_pipeline(
    pipe,
    n: int = 128,
    steps: int = 20,
    guidance: float = 5.0,
    seed: int = 0,
    split: str = "heldout",
    batch: int = 16,
    return_images: bool = False,
) -> dict:
    """The judge's accuracies on ``n`` pictures a pipeline draws for ``split`` captions that name every
    part (``pxpo evaluate`` on a scenes model). Captions come from ``seed``; batch i draws with seed + i."""
    from pxpo.testbed.draw import draw

    caps, _ = scenes.captions(n, np.random.default_rng(seed), split=split)
    pipe.set_progress_bar_config(disable=True)
    images, seconds = draw(pipe, caps, steps, guidance, seed, batch)
    return {**judge(images, caps), "seconds_per_32": seconds, **({"images": images} if return_images else {})}
