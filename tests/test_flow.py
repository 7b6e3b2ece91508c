"""Rectified-flow models (SD3) behind the core: Flow-GRPO's SDE step, the sampler, training, LoRA."""

import math

import pytest
import torch

from pxpo.backends import backbone_for
from pxpo.backends.flow import flow_sde_mean_std
from pxpo.core.gaussian import draw, gaussian_log_prob
from pxpo.core.trajectory import sample_trajectories, step_log_prob
from tiny_sd3 import tiny_flux, tiny_sd3

PROMPTS = ["a red circle on a blue background", "a green cross"]
STEPS = 4


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    return tiny_sd3(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    return tiny_flux(tmp_path_factory.mktemp("tok"))


def flow_grpo_log_prob(x, v, x_prev, sigma, sigma_next, sigma_max, a):
    """Flow-GRPO's published SDE step (sd3_sde_with_logprob, sde_type='sde'), written out on its own."""
    dt = sigma_next - sigma
    std_dev_t = math.sqrt(sigma / (1 - (sigma_max if sigma == 1 else sigma))) * a
    mean = x * (1 + std_dev_t**2 / (2 * sigma) * dt) + v * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
    scale = std_dev_t * math.sqrt(-dt)
    return -((x_prev - mean) ** 2) / (2 * scale**2) - math.log(scale) - math.log(math.sqrt(2 * math.pi))


@pytest.mark.slow
def test_noise_level_zero_is_the_pipelines_own_sampler(sd3):
    """Deterministic steps (the noise level 0 on every step) end at the diffusers pipeline's own latents."""
    theirs = sd3(
        PROMPTS,
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
    ).images
    ours = sample_trajectories(
        backbone_for(sd3),
        PROMPTS,
        num_steps=STEPS,
        guidance=5.0,
        eta=[0.0] * STEPS,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(ours.latents[:, -1], theirs)
    assert torch.all(ours.log_probs == 0)


@pytest.mark.slow
def test_sde_log_probs_are_flow_grpos_formula_at_every_step_and_re_score_exactly(sd3):
    bb = backbone_for(sd3)
    traj = sample_trajectories(
        bb, PROMPTS, num_steps=STEPS, guidance=5.0, eta=0.7, generator=torch.Generator().manual_seed(1)
    )
    sigmas = sd3.scheduler.sigmas
    with torch.no_grad():
        for j in range(STEPS):
            x, x_prev, t = traj.latents[:, j], traj.latents[:, j + 1], traj.timesteps[0, j]
            v = bb.guided_output(bb.model, x, t, traj.cond, 5.0)
            want = flow_grpo_log_prob(x, v, x_prev, float(sigmas[j]), float(sigmas[j + 1]), float(sigmas[1]), 0.7)
            assert torch.allclose(traj.log_probs[:, j], want, atol=1e-6, rtol=1e-6), j
            # re-scoring the stored transition gives the sampler's numbers: the ratio before an update is 1
            assert torch.equal(step_log_prob(bb, traj, j, 5.0, eta=0.7), traj.log_probs[:, j])


def test_the_sde_steps_draws_have_the_stated_mean_and_std():
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    mean, std = flow_sde_mean_std(x, v, torch.tensor(0.6), torch.tensor(0.4), 0.7, torch.tensor(0.9))
    n = 4000
    draws, lp = draw(mean.expand(n, -1, -1, -1), std.expand(n, -1, -1, -1), x.expand(n, -1, -1, -1), generator=g)
    assert torch.allclose(draws.mean(0), mean[0], atol=4 * float(std) / math.sqrt(n))
    assert draws.std(0).mean() == pytest.approx(float(std), rel=0.02)
    assert torch.allclose(lp, gaussian_log_prob(draws, mean, std))
    # s = a sqrt(sigma / (1 - sigma)), std = s sqrt(-dt)
    assert float(std) == pytest.approx(0.7 * math.sqrt(0.6 / 0.4) * math.sqrt(0.2), rel=1e-6)
    with pytest.raises(ValueError, match="noise level > 0"):
        flow_sde_mean_std(x, v, 0.6, 0.4, 0.0, 0.9)


@pytest.mark.slow
def test_a_lora_update_on_sd3_moves_the_policy_and_round_trips_through_load_lora_weights(sd3, tmp_path):
    import copy

    from accelerate import Accelerator

    from pxpo.backends.presets import SD3_ATTENTION
    from pxpo.core.policy import Policy
    from pxpo.training.config import ModelConfig, SampleConfig, TrainConfig

    pipe = copy.deepcopy(sd3)
    bb = backbone_for(pipe)
    train = TrainConfig(algorithm="pxpo", objective="clipped", lr=1e-2, batch_size=2, kl_coef=0.0)
    sample = SampleConfig(num_steps=STEPS, guidance=5.0, eta=0.7, batch_size=2)
    policy = Policy(
        Accelerator(),
        bb,
        "lora",
        train,
        sample,
        ModelConfig(lora_targets=SD3_ATTENTION, lora_rank=4),
        tuple(bb.latent_shape(1)[2:]),
    )
    traj = sample_trajectories(
        bb, PROMPTS, num_steps=STEPS, guidance=5.0, eta=0.7, generator=torch.Generator().manual_seed(2)
    )
    before = [p.detach().clone() for p in policy.params]
    stats = policy.update(
        traj, torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(3)), torch.Generator().manual_seed(4)
    )
    assert stats["ratio"] == pytest.approx(1.0) and math.isfinite(stats["loss"])  # on-policy: ratio exactly 1
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.params))
    bb.save_weights(policy.accel.unwrap_model(policy.model), "lora", tmp_path / "lora")
    fresh = copy.deepcopy(sd3)
    fresh.load_lora_weights(tmp_path / "lora")
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    cond = bb.encode(PROMPTS[:1], "", 32, 32)
    with torch.no_grad():
        ours = bb.guided_output(policy.accel.unwrap_model(policy.model), x, torch.tensor(500.0), cond, 5.0)
        loaded = backbone_for(fresh).guided_output(fresh.transformer, x, torch.tensor(500.0), cond, 5.0)
        base = backbone_for(sd3).guided_output(sd3.transformer, x, torch.tensor(500.0), cond, 5.0)
    assert torch.allclose(loaded, ours, atol=1e-5) and not torch.allclose(base, ours, atol=1e-5)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_pxpo_train_runs_on_a_flow_pipeline_folder(family, request, tmp_path):
    """One epoch of ``pxpo train`` on a saved tiny SD3 or FLUX pipeline: loaded by the registry with its
    flow scheduler, LoRA (not a shapes model), the colour map pooled onto the 16x16 latent grid (FLUX:
    packed into 8x8 tokens of 2x2 latent pixels for each transformer call)."""
    import json

    from pxpo.cli import main

    request.getfixturevalue(family).save_pretrained(tmp_path / family, safe_serialization=True)
    code = main(
        [
            "train",
            f"--model.name={tmp_path / family}",
            "--sample.height=32",
            "--sample.width=32",
            f"--out_dir={tmp_path}",
            "--run_name=run",
            "--epochs=1",
            "--sample.num_steps=3",
            "--sample.eta=0.7",
            "--sample.batch_size=2",
            "--train.batch_size=2",
            "--eval_samples=2",
            "--tensorboard=false",
            "--threads=1",
            "--model.lora_targets=[attn.to_q, attn.to_k, attn.to_v, attn.to_out.0]",
            "--prompts.name=list",
            "--prompts.params={prompts: [a red circle, a blue square]}",
            "--reward.name=colour",
            "--reward.params={target: blue, region: top}",
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["finetune"] == "lora" and math.isfinite(summary["eval_reward_after"])
    assert (tmp_path / "run" / "weights" / "pytorch_lora_weights.safetensors").is_file()


def test_the_sd35_preset_takes_flow_grpos_settings_and_accepts_an_sd3_pipeline(sd3):
    from pxpo.backends.presets import check_pipeline
    from pxpo.config import ConfigError, parse_overrides
    from pxpo.training.config import RunConfig
    from pxpo.backends.presets import apply_preset

    cfg = parse_overrides(RunConfig(), ["--model.preset=sd35"], prog="test", description="", finalize=apply_preset)
    assert (cfg.sample.num_steps, cfg.sample.eta, cfg.sample.guidance, cfg.sample.height) == (10, 0.7, 4.5, 512)
    assert (cfg.model.lora_rank, cfg.model.lora_alpha, cfg.train.kl_coef) == (32, 64.0, 0.04)
    assert "attn.add_q_proj" in cfg.model.lora_targets
    check_pipeline("sd35", sd3, "tiny")  # a StableDiffusion3Pipeline with a flow scheduler: accepted
    with pytest.raises(ConfigError, match="expects a StableDiffusionXLPipeline"):
        check_pipeline("sdxl", sd3, "tiny")


def test_the_flux_preset_takes_the_per_pixel_flux_settings_and_its_lora_targets_adapt_flux(flux, sd3):
    from pxpo.backends.presets import apply_preset, check_pipeline
    from pxpo.config import ConfigError, parse_overrides
    from pxpo.training.config import RunConfig

    cfg = parse_overrides(RunConfig(), ["--model.preset=flux"], prog="test", description="", finalize=apply_preset)
    assert (cfg.sample.num_steps, cfg.sample.eta, cfg.sample.guidance, cfg.sample.height) == (10, 0.7, 3.5, 512)
    assert (cfg.model.lora_rank, cfg.model.lora_alpha, cfg.train.kl_coef) == (64, 128.0, 0.0)
    assert cfg.model.name == "black-forest-labs/FLUX.1-dev"
    check_pipeline("flux", flux, "tiny")  # a FluxPipeline with a flow scheduler: accepted
    with pytest.raises(ConfigError, match="model.preset=flux expects a FluxPipeline, but model 'tiny' is a Stable"):
        check_pipeline("flux", sd3, "tiny")
    # its LoRA targets are modules of FLUX's transformer: both streams of the joint blocks, the single blocks
    import copy

    pipe = copy.deepcopy(flux)
    backbone_for(pipe).prepare_training("lora", rank=4, alpha=8.0, targets=cfg.model.lora_targets)
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in pipe.transformer.named_parameters() if ".lora_A" in n}
    assert any(n.startswith("transformer_blocks.") and n.endswith("attn.add_q_proj") for n in adapted)
    assert any(n.startswith("single_transformer_blocks.") and n.endswith("attn.to_q") for n in adapted)


def test_flux_latent_pixels_land_on_their_tokens():
    """A map on the [h, w] latent grid reaches FLUX's tokens where diffusers packs those pixels."""
    from diffusers import FluxPipeline

    from pxpo.backends.flux import pack, unpack

    b, c, h, w = 2, 4, 6, 8
    x = torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, c, h, w)
    tokens = pack(x)
    assert torch.equal(tokens, FluxPipeline._pack_latents(x, b, c, h, w))
    assert torch.equal(unpack(tokens, h, w), x)
    for i, j, ch in ((0, 0, 0), (3, 5, 2), (5, 7, 3)):  # pixel (i, j) of channel ch: token and slot
        assert tokens[1, (i // 2) * (w // 2) + j // 2, ch * 4 + (i % 2) * 2 + j % 2] == x[1, ch, i, j]


def test_flux_sampler_is_the_pipelines_own_and_its_sde_steps_re_score_exactly(flux):
    from pxpo.backends.flux import pack

    bb = backbone_for(flux)
    theirs = flux(
        PROMPTS,
        height=32,
        width=32,
        num_inference_steps=STEPS,
        guidance_scale=3.5,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
    ).images
    ours = sample_trajectories(
        bb,
        PROMPTS,
        num_steps=STEPS,
        guidance=3.5,
        eta=[0.0] * STEPS,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(pack(ours.latents[:, -1]), theirs)
    traj = sample_trajectories(
        bb,
        PROMPTS,
        num_steps=STEPS,
        guidance=3.5,
        eta=0.7,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(1),
    )
    with torch.no_grad():
        for j in range(STEPS):
            assert torch.equal(step_log_prob(bb, traj, j, 3.5, eta=0.7), traj.log_probs[:, j])


def test_a_flux_lora_round_trips_through_load_lora_weights(flux, tmp_path):
    import copy

    bb = backbone_for(copy.deepcopy(flux))
    params = bb.prepare_training("lora", 4, 4.0, ["to_q", "to_k", "to_v", "to_out.0"])
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    bb.save_weights(bb.model, "lora", tmp_path / "lora")
    fresh = copy.deepcopy(flux)
    fresh.load_lora_weights(tmp_path / "lora")
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    cond = bb.encode(PROMPTS[:1])
    with torch.no_grad():
        ours = bb.guided_output(bb.model, x, torch.tensor(500.0), cond, 3.5)
        loaded = backbone_for(fresh).guided_output(fresh.transformer, x, torch.tensor(500.0), cond, 3.5)
        base = backbone_for(flux).guided_output(flux.transformer, x, torch.tensor(500.0), cond, 3.5)
    assert torch.allclose(loaded, ours, atol=1e-5) and not torch.allclose(base, ours, atol=1e-5)
