"""Advantages (batch, per-prompt, group; scalars and maps) and the image -> latent grid map."""

import pytest
import torch

from pxpo.core.advantages import PerPromptStats, compute_advantages
from pxpo.core.latent_map import to_latent_grid


def test_batch_advantages_are_normalised_and_clipped():
    r = torch.tensor([0.0, 1.0, 2.0, 3.0])
    a = compute_advantages(r, ["p"] * 4, "batch", clip=5.0)
    assert a.mean().abs() < 1e-6 and a.std(unbiased=False) == pytest.approx(1.0, abs=1e-3)
    big = compute_advantages(torch.tensor([0.0] * 99 + [1.0]), ["p"] * 100, "batch", clip=2.0)
    assert big.max() == 2.0


def test_constant_maps_give_the_scalar_advantage_at_every_pixel():
    r = torch.tensor([0.3, 0.9, 0.1])
    maps = r[:, None, None].expand(3, 4, 4).clone()
    for kind in ("batch", "group"):
        a_s = compute_advantages(r, ["p"] * 3, kind)
        for norm in ("pixel", "pixel-std", "global"):
            a_m = compute_advantages(maps, ["p"] * 3, kind, norm=norm)
            assert torch.allclose(a_m, a_s[:, None, None].expand(3, 4, 4), atol=1e-6)


def test_pooled_std_keeps_nearly_constant_pixels_small():
    g = torch.Generator().manual_seed(0)
    maps = torch.zeros(8, 4, 4)
    maps[:, :2] = torch.randn(8, 2, 4, generator=g)  # top half: real differences between samples
    maps[:, 2:] = 1.0 + 1e-3 * torch.randn(8, 2, 4, generator=g)  # bottom half: noise on a constant
    pooled = compute_advantages(maps, ["p"] * 8, "batch")
    pixel = compute_advantages(maps, ["p"] * 8, "batch", norm="pixel-std")
    assert pooled[:, 2:].abs().max() < 0.01 and pooled[:, :2].std() > 0.5
    assert pixel[:, 2:].std() > 0.9  # per-pixel scaling blows the noise up to unit size
    # pooled scale = sqrt of the mean per-pixel variance
    var = maps.var(dim=0, unbiased=False).mean()
    assert torch.allclose(pooled, (maps - maps.mean(0)) / (var.sqrt() + 1e-4), atol=1e-6)
    # global: one baseline and scale over samples and pixels
    glob = compute_advantages(maps, ["p"] * 8, "batch", norm="global")
    assert torch.allclose(glob, (maps - maps.mean()) / (maps.std(unbiased=False) + 1e-4), atol=1e-6)
    with pytest.raises(ValueError, match="norm"):
        compute_advantages(maps, ["p"] * 8, "batch", norm="pooled")


def test_map_advantages_are_per_pixel():
    maps = torch.zeros(2, 2, 2)
    maps[0, 0, 0] = 1.0  # only pixel (0,0) differs between the two samples
    a = compute_advantages(maps, ["p", "p"], "batch")
    assert a[0, 0, 0] > 0 and a[1, 0, 0] < 0
    assert torch.all(a[:, 1, :] == 0) and torch.all(a[:, 0, 1] == 0)


def test_group_advantages_use_each_prompts_own_samples():
    r = torch.tensor([1.0, 3.0, 100.0, 102.0])
    a = compute_advantages(r, ["a", "a", "b", "b"], "group")
    assert torch.allclose(a, torch.tensor([-1.0, 1.0, -1.0, 1.0]), atol=1e-3)


def test_per_prompt_tracking_falls_back_to_batch_until_min_count():
    tracker = PerPromptStats(buffer_size=4, min_count=3)
    r = torch.tensor([1.0, 3.0, 10.0, 12.0])
    prompts = ["a", "a", "b", "b"]
    first = compute_advantages(r, prompts, "per-prompt", tracker=tracker)
    assert torch.allclose(first, compute_advantages(r, prompts, "batch"))  # buffers hold 2 < 3
    second = compute_advantages(r, prompts, "per-prompt", tracker=tracker)  # now 4 per prompt
    assert torch.allclose(second, torch.tensor([-1.0, 1.0, -1.0, 1.0]), atol=1e-3)
    assert len(tracker.buffers["a"]) == 4
    state = tracker.state_dict()
    fresh = PerPromptStats(4, 3)
    fresh.load_state_dict(state)
    assert all(
        torch.equal(torch.stack(list(fresh.buffers[p])), torch.stack(list(tracker.buffers[p]))) for p in ("a", "b")
    )  # a resumed run continues from the same statistics
    with pytest.raises(ValueError, match="tracker"):
        compute_advantages(r, prompts, "per-prompt")
    with pytest.raises(ValueError, match="min_count"):
        PerPromptStats(buffer_size=2, min_count=3)


