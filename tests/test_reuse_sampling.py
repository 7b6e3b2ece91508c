"""train.reuse_sampling: the first, on-policy update backpropagates through the sampler's own UNet
calls. It must apply the same update as recomputing them (the update ``Policy.update`` always ran),
make no UNet call of its own for that minibatch, and fall back to recomputing where it cannot serve.

Tolerance: the two paths compute the same functions of the same weights and inputs, but the
recompute path runs all of a minibatch's transitions in one batched UNet call while the sampler ran
one call per timestep, so the weight gradients are float32 sums over the batch taken in another
order (and the clipped objective sees a ratio of exactly 1 instead of 1 within ~1e-7, inside the
clip range either way). That is a relative difference of order 1e-6; test_update_chunks allows the
same rtol 1e-3 / atol 1e-4 * max for its chunkings. The weights' changes are compared under AdamW
with eps 1: Adam's first step is lr * g / (|g| + eps), which with the default eps 1e-8 is lr * sign(g)
for every entry, so entries whose gradient is float noise in both paths (|g| ~ 1e-9) would step
opposite ways by lr; with eps 1 the step is about lr * g and compares as the gradients do (lr 1
keeps it far above the weights' own float32 resolution, ~4e-9 at |w| ~ 0.05).
"""

import copy
import dataclasses
import math

import pytest
import torch

from pxpo.config import ConfigError
from pxpo.core.trajectory import sample_trajectories
from pxpo.backends import backbone_for

# every timestep in shuffled order (pxpo train's default before it trained the noisiest half)
ALL_STEPS = {"timestep_fraction": 1.0, "timestep_order": "random"}

PROMPTS = ["a red circle on a blue background", "a green cross on a white background"]
STEPS, GUIDANCE = 3, 5.0


pytestmark = pytest.mark.usefixtures("one_thread")


def make_policy(pipe, mode: str = "full", model_kw: dict | None = None, **train_kw):
    """A Policy on its own copy of ``pipe`` (full fine-tuning or LoRA), recording each optimizer step's gradients."""
    from accelerate import Accelerator

    from pxpo.training.config import ModelConfig, SampleConfig, TrainConfig
    from pxpo.core.policy import Policy

    pipe = copy.deepcopy(pipe)
    train = TrainConfig(
        **{"lr": 1.0, "adam_eps": 1.0, "batch_size": len(PROMPTS), "kl_region": "left", **ALL_STEPS, **train_kw}
    )
    sample = SampleConfig(num_steps=STEPS, guidance=GUIDANCE, batch_size=len(PROMPTS))
    size = pipe.unet.config.sample_size
    torch.manual_seed(0)  # LoRA's initial adapters are drawn from torch's global generator
    policy = Policy(
        Accelerator(), backbone_for(pipe), mode, train, sample, ModelConfig(**(model_kw or {})), (size, size)
    )
    with torch.no_grad():  # away from the starting weights (as after a first epoch), so the KL anchor pulls
        for p in policy.params:
            p.add_(0.02 * torch.randn_like(p))
    policy.grads, step = [], policy.opt.optimizer.step

    def recording_step(*args, **kwargs):
        policy.grads.append(torch.cat([p.grad.flatten() for p in policy.params]))
        return step(*args, **kwargs)

    policy.opt.optimizer.step = recording_step
    return policy


def sample(policy, keep: int):
    return sample_trajectories(
        policy.backbone,
        PROMPTS,
        num_steps=STEPS,
        guidance=GUIDANCE,
        generator=torch.Generator().manual_seed(0),
        model=policy.model if keep else None,
        keep_graph=keep,
    )


def unet_calls(policy) -> list[int]:
    """A counter of the trained UNet's forward calls (the frozen reference copy is not counted)."""
    calls = [0]
    policy.accel.unwrap_model(policy.model).register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def advantages(algorithm: str, n: int, hw: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, hw, hw, generator=g) if algorithm == "pxpo" else torch.randn(n, generator=g)


