"""The architectures of SD 1.5, SDXL base, SD3.5 Medium and FLUX.1-dev written out from their
published configs, and pipelines built from them with random weights (nothing downloaded), for the
GPU benchmark (``benchmarks/gpu.py``); each also has a tiny config of the same classes that runs on a
CPU in seconds. The tokenizer is the embedded model's, over its small vocabulary."""

from __future__ import annotations

import torch

# Stable Diffusion 1.5's UNet (runwayml/stable-diffusion-v1-5, unet/config.json), written out.
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    act_fn="silu",
)
SD15_VAE = dict(  # vae/config.json: 4 blocks, 3 downsamplings = factor 8
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512),
    sample_size=512,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
SD15_TEXT = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    projection_dim=768,
)
# Stable Diffusion XL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0: unet/, text_encoder/, text_encoder_2/)
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
    act_fn="silu",
)
SDXL_VAE = dict(SD15_VAE, sample_size=1024, scaling_factor=0.13025)
SDXL_TEXT_2 = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    projection_dim=1280,
    hidden_act="gelu",
)
# --tiny: the same classes, small enough for a CPU test
TINY_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=64,
    attention_head_dim=4,
    norm_num_groups=8,
)
TINY_SDXL_UNET = dict(
    TINY_UNET,
    cross_attention_dim=64,
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=32 + 6 * 8,
)
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
# Rectified flow. SD3.5 Medium (stabilityai/stable-diffusion-3.5-medium transformer/config.json): MMDiT-X,
# 24 blocks of width 1536, the first 13 with a second image attention, 2.24 G parameters as built; 512 px pictures are
# 64x64x16 latents, 1024 tokens of 2x2 patches. FLUX.1-dev (black-forest-labs/FLUX.1-dev): 19 double and
# 38 single blocks of width 3072, 11.9 G parameters, 2x2-packed 16-channel latents. Their VAE (16 channels,
# factor 8) is the one both ship. The text towers: SD3.5's two CLIPs as they are and no T5 (the pipeline
# pads with zeros: 77 + 77 text tokens instead of 77 + 256); FLUX's CLIP-L and a one-layer T5 of T5-XXL's
# width (512 tokens): the text is encoded once per prompt, the transformer's cost is what is timed.
SD35_TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    pos_embed_max_size=384,
    dual_attention_layers=tuple(range(13)),
    qk_norm="rms_norm",
)
FLUX_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
FLOW_VAE = dict(SD15_VAE, latent_channels=16, sample_size=1024, use_quant_conv=False, use_post_quant_conv=False)
FLOW_VAE_FACTORS = {
    "sd35": dict(scaling_factor=1.5305, shift_factor=0.0609),
    "flux": dict(scaling_factor=0.3611, shift_factor=0.1159),
}
T5_XXL_WIDTH = dict(d_model=4096, d_kv=64, d_ff=10240, num_heads=64, num_layers=1, feed_forward_proj="gated-gelu")
TINY_SD35 = dict(
    sample_size=8,
    patch_size=2,
    in_channels=4,
    out_channels=4,
    num_layers=2,
    attention_head_dim=8,
    num_attention_heads=4,
    joint_attention_dim=64,
    caption_projection_dim=32,
    pooled_projection_dim=64,
    pos_embed_max_size=8,
    dual_attention_layers=(0,),
    qk_norm="rms_norm",
)
TINY_FLUX = dict(
    patch_size=1,
    in_channels=16,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    guidance_embeds=True,
    axes_dims_rope=(4, 4, 8),
)
TINY_FLOW_VAE = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(8, 8),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
SIZES = {"sd15": 512, "sdxl": 1024, "sd35": 512, "flux": 512}


def build_flow_pipeline(family: str, tiny: bool, device: torch.device, tok, text):
    """SD3.5 Medium's or FLUX.1-dev's architecture (or a tiny one) with random weights, on ``device``."""
    import diffusers
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    small = dict(TINY_TEXT, max_position_embeddings=tok.model_max_length)
    with torch.device(device):
        vae = diffusers.AutoencoderKL(**(TINY_FLOW_VAE if tiny else FLOW_VAE), **FLOW_VAE_FACTORS[family])
        if family == "sd35":
            t1 = text(CLIPTextModelWithProjection, **(small if tiny else SD15_TEXT))
            t2 = text(CLIPTextModelWithProjection, **(small if tiny else SDXL_TEXT_2))
            net = diffusers.SD3Transformer2DModel(**(TINY_SD35 if tiny else SD35_TRANSFORMER))
        else:
            t1 = text(CLIPTextModel, **(small if tiny else SD15_TEXT))
            t5 = T5Config(
                vocab_size=len(tok),
                pad_token_id=tok.pad_token_id,
                decoder_start_token_id=0,
                dropout_rate=0.0,
                **(dict(d_model=32, d_kv=8, d_ff=64, num_heads=4, num_layers=1) if tiny else T5_XXL_WIDTH),
            )
            t2 = T5EncoderModel(t5)
            net = diffusers.FluxTransformer2DModel(**(TINY_FLUX if tiny else FLUX_TRANSFORMER))
    if family == "sd35":
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
        pipe = diffusers.StableDiffusion3Pipeline(
            transformer=net,
            scheduler=scheduler,
            vae=vae,
            text_encoder=t1,
            tokenizer=tok,
            text_encoder_2=t2,
            tokenizer_2=tok,
            text_encoder_3=None,
            tokenizer_3=None,
        )
    else:
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        )
        pipe = diffusers.FluxPipeline(
            scheduler=scheduler,
            vae=vae,
            text_encoder=t1,
            tokenizer=tok,
            text_encoder_2=t2,
            tokenizer_2=tok,
            transformer=net,
        )
    return pipe


def build_pipeline(family: str, tiny: bool, device: torch.device, tmp: str):
    """The family's architecture (sd15, sdxl, sd35 or flux; or its tiny test config) with random weights,
    on ``device``."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from pxpo.testbed.embedded import SCHEDULER_CONFIG, assemble_pipeline, build_text_encoder, build_vae
    from pxpo.testbed.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer(tmp)
    if not tiny:
        tok.model_max_length = SD15_TEXT["max_position_embeddings"]

    def text(cls, **cfg):
        return cls(
            CLIPTextConfig(
                vocab_size=len(tok),
                bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
                **cfg,
            )
        )

    if family in ("sd35", "flux"):
        pipe = build_flow_pipeline(family, tiny, device, tok, text).to(device)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    with torch.device(device):  # random init on the device: seconds instead of a minute on a CPU
        if family == "sdxl":
            vae = build_vae() if tiny else AutoencoderKL(**SDXL_VAE)
            small = dict(TINY_TEXT, max_position_embeddings=tok.model_max_length)
            t1 = text(CLIPTextModel, **(small if tiny else SD15_TEXT))
            t2 = text(CLIPTextModelWithProjection, **(small if tiny else SDXL_TEXT_2))
            unet = UNet2DConditionModel(**(TINY_SDXL_UNET if tiny else SDXL_UNET))
        else:
            vae = build_vae() if tiny else AutoencoderKL(**SD15_VAE)
            t1 = build_text_encoder(tok) if tiny else text(CLIPTextModel, **SD15_TEXT)
            unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD15_UNET))
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=t1,
            text_encoder_2=t2,
            tokenizer=tok,
            tokenizer_2=tok,
            unet=unet,
            scheduler=DDIMScheduler(**SCHEDULER_CONFIG),
        )
    else:
        pipe = assemble_pipeline(vae, unet, t1, tok)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
