"""The scenes world: pictures with several parts that vary independently, each with an exact label map.

A scene is a sky over a ground, split at a horizon that varies (35-65% of the height), each of its own
named colour, and one to three objects (a shape of a colour and a size, small or large) left to right
in their own horizontal slots, so they never overlap:

    "a small red circle and a large blue square on a green ground under a white sky"

Captions name all, some or none of the parts (:func:`caption`, ``keep``): an object's size, colour or
shape may be left out ("a circle", "a red shape"), and so may the sky and the ground. Every picture
comes with its part map (0 = sky, 1 = ground, 2 + k = the k-th object from the left) and its shape
map (0 = background, k = SHAPES[k-1], as the shapes world's labels), exact by construction: the ground
truth for per-part rewards, segmentation and the evaluator.

Held out of training (``split="heldout"`` draws only pictures with at least one of them): 8 of the 56
(sky, ground) colour pairs and 6 of the 32 (shape, colour) objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pxpo.testbed.world import COLOURS, DEFAULT_SIZE, PALETTE, SHAPES, shape_masks
from pxpo.errors import UserError

SIZES = ("small", "large")
RADIUS = {"small": (0.08, 0.11), "large": (0.14, 0.19)}  # half-extent, in fractions of the picture
HORIZON = (0.35, 0.65)  # the sky's share of the height
MAX_OBJECTS = 3
SKY, GROUND = 0, 1  # part ids; object k (from the left) is 2 + k
# Every word a scenes caption can hold (the tokenizer of a scenes model covers exactly these).
VOCABULARY: tuple[str, ...] = ("a", "and", "on", "under", "sky", "ground", "shape") + SIZES + COLOURS + SHAPES
MAX_TOKENS = 64  # a scenes tokenizer's length: the longest caption is under 50 tokens with BOS and EOS
PAIRS = [(s, g) for s in COLOURS for g in COLOURS if s != g]  # (sky, ground)
HELDOUT_PAIRS = frozenset(PAIRS[i] for i in range(3, len(PAIRS), 7))  # 8 of 56
OBJECTS = [(s, c) for s in SHAPES for c in COLOURS]  # (shape, colour)
HELDOUT_OBJECTS = frozenset(OBJECTS[i] for i in range(2, len(OBJECTS), 5))  # 6 of 32


@dataclass
class Scene:
    """What one picture shows: its objects left to right, its sky and ground, and where they are."""

    objects: list[dict]  # each: shape, colour, size, cx, cy, r (pixels)
    sky: str
    ground: str
    horizon: int  # the first ground row

    def is_heldout(self) -> bool:
        return (self.sky, self.ground) in HELDOUT_PAIRS or any(
            (o["shape"], o["colour"]) in HELDOUT_OBJECTS for o in self.objects
        )


@dataclass
class Batch:
    images: np.ndarray  # [B, H, W, 3] uint8
    parts: np.ndarray  # [B, H, W] int64: 0 sky, 1 ground, 2 + k object k from the left
    labels: np.ndarray  # [B, H, W] int64: 0 background, k the shape SHAPES[k - 1]
    scenes: list[Scene]
    captions: list[str] = field(default_factory=list)

    def tensors(self):
        """(images [B, 3, H, W] float in [0, 1], parts [B, H, W] long) as torch tensors."""
        import torch

        return (torch.from_numpy(self.images).permute(0, 3, 1, 2).float() / 255.0, torch.from_numpy(self.parts))


def object_phrase(o: dict, keep: dict | None = None) -> str:
    """ "a small red circle", with the size, colour or shape left out where ``keep`` says False."""
    keep = keep or {}
    words = [o["size"]] if keep.get("size", True) else []
    words += [o["colour"]] if keep.get("colour", True) else []
    words += [o["shape"] if keep.get("shape", True) else "shape"]
    return "a " + " ".join(words)


def caption(scene: Scene, keep: dict | None = None) -> str:
    """The scene's caption; ``keep`` names what it leaves out: ``objects`` (a list of per-object dicts of
    size/colour/shape -> bool, or False for an object not named at all), ``sky`` and ``ground`` (bool).
    Naming nothing gives ""."""
    keep = keep or {}
    per_object = keep.get("objects") or [{}] * len(scene.objects)
    named = [object_phrase(o, k) for o, k in zip(scene.objects, per_object) if k is not False]
    text = " and ".join(named)
    if keep.get("ground", True):
        text += f" on a {scene.ground} ground"
    if keep.get("sky", True):
        text += f" under a {scene.sky} sky"
    return text.strip()


def random_keep(scene: Scene, rng: np.random.Generator, dropout: float) -> dict:
    """Leave each part of a caption out with probability ``dropout``: an object's size, colour and
    shape each, a whole object, the sky, the ground."""
    objects = []
    for _ in scene.objects:
        if rng.random() < dropout:
            objects.append(False)
        else:
            objects.append({k: bool(rng.random() >= dropout) for k in ("size", "colour", "shape")})
    return {"objects": objects, "sky": bool(rng.random() >= dropout), "ground": bool(rng.random() >= dropout)}


def _draw_scene(rng: np.random.Generator, split: str, size: int) -> Scene:
    """One scene of ``split`` (train: no held-out part; heldout: at least one; all: any)."""
    for _ in range(1000):
        sky, ground = PAIRS[rng.integers(len(PAIRS))]
        n = int(rng.integers(1, MAX_OBJECTS + 1))
        allowed = [c for c in COLOURS if c not in (sky, ground)]
        slot = size / n
        objects = []
        for k in range(n):
            s = SIZES[rng.integers(len(SIZES))]
            r = min(rng.uniform(*RADIUS[s]) * size, slot / 2 - 1.0)  # fits its slot: no overlap
            cx = rng.uniform(k * slot + r + 0.5, (k + 1) * slot - r - 0.5)
            cy = rng.uniform(r + 1.0, size - r - 1.0)
            objects.append(
                {
                    "shape": SHAPES[rng.integers(len(SHAPES))],
                    "colour": allowed[rng.integers(len(allowed))],
                    "size": s,
                    "cx": float(cx),
                    "cy": float(cy),
                    "r": float(r),
                }
            )
        horizon = int(round(rng.uniform(*HORIZON) * size))
        scene = Scene(objects, sky, ground, horizon)
        if split == "all" or scene.is_heldout() == (split == "heldout"):
            return scene
    raise RuntimeError(f"no {split} scene drawn in 1000 tries")


def render(scenes: list[Scene], size: int = DEFAULT_SIZE) -> Batch:
    """Pictures, part maps and shape maps of ``scenes`` (their whole captions)."""
    b = len(scenes)
    rows = np.arange(size)[None, :, None]  # [1, H, 1]
    horizon = np.array([s.horizon for s in scenes])[:, None, None]
    parts = np.broadcast_to(np.where(rows < horizon, SKY, GROUND), (b, size, size)).astype(np.int64)
    sky = np.array([PALETTE[s.sky] for s in scenes], dtype=np.uint8)[:, None, None, :]
    ground = np.array([PALETTE[s.ground] for s in scenes], dtype=np.uint8)[:, None, None, :]
    images = np.where((parts == SKY)[..., None], sky, ground)
    labels = np.zeros((b, size, size), dtype=np.int64)
    for k in range(MAX_OBJECTS):
        has = [i for i, s in enumerate(scenes) if len(s.objects) > k]
        if not has:
            continue
        objs = [scenes[i].objects[k] for i in has]
        kind = np.array([SHAPES.index(o["shape"]) for o in objs])
        masks = shape_masks(kind, *(np.array([o[a] for o in objs], dtype=np.float32) for a in ("cx", "cy", "r")), size)
        colour = np.array([PALETTE[o["colour"]] for o in objs], dtype=np.uint8)[:, None, None, :]
        images[has] = np.where(masks[..., None], colour, images[has])
        parts[has] = np.where(masks, 2 + k, parts[has])
        labels[has] = np.where(masks, kind[:, None, None] + 1, labels[has])
    return Batch(images, parts, labels, list(scenes), [caption(s) for s in scenes])


def sample(n: int, seed: int = 0, split: str = "train", size: int = DEFAULT_SIZE) -> Batch:
    """Draw ``n`` scenes of ``split`` (train, heldout or all), deterministically from ``seed``."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if split not in ("train", "heldout", "all"):
        raise UserError(f"split {split!r} is unknown; use train, heldout or all")
    rng = np.random.default_rng(seed)
    return render([_draw_scene(rng, split, size) for _ in range(n)], size)


