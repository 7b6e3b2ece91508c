"""Memory modes: each runs a training step on a tiny model through the real trainer and Policy.update,
and the log-prob arithmetic stays fp32 under bf16 autocast."""

import importlib.util
import math
import types

import pytest
import torch

from pxpo.config import ConfigError, parse_overrides
from pxpo.errors import UserError
from pxpo.backends.conditioning import PromptCache
from pxpo.backends.ddim import ddim_step_with_logprob
from pxpo.training.config import RunConfig, TrainConfig
from pxpo.core.optim import make_optimizer
from pxpo.training.trainer import Trainer
from pxpo.backends.sd import guided_output
from pxpo.core.trajectory import sample_trajectories, step_log_prob
from pxpo.backends import backbone_for

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one process-wide state: a test that asks for bf16 after another made an fp32
    Accelerator (or the reverse) would be refused, so each test starts and ends with a fresh one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def trainer_for(tmp_path, model_dir, *extra) -> Trainer:
    cfg = parse_overrides(
        RunConfig(),
        [
            f"--model.name={model_dir}",
            "--prompts.name=list",
            "--prompts.params={prompts: [a red circle, a blue square], order: cycle}",
            "--reward.name=colour",
            "--reward.params={target: red, region: left}",
            "--train.kl_coef=0",
            "--train.kl_region=all",
            "--sample.num_steps=2",
            "--sample.batch_size=2",
            "--sample.num_batches=1",
            "--train.batch_size=2",
            "--eval_samples=2",
            "--epochs=1",
            f"--out_dir={tmp_path}",
            "--run_name=run",
            "--tensorboard=false",
            *extra,
        ],
        prog="test",
        description="",
    )
    return Trainer(cfg)


def one_step(trainer: Trainer) -> dict:
    """One epoch's sampling, advantages and Policy.update; returns its stats after checking the
    trained weights moved and stayed finite and fp32."""
    before = [p.detach().clone() for p in trainer.params]
    c = trainer.collect()
    assert c.traj.latents.dtype == c.traj.log_probs.dtype == torch.float32
    stats = trainer.policy.update(c.traj, trainer.advantages(c), trainer.gen, holds=c.holds)
    assert math.isfinite(stats["loss"])
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trainer.params)
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.params))
    return stats


@pytest.mark.parametrize(
    "extra",
    [
        ["--model.mixed_precision=bf16"],
        ["--model.mixed_precision=bf16", "--model.frozen_dtype=bf16", "--model.finetune=lora"],
        ["--model.mixed_precision=bf16", "--model.frozen_dtype=bf16", "--model.finetune=full", "--train.kl_coef=1"],
        ["--model.gradient_checkpointing=true", "--model.finetune=lora"],
    ],
    ids=["bf16-autocast", "frozen-bf16-lora", "frozen-bf16-full-kl", "checkpointing"],
)
@pytest.mark.slow
def test_memory_mode_trains_a_step(extra, tmp_path, random_pipe_dir):
    trainer = trainer_for(tmp_path, random_pipe_dir, *extra)
    if "--model.frozen_dtype=bf16" in extra:
        pipe = trainer.pipe
        assert pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16
        if trainer.mode == "lora":  # base weights half, adapters fp32
            assert pipe.unet.conv_in.weight.dtype == torch.bfloat16
        else:  # the starting-model copy of the KL anchor is half, the trained UNet fp32
            assert trainer.policy.ref_model.dtype == torch.bfloat16
    if "--model.gradient_checkpointing=true" in extra:
        assert trainer.pipe.unet.is_gradient_checkpointing
    stats = one_step(trainer)
    if "--train.kl_coef=1" in extra:
        assert "kl" in stats


def test_timestep_fraction_trains_that_share_of_the_steps(tmp_path, random_pipe_dir):
    trainer = trainer_for(
        tmp_path,
        random_pipe_dir,
        "--train.timestep_fraction=0.5",
        "--train.timestep_order=random",
        "--sample.num_steps=4",
    )  # random order: the update recomputes (first would reuse sampling)
    calls = []
    hook = trainer.pipe.unet.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    c = trainer.collect()
    calls.clear()
    trainer.policy.update(c.traj, trainer.advantages(c), trainer.gen, holds=c.holds)
    hook.remove()
    assert trainer.policy.n_train_t == 2  # ceil(4 * 0.5)
    # 2 trained transitions of 2 samples, CFG doubles them: one batched forward of 8 (the default,
    # train.timesteps_per_forward=0) or, one timestep per call, two of 4
    assert calls == [8]
    trainer.policy.per_forward, trainer.policy.n_chunks = 1, 2  # what --train.timesteps_per_forward=1 sets
    calls.clear()
    hook = trainer.pipe.unet.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    trainer.policy.update(c.traj, trainer.advantages(c), trainer.gen, holds=c.holds)
    hook.remove()
    assert calls == [4, 4]


@pytest.mark.slow
def test_precomputed_prompt_embeddings_encode_each_prompt_once(tmp_path, random_pipe_dir):
    trainer = trainer_for(tmp_path, random_pipe_dir, "--model.precompute_prompt_embeds=true")
    cache = trainer.prompt_cache
    assert isinstance(cache, PromptCache) and trainer.pipe.text_encoder.device.type == "cpu"
    one_step(trainer)
    one_step(trainer)
    assert cache.encoded == 2  # 2 distinct prompts (in cycle order) over 2 epochs of 2 samples
    # the cached embeddings are the ones the pipeline's own encoder gives
    prompts = ["a red circle", "a blue square", "a red circle"]
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    cached = sample_trajectories(trainer.backbone, prompts, num_steps=2, generator=gen(), prompt_cache=cache)
    plain = sample_trajectories(trainer.backbone, prompts, num_steps=2, generator=gen())
    assert cache.encoded == 2
    assert torch.equal(cached.cond["prompt_embeds"], plain.cond["prompt_embeds"]) and torch.equal(
        cached.latents, plain.latents
    )


