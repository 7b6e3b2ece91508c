"""The shipped embedded model loads offline through plain diffusers and pxpo's registry, and samples."""
import json

import pytest
import torch
from diffusers import StableDiffusionPipeline

from pxpo.models.registry import NAMED, load_pipeline, resolve_model


def test_shipped_pipeline_loads_offline_with_plain_diffusers():
    path = resolve_model("shapes-tiny")
    pipe = StableDiffusionPipeline.from_pretrained(path, local_files_only=True)
    assert type(pipe.unet).__name__ == "UNet2DConditionModel" and type(pipe.vae).__name__ == "AutoencoderKL"
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.vae_scale_factor == 4 and pipe.unet.config.sample_size == 16  # 16x16 latents at 64 px
    size = sum(f.stat().st_size for f in NAMED["shapes-tiny"].rglob("*.safetensors"))
    assert size <= 25 * 2**20
    log = json.loads((NAMED["shapes-tiny"] / "pretrain_log.json").read_text())
    assert log["total_seconds"] <= 3600 and log["config"]["seed"] == 0


def test_samples_have_the_right_shape_and_range():
    pipe = load_pipeline("shapes-tiny")
    images = pipe(["a red circle on a blue background", "a white cross on a black background"],
                  num_inference_steps=4, guidance_scale=5.0, generator=torch.Generator().manual_seed(0),
                  output_type="pt").images
    assert images.shape == (2, 3, 64, 64)
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0.05


def test_unknown_model_names_say_what_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_pipeline(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="hub id"):
        load_pipeline("no-such-model")


def test_auto_finetuning_trains_every_weight_of_a_small_unet_and_lora_on_a_large_one():
    from pxpo.models.finetune import resolve_mode

    small = torch.nn.Linear(10, 10)
    large = torch.nn.Embedding(50_000, 1_000)  # 50M parameters: an SD-size UNet has 860M
    assert resolve_mode("auto", True) == "full"  # shapes-tiny
    assert resolve_mode("auto", False, small) == "full"  # e.g. a copy of shapes-tiny in a folder of one's own
    assert resolve_mode("auto", False, large) == resolve_mode("auto", False) == "lora"
    assert resolve_mode("lora", True, small) == "lora" and resolve_mode("full", False, large) == "full"
    with pytest.raises(ValueError, match="finetune"):
        resolve_mode("half", False)