def unknown_words(text: str) -> list[str]:
    return [w for w in text.lower().split() if w not in VOCABULARY]


def check_vocabulary(prompts: list[str]) -> None:
    """Refuse prompts with words a scenes model never learnt, naming them and the words it knows."""
    bad = sorted({w for p in prompts for w in unknown_words(p)})
    if bad:
        raise UserError(
            f"the scenes model does not know the word{'s' if len(bad) > 1 else ''} "
            f"{', '.join(repr(w) for w in bad)}; it knows: {' '.join(VOCABULARY)}"
        )


NAMEABLE = ("objects", "sky", "ground")  # what a prompt source's captions may name
ATTRIBUTES = ("size", "colour", "shape")  # what they may say of each object


def prompt_options(
    named: list | None = None,
    attributes: list | None = None,
    split: str = "train",
    exclude_colours: list | None = None,
    min_objects: int = 1,
) -> dict:
    """The ``scenes`` prompt source's parameters (``prompts.params``; None: every part, every attribute) as
    :func:`captions`' keyword arguments."""
    return dict(
        name=tuple(NAMEABLE if named is None else named),
        attributes=tuple(ATTRIBUTES if attributes is None else attributes),
        split=split,
        exclude_colours=tuple(exclude_colours or ()),
        min_objects=min_objects,
    )


