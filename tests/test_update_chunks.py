"""Policy.update batches trained timesteps into one UNet call (train.timesteps_per_forward): the
batched recomputation keeps the on-policy log-probabilities exact, and every chunking gives the
same update as one timestep per call."""

import copy

import pytest
import torch

from pxpo.core.gaussian import gaussian_log_prob
from pxpo.core.trajectory import sample_trajectories, step_gaussian
from pxpo.backends import backbone_for

PROMPTS = ["a red circle on a blue background", "a green cross on a white background"]
STEPS = 3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def traj(random_pipe, one_thread):
    return sample_trajectories(
        backbone_for(random_pipe), PROMPTS, num_steps=STEPS, guidance=5.0, generator=torch.Generator().manual_seed(0)
    )


def test_transitions_of_mixed_timesteps_in_one_call_reproduce_the_sampled_log_probs(random_pipe, traj):
    rows = torch.arange(len(traj)).repeat(STEPS)  # every sample at every timestep: 6 transitions
    j = torch.stack(
        [torch.randperm(STEPS, generator=torch.Generator().manual_seed(i)) for i in range(len(traj))]
    ).T.reshape(-1)
    step = traj.transitions(rows, j)
    assert step.latents.shape == (6, 2, *traj.latents.shape[2:]) and step.images.shape[0] == 0
    assert step.prompts == [PROMPTS[r] for r in rows.tolist()]
    with torch.no_grad():
        mean, std, x_prev = step_gaussian(backbone_for(random_pipe), step, 0, guidance=5.0)
    lp = gaussian_log_prob(x_prev, mean, std).float()
    assert torch.equal(x_prev, traj.latents[rows, j + 1])
    # the ratio before any update is 1 up to float32 rounding: one call over mixed timesteps rounds its
    # kernels apart from the sampler's per-timestep calls on some CPUs (1e-4 of a log-prob of ~3)
    assert torch.allclose(lp, traj.log_probs[rows, j], rtol=0, atol=1e-3)


def update_gradients(pipe, traj, per_forward: int, algorithm: str, kl_coef: float, **train_kw):
    """The gradients each optimizer step of one ``Policy.update`` applies (lr 0: the weights stay, so
    the two minibatches' gradients compare across chunkings), and the logged stats."""
    from accelerate import Accelerator

    from pxpo.training.config import ModelConfig, SampleConfig, TrainConfig
    from pxpo.core.policy import Policy

    pipe = copy.deepcopy(pipe)
    step_weight = train_kw.pop("step_weight", "none")  # experimental.step_weight: the Policy's, not train's
    kw = {"batch_size": 1, "timestep_fraction": 1.0, "timestep_order": "random", **train_kw}
    train = TrainConfig(
        algorithm=algorithm, lr=0.0, kl_coef=kl_coef, kl_region="left", timesteps_per_forward=per_forward, **kw
    )
    sample = SampleConfig(num_steps=STEPS, guidance=5.0, batch_size=len(traj))
    h, w = traj.latents.shape[-2:]
    policy = Policy(
        Accelerator(), backbone_for(pipe), "full", train, sample, ModelConfig(), (h, w), step_weight=step_weight
    )
    grads, step = [], policy.opt.optimizer.step

    def recording_step(*args, **kwargs):
        grads.append(torch.cat([p.grad.flatten() for p in policy.params]))
        return step(*args, **kwargs)

    policy.opt.optimizer.step = recording_step
    g = torch.Generator().manual_seed(1)
    adv = torch.randn(len(traj), h, w, generator=g) if algorithm == "pxpo" else torch.randn(len(traj), generator=g)
    stats = policy.update(traj, adv, torch.Generator().manual_seed(2))
    return grads, stats