def test_area_pooling_keeps_constants_and_means():
    m = torch.arange(16.0).reshape(1, 4, 4)
    out = to_latent_grid(m, (2, 2), "area")
    assert torch.allclose(out, torch.tensor([[[2.5, 4.5], [10.5, 12.5]]]))
    assert torch.allclose(to_latent_grid(torch.full((2, 64, 64), 0.7), (16, 16)), torch.full((2, 16, 16), 0.7))


def test_max_pooling_keeps_sparse_marks_and_identity_for_pixel_space():
    m = torch.zeros(1, 8, 8)
    m[0, 1, 1] = 1.0  # one brush pixel
    assert to_latent_grid(m, (2, 2), "max")[0, 0, 0] == 1.0
    assert to_latent_grid(m, (2, 2), "area")[0, 0, 0] == pytest.approx(1 / 16)
    assert to_latent_grid(-m, (2, 2), "min")[0, 0, 0] == -1.0
    assert to_latent_grid(m, (8, 8)) is m


def test_latent_grid_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="does not tile"):
        to_latent_grid(torch.zeros(1, 10, 10), (4, 4))
    with pytest.raises(ValueError, match="area, max, min"):
        to_latent_grid(torch.zeros(1, 8, 8), (4, 4), "median")


def test_latent_grid_of_a_region_map_is_its_in_region_mean_with_its_share_as_weight():
    from pxpo.core.latent_map import results_to_latent_grid

    rmap = torch.zeros(1, 4, 4)
    rmap[0, :, :1] = 0.8  # the region is the first image column; outside, no opinion (reward 0)
    weight = torch.zeros(1, 4, 4)
    weight[0, :, :1] = 1.0
    hold = 1.0 - weight
    maps, w, h = results_to_latent_grid([rmap, rmap], [weight, weight], [hold, hold], (2, 2))
    assert maps.shape == w.shape == h.shape == (2, 2, 2)
    assert torch.allclose(maps[:, :, 0], torch.full((2, 2), 0.8))  # the in-region mean, not 0.8 / 2
    assert torch.allclose(w[:, :, 0], torch.full((2, 2), 0.5)) and torch.all(w[:, :, 1] == 0)
    assert torch.allclose(h, 1 - w)
    plain, none_w, none_h = results_to_latent_grid([rmap], [None], [None], (2, 2))
    assert none_w is None and none_h is None and torch.allclose(plain[0, :, 0], torch.full((2,), 0.4))
    assert results_to_latent_grid([None], [None], [None], (2, 2)) == (None, None, None)


def test_per_covered_pixel_makes_a_terms_weight_independent_of_its_area():
    """train.loss_norm=region: a term averaged over the whole picture, rescaled, equals its average
    over the pixels it covers, so a small region's reward is not outweighed by a big anchor."""
    from pxpo.core.advantages import per_covered_pixel

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, 8, generator=g)
    for frac in (0.25, 0.5, 0.75):
        cover = torch.zeros(4, 8, 8)
        cover[:, :, : int(8 * frac)] = 1.0
        whole = (per_covered_pixel(x * cover, cover)).mean()  # what the loss computes
        assert torch.allclose(whole, x[cover.bool()].mean(), atol=1e-6)
    ones = torch.ones(4, 8, 8)
    assert torch.equal(per_covered_pixel(x, ones), x)  # no opinion weights: unchanged (DDPO equivalence kept)
    assert torch.equal(per_covered_pixel(x * 0, ones * 0), x * 0)  # nothing covered: zeros, not NaN


