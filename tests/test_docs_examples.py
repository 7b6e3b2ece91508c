"""The code the docs show runs: examples/custom_rewards.py (docs/howto/custom-reward.md, README)."""

import json
import sys
from pathlib import Path

import pytest
import torch

from pxpo.cli import main
from pxpo.rewards.compose import build_reward

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_custom_reward_example_through_the_name_lookup(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, "custom_rewards", raising=False)  # imported here, forgotten after
    images = torch.rand(2, 3, 16, 16)
    prompts, meta = ["a red circle", "a green cross"], [{}, {}]

    r = build_reward("custom_rewards:warm_left")(images, prompts, meta)
    assert r.map.shape == (2, 16, 16) and r.scalar.shape == (2,)
    assert torch.equal(r.weight[..., 8:], torch.zeros(2, 16, 8))  # no opinion on the right half
    assert torch.equal(r.map[..., 8:], torch.zeros(2, 16, 8))

    factory = build_reward("custom_rewards:make_colour_on_left", {"target": "red"})(images, prompts, meta)
    assert factory.map.shape == (2, 16, 16) and factory.map.le(1).all()

    mixed = build_reward({"colour": 1.0, "custom_rewards:warm_left": 0.5}, {"colour": {"target": "blue"}})
    assert "custom_rewards:warm_left" in mixed(images, prompts, meta).info


@pytest.mark.slow
def test_pxpo_train_with_the_custom_reward(tmp_path, monkeypatch):
    """README's `PYTHONPATH=examples pxpo train --reward.name=custom_rewards:warm_left`, one tiny epoch."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, "custom_rewards", raising=False)
    args = [
        "train",
        f"--out_dir={tmp_path}",
        "--run_name=r",
        "--reward.name=custom_rewards:warm_left",
        "--epochs=1",
        "--sample.num_steps=4",
        "--sample.batch_size=4",
        "--train.batch_size=4",
        "--eval_samples=4",
        "--eval_every=0",
        "--tensorboard=false",
        "--threads=1",
    ]
    assert main(args) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert "redness_left" in summary["eval_info_after"]