def updated(random_pipe, keep: bool, mode: str = "full", model_kw: dict | None = None, **train_kw):
    """(gradients per optimizer step, stats, the weights' change, trained-UNet calls in the update)."""
    policy = make_policy(random_pipe, mode, model_kw, **train_kw)
    before = torch.cat([p.detach().flatten() for p in policy.params])
    k = policy.keep_graph() if keep else 0
    traj = sample(policy, k)
    assert (traj.means is not None) == bool(k)
    calls = unet_calls(policy)
    adv = advantages(policy.t.algorithm, len(traj), traj.latents.shape[-1])
    stats = policy.update(traj, adv, torch.Generator().manual_seed(2))
    assert traj.means is None  # the kept graph is spent (or dropped) by the update
    return policy.grads, stats, torch.cat([p.detach().flatten() for p in policy.params]) - before, calls[0]


def assert_close(a, b):
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * b.abs().max()), (a - b).abs().max()


def test_kept_steps_change_no_sampled_number(random_pipe):
    policy = make_policy(random_pipe)
    kept, plain = sample(policy, STEPS), sample(policy, 0)
    assert kept.means.shape == (len(PROMPTS), STEPS, *kept.latents.shape[2:]) and kept.means.requires_grad
    for name in ("latents", "log_probs", "images"):
        assert torch.equal(getattr(kept, name), getattr(plain, name)), name
    assert not kept.log_probs.requires_grad and not kept.latents.requires_grad


@pytest.mark.parametrize("algorithm", ["pxpo", "ddpo"])
@pytest.mark.parametrize("kl_coef", [0.0, 1.0])
def test_reuse_applies_the_recomputed_update(random_pipe, algorithm, kl_coef):
    kw = {"algorithm": algorithm, "kl_coef": kl_coef}
    grads, stats, weights, calls = updated(random_pipe, True, **kw)
    grads0, stats0, weights0, calls0 = updated(random_pipe, False, **kw)
    assert calls == 0 and calls0 == 1  # reuse: no UNet call of the trained copy in the update
    assert len(grads) == len(grads0) == 1 and grads0[0].abs().max() > 0
    assert_close(grads[0], grads0[0])
    assert_close(weights, weights0)
    assert stats["ratio"] == 1.0  # exactly on-policy: the sampler's own log-probabilities
    assert kl_coef == 0 or stats0["kl"] > 0
    # loss, approx_kl, clipfrac, ratio, grad_norm (and kl), to assert_close's tolerance: the sampler runs each
    # timestep as a batch of B, the recomputation all trained timesteps in one call, and float32 kernels
    # round differently with the batch's shape (1.8e-4 on the loss seen on one CPU)
    for key in stats0:  # the on-policy check's gap is rounding alone on both paths (0 and 7e-7 nats seen)
        tol = 1e-5 if key == "ratio_gap" else 1e-9
        assert stats[key] == pytest.approx(stats0[key], rel=1e-3, abs=tol), key


@pytest.mark.parametrize("mode,model_kw", [("lora", {}), ("full", {"gradient_checkpointing": True})])
def test_reuse_with_lora_or_gradient_checkpointing(random_pipe, mode, model_kw):
    """LoRA (the KL's reference is the same UNet with its adapters off) and gradient checkpointing
    (the kept graph recomputes the sampler's activations in the backward)."""
    kw = {"kl_coef": 1.0}
    grads, _, weights, calls = updated(random_pipe, True, mode, model_kw, **kw)
    grads0, _, weights0, calls0 = updated(random_pipe, False, mode, model_kw, **kw)
    assert calls == calls0 - 1 and grads0[0].abs().max() > 0  # LoRA's KL reference is a call of the same UNet
    assert_close(grads[0], grads0[0])
    assert_close(weights, weights0)


def test_first_timesteps_keep_only_those(random_pipe):
    kw = {"timestep_fraction": 0.5, "timestep_order": "first", "kl_coef": 1.0}
    policy = make_policy(random_pipe, **kw)
    assert policy.keep_graph() == 2  # ceil(3 * 0.5)
    grads, _, weights, calls = updated(random_pipe, True, **kw)
    grads0, _, weights0, _ = updated(random_pipe, False, **kw)
    assert calls == 0
    assert_close(grads[0], grads0[0])
    assert_close(weights, weights0)