def test_keep_apart_compares_changed_pixels_only_with_changed_ones():
    # pixel (0, 0) is object (to change) in samples 0-2 and background (kept) in samples 3-5
    closeness = torch.tensor([0.2, 0.4, 0.6])  # the object's closeness to the target colour
    r = torch.ones(6, 2, 2)  # kept pixels: as the starting model drew them, closeness to it 1
    r[:3, 0, 0] = closeness
    keep = torch.ones(6, 2, 2)
    keep[:3, 0, 0] = 0
    apart = compute_advantages(r, ["p"] * 6, "batch", keep=keep)
    mixed = compute_advantages(r, ["p"] * 6, "batch")
    # apart: the objects are compared with each other; the kept pixels, all alike, get no credit
    assert torch.allclose(apart[:3, 0, 0] / apart[2, 0, 0], (closeness - closeness.mean()) / 0.2)
    assert torch.all(apart[3:] == 0)
    # mixed: the kept samples' 1s lift the baseline, and every object is scored below it,
    # the closest one included: the advantage says "the object was here", not how yellow it was
    assert torch.all(mixed[:3, 0, 0] < 0) and torch.all(mixed[3:, 0, 0] > 0)


def test_keep_apart_changes_nothing_when_every_sample_keeps_the_same_pixels():
    torch.manual_seed(0)
    r = torch.rand(6, 4, 4)
    keep = torch.zeros(6, 4, 4)
    keep[:, 2:] = 1  # a fixed region: the bottom half kept in every sample
    for kind in ("batch", "group"):
        assert torch.equal(
            compute_advantages(r, list("aabbcc"), kind, keep=keep), compute_advantages(r, list("aabbcc"), kind)
        )


def test_part_scale_apart_gives_the_kept_part_a_weight_of_its_own():
    torch.manual_seed(0)
    r = torch.rand(8, 4, 4)
    keep = torch.zeros(8, 4, 4)
    keep[:, 2:] = 1
    r[:, 2:] = 1 + 0.01 * r[:, 2:]  # kept pixels hardly vary: closeness to the reference about 1
    pooled = compute_advantages(r, ["p"] * 8, "batch", keep=keep)
    apart = compute_advantages(r, ["p"] * 8, "batch", keep=keep, part_scale="apart")

    def rms(x):
        return x.pow(2).mean().sqrt()

    # pooled: one scale, so the kept half's advantages are tiny next to the changed half's
    assert rms(pooled[:, 2:]) < 0.05 * rms(pooled[:, :2])
    # apart: each half has unit pooled scale, and within each half the ranking is unchanged
    assert torch.allclose(rms(apart[:, :2]), torch.tensor(1.0), atol=1e-3)
    assert torch.allclose(rms(apart[:, 2:]), torch.tensor(1.0), atol=0.05)  # eps 1e-4 against a scale of 0.003
    assert torch.allclose(apart[:, :2] / rms(apart[:, :2]), pooled[:, :2] / rms(pooled[:, :2]), atol=1e-5)
    assert torch.allclose(apart[:, 2:] / rms(apart[:, 2:]), pooled[:, 2:] / rms(pooled[:, 2:]), atol=1e-4)


def test_part_scale_changes_nothing_without_keep_maps():
    torch.manual_seed(1)
    r = torch.rand(6, 4, 4)
    for kind in ("batch", "group"):
        assert torch.equal(
            compute_advantages(r, list("aabbcc"), kind, part_scale="apart"), compute_advantages(r, list("aabbcc"), kind)
        )
    with pytest.raises(ValueError, match="part scale"):
        compute_advantages(r, ["p"] * 6, "batch", part_scale="both")


def test_hold_max_pool_holds_every_latent_pixel_that_touches_a_kept_pixel():
    from pxpo.core.latent_map import results_to_latent_grid

    hold = torch.zeros(1, 8, 8)
    hold[0, :3, :3] = 1  # a kept corner that covers 9 of the 16 pixels of latent pixel (0, 0)
    args = ([torch.rand(1, 8, 8)], [torch.ones(1, 8, 8)], [hold], (2, 2))
    area = results_to_latent_grid(*args)[2]
    held = results_to_latent_grid(*args, hold_mode="max")[2]
    assert torch.allclose(area, torch.tensor([[[9 / 16, 0.0], [0.0, 0.0]]]))
    assert torch.equal(held, torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]))
    assert torch.equal(results_to_latent_grid(*args, hold_mode="max")[0], results_to_latent_grid(*args)[0])