def captions(
    n: int,
    rng: np.random.Generator,
    name=NAMEABLE,
    attributes=ATTRIBUTES,
    split: str = "train",
    exclude_colours=(),
    min_objects: int = 1,
) -> tuple[list[str], list[Scene]]:
    """``n`` captions of drawn scenes that name only the parts in ``name`` (objects, sky, ground) and,
    of each object, only ``attributes`` ("a red circle and a square on a green ground": sky open, sizes
    unsaid); objects never in ``exclude_colours`` (a reward's target, say); at least ``min_objects``.
    Naming nothing gives the empty caption. Returns the captions and the scenes they were read from."""
    bad = [p for p in name if p not in NAMEABLE] + [a for a in attributes if a not in ATTRIBUTES]
    bad += [c for c in exclude_colours if c not in COLOURS]
    if bad:
        raise UserError(
            f"scenes captions: {bad[0]!r} is not something a caption names; name is a subset of "
            f"{', '.join(NAMEABLE)}, attributes of {', '.join(ATTRIBUTES)}, colours of {', '.join(COLOURS)}"
        )
    if not 1 <= min_objects <= MAX_OBJECTS:
        raise UserError(f"scenes captions: min_objects must lie in 1..{MAX_OBJECTS}, got {min_objects}")
    keep = {"objects": None, "sky": "sky" in name, "ground": "ground" in name}
    out, drawn = [], []
    while len(out) < n:
        scene = _draw_scene(rng, split, DEFAULT_SIZE)
        if len(scene.objects) < min_objects or any(o["colour"] in exclude_colours for o in scene.objects):
            continue
        per_object = [{a: a in attributes for a in ATTRIBUTES} if "objects" in name else False for _ in scene.objects]
        out.append(caption(scene, {**keep, "objects": per_object}))
        drawn.append(scene)
    return out, drawn