@pytest.mark.parametrize("algorithm,chunkings,kl_coef", [("pxpo", (0, 2), 1.0), ("ddpo", (0,), 0.0)])
def test_every_chunking_applies_the_same_gradients(random_pipe, traj, algorithm, chunkings, kl_coef):
    one, stats_one = update_gradients(
        random_pipe, traj, 1, algorithm, kl_coef
    )  # one timestep per call, as DDPO and trl
    assert len(one) == 2 and all(g.abs().max() > 0 for g in one)  # one optimizer step per minibatch
    for per_forward in chunkings:  # 0: all 3 timesteps in one call; 2: a chunk of 2, then 1
        grads, stats = update_gradients(random_pipe, traj, per_forward, algorithm, kl_coef)
        assert len(grads) == 2
        for g, g1 in zip(grads, one):
            # float32 sums in another order: differences of ~2e-5 of the largest gradient were seen
            assert torch.allclose(g, g1, rtol=1e-3, atol=1e-4 * g1.abs().max()), (g - g1).abs().max()
        for key in stats_one:  # loss, approx_kl, clipfrac, ratio, grad_norm, ratio_gap (and kl)
            tol = 1e-6 if key == "ratio_gap" else 1e-9  # float32 re-scoring in another batch: 2.5e-7 seen
            assert stats[key] == pytest.approx(stats_one[key], rel=1e-4, abs=tol), key


@pytest.mark.parametrize("step", [0, 2])
def test_balanced_step_weight_scales_each_step_gradient_by_its_weight(random_pipe, traj, step):
    """experimental.step_weight=balanced multiplies each transition's term by its step's weight (1 / gain, mean 1
    over the trajectory): trained on one step alone, the gradient is that weight times the plain one."""
    from pxpo.backends.ddim import balanced_step_weights

    # the noisiest `step + 1` steps, score function (linear in the advantage), one optimizer step
    kw = dict(
        batch_size=len(traj),
        timestep_fraction=(step + 1) / STEPS,
        timestep_order="first",
        objective="sf",
        max_grad_norm=1e9,
    )  # no clipping: it would rescale both gradients alike
    plain, _ = update_gradients(random_pipe, traj, 0, "pxpo", 0.0, **kw)
    weighted, _ = update_gradients(random_pipe, traj, 0, "pxpo", 0.0, step_weight="balanced", **kw)
    w = balanced_step_weights(random_pipe.scheduler, traj.timesteps)  # [B, STEPS]
    assert torch.allclose(w.mean(dim=1), torch.ones(len(traj)))
    if step == 0:  # one step: the weight is a scalar factor (float32 rounding: 2.4e-6 of the largest seen)
        assert torch.allclose(weighted[0], w[0, 0] * plain[0], rtol=1e-4, atol=1e-5 * plain[0].abs().max())
    else:  # several steps: weighted differs from plain unless the weights were all 1
        assert not torch.allclose(w[0, : step + 1], torch.ones(step + 1))
        assert not torch.allclose(weighted[0], plain[0], rtol=1e-3)


def test_the_first_update_checks_that_rescoring_gives_the_sampled_log_probs(random_pipe, traj, caplog):
    from pxpo.errors import UserError

    _, stats = update_gradients(random_pipe, traj, 0, "pxpo", 1.0)
    assert stats["ratio_gap"] < 1e-5  # sampled and re-scored alike: ratio 1
    shifted = copy.copy(traj)
    shifted.log_probs = traj.log_probs - 0.05  # as if sampled by another network (precision, dropout, ...)
    with pytest.raises(UserError, match="sampling and re-scoring disagree.*ratio_check=warn"):
        update_gradients(random_pipe, shifted, 0, "pxpo", 1.0)
    with caplog.at_level("WARNING", logger="pxpo.core.policy"):
        _, stats = update_gradients(random_pipe, shifted, 0, "pxpo", 1.0, ratio_check="warn")
    assert stats["ratio_gap"] == pytest.approx(0.05, abs=1e-4) and "disagree" in caplog.text
    _, stats = update_gradients(random_pipe, shifted, 0, "ddpo", 0.0, ratio_check="off")
    assert "ratio_gap" not in stats
