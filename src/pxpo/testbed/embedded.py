"""The embedded model ``shapes-tiny``: Stable Diffusion 1.5's classes, only tiny.

Same classes as SD 1.5 (UNet2DConditionModel, AutoencoderKL, CLIPTextModel + CLIPTokenizer,
DDIMScheduler), so pxpo runs the one code path on the embedded model and on real checkpoints.

Sizes, and why:
- Images are 64x64 RGB. The VAE downsamples by 4 (two downsampling stages), giving a 16x16x4 latent.
  SD uses 8 (64x64 latents at 512 px); at 64 px a factor of 8 would leave an 8x8 grid, too coarse
  for per-pixel credit (PXPO rewards each latent pixel), while 4 keeps 256 latent pixels per image
  and costs little on a CPU.
- The UNet works at 16, 8 and 4 latent pixels with (self- and cross-) attention at 8 and 4 only:
  attention over the 256 tokens of the 16x16 level cost 3x the time on a CPU, and the caption's
  content (two colours and a shape) is global, so the coarse levels suffice to steer it.
- The text encoder is a 2-layer CLIP transformer over the world's ~90-token vocabulary.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SIZE = 64
VAE_FACTOR = 4
LATENT_CHANNELS = 4
TEXT_DIM = 64

# SD 1.5's scheduler settings: set_alpha_to_one=False and steps_offset=1 keep every DDIM step
# stochastic (eta > 0), so every step has a log-density.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,  # 3 blocks = 2 downsamplings = factor 4
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
    )


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // VAE_FACTOR,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        layers_per_block=1,
        block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def text_config(tokenizer):
    """The embedded models' CLIP text tower over ``tokenizer`` (the DDIM model's one encoder, and the flow
    model's two with projection)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=4 * TEXT_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=TEXT_DIM,
    )


def build_text_encoder(tokenizer):
    from transformers import CLIPTextModel

    return CLIPTextModel(text_config(tokenizer))


def build_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)


def assemble_pipeline(vae, unet, text_encoder, tokenizer):
    """A ``StableDiffusionPipeline`` over the given parts (no safety checker: tiny world images)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_pipeline(pipe, directory: str | Path) -> Path:
    """Save in diffusers layout with safetensors weights."""
    directory = Path(directory)
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory
