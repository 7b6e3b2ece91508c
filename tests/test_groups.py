"""Shared-noise groups: K trajectories per (prompt, x_T), a per-pixel baseline within the group."""

import pytest
import torch

from pxpo.core.advantages import compute_advantages
from pxpo.core.trajectory import sample_trajectories
from pxpo.training.trainer import Trainer
from pxpo.backends import backbone_for

from test_objectives import assert_same_gradient
from test_train_e2e import tiny_config


def test_group_baseline_compares_each_pixel_with_the_same_pixel_of_its_own_group():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 3, 3, generator=g)
    keys = [0, 0, 0, 1, 1, 1]
    a = compute_advantages(maps, ["p"] * 6, "group", groups=keys)
    resid = torch.cat([maps[:3] - maps[:3].mean(0), maps[3:] - maps[3:].mean(0)])
    assert torch.allclose(a, resid / (resid.pow(2).mean().sqrt() + 1e-4), atol=1e-6)
    # another group's level, and other pixels, do not matter: shift group 1 and one pixel of group 0
    shifted = maps.clone()
    shifted[3:] += 10.0
    shifted[:3, 0, 0] += 5.0
    assert torch.allclose(compute_advantages(shifted, ["p"] * 6, "group", groups=keys), a, atol=1e-5)
    # a pixel that is the same within its group gets no credit, however it differs across groups
    flat = maps.clone()
    flat[:3, 1, 1], flat[3:, 1, 1] = 0.0, 1.0
    assert torch.all(compute_advantages(flat, ["p"] * 6, "group", groups=keys)[:, 1, 1] == 0)
    # same prompt, different groups: keys, not prompts, decide
    by_prompt = compute_advantages(maps, ["p"] * 6, "group")
    assert not torch.allclose(by_prompt, a)


def test_batch_scale_keeps_a_nearly_constant_group_small_where_grpo_blows_it_up():
    maps = torch.zeros(8, 2, 2)
    maps[:4] = torch.tensor([0.0, 1.0, 2.0, 3.0])[:, None, None]  # a group with real differences
    maps[4:] = 1.0 + 1e-3 * torch.tensor([0.0, 1.0, 2.0, 3.0])[:, None, None]  # a group of noise
    keys = [0] * 4 + [1] * 4
    pooled = compute_advantages(maps, ["p"] * 8, "group", groups=keys)
    grpo = compute_advantages(maps, ["p"] * 8, "group", groups=keys, group_scale="group")
    assert pooled[4:].abs().max() < 0.01 and pooled[:4].abs().max() > 1
    assert grpo[4:].abs().max() > 1  # each group's own std: noise scaled up to unit size
    with pytest.raises(ValueError, match="group scale"):
        compute_advantages(maps, ["p"] * 8, "group", groups=keys, group_scale="pooled")


