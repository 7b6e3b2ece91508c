"""The shipped embedded model loads offline through plain diffusers and pxpo's registry, and samples."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline

from pxpo.backends.registry import load_pipeline, resolve_model
from pxpo.testbed.plugin import MODELS as NAMED


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


@pytest.mark.slow
def test_samples_have_the_right_shape_and_range():
    pipe = load_pipeline("shapes-tiny")
    images = pipe(
        ["a red circle on a blue background", "a white cross on a black background"],
        num_inference_steps=4,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    assert images.shape == (2, 3, 64, 64)
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0.05


def test_unknown_model_names_say_what_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_pipeline(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="hub id"):
        load_pipeline("no-such-model")


def test_models_pretrain_wrote_count_as_embedded_and_train_every_weight(tmp_path, random_pipe_dir):
    import shutil

    from pxpo.backends.finetune import resolve_mode
    from pxpo.backends.registry import is_embedded

    own = tmp_path / "own"
    shutil.copytree(NAMED["shapes-tiny"], own)  # what `pxpo pretrain --out=own` leaves: a pipeline and its log
    assert is_embedded(str(own)) and resolve_mode("auto", is_embedded(str(own))) == "full"
    (own / "pretrain_log.json").unlink()
    assert not is_embedded(str(own))
    assert not is_embedded(str(random_pipe_dir)) and resolve_mode("auto", False) == "lora"  # an SD directory


# each embedded flow model, and the task flags of its world (the scenes world's own captions and reward)
FLOW_MODELS = {
    "shapes-flow": ("shapes", []),
    "shapes-scenes-flow": (
        "scenes",
        ["--prompts.name=scenes", "--reward.name=scene-parts", "--reward.params={parts: [[sky, blue]]}"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FLOW_MODELS))
def test_embedded_flow_models_are_small_sd3_pipelines_that_pxpo_trains_on_a_cpu(tmp_path, name):
    """The embedded flow models: SD3's classes (a transformer, two CLIP encoders, no T5, the flow
    scheduler), at most 25 MB, their pretraining command and world beside them; one tiny epoch of
    pxpo train runs on each, with its world's captions and reward."""
    from diffusers import StableDiffusion3Pipeline

    from pxpo.cli import main
    from pxpo.backends.registry import is_embedded, world_of

    world, task = FLOW_MODELS[name]
    pipe = StableDiffusion3Pipeline.from_pretrained(
        resolve_model(name), local_files_only=True, text_encoder_3=None, tokenizer_3=None
    )
    assert type(pipe.transformer).__name__ == "SD3Transformer2DModel"
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert pipe.vae_scale_factor == 4 and is_embedded(name) and world_of(name).name == world
    assert sum(f.stat().st_size for f in NAMED[name].rglob("*.safetensors")) <= 25 * 2**20
    log = json.loads((NAMED[name] / "pretrain_log.json").read_text())
    assert log["config"]["family"] == "flow" and log["command"].startswith("pxpo pretrain --family=flow")
    threads = torch.get_num_threads()
    try:
        assert (
            main(
                [
                    "train",
                    f"--model.name={name}",
                    *task,
                    "--epochs=1",
                    "--sample.batch_size=4",
                    "--train.batch_size=4",
                    "--sample.num_steps=3",
                    "--eval_samples=4",
                    "--threads=1",
                    f"--out_dir={tmp_path}",
                    "--run_name=flow",
                    "--tensorboard=false",
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((tmp_path / "flow" / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["finetune"] == "full" and summary["skipped_steps"] == 0
    assert (tmp_path / "flow" / "weights" / "transformer").is_dir()
