"""The DDIM step with log-probability against diffusers' scheduler and an independent Gaussian."""

import math

import pytest
import torch
from diffusers import DDIMScheduler

from pxpo.backends.ddim import ddim_step_with_logprob


def sd_scheduler(prediction_type="epsilon", steps=10, **kw):
    cfg = dict(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    cfg.update(kw)
    s = DDIMScheduler(**cfg)
    s.set_timesteps(steps)
    return s


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_log_prob_is_gaussian_density_of_the_diffusers_step(prediction_type):
    torch.manual_seed(0)
    s = sd_scheduler(prediction_type)
    x, out = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for t in s.timesteps:
        # diffusers' own step without noise gives the mean; its variance formula gives the std
        mean = s.step(out, t, x, eta=1.0, variance_noise=torch.zeros_like(x)).prev_sample
        prev_t = t - s.config.num_train_timesteps // s.num_inference_steps
        std = s._get_variance(t, prev_t) ** 0.5
        given = mean + std * torch.randn_like(x)
        prev, lp = ddim_step_with_logprob(s, out, t, x, eta=1.0, prev_sample=given)
        ref = torch.distributions.Normal(mean.double(), std.double()).log_prob(given.double())
        assert lp.shape == x.shape  # per element, not reduced
        assert torch.allclose(lp.double(), ref, atol=1e-4, rtol=1e-5)
        assert torch.allclose(lp.mean().double(), ref.mean(), atol=1e-5)
        assert torch.equal(prev, given)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])  # SD 1.5, SD 2.1
def test_sampled_step_matches_diffusers_with_the_same_generator(prediction_type):
    s = sd_scheduler(prediction_type)
    x, out = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = s.timesteps[3]
    ref = s.step(out, t, x, eta=1.0, generator=torch.Generator().manual_seed(5)).prev_sample
    prev, _ = ddim_step_with_logprob(s, out, t, x, eta=1.0, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(prev, ref, atol=1e-6)


def test_per_sample_timesteps_equal_one_call_per_timestep():
    s = sd_scheduler()
    x, out = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    prev = torch.randn(3, 4, 8, 8)
    ts = s.timesteps[[0, 4, 9]]
    _, batched = ddim_step_with_logprob(s, out, ts, x, prev_sample=prev)
    for i, t in enumerate(ts):
        _, single = ddim_step_with_logprob(s, out[i : i + 1], t, x[i : i + 1], prev_sample=prev[i : i + 1])
        assert torch.allclose(batched[i], single[0], atol=1e-6)


def test_gradient_flows_through_the_mean_only():
    s = sd_scheduler()
    out = torch.randn(1, 4, 4, 4, requires_grad=True)
    x = torch.randn(1, 4, 4, 4)
    prev = torch.randn(1, 4, 4, 4, requires_grad=True)
    _, lp = ddim_step_with_logprob(s, out, s.timesteps[2], x, prev_sample=prev)
    lp.sum().backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert prev.grad is None  # the action is detached


@pytest.mark.parametrize("eta", [0.0, -1.0])
def test_eta_must_be_positive(eta):
    s = sd_scheduler()
    with pytest.raises(ValueError, match="eta must be > 0"):
        ddim_step_with_logprob(s, torch.zeros(1, 4, 4, 4), s.timesteps[0], torch.zeros(1, 4, 4, 4), eta=eta)


def test_zero_variance_step_is_refused_with_a_hint():
    s = sd_scheduler(set_alpha_to_one=True, steps_offset=0)
    last = s.timesteps[-1]
    assert int(last) == 0
    with pytest.raises(ValueError, match="set_alpha_to_one=False"):
        ddim_step_with_logprob(s, torch.zeros(1, 4, 4, 4), last, torch.zeros(1, 4, 4, 4))


def test_log_prob_constant_matches_closed_form():
    s = sd_scheduler()
    t = s.timesteps[5]
    x, out = torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    prev, lp = ddim_step_with_logprob(s, out, t, x, prev_sample=torch.zeros(1, 1, 1, 1))
    std = s._get_variance(t, t - 100) ** 0.5
    assert math.isclose(lp.item(), -math.log(std.item()) - 0.5 * math.log(2 * math.pi), rel_tol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_step_gain_is_the_mean_slope_over_the_std(prediction_type):
    """sampling.step_gain = |d mean / d model output| / std, checked against the step's own mean."""
    from pxpo.backends.ddim import _ddim_mean_std, ddim_std, step_gain

    sched = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    sched.set_timesteps(10)
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    out = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    for t in sched.timesteps.tolist():
        m0, std = _ddim_mean_std(sched, out, t, x, 1.0)
        m1, _ = _ddim_mean_std(sched, out + 1.0, t, x, 1.0)  # the mean is affine in the output
        slope = (m1 - m0).abs().mean() / std.flatten()[0]
        assert float(step_gain(sched, torch.tensor([t]))) == pytest.approx(float(slope), rel=1e-4)
        assert float(ddim_std(sched, t, x)) == pytest.approx(float(std.flatten()[0]))
    if prediction_type == "epsilon":  # the second-to-last step of 10 stands out (docs/recipe.md, finding 21)
        gains = step_gain(sched, sched.timesteps)
        assert gains[8] > 5 * gains[:8].max() and gains[8] > 5 * gains[9]
        sched.set_timesteps(50)  # DDPO's step count: the second-to-last step still stands out
        gains = step_gain(sched, sched.timesteps)
        assert gains[-2] > 3 * gains[:-2].max() and gains[-2] > 7 * gains.median()
