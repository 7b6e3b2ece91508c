"""The shapes world: a seeded, procedural source of captioned images with exact label maps.

Every image holds one object (a shape of a named colour) on a plain background of another named
colour, e.g. "a red circle on a blue background". Each image comes with a per-pixel label map
(0 = background, k = SHAPES[k-1]) that is exact by construction: it is the ground truth for the
segmentation feedback and for the evaluator.

A held-out set of (shape, object colour, background colour) combinations never appears in
training (``split="train"``) so generalisation can be measured on ``split="heldout"``.

Everything is numpy and vectorised over the batch: thousands of 64x64 images per second.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pxpo.rewards.palette import PALETTE
from pxpo.errors import ConfigError, UserError

# Named colours (pxpo.rewards.palette, where the colour rewards read them too).
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
# Label ids in label maps: 0 is the background, shape k has id k + 1.
LABELS: tuple[str, ...] = ("background",) + SHAPES
# Every word a caption can hold: the embedded model's tokenizer covers exactly these.
VOCABULARY: tuple[str, ...] = ("a", "an", "on", "background") + COLOURS + SHAPES

DEFAULT_SIZE = 64


def caption(shape: str, colour: str, background: str) -> str:
    """The caption of one combination: ``"a red circle on a blue background"``."""
    return f"a {colour} {shape} on a {background} background"


def all_combinations() -> list[tuple[str, str, str]]:
    """Every (shape, object colour, background colour) with object colour != background."""
    return [(s, c, b) for s in SHAPES for c in COLOURS for b in COLOURS if c != b]


@lru_cache(maxsize=None)
def heldout_combinations() -> frozenset[tuple[str, str, str]]:
    """About one combination in eight, kept out of training.

    The rule is a fixed arithmetic pattern over the indices, so that every shape, every object
    colour and every background colour (and every colour pair) still appears in training: only
    the three-way combination is new at evaluation time.
    """
    held = set()
    for s, c, b in all_combinations():
        i, j, k = SHAPES.index(s), COLOURS.index(c), COLOURS.index(b)
        if (j + 3 * k + 2 * i) % 8 == 0:
            held.add((s, c, b))
    return frozenset(held)


def combinations(split: str = "train") -> list[tuple[str, str, str]]:
    """Combinations of a split: ``"train"``, ``"heldout"`` or ``"all"``."""
    held = heldout_combinations()
    if split == "all":
        return all_combinations()
    if split == "train":
        return [x for x in all_combinations() if x not in held]
    if split == "heldout":
        return [x for x in all_combinations() if x in held]
    raise ValueError(f"unknown split {split!r}: use 'train', 'heldout' or 'all'")


PARTS: tuple[str, ...] = ("shape", "colour", "background")  # the parts of a caption, in combination order


def partial_combinations(combos, parts) -> list[tuple[str | None, str | None, str | None]]:
    """The distinct combinations naming only ``parts`` (the others None), in ``combos``' order:
    with parts [colour, shape], ("circle", "red", "blue") and ("circle", "red", "green") are one."""
    parts = tuple(parts)
    if not parts or any(p not in PARTS for p in parts):
        raise ConfigError(f"parts {list(parts)}: give a non-empty subset of {', '.join(PARTS)}")
    return list(dict.fromkeys(tuple(v if k in parts else None for k, v in zip(PARTS, c)) for c in combos))


def partial_caption(shape: str | None, colour: str | None, background: str | None) -> str:
    """A caption naming only some parts (None = left open): ``"a red circle"`` (no background),
    ``"a circle on a blue background"`` (no colour), ``"a red on a blue background"`` (no shape),
    ``"a blue background"``; all None gives the empty caption."""
    obj = " ".join(w for w in (colour, shape) if w)
    if background:
        return f"a {obj} on a {background} background" if obj else f"a {background} background"
    return f"a {obj}" if obj else ""


def parse_caption(text: str) -> tuple[str, str, str]:
    """Inverse of :func:`caption`; raises ``ValueError`` naming what is wrong."""
    words = text.lower().strip().split()
    if len(words) != 7 or words[0] not in ("a", "an") or words[3] != "on" or words[6] != "background":
        raise UserError(f"not a shapes-world caption: {text!r}; expected 'a <colour> <shape> on a <colour> background'")
    colour, shape, background = words[1], words[2], words[5]
    for word, allowed in ((colour, COLOURS), (shape, SHAPES), (background, COLOURS)):
        if word not in allowed:
            raise UserError(f"{word!r} in {text!r} is not one of {', '.join(allowed)}")
    return shape, colour, background


def parse_partial_caption(text: str) -> tuple[str | None, str | None, str | None]:
    """Inverse of :func:`partial_caption`: (shape, colour, background), None where the caption
    leaves the part open ("" gives all None); raises ``ValueError`` naming what is wrong."""
    words = text.lower().strip().split()
    if not words:
        return None, None, None
    background = None
    if words[-1] == "background":
        if len(words) < 3 or words[-3] != "a" or words[-2] not in COLOURS:
            raise UserError(
                f"not a shapes-world caption: {text!r}; a background is named as '... on a <colour> background'"
            )
        background, words = words[-2], words[:-3]
        if words:
            if words[-1] != "on":
                raise UserError(f"not a shapes-world caption: {text!r}; expected '<object> on a <colour> background'")
            words = words[:-1]
        else:
            return None, None, background
    if not words or words[0] not in ("a", "an") or not 2 <= len(words) <= 3:
        raise UserError(
            f"not a shapes-world caption: {text!r}; expected 'a <colour> <shape>', "
            "'a <shape>' or 'a <colour>', optionally followed by 'on a <colour> background'"
        )
    colour = words[1] if words[1] in COLOURS else None
    shape = words[-1] if words[-1] in SHAPES else None
    if len(words) - 1 != (colour is not None) + (shape is not None):
        raise UserError(
            f"not a shapes-world caption: {text!r}; the object is 'a <colour> <shape>', 'a <colour>' "
            f"or 'a <shape>', colour one of {', '.join(COLOURS)}, shape one of {', '.join(SHAPES)}"
        )
    return shape, colour, background


def unknown_words(text: str) -> list[str]:
    """Words of ``text`` outside the world's vocabulary (the embedded model never saw them)."""
    return [w for w in text.lower().replace(",", " ").split() if w not in VOCABULARY]


