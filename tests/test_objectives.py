"""DDPO and PXPO objectives: equivalence, on-policy ratios, and the locality of PXPO's credit."""

import pytest
import torch

from pxpo.core.objectives import ddpo_clipped, ddpo_sf, default_clip_range, objective, pxpo_clipped, pxpo_sf
from pxpo.core.trajectory import sample_trajectories, step_log_prob
from pxpo.backends import backbone_for

PROMPTS = ["a red circle on a blue background", "a green cross on a white background"]


@pytest.fixture(scope="module")
def traj(random_pipe):
    return sample_trajectories(
        backbone_for(random_pipe), PROMPTS, num_steps=4, guidance=5.0, generator=torch.Generator().manual_seed(0)
    )


def unet_grad(pipe, loss):
    pipe.unet.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in pipe.unet.parameters() if p.grad is not None])


def test_ratio_is_exactly_one_before_any_update(random_pipe, traj):
    for j in range(4):
        with torch.no_grad():
            lp = step_log_prob(backbone_for(random_pipe), traj, j, guidance=5.0)
        assert torch.equal(lp, traj.log_probs[:, j])  # exp(0) == 1 exactly
    with torch.no_grad():  # shuffled timesteps, one per sample, as the trainer does
        j = torch.tensor([3, 1])
        lp = step_log_prob(backbone_for(random_pipe), traj, j, guidance=5.0)
    assert torch.equal(lp, traj.log_probs[torch.arange(2), j])


@pytest.mark.parametrize("kind", ["sf", "clipped"])
def test_constant_map_pxpo_gradient_equals_ddpo(random_pipe, traj, kind):
    adv = torch.tensor([1.5, -0.7])
    h, w = traj.latents.shape[-2:]
    assert_same_gradient(random_pipe, traj, 1, kind, adv, adv[:, None, None].expand(2, h, w))


def assert_same_gradient(pipe, traj, j, kind, adv, adv_map):
    """DDPO's loss with scalar advantages [B] and PXPO's with maps [B, h, w] give one UNet gradient."""
    grads = {}
    for algo, a in (("ddpo", adv), ("pxpo", adv_map)):
        lp = step_log_prob(backbone_for(pipe), traj, j, guidance=5.0)
        loss, _ = objective(algo, kind)(lp, traj.log_probs[:, j], a)
        grads[algo] = unet_grad(pipe, loss)
    assert grads["ddpo"].abs().max() > 0
    assert torch.allclose(grads["pxpo"], grads["ddpo"], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fn", [pxpo_sf, pxpo_clipped])
def test_left_half_reward_credits_only_left_half_pixels(fn):
    torch.manual_seed(0)
    old = torch.randn(2, 4, 8, 8)
    lp = old.clone().requires_grad_(True)  # on-policy: ratio 1, inside the clip range
    adv_map = torch.zeros(2, 8, 8)
    adv_map[:, :, :4] = 1.0  # reward the left half only
    loss, stats = fn(lp, old, adv_map)
    loss.backward()
    g = lp.grad
    assert torch.all(g[..., 4:] == 0)  # right half: no credit at all
    assert torch.all(g[..., :4] < 0)  # left half: minimising the loss raises its likelihood
    assert stats["ratio"] == 1.0


def test_ddpo_spreads_one_scalar_over_every_pixel():
    old = torch.randn(1, 4, 8, 8)
    lp = old.clone().requires_grad_(True)
    loss, _ = ddpo_sf(lp, old, torch.tensor([1.0]))
    loss.backward()
    assert torch.all(lp.grad < 0)


def test_clipping_stops_the_gradient_beyond_the_trust_region():
    old = torch.zeros(1, 4, 2, 2)
    lp = torch.zeros(1, 4, 2, 2)
    lp[..., 0, 0] = 0.5  # pixel (0,0) already far more likely than under the old policy
    lp.requires_grad_(True)
    adv = torch.ones(1, 2, 2)
    loss, stats = pxpo_clipped(lp, old, adv, clip_range=0.1)
    loss.backward()
    assert torch.all(lp.grad[..., 0, 0] == 0)  # clipped: positive advantage, ratio > 1 + eps
    assert torch.all(lp.grad[..., 1, 1] < 0)
    assert stats["clipfrac"] == pytest.approx(0.25)


def test_ddpo_clipped_logs_kl_and_clipfrac():
    old = torch.zeros(4, 4, 2, 2)
    lp = torch.full((4, 4, 2, 2), 0.2)
    _, stats = ddpo_clipped(lp, old, torch.ones(4), clip_range=0.1)
    assert stats["approx_kl"] == pytest.approx(0.5 * 0.04)
    assert stats["clipfrac"] == 1.0


def test_default_clip_ranges_and_unknown_objective():
    assert default_clip_range("ddpo", (16, 16)) == 1e-4
    assert default_clip_range("pxpo", (16, 16)) == pytest.approx(1.6e-3)
    with pytest.raises(ValueError, match="algorithm is 'ddpo' or 'pxpo'"):
        objective("ppo", "sf")


def test_the_detached_ratio_is_the_images_value_with_each_pixels_gradient():
    from pxpo.core.objectives import pxpo_detached

    g = torch.Generator().manual_seed(3)
    old = torch.randn(2, 4, 3, 3, generator=g)
    adv = torch.randn(2, 3, 3, generator=g)
    # on-policy (ratio 1): the same gradient as per-pixel ratios
    lp1, lp2 = old.clone().requires_grad_(True), old.clone().requires_grad_(True)
    pxpo_detached(lp1, old, adv, clip_range=0.2)[0].backward()
    pxpo_clipped(lp2, old, adv, clip_range=0.2)[0].backward()
    assert torch.allclose(lp1.grad, lp2.grad, atol=1e-7)
    # moved: the value is the image's ratio, the gradient each pixel's log-likelihood times it
    lp = (old + 0.01 * torch.randn(old.shape, generator=g)).requires_grad_(True)
    loss, st = pxpo_detached(lp, old, adv, clip_range=0.2)
    rho = (lp - old).mean(dim=(1, 2, 3)).exp().detach()
    assert loss.item() == pytest.approx(-(adv * rho.view(2, 1, 1)).mean().item(), rel=1e-5)
    loss.backward()
    want = -(adv * rho.view(2, 1, 1))[:, None].expand_as(lp) / (4 * 9 * 2)
    assert torch.allclose(lp.grad, want, atol=1e-7) and st["ratio"] == pytest.approx(rho.mean().item())
    # an image whose ratio left the trust region contributes no gradient (where the clip binds)
    far = (old + 1.0).requires_grad_(True)
    pxpo_detached(far, old, torch.ones_like(adv), clip_range=0.2)[0].backward()
    assert far.grad.abs().max() == 0
    assert objective("pxpo", "clipped", "detached") is pxpo_detached and objective("pxpo", "sf", "detached") is pxpo_sf
    assert default_clip_range("pxpo", (16, 16), credit="detached") == 1e-4


def test_masked_advantages_put_the_images_advantage_where_the_reward_has_an_opinion():
    from pxpo.core.objectives import masked_advantages

    mask = torch.zeros(2, 2, 4)
    mask[:, :, :2] = 1.0
    adv = masked_advantages(torch.tensor([0.5, -2.0]), mask, (2, 4))
    assert torch.equal(adv[0, :, :2], torch.full((2, 2), 0.5)) and torch.equal(adv[1, :, :2], torch.full((2, 2), -2.0))
    assert not adv[:, :, 2:].any()
    assert torch.equal(masked_advantages(torch.tensor([1.0]), None, (2, 2)), torch.ones(1, 2, 2))
