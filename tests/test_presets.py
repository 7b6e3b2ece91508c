"""Model presets (SD 1.5, SD 2.1 v-prediction, SDXL): options, the sampler against diffusers' own
pipelines, and one training step through the real trainer whose LoRA plain diffusers loads back.

The architectures are built from their configs with random weights at a reduced size (tiny_arch.py),
entirely offline."""

import re

import pytest
import torch
from tiny_arch import SIZE, tiny_pipeline

from pxpo.config import ConfigError, parse_overrides
from pxpo.backends.presets import PRESETS, apply_preset
from pxpo.backends.registry import load_pipeline
from pxpo.training.config import RunConfig
from pxpo.training.trainer import Trainer
from pxpo.core.trajectory import sample_trajectories
from pxpo.backends import backbone_for

FAMILIES = ["sd15", "sd21", "sdxl"]


def parse(*argv):
    return parse_overrides(RunConfig(), list(argv), prog="test", description="", finalize=apply_preset)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    """Each family's tiny pipeline saved as a diffusers folder (what a hub download would be)."""
    root = tmp_path_factory.mktemp("families")
    for fam in FAMILIES:
        tiny_pipeline(fam, root / f"tok-{fam}").save_pretrained(root / fam, safe_serialization=True)
    return root


def test_a_preset_fills_what_the_user_did_not_set(tmp_path):
    cfg = parse("--model.preset=sd15")
    assert (cfg.model.name, cfg.sample.height, cfg.sample.num_steps) == (
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        512,
        50,
    )
    assert (cfg.train.lr, cfg.model.finetune, cfg.train.advantages, cfg.train.kl_coef) == (
        3e-4,
        "lora",
        "per-prompt",
        0.0,
    )
    assert parse("--model.preset=sd21").sample.width == 768
    assert parse("--model.preset=sdxl").model.name == "stabilityai/stable-diffusion-xl-base-1.0"
    # what the user sets wins, on the command line and in a config file
    cfg = parse("--model.preset=sdxl", "--sample.num_steps=4", "--model.name=/models/xl")
    assert (cfg.sample.num_steps, cfg.model.name, cfg.sample.height) == (4, "/models/xl", 1024)
    (tmp_path / "c.yaml").write_text("model: {preset: sd21}\nsample: {height: 64}\n")
    cfg = parse(f"--config={tmp_path / 'c.yaml'}")
    assert (cfg.model.preset, cfg.sample.height, cfg.sample.width, cfg.sample.num_steps) == ("sd21", 64, 768, 50)
    with pytest.raises(ConfigError, match="model.preset='sd3': use one of '', sd15, sd21, sdxl, sd35, flux"):
        parse("--model.preset=sd3")
    assert set(PRESETS) == set(FAMILIES) | {"sd35", "flux"}  # tests/test_flow.py, on tiny SD3 and FLUX pipelines


