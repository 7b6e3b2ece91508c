"""A random tiny ``StableDiffusion3Pipeline`` (diffusers' own test sizes), offline: two CLIP text
encoders with projection over the embedded model's world tokenizer, no T5 (``text_encoder_3=None``),
a one-layer SD3 transformer, a one-level VAE with SD3's shift factor, the flow-matching scheduler."""

from __future__ import annotations

from pathlib import Path

import torch

from tiny_arch import TEXT, tiny_text_encoder

from pxpo.bench.architectures import TINY_FLOW_VAE


def tiny_sd3(tok_dir: Path, seed: int = 0):
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from pxpo.testbed.tokenizer import build_tokenizer

    torch.manual_seed(seed)
    tok = build_tokenizer(tok_dir)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=TEXT,
        pooled_projection_dim=2 * TEXT,
        out_channels=4,
    )
    vae = AutoencoderKL(**TINY_FLOW_VAE, shift_factor=0.0609, scaling_factor=1.5035)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=tiny_text_encoder(tok, projection=True),
        tokenizer=tok,
        text_encoder_2=tiny_text_encoder(tok, projection=True),
        tokenizer_2=tok,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_flux(tok_dir: Path, seed: int = 0, guidance_embeds: bool = True):
    """A random tiny ``FluxPipeline`` (FLUX.1-dev's layout): a CLIP encoder for the pooled embedding, a
    small T5 encoder for the sequence, a FLUX transformer over 2x2-packed latent tokens (in_channels 4x
    the VAE's latent channels; the rope axes sum to the head dimension)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from pxpo.testbed.tokenizer import build_tokenizer

    torch.manual_seed(seed)
    tok = build_tokenizer(tok_dir)
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=TEXT,
            intermediate_size=2 * TEXT,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=tok.model_max_length,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(tok),
            d_model=TEXT,
            d_kv=8,
            d_ff=2 * TEXT,
            num_layers=1,
            num_heads=4,
            dropout_rate=0.0,
            pad_token_id=tok.pad_token_id,
            decoder_start_token_id=0,
        )
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT,
        pooled_projection_dim=TEXT,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=[4, 4, 8],
    )
    vae = AutoencoderKL(**TINY_FLOW_VAE, shift_factor=0.0609, scaling_factor=1.5035)
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=tok,
        text_encoder_2=t5,
        tokenizer_2=tok,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
