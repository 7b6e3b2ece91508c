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
from pxpo.core.objectives import adapt_kl_coef, relative_kl_target

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
    return sample_trajectories(
        backbone_for(base),
        prompts,
        None,
        s.num_steps,
        s.guidance,
        step_etas(trainer.cfg.train, s),
        generator=torch.Generator().set_state(state),
    ).images


def test_keep_turns_reference_sampling_on_and_composes():
    assert needs_reference(build_reward("colour", {"outside": "keep"}))
    assert not needs_reference(build_reward("colour", {"outside": "neutral"}))
    assert needs_reference(build_reward({"colour": 1.0, "segment-grow": 0.5}, {"colour": {"outside": "keep"}}))


@pytest.mark.slow
@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_references_are_the_starting_model_on_the_same_noise(tmp_path, finetune):
    trainer = Trainer(
        tiny_config(
            tmp_path,
            *KEEP,
            "--sample.num_steps=4",
            "--sample.batch_size=4",
            "--train.batch_size=4",
            f"--model.finetune={finetune}",
        )
    )
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
    trainer = Trainer(
        tiny_config(
            tmp_path,
            *KEEP,
            "--reward.reference=never",
            "--sample.num_steps=2",
            "--sample.batch_size=2",
            "--train.batch_size=2",
        )
    )
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
    # every update re-uses one epoch's samples after the weights moved: off-policy on purpose
    trainer = Trainer(
        tiny_config(
            tmp_path,
            "--train.kl_coef=1.0",
            "--train.lr=1e-3",
            "--sample.num_steps=4",
            "--sample.batch_size=4",
            "--train.batch_size=4",
            "--train.ratio_check=off",
        )
    )
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
    trainer = Trainer(
        tiny_config(
            tmp_path,
            "--train.kl_coef=1.0",
            "--train.kl_region=right",
            "--sample.num_steps=2",
            "--sample.batch_size=2",
            "--train.batch_size=2",
        )
    )
    assert torch.equal(trainer.policy.kl_weight[:, 8:], torch.ones(16, 8)) and not trainer.policy.kl_weight[:, :8].any()
    box = Trainer(
        tiny_config(
            tmp_path,
            "--train.kl_coef=1.0",
            "--train.kl_region=[0.0, 0.0, 0.25, 1.0]",
            "--sample.num_steps=2",
            "--sample.batch_size=2",
            "--train.batch_size=2",
            "--run_name=box",
        )
    )  # a run folder has one owner
    assert box.policy.kl_weight.sum() == 16 * 4
    with pytest.raises(Exception, match="unknown region 'middle'"):
        Trainer(tiny_config(tmp_path, "--train.kl_region=middle"))


@pytest.mark.slow
def test_kl_region_hold_anchors_what_the_reward_keeps(tmp_path, caplog):
    small = ["--sample.num_steps=2", "--sample.batch_size=2", "--train.batch_size=2"]
    trainer = Trainer(tiny_config(tmp_path, *KEEP, *small, "--train.kl_coef=1.0", "--train.kl_region=hold"))
    c = trainer.collect()
    # colour(left, outside=keep) keeps the right half: the KL holds exactly those latent pixels
    assert torch.equal(c.holds[:, :, 8:], torch.ones(2, 16, 8)) and not c.holds[:, :, :8].any()
    stats = trainer.policy.update(c.traj, trainer.advantages(c), trainer.gen, holds=c.holds)
    assert np.isfinite(stats["kl"]) and stats["kl"] >= 0
    neutral = Trainer(
        tiny_config(tmp_path, *small, "--run_name=neutral", "--train.kl_coef=1.0", "--train.kl_region=hold")
    )
    c = neutral.collect()  # a reward that keeps nothing: every pixel is anchored
    adv = neutral.advantages(c)
    assert c.holds is None and "so the KL anchors every pixel" in caplog.text
    assert torch.equal(neutral.policy.kl_weight, torch.ones(16, 16))
    stats = neutral.policy.update(c.traj, adv, neutral.gen, holds=c.holds)
    assert "kl" in stats and np.isfinite(stats["kl"])


def test_kl_held_pixels_hold_and_unasked():
    from pxpo.core.objectives import anchors_everything, kl_held_pixels

    holds = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])  # [1, 1, 4]
    weights = torch.tensor([[[1.0, 1.0, 0.5, 0.0]]])  # opinion on the first two pixels, half on the third
    assert torch.equal(kl_held_pixels("hold", holds, weights), holds)
    assert torch.equal(kl_held_pixels("unasked", holds, weights), torch.tensor([[[1.0, 0.0, 0.5, 1.0]]]))
    assert torch.equal(kl_held_pixels("unasked", None, weights), 1 - weights)
    assert torch.equal(kl_held_pixels("unasked", holds, None), holds)
    assert kl_held_pixels("unasked", None, None) is None  # nothing to go by: every pixel (the policy's default)
    assert kl_held_pixels("right", holds, weights) is None  # a fixed region is the policy's own
    # a two-sided map: an opinion everywhere, nothing kept; unasked anchors that sample everywhere, hold none
    two_sided = torch.stack([torch.ones(1, 4), 1 - weights[0]])  # [2, 1, 4]: the second sample has unasked pixels
    assert torch.equal(kl_held_pixels("unasked", None, two_sided), torch.stack([torch.ones(1, 4), weights[0]]))
    assert anchors_everything("unasked", None, two_sided) and not anchors_everything("unasked", holds, weights)
    assert anchors_everything("hold", None, weights) and not anchors_everything("right", None, None)