def check_vocabulary(prompts: list[str]) -> None:
    """Raise ValueError naming the first prompt with words the embedded model never saw."""
    for p in prompts:
        bad = unknown_words(p)
        if bad:
            raise UserError(
                f"prompt {p!r} has words the embedded model never saw: {bad}; its vocabulary is: {' '.join(VOCABULARY)}"
            )


@dataclass
class Batch:
    """A batch of world samples. ``images`` is uint8 [B, H, W, 3]; ``labels`` is int64 [B, H, W]."""

    images: np.ndarray
    labels: np.ndarray
    captions: list[str]
    shapes: list[str]
    colours: list[str]
    backgrounds: list[str]
    centres: np.ndarray  # [B, 2] (x, y) in pixels
    radii: np.ndarray  # [B] half-extent in pixels

    def tensors(self):
        """Images as float tensor [B, 3, H, W] in [0, 1] and labels as long tensor [B, H, W]."""
        import torch

        images = torch.from_numpy(self.images).permute(0, 3, 1, 2).float() / 255.0
        return images, torch.from_numpy(self.labels)


def shape_masks(kind: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, size: int) -> np.ndarray:
    """Boolean silhouettes [B, size, size] of shapes ``kind`` (indices into SHAPES).

    Each shape is centred on (cx, cy) with half-extent r: it fits in the box [c - r, c + r].
    Pixel (x, y) is tested at its centre (x + 0.5, y + 0.5).
    """
    coords = np.arange(size, dtype=np.float32) + 0.5
    x = coords[None, None, :] - cx[:, None, None]  # [B, 1, W]
    y = coords[None, :, None] - cy[:, None, None]  # [B, H, 1]
    r = r[:, None, None]
    ax, ay = np.abs(x), np.abs(y)
    circle = x * x + y * y <= r * r
    square = (ax <= r * 0.85) & (ay <= r * 0.85)  # 0.85: about the circle's area, so size is no cue
    # Upward triangle: apex at the top (y = -r), base at the bottom (y = +r).
    triangle = (ay <= r) & (ax <= (y + r) * 0.5)
    arm = r / 3.0
    cross = ((ax <= r) & (ay <= arm)) | ((ax <= arm) & (ay <= r))
    stack = np.stack([circle, square, triangle, cross])  # [4, B, H, W]
    return stack[kind, np.arange(len(kind))]


def sample(
    n: int,
    seed: int = 0,
    split: str = "train",
    size: int = DEFAULT_SIZE,
    combos: list[tuple[str, str, str]] | None = None,
) -> Batch:
    """Draw ``n`` world images, deterministically from ``seed``.

    ``combos`` restricts the draw to the given (shape, colour, background) triples (cycled in
    order, so a list of k triples repeated gives balanced coverage); otherwise combinations are
    drawn uniformly from ``split``.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    rng = np.random.default_rng(seed)
    if combos is None:
        pool = combinations(split)
        picks = [pool[i] for i in rng.integers(0, len(pool), size=n)]
    else:
        if not combos:
            raise ValueError("combos is empty")
        picks = [combos[i % len(combos)] for i in range(n)]
    shapes = [p[0] for p in picks]
    colours = [p[1] for p in picks]
    backgrounds = [p[2] for p in picks]
    kind = np.array([SHAPES.index(s) for s in shapes])
    r = rng.uniform(0.16, 0.34, size=n).astype(np.float32) * size
    margin = r + 1.0
    cx = rng.uniform(margin, size - margin).astype(np.float32)
    cy = rng.uniform(margin, size - margin).astype(np.float32)
    masks = shape_masks(kind, cx, cy, r, size)  # [B, H, W]
    fg = np.array([PALETTE[c] for c in colours], dtype=np.uint8)[:, None, None, :]
    bg = np.array([PALETTE[b] for b in backgrounds], dtype=np.uint8)[:, None, None, :]
    images = np.where(masks[..., None], fg, bg)
    labels = masks.astype(np.int64) * (kind[:, None, None] + 1)
    return Batch(
        images=images,
        labels=labels,
        captions=[caption(*p) for p in picks],
        shapes=shapes,
        colours=colours,
        backgrounds=backgrounds,
        centres=np.stack([cx, cy], axis=1),
        radii=r,
    )


def stream(batch_size: int, seed: int = 0, split: str = "train", size: int = DEFAULT_SIZE):
    """An unbounded iterator of batches; batch ``k`` is ``sample(batch_size, seed=seed * 1_000_003 + k)``."""
    k = 0
    while True:
        yield sample(batch_size, seed=seed * 1_000_003 + k, split=split, size=size)
        k += 1
