"""Colour-control reward on shapes-world images, whose correct reward is known by construction."""

import pytest
import torch

from pxpo.testbed import world
from pxpo.rewards import RewardError, get_reward, validate
from pxpo.rewards.colour import BOXES, colour_distance, diameter, max_distance, parse_colour, region_mask, srgb_to_lab

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def red_on_blue():
    images, labels = world.sample(3, seed=4, combos=[("circle", "red", "blue")]).tensors()
    return images, labels


def call(reward, images, metadata=None):
    b = images.shape[0]
    return validate(reward(images, [""] * b, metadata or [{}] * b), "colour", images)


def test_object_region_is_exactly_one_on_the_object(red_on_blue):
    images, labels = red_on_blue
    obj = (labels > 0).float()
    r = call(get_reward("colour", target="red", region="object", mask_fn=lambda x: obj), images)
    assert torch.equal(r.map[labels > 0], torch.ones(int((labels > 0).sum())))
    assert torch.equal(r.map[labels == 0], torch.zeros(int((labels == 0).sum())))  # neutral outside
    assert torch.equal(r.info["colour_in_region"], torch.ones(3))
    assert torch.allclose(r.scalar, obj.mean(dim=(1, 2)))


def test_background_region_and_all(red_on_blue):
    images, labels = red_on_blue
    obj = (labels > 0).float()
    bg = call(get_reward("colour", target="blue", region="background", mask_fn=lambda x: obj), images)
    assert torch.equal(bg.map, (labels == 0).float())
    whole = call(get_reward("colour", target="blue"), images)  # region "all"
    assert torch.equal(whole.map[labels == 0], torch.ones(int((labels == 0).sum())))
    assert (whole.map[labels > 0] < 0.7).all()  # red is far from blue


def test_left_region_is_zero_on_the_right(red_on_blue):
    images, _ = red_on_blue
    r = call(get_reward("colour", target="blue", region="left"), images)
    assert (r.map[:, :, 32:] == 0).all()
    assert (r.map[:, :, :32] > 0).any()


def test_region_masks():
    assert region_mask("all", 4, 6).sum() == 24
    left = region_mask("left", 4, 6)
    assert left[:, :3].eq(1).all() and left[:, 3:].eq(0).all()
    for a, b in [("left", "right"), ("top", "bottom")]:
        assert torch.equal(region_mask(a, 16, 16) + region_mask(b, 16, 16), torch.ones(16, 16))
    assert (region_mask("centre", 16, 16) * region_mask("border", 16, 16)).sum() == 0
    quads = sum(region_mask(q, 10, 10) for q in ("top-left", "top-right", "bottom-left", "bottom-right"))
    assert torch.equal(quads, torch.ones(10, 10))
    assert torch.equal(region_mask("center", 8, 8), region_mask("centre", 8, 8))
    assert region_mask([0.0, 0.0, 0.25, 1.0], 8, 8).sum() == 16
    assert region_mask("border", 16, 16)[2:14, 2:14].sum() == 0
    assert set(BOXES) >= {"left", "right", "top", "bottom", "centre"}
    with pytest.raises(RewardError, match="unknown region"):
        region_mask("middle", 8, 8)
    with pytest.raises(RewardError, match="x0 < x1"):
        region_mask([0.5, 0, 0.2, 1], 8, 8)


def test_lab_conversion_known_values():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    lab = srgb_to_lab(rgb.view(4, 3, 1, 1)).view(4, 3)
    expected = torch.tensor([[100.0, 0.0, 0.0], [53.24, 80.09, 67.20], [0.0, 0.0, 0.0], [32.30, 79.19, -107.86]])
    assert torch.allclose(lab, expected, atol=0.02)


def test_rgb_and_lab_distances_differ_but_agree_on_exact_match(red_on_blue):
    images, labels = red_on_blue
    rgb = call(get_reward("colour", target="red", space="rgb"), images)
    lab = call(get_reward("colour", target="red", space="lab"), images)
    assert torch.equal(rgb.map[labels > 0], lab.map[labels > 0])  # both exactly 1
    assert not torch.allclose(rgb.map[labels == 0], lab.map[labels == 0], atol=1e-3)
    # The RGB reward is 1 - Euclidean distance / farthest cube corner, by hand:
    blue, red = torch.tensor(parse_colour("blue")), torch.tensor(parse_colour("red"))
    far = max(
        ((torch.tensor([x, y, z], dtype=torch.float) - red).norm() for x in (0, 1) for y in (0, 1) for z in (0, 1))
    )
    assert torch.allclose(rgb.map[labels == 0], 1 - (blue - red).norm() / far, atol=1e-5)


