"""What a pretraining run learns from: the pictures and captions of one world, by name.

``shapes`` is the one-object world (:mod:`pxpo.testbed.world`), ``scenes`` the world of several parts
(:mod:`pxpo.testbed.scenes`). Each gives the same four things to the VAE and denoiser stages: an
unbounded stream of training batches, the training captions of a batch (dropped whole for
classifier-free guidance, or in parts), the words its tokenizer must hold, and the prompts of the
sample grids (half held out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from pxpo.errors import UserError
from pxpo.testbed import scenes, world


@dataclass(frozen=True)
class PretrainWorld:
    name: str
    vocabulary: tuple[str, ...]
    max_tokens: int
    stream: Callable[[int, int], Iterator]  # (batch_size, seed) -> batches with .tensors() and .captions
    sample: Callable[[int, int, str], object]  # (n, seed, split) -> one batch
    captions: Callable  # (batch, gen, cfg_dropout, part_dropout) -> list[str]
    grid_prompts: Callable[[int], list[str]]


def _shapes_captions(batch, gen: torch.Generator, cfg_dropout: float, part_dropout: float) -> list[str]:
    """Each caption dropped whole with ``cfg_dropout``; with ``part_dropout`` > 0 each remaining one also
    loses its shape, colour and background independently with that probability ("a red circle")."""
    out = []
    for i, c in enumerate(batch.captions):
        if torch.rand(1, generator=gen).item() < cfg_dropout:
            out.append("")
        elif part_dropout > 0:
            kept = [
                p if torch.rand(1, generator=gen).item() >= part_dropout else None
                for p in (batch.shapes[i], batch.colours[i], batch.backgrounds[i])
            ]
            out.append(world.partial_caption(*kept))
        else:
            out.append(c)
    return out


def _shapes_grid(n: int = 16) -> list[str]:
    held, train = world.combinations("heldout"), world.combinations("train")
    picks = [held[i * len(held) // (n // 2)] for i in range(n // 2)]
    picks += [train[i * len(train) // (n // 2)] for i in range(n // 2)]
    return [world.caption(*p) for p in picks]


def _scenes_stream(batch_size: int, seed: int = 0) -> Iterator[scenes.Batch]:
    k = 0
    while True:
        yield scenes.sample(batch_size, seed=seed * 1_000_003 + k)
        k += 1


def _scenes_captions(batch, gen: torch.Generator, cfg_dropout: float, part_dropout: float) -> list[str]:
    """Each caption dropped whole with ``cfg_dropout``; with ``part_dropout`` > 0 each object, its size,
    colour and shape, the sky and the ground are each left out with that probability."""
    out = []
    for scene in batch.scenes:
        if torch.rand(1, generator=gen).item() < cfg_dropout:
            out.append("")
        elif part_dropout > 0:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            out.append(scenes.caption(scene, scenes.random_keep(scene, rng, part_dropout)))
        else:
            out.append(scenes.caption(scene))
    return out


def _scenes_grid(n: int = 16) -> list[str]:
    return scenes.sample(n // 2, seed=99, split="heldout").captions + scenes.sample(n - n // 2, seed=98).captions


WORLDS = {
    "shapes": PretrainWorld(
        "shapes",
        world.VOCABULARY,
        16,
        lambda b, seed=0: world.stream(b, seed=seed),
        lambda n, seed=0, split="train": world.sample(n, seed=seed, split=split),
        _shapes_captions,
        _shapes_grid,
    ),
    "scenes": PretrainWorld(
        "scenes",
        scenes.VOCABULARY,
        scenes.MAX_TOKENS,
        _scenes_stream,
        lambda n, seed=0, split="train": scenes.sample(n, seed=seed, split=split),
        _scenes_captions,
        _scenes_grid,
    ),
}


def pretrain_world(name: str) -> PretrainWorld:
    if name not in WORLDS:
        raise UserError(f"unknown world {name!r}; choose one of {', '.join(WORLDS)}")
    return WORLDS[name]
