"""The scenes world's edges: its captions, prompt source, judge, per-part reward and pretraining data."""

import numpy as np
import pytest
import torch

import pxpo.testbed  # noqa: F401  (registers the testbed's rewards and prompts)
from pxpo.prompts import get_prompts
from pxpo.rewards.base import RewardError, get_reward
from pxpo.testbed import scene_judge, scenes
from pxpo.testbed.pretrain.data import pretrain_world


def test_captions_name_only_what_is_asked():
    texts, drawn = scenes.captions(
        40,
        np.random.default_rng(0),
        name=("objects", "ground"),
        attributes=("colour",),
        exclude_colours=("yellow",),
        min_objects=2,
    )
    for t, s in zip(texts, drawn):
        c = scene_judge.parse_caption(t)
        assert c["sky"] is None and c["ground"] == s.ground  # the sky is left open
        assert [o["colour"] for o in c["objects"]] == [o["colour"] for o in s.objects]
        assert all(o["shape"] is None and o["size"] is None for o in c["objects"])
        assert len(s.objects) >= 2 and "yellow" not in [o["colour"] for o in s.objects]
    with pytest.raises(ValueError, match="not something a caption names"):
        scenes.captions(1, np.random.default_rng(0), name=("clouds",))


def test_prompt_source_gives_parsed_metadata_and_clear_errors():
    texts, meta = get_prompts("scenes", named=["objects"], min_objects=1)(8, np.random.default_rng(1))
    assert len(texts) == 8 and all(m["sky"] is None and m["ground"] is None and m["objects"] for m in meta)
    with pytest.raises(ValueError, match="scenes prompts"):
        get_prompts("scenes", min_objects=9)


def test_judge_scores_true_pictures_high_and_wrong_captions_low():
    b = scenes.sample(48, seed=11, split="all")
    x, _ = b.tensors()
    right = scene_judge.judge(x, b.captions)
    assert right["sky"] == right["ground"] == right["object_colour"] == 1.0
    assert right["count"] > 0.95 and right["object_shape"] > 0.85 and right["parts"] > 0.9
    shuffled = b.captions[1:] + b.captions[:1]
    assert scene_judge.judge(x, shuffled)["parts"] < 0.6
    assert scene_judge.judge(x, ["a red circle on a blue background"] * 48) == {}  # shapes world: skipped


def _reward(images, refs, **params):
    r = get_reward("scene-parts", **params)
    return r(images, [""] * len(images), [{"reference": ref} for ref in refs])


def test_scene_parts_scores_each_part_against_its_own_target():
    b = scenes.sample(6, seed=2, split="all")
    x, parts = b.tensors()
    sky = parts == scenes.SKY
    blue = torch.tensor([30.0, 60.0, 220.0])[None, :, None, None] / 255  # the palette blue
    want = torch.where(sky[:, None], blue.expand_as(x), x)  # the sky blue, the rest as drawn
    got = _reward(want, x, parts=[["sky", "blue"]])
    assert torch.allclose(got.map, torch.ones_like(got.map), atol=1e-4)  # every pixel as asked
    assert torch.equal(got.hold.bool(), ~sky)  # the rest is held: outside keep
    before = _reward(x, x, parts=[["sky", "blue"]])
    assert (before.info["target_in_region"] < got.info["target_in_region"]).all()
    neutral = _reward(x, x, parts=[["sky", "blue"]], outside="neutral")
    assert torch.equal(neutral.weight.bool(), sky) and neutral.hold is None  # no opinion off the sky


def test_scene_parts_remove_and_keep():
    b = scenes.sample(8, seed=4, split="all")
    x, parts = b.tensors()
    from pxpo.testbed import scene_reader

    filled = scene_reader.read(x).fill()
    r = _reward(filled, x, parts=[["objects", "background"]])  # objects painted over: all removed
    objects = parts >= 2
    assert r.map[objects].min() > 0.99 and r.info["target_in_region"].min() > 0.99
    kept = _reward(x, x, parts=[["objects", "background"]])
    assert kept.map[objects].mean() < 0.9  # objects still drawn: not yet removed
    with pytest.raises(RewardError, match="unknown part"):
        get_reward("scene-parts", parts=[["moon", "blue"]])
    with pytest.raises(RewardError, match="outside"):
        get_reward("scene-parts", outside="ignore")


def test_pretrain_worlds_give_batches_captions_and_vocabulary():
    for name in ("shapes", "scenes"):
        w = pretrain_world(name)
        batch = next(w.stream(4, 0))
        x, _ = batch.tensors()
        assert x.shape == (4, 3, 64, 64)
        caps = w.captions(batch, torch.Generator().manual_seed(0), 0.0, 0.0)
        assert caps == list(batch.captions)
        words = {t for c in caps + w.grid_prompts(16) for t in c.split()}
        assert words <= set(w.vocabulary)
    with pytest.raises(ValueError, match="world"):
        pretrain_world("planets")


def test_pxpo_evaluate_judges_a_scenes_model_with_the_scenes_judge(capsys, tmp_path):
    from pxpo.cli import main

    assert (
        main(["evaluate", "--model=shapes-scenes", "--n=4", "--steps=2", "--threads=1", f"--grid={tmp_path / 'g.png'}"])
        == 0
    )
    out = capsys.readouterr().out
    assert "4 heldout scenes captions" in out and (tmp_path / "g.png").is_file()
    values = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:] if line.startswith("  ")}
    assert set(scene_judge.ITEMS) | {"parts"} <= set(values)
    assert 0.0 <= float(values["parts"]) <= 1.0