def test_bounds_on_random_images():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for space in ("rgb", "lab"):
        r = call(get_reward("colour", target="#10a0f0", space=space), x)
        assert r.map.min() >= 0 and r.map.max() <= 1
    # Farthest from white in Lab is blue (ΔE ~ 148), not black (ΔE 100); in RGB it is black.
    assert max_distance(parse_colour("white"), "lab") > 140
    assert max_distance((1.0, 1.0, 1.0), "rgb") == pytest.approx(3**0.5)
    assert diameter("rgb") == pytest.approx(3**0.5)


def test_colour_specs_and_errors():
    assert parse_colour("Red") == parse_colour([220, 30, 30]) == parse_colour("#dc1e1e")
    with pytest.raises(RewardError, match="red, green, blue"):
        get_reward("colour", target="crimson")
    with pytest.raises(RewardError, match="0..255"):
        get_reward("colour", target=[300, 0, 0])
    with pytest.raises(RewardError, match="'lab' or 'rgb'"):
        get_reward("colour", space="hsv")
    with pytest.raises(RewardError, match="unknown region"):
        get_reward("colour", region="middle")
    with pytest.raises(RewardError, match="neutral"):
        get_reward("colour", outside="ignore")


def test_keep_outside_uses_the_reference(red_on_blue):
    images, labels = red_on_blue
    reward = get_reward("colour", target="red", region="left", outside="keep")
    meta = [{"reference": im} for im in images]
    r = call(reward, images, meta)
    assert torch.equal(r.map[:, :, 32:], torch.ones(3, 64, 32))  # unchanged right half = 1
    with pytest.raises(RewardError, match="reference"):
        call(reward, images)


def test_mask_fn_errors(red_on_blue, monkeypatch):
    images, _ = red_on_blue
    bad = get_reward("colour", region="object", mask_fn=lambda x: torch.ones(3, 8, 8))
    with pytest.raises(RewardError, match="mask_fn"):
        call(bad, images)
    import sys

    monkeypatch.setitem(sys.modules, "pxpo.testbed.segment", None)  # import fails
    with pytest.raises(RewardError, match="segmenter"):
        call(get_reward("colour", region="object"), images)


def test_distance_of_equal_colours_is_zero():
    x = torch.rand(1, 3, 4, 4)
    assert colour_distance(x, x, "lab").abs().max() == 0


def test_background_from_the_reference_does_not_pay_for_a_shrinking_object():
    big = world.sample(2, seed=5, combos=[("square", "red", "blue")])
    images, labels = big.tensors()
    # the "after" picture: the object painted out (all background), the reference: the object as it was
    after = images.clone()
    blue = torch.tensor(world.PALETTE["blue"], dtype=torch.float32).div(255).view(1, 3, 1, 1)
    after = torch.where((labels > 0)[:, None], blue.expand_as(after), after)
    seg = lambda x: (x - blue).abs().sum(dim=1).gt(0.1).float()  # anything not blue is the object  # noqa: E731
    meta = [{"reference": im} for im in images]
    ref = get_reward("colour", target="blue", region="background", mask_fn=seg)
    assert ref.needs_reference and not get_reward("colour", region="left").needs_reference
    on_ref = call(ref, after, meta)
    assert torch.allclose(on_ref.map, (labels == 0).float())  # the painted-out object earns nothing
    on_sample = call(
        get_reward("colour", target="blue", region="background", mask_fn=seg, mask_from="sample"), after, meta
    )
    assert on_sample.scalar.min() == 1.0 and on_ref.scalar.max() < 1.0  # the loophole, closed
    assert torch.equal(call(ref, after).map, on_sample.map)  # no reference given: the sample itself
    with pytest.raises(RewardError, match="mask_from"):
        get_reward("colour", region="background", mask_from="both")


def test_colour_regions_scores_each_part_for_its_own_target():
    images, _ = world.sample(1, seed=0, combos=[("circle", "red", "blue")]).tensors()
    half = images.clone()
    half[..., :32] = torch.tensor(world.PALETTE["red"]).float().div(255).view(3, 1, 1)
    half[..., 32:] = torch.tensor(world.PALETTE["blue"]).float().div(255).view(3, 1, 1)
    r = call(get_reward("colour-regions", parts=[["left", "red"], ["right", "blue"]]), half)
    assert torch.allclose(r.map, torch.ones(1, 64, 64), atol=1e-5)
    swapped = call(get_reward("colour-regions", parts=[["left", "blue"], ["right", "red"]]), half)
    assert swapped.map.max() < 0.5
    with pytest.raises(RewardError, match="pairs"):
        get_reward("colour-regions", parts=["left"])
