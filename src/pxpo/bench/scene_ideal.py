"""The scenes suite's measures on a perfect result: each task's own captions, the world's exact pictures of
them (the drawing the captions were read from, not a model's), and what the task asks painted exactly
(each asked part in its target colour, a removal as the sky or ground around it). A perfect result should
read as target 1, locality 0 and healthy; where it does not, the measure itself is that far from the bar
(``python benchmarks/scenes_ideal.py``; docs/results/scenes.md).

:func:`nearest` is the other bound, for tasks that recolour a fixed region or a part: the nearest picture
the world itself draws (the same scene with its sky, or its ground, in the target colour). A fixed
region painted literally is a picture no scene looks like; this one is, and its locality is what a model
that only changes what the world lets it change could reach."""

from __future__ import annotations

import copy

import numpy as np
import torch

from pxpo.bench.scenes import asked_masks, get_task, measures
from pxpo.testbed import scene_reader, scenes
from pxpo.rewards.colour import region_mask
from pxpo.testbed.world import PALETTE


def ideal(name: str, n: int, seed: int) -> dict:
    task = get_task(name)
    texts, drawn = scenes.captions(n, np.random.default_rng(seed), **scenes.prompt_options(**task.prompts))
    before, _ = scenes.render(drawn).tensors()  # [N, 3, H, W] in [0, 1]
    fill = scene_reader.read(before).fill()
    after = before.clone()
    targets = [t for _, t in task.parts if t != "keep"]
    for target, mask in zip(targets, asked_masks(task, before)):
        value = (
            fill
            if target == "background"
            else torch.tensor(PALETTE[target], dtype=torch.float32).view(1, 3, 1, 1) / 255
        )
        after = torch.where(torch.from_numpy(mask)[:, None], value, after)
    return measures(task, before, after, texts)


def _recoloured_part(part, size: int) -> str:
    """The scene part a world picture would recolour for ``part``: itself for the sky or the ground; for a
    fixed region, the sky if the region's centre lies in the top half of the picture, else the ground."""
    if part in ("sky", "ground"):
        return part
    rows = region_mask(part, size, size).sum(dim=1)  # [H]: the region's pixels per row
    centre = float((rows * torch.arange(size)).sum() / rows.sum().clamp_min(1)) + 0.5
    return "sky" if centre < size / 2 else "ground"


def nearest(name: str, n: int, seed: int) -> dict | None:
    """The measures of the nearest world picture (module docstring): each caption's exact scene with the
    part under each asked region recoloured to its target, nothing else changed. None for a task that
    asks anything else (objects, removal), whose perfect result :func:`ideal` already is a world picture."""
    task = get_task(name)
    asks = [(p, t) for p, t in task.parts if t != "keep"]
    fixed_or_part = [p in ("sky", "ground") or p not in scene_reader.PART_REGIONS for p, _ in asks]
    if not asks or not all(fixed_or_part) or any(t == "background" for _, t in asks):
        return None
    texts, drawn = scenes.captions(n, np.random.default_rng(seed), **scenes.prompt_options(**task.prompts))
    before, _ = scenes.render(drawn).tensors()
    size = before.shape[-1]
    moved = []
    for scene in drawn:
        scene = copy.deepcopy(scene)
        for part, target in asks:
            setattr(scene, _recoloured_part(part, size), target)
        moved.append(scene)
    after, _ = scenes.render(moved, size).tensors()
    return measures(task, before, after, texts)
