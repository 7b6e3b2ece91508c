"""The scenes suite's measures on a perfect result: each task's own captions, the world's exact pictures of
them (the drawing the captions were read from, not a model's), and what the task asks painted exactly
(each asked part in its target colour, a removal as the sky or ground around it). A perfect result should
read as target 1, locality 0 and healthy; where it does not, the measure itself is that far from the bar
(``python benchmarks/scenes_ideal.py``; docs/results/scenes.md)."""

from __future__ import annotations

import numpy as np
import torch

from pxpo.bench.scenes import asked_masks, get_task, measures
from pxpo.testbed import scene_reader, scenes
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
