"""Every shipped example config loads, passes the trainer's checks, draws prompts the embedded model
knows, and its reward scores world images with a valid map (so `python examples/run_all.py` cannot
fail on a typo after an hour of other examples)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pxpo.testbed import world
from pxpo.config import parse_overrides
from pxpo.prompts import get_prompts
from pxpo.rewards import build_reward
from pxpo.training.config import RunConfig
from pxpo.training.trainer import uses_reference, validate_config

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


def test_examples_are_found():
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_config_runs_its_reward_on_world_images(path):
    cfg = parse_overrides(RunConfig(), [f"--config={path}"], prog="t", description="")
    validate_config(cfg)
    prompts, meta = get_prompts(cfg.prompts.name, **cfg.prompts.params)(4, np.random.default_rng(0))
    assert len(prompts) == 4
    world.check_vocabulary(prompts)

    reward = build_reward(cfg.reward.weights or cfg.reward.name, cfg.reward.params)
    images, _ = world.sample(4, seed=1).tensors()  # [4, 3, 64, 64]
    meta = [dict(m) for m in meta]
    if uses_reference(cfg.reward.reference, reward):  # as the trainer decides
        for m, ref in zip(meta, images):
            m["reference"] = ref
    result = reward(images, prompts, meta)  # validated: a wrong shape, NaN or inf raises here
    if cfg.train.algorithm == "pxpo":
        assert result.map is not None and result.map.shape == (4, 64, 64)
        assert torch.isfinite(result.map).all()