def test_adapt_kl_coef_moves_toward_the_target_by_at_most_the_rate():
    assert adapt_kl_coef(1.0, 0.0, 0.01) == pytest.approx(0.8)  # nothing moves: loosen by 20%
    assert adapt_kl_coef(1.0, 1.0, 0.01) == pytest.approx(1.2)  # far too much: tighten by 20%
    assert adapt_kl_coef(1.0, 0.011, 0.01) == pytest.approx(1.1)  # near the target: a small step
    assert adapt_kl_coef(1.0, 5.0, 0.0) == 1.0 and adapt_kl_coef(1.0, float("nan"), 0.01) == 1.0
    coef = 1.0
    for _ in range(60):  # a KL that grows with looser anchors (kl = 0.01 / coef^2) settles where kl = target
        coef = adapt_kl_coef(coef, 0.04 / coef**2, 0.01)
    assert coef == pytest.approx(2.0, rel=0.05)


def test_kl_tighten_rate_caps_the_rise_only():
    assert adapt_kl_coef(1.0, 1.0, 0.01, rate_up=0.05) == pytest.approx(1.05)  # far too much: up by 5% only
    assert adapt_kl_coef(1.0, 0.0, 0.01, rate_up=0.05) == pytest.approx(0.8)  # loosening keeps its 20%
    assert adapt_kl_coef(1.0, 0.0102, 0.01, rate_up=0.05) == pytest.approx(1.02)  # within the cap: as before
    assert adapt_kl_coef(1.0, 1.0, 0.01, rate_up=0.0) == 1.0


def test_adaptive_kl_sets_its_own_weight_and_unasked_anchors_the_neutral_pixels(tmp_path):
    small = ["--sample.num_steps=2", "--sample.batch_size=2", "--train.batch_size=2"]
    neutral = ["--reward.name=colour", "--reward.params={target: red, region: left, outside: neutral}"]
    trainer = Trainer(
        tiny_config(
            tmp_path,
            *neutral,
            *small,
            "--train.kl_coef=1.0",
            "--train.kl_region=unasked",
            "--train.kl_target=0.01",
            "--train.kl_tighten_rate=0.2",
            "--train.kl_loosen_rate=0.2",
            "--train.lr=1e-3",
            "--train.ratio_check=off",
        )
    )
    c = trainer.collect()
    assert c.holds is None and torch.equal(c.weights[:, :, :8], torch.ones(2, 16, 8))  # an opinion on the left only
    zero = torch.zeros_like(c.maps)
    stats = trainer.policy.update(c.traj, zero, trainer.gen, holds=c.holds, weights=c.weights)
    assert stats["kl_held"] < 1e-6 and stats["kl_coef"] == 1.0  # on-policy: no KL, the weight loosens
    assert trainer.policy.kl_coef == pytest.approx(0.8)
    _perturb(trainer.params)
    stats = trainer.policy.update(c.traj, zero, trainer.gen, holds=c.holds, weights=c.weights)
    assert stats["kl_held"] > 0.01 and trainer.policy.kl_coef == pytest.approx(0.96)  # drifted: it tightens
    trainer.policy.t.kl_tighten_rate = 0.05  # train.kl_tighten_rate: it tightens by 5% at most
    stats = trainer.policy.update(c.traj, zero, trainer.gen, holds=c.holds, weights=c.weights)
    assert stats["kl_held"] > 0.0105 and trainer.policy.kl_coef == pytest.approx(0.96 * 1.05)
    with pytest.raises(ValueError, match="kl_target"):
        Trainer(tiny_config(tmp_path, "--train.kl_target=-0.01", "--run_name=bad"))
    with pytest.raises(ValueError, match="train.kl_tighten_rate=-0.1: use a share >= 0"):
        Trainer(tiny_config(tmp_path, "--train.kl_tighten_rate=-0.1", "--run_name=bad"))
    off = Trainer(tiny_config(tmp_path, "--train.kl_coef=0", "--run_name=off"))  # off, whatever the target
    assert off.cfg.train.kl_target == 0.01 and off.cfg.train.kl_coef == 0


