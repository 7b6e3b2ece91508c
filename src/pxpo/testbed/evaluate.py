"""Judge images against shapes-world captions, with no learned model involved.

    judge(images, captions)  -> per-image booleans (object colour, background colour, shape) + predictions
    score(images, captions)  -> accuracies
    evaluate_pipeline(pipe)  -> accuracies of a diffusers pipeline on held-out captions (+ speed)
    pxpo evaluate --model=PATH_OR_NAME --n=256

How an image is read (all numpy, vectorised over the batch where it matters):

1. Colour: every pixel goes to its nearest PALETTE colour (RGB distance); the palette is spread
   far apart, so blur and noise rarely move a pixel to the wrong class.
2. Background colour: the majority class among border pixels (world objects never touch it).
3. Object: pixels whose class differs from the background; keep the largest 4-connected
   component (drops specks of noise); its majority class is the object colour.
4. Shape, by template matching: the object's bounding box gives a centre and a half-extent e.
   Each shape's ideal silhouette (``world.shape_masks``, the very function that draws the world)
   is fitted to that box (radius e, or e / 0.85 for the square, whose silhouette spans 0.85 r;
   the triangle's apex is at the top, its base as wide as its height) at a few scales around it,
   and the shape whose silhouette overlaps the object best (highest IoU) wins. Why this: the
   world's shapes are *defined* by these silhouettes, so a faithful image matches one template
   with IoU near 1 while the nearest wrong shape (a circle against a square of the same box)
   reaches only pi/4 ~ 0.79; it needs no training, so it cannot share a learned reward model's
   blind spots, and it judges shape independently of colour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from pxpo.testbed import world
from pxpo.testbed.colours import PALETTE_RGB, classify_colours
from pxpo.testbed.colours import as_numpy as _as_numpy
from pxpo.testbed.draw import draw
from pxpo.errors import ConfigError

SCALES = (0.92, 1.0, 1.08)  # template sizes tried around the bbox estimate


def border_majority(classes: np.ndarray) -> np.ndarray:
    """Majority class among each image's border pixels: [B, H, W] -> [B]."""
    border = np.concatenate([classes[:, 0, :], classes[:, -1, :], classes[:, 1:-1, 0], classes[:, 1:-1, -1]], axis=1)
    counts = np.stack([(border == k).sum(1) for k in range(len(PALETTE_RGB))], axis=1)  # [B, K]
    return counts.argmax(1)


