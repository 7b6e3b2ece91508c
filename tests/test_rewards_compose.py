"""Weighted sums, build_reward specs, asynchronous scoring, and validation of user rewards."""

import textwrap

import pytest
import torch

from pxpo.testbed import world
from pxpo.rewards import RewardError, RewardResult, get_reward
from pxpo.rewards.compose import AsyncReward, build_reward, compose

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def batch():
    images, labels = world.sample(2, seed=5, combos=[("square", "red", "blue")]).tensors()
    return images, labels, ["a red square on a blue background"] * 2, [{}, {}]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A temporary importable module ``user_rewards`` with good and broken rewards."""
    (tmp_path / "user_rewards.py").write_text(
        textwrap.dedent("""
        import torch
        from pxpo.rewards import RewardResult

        def brightness(images, prompts, metadata):
            return images.mean(dim=1)  # a bare [B, H, W] map

        def make_const(value=1.0):
            return lambda images, prompts, metadata: torch.full((images.shape[0],), float(value))

        def wrong_shape(images, prompts, metadata):
            return RewardResult(map=torch.zeros(images.shape[0], 5, 5))

        def int_dtype(images, prompts, metadata):
            return torch.zeros(images.shape[0], dtype=torch.long)

        def nan(images, prompts, metadata):
            return torch.full((images.shape[0],), float("nan"))

        def inf(images, prompts, metadata):
            return RewardResult(map=torch.full(images.shape[:1] + images.shape[2:], float("inf")))

        def wrong_type(images, prompts, metadata):
            return [1.0] * images.shape[0]
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_rewards"


def test_weighted_sum_of_maps(batch):
    images, labels, prompts, meta = batch
    reward = build_reward({"colour": 2.0, "jpeg-compressibility-map": 0.5}, {"colour": {"target": "red"}})
    r = reward(images, prompts, meta)
    c = get_reward("colour", target="red")(images, prompts, meta)
    j = get_reward("jpeg-compressibility-map")(images, prompts, meta)
    assert torch.allclose(r.map, 2.0 * c.map + 0.5 * j.map)
    assert torch.allclose(r.scalar, 2.0 * c.scalar + 0.5 * j.scalar)
    assert r.info["colour"] == pytest.approx(float(c.scalar.mean()))
    assert r.info["jpeg-compressibility-map"] == pytest.approx(float(j.scalar.mean()))
    assert torch.equal(r.info["colour/colour_in_region"], c.info["colour_in_region"])


def test_scalar_component_makes_a_scalar_only_composite(batch):
    images, _, prompts, meta = batch
    r = compose({"colour": 1.0, "jpeg-incompressibility": 1.0}, {"colour": {"target": "blue"}})(images, prompts, meta)
    assert r.map is None and r.scalar.shape == (2,)


def test_spec_forms_agree(batch):
    images, _, prompts, meta = batch
    a = build_reward("colour", {"target": "red", "region": "left"})(images, prompts, meta)
    b = build_reward({"name": "colour", "params": {"target": "red", "region": "left"}})(images, prompts, meta)
    c = build_reward({"colour": 1.0}, {"colour": {"target": "red", "region": "left"}})(images, prompts, meta)
    d = build_reward(
        {
            "name": "compose",
            "params": {"weights": {"colour": 1.0}, "params": {"colour": {"target": "red", "region": "left"}}},
        }
    )
    assert torch.equal(a.map, b.map) and torch.equal(a.map, c.map)
    assert torch.equal(a.map, d(images, prompts, meta).map)


def test_spec_errors():
    with pytest.raises(RewardError, match="unknown reward 'nope'"):
        build_reward("nope")
    with pytest.raises(RewardError, match="not in weights"):
        build_reward({"colour": 1.0}, {"jpeg-compressibility": {}})
    with pytest.raises(RewardError, match="finite number"):
        build_reward({"colour": "high"})
    with pytest.raises(RewardError, match="no other keys"):
        build_reward({"name": "colour", "target": "red"})
    with pytest.raises(RewardError, match="cannot build"):
        build_reward(42)


def test_module_function_lookup(batch, user_module):
    images, _, prompts, meta = batch
    r = build_reward(f"{user_module}:brightness")(images, prompts, meta)
    assert torch.allclose(r.map, images.mean(dim=1))
    const = build_reward(f"{user_module}:make_const", {"value": 3.0})(images, prompts, meta)
    assert torch.equal(const.scalar, torch.full((2,), 3.0))
    mix = build_reward({f"{user_module}:brightness": 1.0, "colour": 1.0})(images, prompts, meta)
    assert f"{user_module}:brightness" in mix.info


@pytest.mark.parametrize(
    "fn, message",
    [
        ("wrong_shape", r"map has shape \(2, 5, 5\), expected \[2, 64, 64\]"),
        ("int_dtype", "dtype torch.int64, expected a floating dtype"),
        ("nan", "NaN or inf"),
        ("inf", "NaN or inf"),
        ("wrong_type", "returned list; expected a RewardResult"),
    ],
)
def test_bad_user_rewards_are_named(batch, user_module, fn, message):
    images, _, prompts, meta = batch
    name = f"{user_module}:{fn}"
    for reward in (build_reward(name), build_reward({name: 1.0, "colour": 1.0})):
        with pytest.raises(RewardError, match=message) as err:
            reward(images, prompts, meta)
        assert repr(name) in str(err.value)


def test_async_reward_matches_sync_and_reports_errors(batch, user_module):
    images, _, prompts, meta = batch
    reward = build_reward("colour", {"target": "red"})
    with AsyncReward(reward) as scorer:
        buffer = images.clone()
        future = scorer.submit(buffer, prompts, meta)
        buffer.zero_()  # the caller may reuse its buffer at once
        result = future.result(timeout=30)
        assert isinstance(result, RewardResult)
        assert torch.equal(result.map, reward(images, prompts, meta).map)
    with AsyncReward(get_reward(f"{user_module}:nan")) as scorer:
        with pytest.raises(RewardError, match=f"'{user_module}:nan'"):
            scorer.submit(images, prompts, meta).result(timeout=30)


def test_a_user_spec_that_cannot_load_says_which_part_failed():
    from pxpo.errors import ConfigError
    from pxpo.prompts import get_prompts
    from pxpo.rewards.boxes import get_detector

    with pytest.raises(RewardError, match="cannot import module 'no_such_module_xyz'"):
        get_reward("no_such_module_xyz:fn")
    with pytest.raises(RewardError, match="boxes detector 'os:nope'.*has no attribute 'nope'"):
        get_detector("os:nope")
    with pytest.raises(ConfigError, match="prompt source 'no_such_module_xyz:f': cannot import"):
        get_prompts("no_such_module_xyz:f")
