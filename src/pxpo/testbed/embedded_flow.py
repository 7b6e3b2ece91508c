"""The embedded flow-matching model ``shapes-flow``: Stable Diffusion 3's classes, only tiny.

Same classes as SD3 / SD3.5 (``SD3Transformer2DModel``, two ``CLIPTextModelWithProjection`` encoders,
no T5, ``AutoencoderKL``, ``FlowMatchEulerDiscreteScheduler``), so pxpo runs the one flow code path on
the embedded model and on real SD3.5 checkpoints.

Sizes, and why:
- The VAE is shapes-parts' (64 px pictures, a 16x16x4 latent), with SD3's shift factor set to 0: the
  latent grid, and so the per-pixel credit, is the one the DDIM models have.
- The transformer patchifies 2x2 latent pixels into 64 image tokens (patch 1 would cost 4x on a CPU),
  4 joint blocks of width 128. Its output is unpatchified back to 16x16x4, so per-pixel credit still
  reaches every latent pixel.
- Two 2-layer CLIP encoders of width 64 (SD3 concatenates them: a 128-wide sequence, and a 128-wide
  pooled vector); SD3 pads the missing T5 with zeros.
- The scheduler's shift is 1 (SD3 uses 3 at 1024 px; a 16x16 latent needs no shift toward noise).
"""

from __future__ import annotations

from pxpo.testbed.embedded import TEXT_DIM, text_config  # the DDIM model's text tower, twice

WIDTH = 128
LAYERS = 4
HEADS = 4
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=1.0)


def build_transformer():
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=LAYERS,
        attention_head_dim=WIDTH // HEADS,
        num_attention_heads=HEADS,
        joint_attention_dim=2 * TEXT_DIM,
        caption_projection_dim=WIDTH,
        pooled_projection_dim=2 * TEXT_DIM,
        pos_embed_max_size=16,
    )


def build_text_encoders(tokenizer, init=None):
    """Two CLIP encoders with projection (SD3's ``text_encoder`` and ``text_encoder_2``); ``init``: a
    ``CLIPTextModel`` whose weights start both (the DDIM model's, so the words start known)."""
    from transformers import CLIPTextModelWithProjection

    config = text_config(tokenizer)
    encoders = [CLIPTextModelWithProjection(config) for _ in range(2)]
    if init is not None and init.config.hidden_size == TEXT_DIM and init.config.vocab_size == len(tokenizer):
        state = getattr(init, "text_model", init).state_dict()  # transformers 5 flattens CLIPTextModel
        for e in encoders:
            getattr(e, "text_model", e).load_state_dict(state, strict=False)
    return encoders


def build_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)


def flow_vae(vae):
    """A DDIM model's VAE for the SD3 pipeline, which adds ``shift_factor`` when it decodes: 0 here."""
    if vae.config.get("shift_factor", None) is None:
        vae.register_to_config(shift_factor=0.0)
    return vae


def assemble_flow_pipeline(vae, transformer, text_encoders, tokenizer):
    """A ``StableDiffusion3Pipeline`` over the given parts (no T5)."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=build_scheduler(),
        vae=flow_vae(vae),
        text_encoder=text_encoders[0],
        tokenizer=tokenizer,
        text_encoder_2=text_encoders[1],
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
