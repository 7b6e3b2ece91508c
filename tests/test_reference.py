"""Reference images ("change only here"): the frozen starting model redraws every sample from the
same noise, and colour(outside=keep) rewards pixels outside the region for staying as they were."""
import numpy as np
import pytest
import torch

from pxpo.backends.registry import load_pipeline
from pxpo.rewards import build_reward, needs_reference
from pxpo.core.reuse import step_etas
from pxpo.training.trainer import Trainer
from pxpo.core.trajectory import sample_trajectories
from pxpo.backends import backbone_for

from test_train_e2e import tiny_config

KEEP = ["--reward.name=colour", "--reward.params={target: red, region: left, outside: keep}"]


def _perturb(params, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def _base_images(trainer, prompts, state):
    """What the untouched starting model draws from generator ``state`` (with the run's per-step
    etas: the untrained steps are deterministic by default)."""
    base = load_pipeline(trainer.cfg.model.name)
    s = trainer.cfg.sample
    return sample_trajectories(backbone_for(base), prompts, None, s.num_steps, s.guidance, step_etas(trainer.cfg.train, s),
                               generator=torch.Generator().set_state(state)).images


def test_keep_turns_reference_sampling_on_and_composes():
    assert needs_reference(build_reward("colour", {"outside": "keep"}))
    assert not needs_reference(build_reward("colour", {"outside": "neutral"}))
    assert needs_reference(build_reward({"colour": 1.0, "segment-grow": 0.5},
                                        {"colour": {"outside": "keep"}}))


@pytest.mark.slow
@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_references_are_the_starting_model_on_the_same_noise(tmp_path, finetune):
    trainer = Trainer(tiny_config(tmp_path, *KEEP, "--sample.num_steps=4", "--sample.batch_size=4",
                                  "--train.batch_size=4", f"--model.finetune={finetune}"))
    assert trainer.use_reference
    prompts, meta = trainer.prompts(4, np.random.default_rng(0))
    gen = torch.Generator().manual_seed(7)
    state = gen.get_state()
    # before any update the policy is the starting model: reference == image, keep reward == 1
    traj = trainer.sample(prompts, meta, gen)
    refs = torch.stack([m["reference"] for m in traj.metadata])
    assert torch.equal(refs, traj.images)
    rmap = trainer.reward(traj.images, traj.prompts, traj.metadata).map
    assert torch.equal(rmap[:, :, 32:], torch.ones_like(rmap[:, :, 32:]))  # right half: kept exactly
    # after the weights move, images change but the references are still the starting model's
    _perturb(trainer.params)
    traj = trainer.sample(prompts, meta, torch.Generator().set_state(state))
    refs = torch.stack([m["reference"] for m in traj.metadata])
    assert (traj.images - refs).abs().max() > 1e-2
    assert torch.allclose(refs, _base_images(trainer, prompts, state), atol=1e-5)
    rmap = trainer.reward(traj.images, traj.prompts, traj.metadata).map
    assert rmap[:, :, 32:].mean() < 1.0


@pytest.mark.slow
def test_reference_never_with_keep_fails_naming_the_fix(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, *KEEP, "--reward.reference=never", "--sample.num_steps=2",
                                  "--sample.batch_size=2", "--train.batch_size=2"))
    assert not trainer.use_reference
    with pytest.raises(Exception, match="reference image"):
        trainer.collect()
    with pytest.raises(ValueError, match="reward.reference"):
        Trainer(tiny_config(tmp_path, "--reward.reference=sometimes"))


def test_kl_to_reference_is_the_gaussian_kl_per_pixel():
    from torch.distributions import Normal, kl_divergence

    from pxpo.core.objectives import kl_to_reference

    g = torch.Generator().manual_seed(0)
    mean, ref = torch.randn(2, 4, 3, 5, generator=g), torch.randn(2, 4, 3, 5, generator=g)
    std = torch.tensor([0.3, 0.7]).view(2, 1, 1, 1)
    want = kl_divergence(Normal(mean, std.expand_as(mean)), Normal(ref, std.expand_as(ref))).mean(dim=1)
    assert torch.allclose(kl_to_reference(mean, ref, std), want, atol=1e-6)


@pytest.mark.slow
def test_kl_coef_pulls_a_drifted_policy_back(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, "--train.kl_coef=1.0", "--train.lr=1e-3", "--sample.num_steps=4",
                                  "--sample.batch_size=4", "--train.batch_size=4"))
    c = trainer.collect()
    zero = torch.zeros_like(c.maps)

    def update():
        return trainer.policy.update(c.traj, zero, trainer.gen, holds=c.holds)

    assert update()["kl"] < 1e-6  # on-policy start: the policy is the reference
    _perturb(trainer.params)
    kls = [update()["kl"] for _ in range(4)]  # no reward signal: only the KL acts
    assert kls[0] > 1e-3 and kls[-1] < 0.5 * kls[0], kls
    with pytest.raises(ValueError, match="kl_coef"):
        Trainer(tiny_config(tmp_path, "--train.kl_coef=-1"))


def test_kl_region_holds_only_its_pixels(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, "--train.kl_coef=1.0", "--train.kl_region=right", "--sample.num_steps=2",
                                  "--sample.batch_size=2", "--train.batch_size=2"))
    assert torch.equal(trainer.policy.kl_weight[:, 8:], torch.ones(16, 8)) and not trainer.policy.kl_weight[:, :8].any()
    box = Trainer(tiny_config(tmp_path, "--train.kl_coef=1.0", "--train.kl_region=[0.0, 0.0, 0.25, 1.0]",
                              "--sample.num_steps=2", "--sample.batch_size=2", "--train.batch_size=2",
                              "--run_name=box"))  # a run folder has one owner
    assert box.policy.kl_weight.sum() == 16 * 4
    with pytest.raises(Exception, match="unknown region 'middle'"):
        Trainer(tiny_config(tmp_path, "--train.kl_region=middle"))


@pytest.mark.slow
def test_kl_region_hold_anchors_what_the_reward_keeps(tmp_path, capsys):
    small = ["--sample.num_steps=2", "--sample.batch_size=2", "--train.batch_size=2"]
    trainer = Trainer(tiny_config(tmp_path, *KEEP, *small, "--train.kl_coef=1.0", "--train.kl_region=hold"))
    c = trainer.collect()
    # colour(left, outside=keep) keeps the right half: the KL holds exactly those latent pixels
    assert torch.equal(c.holds[:, :, 8:], torch.ones(2, 16, 8)) and not c.holds[:, :, :8].any()
    stats = trainer.policy.update(c.traj, trainer.advantages(c), trainer.gen, holds=c.holds)
    assert np.isfinite(stats["kl"]) and stats["kl"] >= 0
    neutral = Trainer(tiny_config(tmp_path, *small, "--run_name=neutral", "--train.kl_coef=1.0",
                                  "--train.kl_region=hold"))
    c = neutral.collect()  # a reward that keeps nothing: every pixel is anchored
    adv = neutral.advantages(c)
    assert c.holds is None and "keeps nothing, so the KL anchors every pixel" in capsys.readouterr().err
    assert torch.equal(neutral.policy.kl_weight, torch.ones(16, 16))
    stats = neutral.policy.update(c.traj, adv, neutral.gen, holds=c.holds)
    assert "kl" in stats and np.isfinite(stats["kl"])