@pytest.mark.slow
def test_gradient_checkpointing_gives_the_same_gradients(random_pipe):
    unet = random_pipe.unet
    x, t, text = torch.randn(2, 4, 16, 16), torch.tensor([10, 500]), torch.randn(2, 16, 64)
    grads = []
    for on in (False, True):
        unet.zero_grad(set_to_none=True)
        unet.enable_gradient_checkpointing() if on else unet.disable_gradient_checkpointing()
        unet.train()
        unet(x, t, text).sample.square().mean().backward()
        grads.append([p.grad.clone() for p in unet.parameters()])
    unet.disable_gradient_checkpointing()
    unet.zero_grad(set_to_none=True)
    unet.eval()
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_log_prob_arithmetic_is_fp32_under_bf16_autocast(random_pipe):
    """The DDIM/log-prob arithmetic ignores autocast: from a bf16 network output it gives exactly what
    fp32 arithmetic gives from that output. Re-scoring fp32 samples (4 steps) under bf16 autocast
    moves per-sample mean log-probs by less than 0.05 nats (measured here: at most 0.020, at the
    third step). That gap is the network's bf16 rounding, and it grows with fewer, coarser steps (at
    2 steps it reached 0.49; benchmarks/bf16_logprob_gap.py). So pxpo samples and re-scores in the
    same precision, and then the ratio is exactly 1 under bf16 too."""
    s = random_pipe.scheduler
    s.set_timesteps(4)
    x, out, prev = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16).bfloat16(), torch.randn(2, 4, 16, 16)
    for t in s.timesteps:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, lp_auto = ddim_step_with_logprob(s, out, t, x, prev_sample=prev)
        _, lp_fp32 = ddim_step_with_logprob(s, out.float(), t, x, prev_sample=prev)
        assert lp_auto.dtype == torch.float32 and torch.equal(lp_auto, lp_fp32)

    # classifier-free guidance combines a bf16 network's outputs in fp32
    class Half(torch.nn.Module):
        dtype = torch.bfloat16

        def forward(self, x, t, text, **kw):
            return types.SimpleNamespace(sample=(x * 1.001 + text.mean()).bfloat16())

    lat, emb = torch.randn(2, 4, 16, 16), torch.randn(2, 16, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        guided = guided_output(Half(), lat, 10, emb, -emb, 5.0)
    o = Half()(torch.cat([lat, lat]).bfloat16(), None, torch.cat([-emb, emb]).bfloat16()).sample.float()
    assert guided.dtype == torch.float32 and torch.equal(guided, o[:2] + 5.0 * (o[2:] - o[:2]))

    prompts = ["a red circle", "a blue square"]
    traj = sample_trajectories(
        backbone_for(random_pipe), prompts, num_steps=4, generator=torch.Generator().manual_seed(0)
    )
    for j in range(4):
        with torch.no_grad():
            ref = step_log_prob(backbone_for(random_pipe), traj, j, 5.0)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                lp = step_log_prob(backbone_for(random_pipe), traj, j, 5.0)
        assert lp.dtype == torch.float32
        assert (lp - ref).mean(dim=(1, 2, 3)).abs().max() < 0.05
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        traj = sample_trajectories(
            backbone_for(random_pipe), prompts, num_steps=2, generator=torch.Generator().manual_seed(0)
        )
        j = torch.tensor([1, 0])
        assert torch.equal(step_log_prob(backbone_for(random_pipe), traj, j, 5.0), traj.log_probs[torch.arange(2), j])


def test_half_frozen_weights_need_autocast_and_names_are_checked(tmp_path, random_pipe_dir):
    with pytest.raises(
        ConfigError, match="model.frozen_dtype=bf16 .* needs autocast: add --model.mixed_precision=bf16"
    ):
        trainer_for(tmp_path, random_pipe_dir, "--model.frozen_dtype=bf16")
    with pytest.raises(ConfigError, match="model.frozen_dtype='half': use one of fp32, bf16, fp16"):
        trainer_for(tmp_path, random_pipe_dir, "--model.frozen_dtype=half", "--model.mixed_precision=bf16")
    with pytest.raises(ConfigError, match="train.optimizer='sgd': use one of adamw, adamw8bit"):
        trainer_for(tmp_path, random_pipe_dir, "--train.optimizer=sgd")


def test_8bit_adamw_without_bitsandbytes_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"needs bitsandbytes.*pip install 'pxpo\[bnb\]'.*--train.optimizer=adamw"):
        make_optimizer([torch.nn.Parameter(torch.zeros(2))], TrainConfig(optimizer="adamw8bit"))


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed (optional): pip install 'pxpo[bnb]'")
def test_8bit_adamw_trains_a_step_with_8bit_states(tmp_path, random_pipe_dir):
    trainer = trainer_for(tmp_path, random_pipe_dir, "--train.optimizer=adamw8bit", "--model.finetune=full")
    assert type(trainer.policy.opt.optimizer).__name__ == "AdamW8bit"
    one_step(trainer)
    states = [s for s in trainer.policy.opt.optimizer.state.values() if "state1" in s]
    assert any(s["state1"].dtype == torch.uint8 for s in states)  # tensors of >= 4096 elements: 8-bit moments