@pytest.mark.slow
def test_trainer_draws_groups_from_one_x_T_with_fresh_step_noise(tmp_path):
    cfg = tiny_config(tmp_path, "--sample.group_size=4", "--train.advantages=group", "--train.batch_size=4")
    trainer = Trainer(cfg)
    c = trainer.collect()
    traj, maps = c.traj, c.maps
    groups = [m["group"] for m in traj.metadata]
    assert groups[:4] == [groups[0]] * 4 and groups[4:] == [groups[4]] * 4 and groups[0] != groups[4]
    assert traj.prompts[:4] == [traj.prompts[0]] * 4
    x_T = traj.latents[:, 0]
    assert torch.equal(x_T[0], x_T[3]) and not torch.equal(x_T[0], x_T[4])
    assert not torch.equal(traj.latents[0, 1], traj.latents[1, 1])  # fresh noise from the first step on
    adv = trainer.advantages(c)
    # the default reward (left half red, neutral outside) has an opinion on the left half only
    assert torch.equal(c.weights, torch.ones(8, 16, 16).index_fill_(2, torch.arange(8, 16), 0))
    expect = compute_advantages(maps, traj.prompts, "group", groups=groups, weights=c.weights)
    assert torch.allclose(adv, expect) and torch.all(adv[..., 8:] == 0)
    with pytest.raises(ValueError, match="group_size"):
        Trainer(tiny_config(tmp_path, "--sample.group_size=3"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sf", "clipped"])
def test_constant_map_in_a_shared_noise_group_gives_ddpos_gradient(random_pipe, kind):
    prompts = ["a red circle on a blue background"] * 3 + ["a green cross on a white background"] * 3
    x_T = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1)).repeat_interleave(3, 0)
    traj = sample_trajectories(
        backbone_for(random_pipe),
        prompts,
        num_steps=4,
        guidance=5.0,
        init_latents=x_T,
        generator=torch.Generator().manual_seed(0),
    )
    keys = [0, 0, 0, 1, 1, 1]
    r = torch.tensor([0.2, 0.5, 0.9, 0.1, 0.4, 0.3])
    h, w = traj.latents.shape[-2:]
    a_scalar = compute_advantages(r, prompts, "group", groups=keys)
    a_map = compute_advantages(r[:, None, None].expand(6, h, w).clone(), prompts, "group", groups=keys)
    assert torch.allclose(a_map, a_scalar[:, None, None].expand(6, h, w), atol=1e-6)
    assert_same_gradient(random_pipe, traj, 2, kind, a_scalar, a_map)


def test_pixels_without_an_opinion_get_no_credit_and_do_not_move_the_baseline():
    r = torch.tensor([[0.9, 0.0], [0.5, 0.0], [0.0, 0.3], [0.0, 0.1]]).view(4, 1, 2)
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]).view(4, 1, 2)
    a = compute_advantages(r, ["p"] * 4, "batch", weights=w)
    assert torch.all(a[w == 0] == 0)
    # pixel 0 compares samples 0 and 1 only (0.9 vs 0.5), pixel 1 samples 2 and 3 (0.3 vs 0.1)
    assert a[0, 0, 0] > 0 > a[1, 0, 0] and a[2, 0, 1] > 0 > a[3, 0, 1]
    resid = torch.tensor([0.2, -0.2, 0.1, -0.1])
    scale = (resid.pow(2).sum() / 4).sqrt()
    assert torch.allclose(a[w == 1], resid / (scale + 1e-4), atol=1e-5)
    # without weights the zeros outside count as rewards: pixel 0's baseline drops to 0.35
    plain = compute_advantages(r, ["p"] * 4, "batch")
    assert plain[2, 0, 0] < 0 and plain[0, 0, 1] < 0
    # all-ones weights change nothing
    ones = compute_advantages(r, ["p"] * 4, "batch", weights=torch.ones_like(r))
    assert torch.allclose(ones, plain, atol=1e-5)


def test_credit_mask_puts_each_images_advantage_on_the_pixels_with_an_opinion(tmp_path):
    from pxpo.errors import ConfigError

    small = [
        "--sample.num_steps=2",
        "--sample.batch_size=4",
        "--train.batch_size=4",
        "--train.credit=mask",
        "--reward.name=colour",
        "--reward.params={target: red, region: left, outside: neutral}",
    ]
    trainer = Trainer(tiny_config(tmp_path, *small))
    c = trainer.collect()
    adv = trainer.advantages(c)  # [N, h, w]: the scalar advantage on the left half, nothing on the right
    want = compute_advantages(c.scalars, c.traj.prompts, "batch", norm=trainer.tracker.norm)
    assert torch.allclose(adv[:, :, :8], want.view(-1, 1, 1).expand(-1, 16, 8), atol=1e-6)
    assert not adv[:, :, 8:].any()
    stats = trainer.policy.update(c.traj, adv, trainer.gen, holds=c.holds, weights=c.weights)
    assert stats["ratio_gap"] < 1e-5
    with pytest.raises(ConfigError, match="train.credit=detached"):
        Trainer(tiny_config(tmp_path, "--train.algorithm=ddpo", "--train.credit=detached", "--run_name=bad"))