@pytest.mark.parametrize("family", FAMILIES)
def test_sampler_matches_the_diffusers_pipeline_of_each_family(family, family_dirs):
    """Same generator, same noise order: pxpo's trajectory ends where diffusers' own pipeline does
    (SDXL: both text encoders, pooled embeddings and time ids; SD 2.1: v-prediction)."""
    pipe = load_pipeline(str(family_dirs / family))
    prompts = ["a red circle", "a blue square on a green background"]
    ours = sample_trajectories(
        backbone_for(pipe), prompts, num_steps=3, guidance=5.0, eta=1.0, generator=torch.Generator().manual_seed(7)
    )
    theirs = pipe(
        prompts,
        num_inference_steps=3,
        guidance_scale=5.0,
        eta=1.0,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(7),
        output_type="latent",
    ).images
    assert ours.latents.shape == (2, 4, 4, SIZE // 2, SIZE // 2)
    torch.testing.assert_close(ours.latents[:, -1], theirs, atol=1e-5, rtol=1e-5)


def lora_tensors(unet) -> dict[str, torch.Tensor]:
    """The LoRA A/B weights by module path, without the adapter's name (``default`` vs ``default_0``)."""
    return {
        re.sub(r"\.lora_([AB])\.[^.]+\.", r".lora_\1.", n): p.detach().clone()
        for n, p in unet.named_parameters()
        if ".lora_" in n
    }


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_one_training_step_then_plain_diffusers_loads_the_lora(family, family_dirs, tmp_path):
    cfg = parse(
        f"--model.preset={family}",
        f"--model.name={family_dirs / family}",
        "--model.lora_alpha=8",
        f"--sample.height={SIZE}",
        f"--sample.width={SIZE}",
        "--sample.num_steps=2",
        "--sample.batch_size=2",
        "--sample.num_batches=1",
        "--train.batch_size=2",
        "--eval_samples=2",
        "--epochs=1",
        "--reward.name=colour",
        "--reward.params={target: red, region: left}",
        f"--out_dir={tmp_path}",
        "--run_name=run",
        "--tensorboard=false",
        "--threads=2",
    )
    trainer = Trainer(cfg)
    assert trainer.mode == "lora" and type(trainer.pipe).__name__ == PRESETS[family].pipeline
    run = trainer.train()
    trained = lora_tensors(trainer.accel.unwrap_model(trainer.model))
    assert trained and any(v.abs().sum() > 0 for k, v in trained.items() if ".lora_B." in k)  # B starts at 0
    assert "preset: " + family in (run / "config.yaml").read_text()

    import diffusers

    plain = getattr(diffusers, PRESETS[family].pipeline).from_pretrained(family_dirs / family)
    plain.load_lora_weights(run / "weights")
    loaded = lora_tensors(plain.unet)
    assert loaded.keys() == trained.keys()
    for k in trained:
        assert torch.equal(loaded[k], trained[k]), k
    # and the adapter's scale (alpha 8 / rank 4) came with it: same UNet output
    x, t = torch.randn(1, 4, SIZE // 2, SIZE // 2), torch.tensor(500)
    text = torch.randn(1, 16, plain.unet.config.cross_attention_dim)
    extra = (
        {"added_cond_kwargs": {"text_embeds": torch.randn(1, 32), "time_ids": torch.tensor([[32.0, 32, 0, 0, 32, 32]])}}
        if family == "sdxl"
        else {}
    )
    with torch.no_grad():
        torch.testing.assert_close(
            plain.unet(x, t, text, **extra).sample,
            trainer.accel.unwrap_model(trainer.model)(x, t, text, **extra).sample,
        )


def test_a_preset_refuses_a_model_of_another_family(family_dirs, tmp_path):
    common = [
        "--sample.num_steps=2",
        "--sample.batch_size=2",
        "--train.batch_size=2",
        "--eval_samples=2",
        f"--out_dir={tmp_path}",
        "--tensorboard=false",
        "--reward.name=colour",
        "--reward.params={target: red, region: left}",
    ]
    with pytest.raises(
        ConfigError,
        match="model.preset=sdxl expects a StableDiffusionXLPipeline, but model .* is a StableDiffusionPipeline",
    ):
        Trainer(parse("--model.preset=sdxl", f"--model.name={family_dirs / 'sd15'}", "--run_name=a", *common))
    with pytest.raises(
        ConfigError, match="model.preset=sd21 expects a v_prediction model, but the scheduler .* predicts epsilon"
    ):
        Trainer(parse("--model.preset=sd21", f"--model.name={family_dirs / 'sd15'}", "--run_name=b", *common))


def test_fp16_frozen_weights_are_refused_for_the_sdxl_vae(family_dirs):
    from pxpo.backends.finetune import prepare_network

    pipe = load_pipeline(str(family_dirs / "sdxl"))
    with pytest.raises(ConfigError, match="SDXL's VAE overflows in fp16 .* use --model.frozen_dtype=bf16"):
        prepare_network(pipe, "lora", frozen_dtype="fp16")


def test_the_command_line_fills_the_preset_and_loads_nothing_without_leave(tmp_path, capsys):
    from pxpo.cli import main

    assert main(["train", "--model.preset=sd15", f"--out_dir={tmp_path}", "--tensorboard=false"]) == 2
    err = capsys.readouterr().err
    assert (
        "cannot load model 'stable-diffusion-v1-5/stable-diffusion-v1-5' (downloads are off: pass "
        "--model.allow_download=true to fetch it)" in err
    )
    assert not any(tmp_path.iterdir())  # no run folder was left behind