def _run_max(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Max id over each horizontal run of mask pixels, written to every pixel of the run: [B, H, W].

    A segmented cumulative max: run k of a row is offset by k * big, so the running maximum
    never carries across runs (later runs have larger offsets, earlier ones smaller keys).
    """
    big = ids.shape[-1] * ids.shape[-2] + 1
    out = np.zeros_like(ids)
    for flip in (False, True):
        v, m = (ids[..., ::-1], mask[..., ::-1]) if flip else (ids, mask)
        starts = m & ~np.concatenate([np.zeros_like(m[..., :1]), m[..., :-1]], axis=-1)
        seg = np.cumsum(starts, axis=-1) * big  # [B, H, W]
        run = np.maximum.accumulate(seg + v, axis=-1) - seg
        out = np.maximum(out, run[..., ::-1] if flip else run)
    return out * mask


def largest_component(mask: np.ndarray, max_iter: int = 1000) -> np.ndarray:
    """Keep each image's largest 4-connected component: bool [B, H, W] -> bool [B, H, W].

    Label propagation: every mask pixel starts with its own id and takes the largest id of its
    horizontal run, then of its vertical run, until nothing changes (a few rounds for compact
    objects); then the most frequent id of each image wins.
    """
    b, h, w = mask.shape
    ids = np.arange(1, h * w + 1, dtype=np.int64).reshape(1, h, w) * mask  # [B, H, W], 0 off the mask
    t_mask = np.ascontiguousarray(mask.transpose(0, 2, 1))
    for _ in range(max_iter):
        new = _run_max(ids, mask)
        new = np.ascontiguousarray(_run_max(np.ascontiguousarray(new.transpose(0, 2, 1)), t_mask).transpose(0, 2, 1))
        if np.array_equal(new, ids):
            break
        ids = new
    flat = ids.reshape(b, h * w)
    counts = np.bincount((flat + np.arange(b)[:, None] * (h * w + 1)).reshape(-1), minlength=b * (h * w + 1))
    counts = counts.reshape(b, h * w + 1)
    counts[:, 0] = 0
    keep = counts.argmax(1)  # [B]; 0 when the mask is empty
    return ((flat == keep[:, None]) & (keep[:, None] > 0)).reshape(b, h, w)


def fit_shapes(masks: np.ndarray) -> tuple[list[str | None], np.ndarray]:
    """Best-matching shape of each object mask and its IoU: bool [B, H, W] -> (B names, float [B]).

    Empty masks give (None, 0.0). Templates: every shape at every scale in SCALES, centred on the
    mask's bounding box, half-extent from the box (divided by 0.85 for the square).
    """
    b, h, w = masks.shape
    if h != w:
        raise ValueError(f"the evaluator expects square images, got {h}x{w}")
    rows, cols = masks.any(2), masks.any(1)  # [B, H], [B, W]
    present = rows.any(1)  # [B]
    y0, y1 = rows.argmax(1), h - 1 - rows[:, ::-1].argmax(1)
    x0, x1 = cols.argmax(1), w - 1 - cols[:, ::-1].argmax(1)
    cx, cy = (x0 + x1 + 1) / 2.0, (y0 + y1 + 1) / 2.0  # [B] pixel-edge coordinates
    extent = ((x1 + 1 - x0) + (y1 + 1 - y0)) / 4.0  # [B] mean half-extent
    factor = np.array([1 / 0.85 if s == "square" else 1.0 for s in world.SHAPES])  # [S]
    kinds = np.repeat(np.arange(len(world.SHAPES)), len(SCALES))  # [T] templates per image
    scale = factor[kinds] * np.tile(SCALES, len(world.SHAPES))  # [T]
    t = len(kinds)
    templates = world.shape_masks(
        np.tile(kinds, b),
        np.repeat(cx, t).astype(np.float32),
        np.repeat(cy, t).astype(np.float32),
        (extent[:, None] * scale[None]).reshape(-1).astype(np.float32),
        h,
    )
    templates = templates.reshape(b, t, h * w)  # [B, T, HW]
    flat = masks.reshape(b, 1, h * w)
    inter = (templates & flat).sum(-1)
    union = (templates | flat).sum(-1)
    iou = inter / np.maximum(union, 1)  # [B, T]
    best = iou.argmax(1)
    names = [world.SHAPES[kinds[k]] if ok else None for k, ok in zip(best, present)]
    return names, np.where(present, iou[np.arange(b), best], 0.0)


def read_images(images, chunk: int = 64, masks: bool = False) -> dict:
    """What each image shows, caption-free: [B, 3, H, W] in [0, 1] -> readings.

    Returns ``object_colour``, ``background_colour``, ``shape`` (lists of B str; None where no
    object was found), ``shape_iou`` and ``object_fraction`` (float arrays [B]), and with
    ``masks`` the object masks ``object_mask`` (bool [B, H, W]). Processed in chunks of ``chunk``
    images to bound memory.
    """
    images = _as_numpy(images)
    out = {
        "object_colour": [],
        "background_colour": [],
        "shape": [],
        "shape_iou": [],
        "object_fraction": [],
        "object_mask": [],
    }
    for start in range(0, len(images), chunk):
        classes = classify_colours(images[start : start + chunk])  # [b, H, W]
        bg = border_majority(classes)  # [b]
        objects = largest_component(classes != bg[:, None, None])  # [b, H, W]
        shapes, ious = fit_shapes(objects)
        votes = np.stack([((classes == c) & objects).sum((1, 2)) for c in range(len(world.COLOURS))], axis=1)
        out["object_colour"] += [world.COLOURS[v.argmax()] if v.any() else None for v in votes]
        out["background_colour"] += [world.COLOURS[k] for k in bg]
        out["shape"] += shapes
        out["shape_iou"].append(ious)
        out["object_fraction"].append(objects.mean((1, 2)))
        if masks:
            out["object_mask"].append(objects)
    for key in ("shape_iou", "object_fraction") + (("object_mask",) if masks else ()):
        out[key] = np.concatenate(out[key]) if out[key] else np.zeros(0)
    if not masks:
        del out["object_mask"]
    return out


def judge(images, captions: list[str]) -> dict:
    """Read each image and compare it with its caption.

    images: [B, 3, H, W] in [0, 1] (tensor or array); captions: B shapes-world captions, whole
    ("a red circle on a blue background") or partial ("a red circle", "": parts left open).
    Returns the readings of :func:`read_images` plus numpy bool arrays [B] ``object_colour_ok``,
    ``background_colour_ok``, ``shape_ok`` (True where the caption leaves the part open),
    ``object_colour_named``, ``background_colour_named``, ``shape_named`` (the caption names it) and
    ``all_ok`` (every named part right).
    """
    images = _as_numpy(images)
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions; give one caption per image")
    targets = [world.parse_partial_caption(c) for c in captions]  # (shape, colour, background), None = open
    out = read_images(images)
    for key, idx in (("shape", 0), ("object_colour", 1), ("background_colour", 2)):
        named = np.array([t[idx] is not None for t in targets], dtype=bool)
        out[f"{key}_named"] = named
        out[f"{key}_ok"] = np.array([p == t[idx] or t[idx] is None for p, t in zip(out[key], targets)], dtype=bool)
    out["all_ok"] = out["object_colour_ok"] & out["background_colour_ok"] & out["shape_ok"]
    return out


def score(images, captions: list[str]) -> dict:
    """Accuracies over the batch: ``object_colour``, ``background_colour``, ``shape``, ``all`` (+ ``n``).
    Each part's accuracy is over the captions that name it (None when none does); ``all`` is the
    share of images whose every named part is right."""
    j = judge(images, captions)
    acc = {
        k: (float(j[f"{k}_ok"][j[f"{k}_named"]].mean()) if j[f"{k}_named"].any() else None)
        for k in ("object_colour", "background_colour", "shape")
    }
    acc["all"] = float(j["all_ok"].mean())
    acc["mean_shape_iou"] = float(j["shape_iou"].mean())
    acc["n"] = len(captions)
    return acc


def caption_accuracy(images, captions: list[str]) -> dict[str, float]:
    """The evaluator's accuracy on each part the captions name: ``evaluator_shape``,
    ``evaluator_object_colour``, ``evaluator_background_colour`` (only the named ones); {} when
    the captions are not shapes-world captions or name nothing. ``pxpo train`` logs them with each
    evaluation of a shapes model, so a reward bought by damaging the pictures shows."""
    try:
        acc = score(images, captions)
    except ValueError:
        return {}
    return {f"evaluator_{k}": acc[k] for k in ("shape", "object_colour", "background_colour") if acc[k] is not None}


def heldout_prompts(n: int, split: str = "heldout", parts=world.PARTS, exclude_colours=()) -> list[str]:
    """``n`` captions cycling through the split's combinations in order (even coverage); with
    ``parts`` a subset of shape/colour/background, the distinct partial captions naming only those
    ("a red circle" for colour + shape); ``exclude_colours``: no object of these colours (as the
    ``shapes-world`` prompt source's option: judge a run on the captions it trained on)."""
    unknown = [c for c in exclude_colours if c not in world.COLOURS]
    if unknown:
        raise ConfigError(f"exclude_colours: {unknown[0]!r} is not a colour (choose from {', '.join(world.COLOURS)})")
    combos = [c for c in world.combinations(split) if c[1] not in exclude_colours]  # (shape, colour, background)
    combos = world.partial_combinations(combos, parts)
    if not combos:
        raise ConfigError(f"exclude_colours={list(exclude_colours)} leaves no caption in the {split} split")
    return [world.partial_caption(*combos[i % len(combos)]) for i in range(n)]


@torch.no_grad()
def evaluate_pipeline(
    pipe,
    n: int = 256,
    steps: int = 20,
    guidance: float = 5.0,
    seed: int = 0,
    split: str = "heldout",
    batch: int = 32,
    return_images: bool = False,
    parts=world.PARTS,
    exclude_colours=(),
) -> dict:
    """Sample ``n`` images of the split's captions with ``pipe`` (batch ``i`` seeded ``seed + i``) and score them.

    Returns the accuracies of :func:`score` plus ``seconds_per_32`` (steady-state sampling time:
    one untimed warm-up call first absorbs one-off start-up costs) and, with ``return_images``,
    ``images`` [n, 3, 64, 64] and ``prompts``.
    """
    prompts = heldout_prompts(n, split, parts, exclude_colours)
    images, seconds_per_32 = draw(pipe, prompts, steps, guidance, seed, batch, size=64)  # [n, 3, 64, 64]
    result = score(images, prompts)
    result.update(seconds_per_32=round(seconds_per_32, 3), steps=steps, guidance=guidance, seed=seed, split=split)
    if return_images:
        result.update(images=images, prompts=prompts)
    return result


@dataclass
class EvaluateConfig:
    """the pipeline and the captions it is judged on"""

    model: str = "shapes-tiny"
    """pipeline directory, or a model name known to pxpo.backends.registry"""
    n: int = 256
    """images to sample (captions cycle through the split's combinations)"""
    steps: int = 20
    """sampling steps"""
    guidance: float = 5.0
    """classifier-free guidance scale"""
    seed: int = 0
    """seed of the first batch (batch i uses seed + i)"""
    split: Literal["heldout", "train", "all"] = "heldout"
    """caption split"""
    parts: list[str] = field(default_factory=lambda: ["shape", "colour", "background"])
    """the parts each caption names; [colour, shape] gives 'a red circle' (the background left to the model, so not
    judged)
    """
    exclude_colours: list[str] = field(default_factory=list)
    """object colours left out of the captions (a run trained with the shapes-world source's exclude_colours is judged
    on its own captions)
    """
    batch: int = 32
    """images per pipeline call"""
    grid: str = ""
    """if set, save a picture of the samples there (PNG)"""
    threads: int = 2
    """torch CPU threads"""


def main(argv: list[str]) -> int:
    """Entry point of ``pxpo evaluate``."""
    from pxpo.config import parse_overrides

    cfg = parse_overrides(
        EvaluateConfig(),
        argv,
        prog="pxpo evaluate",
        description="Sample a pipeline on world captions and score object colour, "
        "background colour and shape with a fixed, model-free evaluator.",
    )
    torch.set_num_threads(cfg.threads)
    from pxpo.backends.registry import load_pipeline, world_of

    w = world_of(cfg.model)
    if w is not None and w.name == "scenes":
        return _evaluate_scenes(cfg, load_pipeline(cfg.model))
    heldout_prompts(1, cfg.split, cfg.parts, cfg.exclude_colours)  # bad options say so before the model loads
    pipe = load_pipeline(cfg.model)
    res = evaluate_pipeline(
        pipe,
        cfg.n,
        cfg.steps,
        cfg.guidance,
        cfg.seed,
        cfg.split,
        cfg.batch,
        return_images=bool(cfg.grid),
        parts=cfg.parts,
        exclude_colours=cfg.exclude_colours,
    )
    if cfg.grid:
        from pxpo.images import make_grid, save

        save(make_grid(res.pop("images"), nrow=16, scale=2), cfg.grid)
        res.pop("prompts")
    named = "" if tuple(cfg.parts) == world.PARTS else f", captions naming {' + '.join(cfg.parts)}"
    named += f", no {' or '.join(cfg.exclude_colours)} objects" if cfg.exclude_colours else ""
    print(f"{cfg.model}: {cfg.n} {cfg.split} images{named}, {cfg.steps} steps, guidance {cfg.guidance}")
    for key in ("object_colour", "background_colour", "shape", "all"):
        print(f"  {key:<18} " + ("-  (not named)" if res[key] is None else f"{res[key]:.3f}"))
    print(f"  mean shape IoU     {res['mean_shape_iou']:.3f}\n  seconds per 32     {res['seconds_per_32']:.2f}")
    return 0


def _evaluate_scenes(cfg: EvaluateConfig, pipe) -> int:
    """A scenes-world model: the scenes judge on captions that name every part (parts and
    exclude_colours are the shapes world's and do not apply)."""
    from pxpo.testbed import scene_judge

    res = scene_judge.evaluate_pipeline(
        pipe, cfg.n, cfg.steps, cfg.guidance, cfg.seed, cfg.split, min(cfg.batch, 16), return_images=bool(cfg.grid)
    )
    if cfg.grid:
        from pxpo.images import make_grid, save

        save(make_grid(res.pop("images"), nrow=16, scale=2), cfg.grid)
    print(
        f"{cfg.model}: {cfg.n} {cfg.split} scenes captions naming every part, {cfg.steps} steps, "
        f"guidance {cfg.guidance}"
    )
    for key in (*scene_judge.ITEMS, "parts"):
        print(f"  {key:<18} " + ("-  (not named)" if key not in res else f"{res[key]:.3f}"))
    print(f"  seconds per 32     {res['seconds_per_32']:.2f}")
    return 0