def test_last_timesteps_train_the_least_noisy(random_pipe):
    """timestep_order=last: the update recomputes (the sampler keeps only leading steps' graphs), trains
    the last steps, and with kl_steps=all anchors the ones before them."""
    kw = {"timestep_fraction": 0.5, "timestep_order": "last", "kl_coef": 1.0, "kl_steps": "all"}
    assert make_policy(random_pipe, **kw).keep_graph() == 0
    from pxpo.core.trajectory import Trajectories

    steps, transitions = [], Trajectories.transitions
    with pytest.MonkeyPatch.context() as mp:  # which steps each call takes: the trained ones, then the anchored
        mp.setattr(
            Trajectories,
            "transitions",
            lambda self, rows, j: steps.append(set(j.tolist())) or transitions(self, rows, j),
        )
        grads, stats, _, calls = updated(random_pipe, True, **kw)
    assert steps == [{1, 2}, {0}]  # ceil(3 * 0.5) = 2 least noisy steps trained; the first anchored
    assert calls == 2 and grads[0].abs().max() > 0 and stats["kl_untrained"] > 0


def test_later_minibatches_and_inner_epochs_recompute(random_pipe):
    """Two inner epochs: the first reuses, the second (off-policy after the step) recomputes."""
    kw = {"inner_epochs": 2}
    grads, _, weights, calls = updated(random_pipe, True, **kw)
    grads0, _, weights0, calls0 = updated(random_pipe, False, **kw)
    assert (calls, calls0) == (1, 2) and len(grads) == 2
    for g, g0 in zip(grads, grads0):
        assert_close(g, g0)
    assert_close(weights, weights0)


@pytest.mark.parametrize(
    "train_kw", [{"batch_size": 1}, {"timesteps_per_forward": 1}, {"timestep_fraction": 0.5}, {"cfg": False}]
)
def test_auto_recomputes_where_reuse_cannot_serve(random_pipe, train_kw):
    from pxpo.training.config import SampleConfig, TrainConfig
    from pxpo.core.reuse import keep_steps

    sample_cfg = SampleConfig(num_steps=STEPS, guidance=GUIDANCE, batch_size=len(PROMPTS))
    train_kw = {"batch_size": len(PROMPTS), **ALL_STEPS, **train_kw}
    assert keep_steps(TrainConfig(**train_kw), sample_cfg) == 0
    with pytest.raises(ConfigError, match="train.reuse_sampling=always"):
        keep_steps(TrainConfig(reuse_sampling="always", **train_kw), sample_cfg)
    assert keep_steps(TrainConfig(batch_size=len(PROMPTS), reuse_sampling="never", **ALL_STEPS), sample_cfg) == 0
    assert keep_steps(TrainConfig(batch_size=len(PROMPTS), **ALL_STEPS), sample_cfg) == STEPS
    # pxpo train's default, the noisiest half of the steps: the sampling pass keeps just those
    assert keep_steps(TrainConfig(batch_size=len(PROMPTS)), sample_cfg) == math.ceil(STEPS * 0.5)


def test_kept_means_a_minibatch_cannot_use_are_dropped(random_pipe):
    """Means kept for a config they do not fit (here two minibatches) are not used: recomputed."""
    policy = make_policy(random_pipe, batch_size=1)
    traj = sample(policy, STEPS)
    calls = unet_calls(policy)
    policy.update(traj, advantages("pxpo", len(traj), traj.latents.shape[-1]), torch.Generator().manual_seed(2))
    assert calls[0] == 2 and traj.means is None and len(policy.grads) == 2


def test_validate_refuses_an_unknown_choice():
    from pxpo.training.config import RunConfig
    from pxpo.training.validate import validate_config

    cfg = RunConfig()
    cfg.train.reuse_sampling = "yes"
    with pytest.raises(ConfigError, match="auto, always, never"):
        validate_config(cfg)
    cfg = RunConfig()
    cfg.train.reuse_sampling, cfg.train.batch_size = "always", 8
    with pytest.raises(ConfigError, match="train.batch_size=8"):
        validate_config(cfg)


def test_trajectory_fields_carry_the_means(random_pipe):
    from pxpo.core.trajectory import Trajectories

    policy = make_policy(random_pipe)
    traj = sample(policy, STEPS)
    rows, j = torch.tensor([1, 0, 1]), torch.tensor([2, 0, 1])
    step = traj.transitions(rows, j)
    assert torch.equal(step.means[:, 0], traj.means[rows, j])
    assert torch.equal(traj.index(torch.tensor([1])).means, traj.means[1:])
    both = Trajectories.cat([traj, traj])
    assert both.means.shape[0] == 2 * len(traj)
    assert Trajectories.cat([traj, dataclasses.replace(traj, means=None)]).means is None
