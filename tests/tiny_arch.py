"""SD 1.5, SD 2.1 and SDXL architectures from their configs, random weights, reduced sizes, offline.

Each keeps what makes its family differ, at a size that trains a step in about a second:
- SD 1.5: CrossAttn blocks with conv projections, one CLIP text encoder, epsilon prediction;
- SD 2.1: linear projections in the transformers, per-level head dims, v-prediction;
- SDXL: two text encoders (CLIPTextModel + CLIPTextModelWithProjection, penultimate hidden states
  concatenated), transformer depth per level, ``addition_embed_type="text_time"`` (pooled text
  embeddings and 6 time ids through ``added_cond_kwargs``), an Euler scheduler config as SDXL ships.
The VAE downsamples by 2 (32 px pictures, 16x16 latents). Both tokenizers are the embedded model's
world tokenizer (built by hand, no download).
"""

from __future__ import annotations

from pathlib import Path

import torch

SIZE = 32  # picture height and width
TEXT = 32  # text hidden size of each encoder

SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
)


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=SIZE,
    )


def tiny_text_encoder(tok, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=TEXT,
        intermediate_size=2 * TEXT,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tok.model_max_length,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        projection_dim=TEXT,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def tiny_unet(family: str):
    from diffusers import UNet2DConditionModel

    common = dict(
        sample_size=SIZE // 2,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    if family == "sd15":
        return UNet2DConditionModel(**common, cross_attention_dim=TEXT, attention_head_dim=8)
    if family == "sd21":
        return UNet2DConditionModel(
            **common, cross_attention_dim=TEXT, attention_head_dim=(2, 4), use_linear_projection=True
        )
    if family == "sdxl":
        time_dim = 8
        return UNet2DConditionModel(
            **common,
            cross_attention_dim=2 * TEXT,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            transformer_layers_per_block=(1, 2),
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=TEXT + 6 * time_dim,
        )
    raise ValueError(family)


def tiny_pipeline(family: str, tok_dir: Path, seed: int = 0):
    """A random tiny pipeline of ``family`` (sd15, sd21, sdxl), as diffusers would load it from a hub folder."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    from pxpo.testbed.tokenizer import build_tokenizer

    torch.manual_seed(seed)
    tok = build_tokenizer(tok_dir)
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae=tiny_vae(),
            text_encoder=tiny_text_encoder(tok),
            text_encoder_2=tiny_text_encoder(tok, projection=True),
            tokenizer=tok,
            tokenizer_2=tok,
            unet=tiny_unet("sdxl"),
            scheduler=EulerDiscreteScheduler(**SCHEDULER, timestep_spacing="leading"),
        )
    else:
        kind = "v_prediction" if family == "sd21" else "epsilon"
        pipe = StableDiffusionPipeline(
            vae=tiny_vae(),
            text_encoder=tiny_text_encoder(tok),
            tokenizer=tok,
            unet=tiny_unet(family),
            scheduler=DDIMScheduler(**SCHEDULER, clip_sample=False, set_alpha_to_one=False, prediction_type=kind),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe
