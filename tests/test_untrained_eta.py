"""``sample.untrained_eta``: deterministic DDIM on the steps the update does not train.

The tail steps must be exactly diffusers' DDIM with eta 0, draw no noise (so the trained steps see
the same noise as without) and score 0; where the untrained steps are not known when sampling
(shuffled timesteps), every step keeps sample.eta.
"""

import pytest
import torch

from pxpo.backends.ddim import ddim_ode_mean
from pxpo.core.trajectory import sample_trajectories
from pxpo.backends import backbone_for
from test_sampling import sd_scheduler  # Stable Diffusion's DDIM schedule at 10 steps

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["a red circle on a blue background", "a green cross on a white background"]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ode_mean_is_the_diffusers_step_with_eta_0(prediction_type):
    torch.manual_seed(0)
    s = sd_scheduler(prediction_type)
    x, out = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for t in s.timesteps:
        ref = s.step(out, t, x, eta=0.0).prev_sample
        assert torch.allclose(ddim_ode_mean(s, out, t, x), ref, atol=1e-5, rtol=1e-5)


def test_tail_steps_are_deterministic_and_leave_the_trained_steps_noise_alone(random_pipe):
    pipe, steps = random_pipe, 4
    plain = sample_trajectories(
        backbone_for(pipe), PROMPTS, num_steps=steps, guidance=2.0, eta=1.0, generator=torch.Generator().manual_seed(3)
    )
    tail = sample_trajectories(
        backbone_for(pipe),
        PROMPTS,
        num_steps=steps,
        guidance=2.0,
        eta=[1.0, 1.0, 0.0, 0.0],
        generator=torch.Generator().manual_seed(3),
    )
    # x_T and the two trained (noisy) steps: the same draws, the same latents and log-probabilities
    assert torch.equal(tail.latents[:, :3], plain.latents[:, :3])
    assert torch.equal(tail.log_probs[:, :2], plain.log_probs[:, :2])
    assert torch.all(tail.log_probs[:, 2:] == 0)
    assert not torch.allclose(tail.latents[:, 3], plain.latents[:, 3])  # plain drew noise there
    # each tail step is the scheduler's own eta-0 step of the guided output
    with torch.no_grad():
        for k in (2, 3):
            t = pipe.scheduler.timesteps[k]
            x = tail.latents[:, k]
            out = backbone_for(pipe).guided_output(pipe.unet, x, t, tail.cond, 2.0)
            ref = pipe.scheduler.step(out, t, x, eta=0.0).prev_sample
            assert torch.allclose(tail.latents[:, k + 1], ref, atol=1e-5)


def test_a_zero_eta_is_refused_for_a_whole_trajectory_and_for_kept_steps(random_pipe):
    with pytest.raises(ValueError, match="eta must be > 0"):
        sample_trajectories(backbone_for(random_pipe), PROMPTS, num_steps=2, eta=0.0)
    with pytest.raises(ValueError, match="kept steps"):
        sample_trajectories(backbone_for(random_pipe), PROMPTS, num_steps=2, eta=[0.0, 1.0], keep_graph=1)
    with pytest.raises(ValueError, match="give one value"):
        sample_trajectories(backbone_for(random_pipe), PROMPTS, num_steps=3, eta=[1.0, 0.0])


def test_step_etas():
    from pxpo.training.config import SampleConfig, TrainConfig
    from pxpo.core.reuse import step_etas

    first = TrainConfig(timestep_fraction=0.5, timestep_order="first")
    assert step_etas(first, SampleConfig(num_steps=10)) == [1.0] * 5 + [0.0] * 5  # the default
    assert step_etas(first, SampleConfig(num_steps=10, untrained_eta=-1.0)) == 1.0  # off: eta everywhere
    assert (
        step_etas(TrainConfig(timestep_fraction=0.3), SampleConfig(num_steps=10, untrained_eta=0.0))
        == [1.0] * 3 + [0.0] * 7
    )  # ceil(3.0): the trained steps, as reuse.trained_steps counts them
    last = TrainConfig(timestep_fraction=0.3, timestep_order="last")  # the least noisy trained: before them, no noise
    assert step_etas(last, SampleConfig(num_steps=10)) == [0.0] * 7 + [1.0] * 3
    # untrained steps unknown when sampling (drawn after it), or none: every step at eta
    assert (
        step_etas(
            TrainConfig(timestep_fraction=0.5, timestep_order="random"), SampleConfig(num_steps=10, untrained_eta=0.0)
        )
        == 1.0
    )
    assert step_etas(TrainConfig(timestep_fraction=1.0), SampleConfig(num_steps=10, eta=0.5, untrained_eta=0.0)) == 0.5