def test_a_relative_kl_target_follows_the_asked_pixels_divergence(tmp_path):
    assert relative_kl_target(0.05, 0.2, 0.01) == pytest.approx(0.01)
    assert relative_kl_target(0.5, 0.2, 0.01) == pytest.approx(0.1)
    assert relative_kl_target(float("nan"), 0.2, 0.01) == 0.01  # nothing asked: the absolute target
    assert relative_kl_target(0.5, 0.0, 0.01) == 0.01  # off
    assert adapt_kl_coef(1.0, 0.0, 0.0) == 1.0  # the first update: nothing moved, the weight stays
    small = ["--sample.num_steps=2", "--sample.batch_size=2", "--train.batch_size=2"]
    neutral = ["--reward.name=colour", "--reward.params={target: red, region: left, outside: neutral}"]
    trainer = Trainer(
        tiny_config(
            tmp_path,
            *neutral,
            *small,
            "--train.kl_coef=1.0",
            "--train.kl_region=unasked",
            "--experimental.kl_target_ratio=0.2",
            "--train.lr=1e-3",
            "--train.ratio_check=off",
        )
    )
    c = trainer.collect()
    zero = torch.zeros_like(c.maps)
    trainer.policy.update(c.traj, zero, trainer.gen, holds=c.holds, weights=c.weights)
    assert trainer.policy.kl_coef == 1.0  # on-policy: nothing moved, no target yet, the weight stays
    _perturb(trainer.params)
    stats = trainer.policy.update(c.traj, zero, trainer.gen, holds=c.holds, weights=c.weights)
    assert stats["kl_asked"] > 0 and stats["kl_held"] > 0
    target = 0.2 * stats["kl_asked"]  # the weight moved toward holding kl_held at a fifth of kl_asked
    rise = trainer.cfg.train.kl_tighten_rate  # it tightens by at most train.kl_tighten_rate, loosens by 20%
    assert trainer.policy.kl_coef == pytest.approx(1 + min(max(stats["kl_held"] / target - 1, -0.2), rise))
    with pytest.raises(ValueError, match="experimental.kl_target_ratio"):
        Trainer(tiny_config(tmp_path, "--experimental.kl_target_ratio=-1", "--run_name=bad"))


def _untrained_kl(trainer, traj, steps=(2, 3)):
    """The mean KL to the reference of ``steps`` of every sample, each as if sampled at sample.eta: computed
    here step by step on the stored latents, apart from the policy's own code."""
    policy, s, bb = trainer.policy, trainer.cfg.sample, trainer.backbone
    kls = []
    with torch.no_grad():
        for j in steps:
            x, t = traj.latents[:, j], traj.timesteps[0, j]
            with policy.reference_model() as ref:
                ref_mean, std = bb.gaussian(bb.guided_output(ref, x, t, traj.cond, s.guidance), t, x, s.eta)
            mean, _ = bb.gaussian(bb.guided_output(policy.model, x, t, traj.cond, s.guidance), t, x, s.eta)
            kls.append(((mean - ref_mean) ** 2 / (2 * std**2)).mean())
    return float(torch.stack(kls).mean())


def test_kl_steps_all_anchors_the_untrained_steps_too(tmp_path):
    """train.kl_steps=all: the KL of the steps the update does not train (the least noisy half here) is in the
    loss, as an independent re-computation gives it, and the update pulls it further down than the anchor on
    the trained steps alone does, from the same weights."""
    small = [
        "--sample.num_steps=4",
        "--sample.batch_size=2",
        "--train.batch_size=2",
        "--train.timestep_fraction=0.5",
        "--train.kl_coef=1.0",
        "--train.kl_target=0",
        "--train.kl_region=all",
        "--train.lr=3e-4",  # at 3e-3 the KL after the perturbation bounces from update to update (chaotic)
        "--train.ratio_check=off",
    ]
    after = {}
    for steps in ("all", "trained"):
        trainer = Trainer(tiny_config(tmp_path, *small, f"--train.kl_steps={steps}", f"--run_name={steps}"))
        c = trainer.collect()

        def update(trainer=trainer, c=c):
            return trainer.policy.update(
                c.traj, torch.zeros_like(c.maps), trainer.gen, holds=c.holds, weights=c.weights
            )

        first = update()  # on-policy: the policy is the reference
        _perturb(trainer.params)
        before = _untrained_kl(trainer, c.traj)
        stats = update()
        if steps == "all":
            assert first["kl_untrained"] == 0.0
            assert before > 0 and stats["kl_untrained"] == pytest.approx(before, rel=1e-4)
        else:
            assert "kl_untrained" not in stats
        for _ in range(3):
            update()
        after[steps] = _untrained_kl(trainer, c.traj)
    assert after["all"] < 0.9 * after["trained"]  # the anchor acts on the steps it does not train


@pytest.mark.slow
def test_the_anchor_falls_by_at_most_kl_loosen_rate_per_update(tmp_path):
    trainer = Trainer(
        tiny_config(
            tmp_path,
            "--train.kl_coef=1.0",
            "--train.kl_loosen_rate=0.05",
            "--sample.num_steps=4",
            "--sample.batch_size=4",
            "--train.batch_size=4",
        )
    )
    c = trainer.collect()
    stats = trainer.policy.update(c.traj, torch.zeros_like(c.maps), trainer.gen, holds=c.holds)
    assert stats["kl_held"] < 1e-6  # on-policy: nothing moved yet, so the weight falls by its cap
    assert trainer.policy.kl_coef == pytest.approx(0.95)
