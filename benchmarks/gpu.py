"""pxpo at the size of SD 1.5, SDXL, SD3.5 Medium or FLUX.1-dev on one GPU: samples/s, peak memory, MFU.

    python benchmarks/gpu.py [--batch=8] [--steps=20] [--modes=lora,full] [--repeats=3] [--json=PATH]
    python benchmarks/gpu.py --family=sdxl --batch=4     # SDXL base's architecture at 1024 px
    python benchmarks/gpu.py --save=DIR --modes=         # only write the random pipeline, for pxpo train
    python benchmarks/gpu.py --tiny [--family=sdxl]      # a small config that runs on a CPU in seconds (the test)

The pipeline is the family's architecture built from its config, written below, with random weights:
nothing is downloaded. SD 1.5: its UNet (860 M parameters; 512 px pictures, 64x64x4 latents), VAE
(factor 8) and text encoder's width and depth (CLIP ViT-L/14's text tower: 768 wide, 12 layers, 77
tokens). SDXL base 1.0: its UNet (2.57 G parameters; 1024 px, 128x128x4 latents, pooled text and time
ids as added conditioning), the same VAE, and both text encoders (CLIP ViT-L/14's and OpenCLIP
ViT-bigG/14's text towers, 1280 wide, 32 layers). The tokenizer is the embedded model's, over its
small vocabulary. ``--save=DIR`` writes the pipeline in diffusers' layout, so that ``pxpo train
--model.preset=sd15 --model.name=DIR`` can be tried on a GPU without a download.

Per fine-tuning mode (LoRA rank 4 on to_q/to_k/to_v/to_out.0, and the full UNet), with bf16
autocast (accelerate) on a GPU, it runs pxpo's own code: ``sample_trajectories`` (DDIM, eta 1,
guidance 5, CFG in one call) and ``Policy.update`` (PXPO, clipped, every timestep, one AdamW step;
``--per_forward`` timesteps per UNet call, 1 as DDPO does). After one warm-up round it times
``--repeats`` rounds and reports the medians.

Model FLOP utilisation = the UNet's FLOPs of a round / its seconds / the card's peak dense bf16
FLOP/s. The UNet's FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` over one guided
forward (sampling: ``steps`` of them per batch) and one forward + backward in the mode's trainable
setup (training: one per trained timestep); the VAE, the text encoder and the optimizer are not
counted, so the figure is a lower bound of the hardware's utilisation.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# Peak dense BF16 tensor-core FLOP/s, from NVIDIA's datasheets, whose "with sparsity" figures are
# twice these: H100 SXM5 1,979 TFLOPS sparse (H100 Tensor Core GPU datasheet), H100 NVL 1,671,
# H100 PCIe 1,513; H200 SXM 1,979 sparse (H200 Tensor Core GPU datasheet; the same chip as H100
# SXM with more memory); A100 312 dense (A100 Tensor Core GPU datasheet, SXM and PCIe alike).
PEAK_BF16_FLOPS = [  # (substring of torch.cuda.get_device_name(), peak), the first match wins
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),
    ("H200", 989.4e12),
    ("A100", 312e12),
]

# Stable Diffusion 1.5's UNet (runwayml/stable-diffusion-v1-5, unet/config.json), written out.
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, act_fn="silu",
)
SD15_VAE = dict(  # vae/config.json: 4 blocks, 3 downsamplings = factor 8
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), sample_size=512,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
SD15_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=77, projection_dim=768)
# Stable Diffusion XL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0: unet/, text_encoder/, text_encoder_2/)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32, act_fn="silu",
)
SDXL_VAE = dict(SD15_VAE, sample_size=1024, scaling_factor=0.13025)
SDXL_TEXT_2 = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                   max_position_embeddings=77, projection_dim=1280, hidden_act="gelu")
# --tiny: the same classes, small enough for a CPU test
TINY_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=64, attention_head_dim=4, norm_num_groups=8,
)
TINY_SDXL_UNET = dict(TINY_UNET, cross_attention_dim=64, attention_head_dim=(2, 4), use_linear_projection=True,
                      addition_embed_type="text_time", addition_time_embed_dim=8,
                      projection_class_embeddings_input_dim=32 + 6 * 8)
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
# Rectified flow. SD3.5 Medium (stabilityai/stable-diffusion-3.5-medium transformer/config.json): MMDiT-X,
# 24 blocks of width 1536, the first 13 with a second image attention, 2.24 G parameters as built; 512 px pictures are
# 64x64x16 latents, 1024 tokens of 2x2 patches. FLUX.1-dev (black-forest-labs/FLUX.1-dev): 19 double and
# 38 single blocks of width 3072, 11.9 G parameters, 2x2-packed 16-channel latents. Their VAE (16 channels,
# factor 8) is the one both ship. The text towers: SD3.5's two CLIPs as they are and no T5 (the pipeline
# pads with zeros: 77 + 77 text tokens instead of 77 + 256); FLUX's CLIP-L and a one-layer T5 of T5-XXL's
# width (512 tokens): the text is encoded once per prompt, the transformer's cost is what is timed.
SD35_TRANSFORMER = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24,
                        attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                        caption_projection_dim=1536, pooled_projection_dim=2048, pos_embed_max_size=384,
                        dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")
FLUX_TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                        guidance_embeds=True, axes_dims_rope=(16, 56, 56))
FLOW_VAE = dict(SD15_VAE, latent_channels=16, sample_size=1024, use_quant_conv=False, use_post_quant_conv=False)
FLOW_VAE_FACTORS = {"sd35": dict(scaling_factor=1.5305, shift_factor=0.0609),
                    "flux": dict(scaling_factor=0.3611, shift_factor=0.1159)}
T5_XXL_WIDTH = dict(d_model=4096, d_kv=64, d_ff=10240, num_heads=64, num_layers=1, feed_forward_proj="gated-gelu")
TINY_SD35 = dict(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
                 num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64,
                 pos_embed_max_size=8, dual_attention_layers=(0,), qk_norm="rms_norm")
TINY_FLUX = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
                 axes_dims_rope=(4, 4, 8))
TINY_FLOW_VAE = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 8),
                     down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                     layers_per_block=1, latent_channels=4, norm_num_groups=4, use_quant_conv=False,
                     use_post_quant_conv=False)
SIZES = {"sd15": 512, "sdxl": 1024, "sd35": 512, "flux": 512}


def peak_flops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


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
            t5 = T5Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, decoder_start_token_id=0, dropout_rate=0.0,
                          **(dict(d_model=32, d_kv=8, d_ff=64, num_heads=4, num_layers=1) if tiny else T5_XXL_WIDTH))
            t2 = T5EncoderModel(t5)
            net = diffusers.FluxTransformer2DModel(**(TINY_FLUX if tiny else FLUX_TRANSFORMER))
    if family == "sd35":
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
        pipe = diffusers.StableDiffusion3Pipeline(transformer=net, scheduler=scheduler, vae=vae, text_encoder=t1,
                                                  tokenizer=tok, text_encoder_2=t2, tokenizer_2=tok,
                                                  text_encoder_3=None, tokenizer_3=None)
    else:
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                              max_shift=1.15, base_image_seq_len=256,
                                                              max_image_seq_len=4096)
        pipe = diffusers.FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=t1, tokenizer=tok, text_encoder_2=t2,
                                      tokenizer_2=tok, transformer=net)
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
        return cls(CLIPTextConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id, **cfg))

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
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=t1, text_encoder_2=t2, tokenizer=tok, tokenizer_2=tok,
                                         unet=unet, scheduler=DDIMScheduler(**SCHEDULER_CONFIG))
    else:
        pipe = assemble_pipeline(vae, unet, t1, tok)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def unet_flops(policy, traj) -> tuple[int, int]:
    """(FLOPs of one guided UNet forward, of one forward + backward in the mode's trainable setup)
    on the shapes of ``traj`` (batch B, CFG: 2B rows)."""
    from torch.utils.flop_counter import FlopCounterMode

    from pxpo.core.trajectory import step_gaussian

    with torch.no_grad(), policy.accel.autocast(), FlopCounterMode(display=False) as fwd:
        step_gaussian(policy.backbone, traj, 0, policy.s.guidance, policy.s.eta, model=policy.model)
    with policy.accel.autocast(), FlopCounterMode(display=False) as fb:
        mean, _, _ = step_gaussian(policy.backbone, traj, 0, policy.s.guidance, policy.s.eta, model=policy.model)
        mean.float().square().mean().backward()
    policy.opt.zero_grad(set_to_none=True)
    return fwd.get_total_flops(), fb.get_total_flops()


def run_mode(pipe, mode: str, args, device: torch.device) -> dict:
    from accelerate import Accelerator

    from pxpo.training.config import ModelConfig, SampleConfig, TrainConfig
    from pxpo.backends import backbone_for
    from pxpo.core.policy import Policy
    from pxpo.core.trajectory import sample_trajectories

    accel = Accelerator(mixed_precision=args.precision, cpu=device.type == "cpu")
    train = TrainConfig(algorithm="pxpo", objective="clipped", lr=3e-4 if mode == "lora" else 1e-5,
                        batch_size=args.batch, kl_coef=0.0, timesteps_per_forward=args.per_forward)
    sample = SampleConfig(num_steps=args.steps, guidance=5.0, batch_size=args.batch)
    model = ModelConfig(finetune=mode, gradient_checkpointing=args.gradient_checkpointing)
    backbone = backbone_for(pipe)
    h, w = backbone.latent_shape(1)[-2:]
    policy = Policy(accel, backbone, mode, train, sample, model, (h, w))
    trainable = sum(p.numel() for p in policy.params)
    prompts = ["a red circle on a blue background"] * args.batch
    gen = torch.Generator().manual_seed(0)

    def round_() -> tuple[float, float]:
        sync(device)
        t0 = time.perf_counter()
        with accel.autocast():
            traj = sample_trajectories(policy.backbone, prompts, num_steps=args.steps, guidance=5.0, generator=gen)
        sync(device)
        t1 = time.perf_counter()
        adv = torch.randn(args.batch, h, w, generator=gen).to(device)
        policy.update(traj, adv, gen)
        sync(device)
        return t1 - t0, time.perf_counter() - t1, traj

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _, _, traj = round_()  # warm-up: kernels, allocator, optimizer state
    times = [round_()[:2] for _ in range(args.repeats)]
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    f_fwd, f_fb = unet_flops(policy, traj)
    t_sample = statistics.median(t[0] for t in times)
    t_train = statistics.median(t[1] for t in times)
    flops_sample, flops_train = args.steps * f_fwd, policy.n_train_t * f_fb
    name, peak = peak_flops(device)
    row = {"mode": mode, "trainable_params": trainable, "sample_s": t_sample, "train_s": t_train,
           "sample_per_s": args.batch / t_sample, "train_per_s": args.batch / t_train,
           "epoch_per_s": args.batch / (t_sample + t_train), "peak_memory_mb": peak_mb,
           "unet_forward_flops": f_fwd, "unet_forward_backward_flops": f_fb,
           "sample_tflops_per_s": flops_sample / t_sample / 1e12, "train_tflops_per_s": flops_train / t_train / 1e12,
           "device": name, "peak_flops": peak,
           "sample_mfu": flops_sample / t_sample / peak if peak else None,
           "train_mfu": flops_train / t_train / peak if peak else None}
    policy = accel = None  # free the model and optimizer before the next mode (round_ still closes over them)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a small config that runs on a CPU (the test)")
    ap.add_argument("--family", default="sd15", choices=tuple(SIZES),
                    help="the architecture: sd15, sdxl, sd35 (SD3.5 Medium), flux (FLUX.1-dev); default sd15")
    ap.add_argument("--save", default="", help="also write the random pipeline here (diffusers layout)")
    ap.add_argument("--batch", type=int, default=0, help="pictures per batch (default 8; --tiny 2)")
    ap.add_argument("--steps", type=int, default=0, help="DDIM steps (default 20; --tiny 2)")
    ap.add_argument("--modes", default="lora,full", help="comma-separated: lora, full")
    ap.add_argument("--repeats", type=int, default=0, help="timed rounds after one warm-up (default 3; --tiny 1)")
    ap.add_argument("--per_forward", type=int, default=1,
                    help="train.timesteps_per_forward: trained timesteps per UNet call (1 as DDPO; 0 = all)")
    ap.add_argument("--gradient_checkpointing", action="store_true", help="trade UNet compute for memory")
    ap.add_argument("--precision", default="", help="accelerate mixed precision: bf16 (GPU default), no (CPU default)")
    ap.add_argument("--json", default="", help="write the results here")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.batch = args.batch or (2 if args.tiny else 8)
    args.steps = args.steps or (2 if args.tiny else 20)
    args.repeats = args.repeats or (1 if args.tiny else 3)
    args.precision = args.precision or ("bf16" if device.type == "cuda" else "no")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if (not modes and not args.save) or any(m not in ("lora", "full") for m in modes):
        ap.error(f"--modes takes lora and/or full, comma-separated (got {args.modes!r}); empty only with --save")
    if not args.tiny and device.type != "cuda" and modes:
        ap.error("no GPU here: SD 1.5's size needs one (a CPU would take hours); --tiny runs a small config on the CPU")
    if device.type == "cpu":
        torch.set_num_threads(1)
    t_start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pxpo-gpu-") as tmp:
        if args.save:
            from pxpo.testbed.embedded import save_pipeline

            save_pipeline(build_pipeline(args.family, args.tiny, device, tmp), args.save)
            print(f"wrote the random {args.family} pipeline to {args.save}")
        for mode in modes:  # a fresh pipeline per mode: LoRA adapters and full training both change the UNet
            pipe = build_pipeline(args.family, args.tiny, device, tmp)
            try:
                rows.append(run_mode(pipe, mode, args, device))
            except torch.cuda.OutOfMemoryError as e:  # report it and go on with the next mode
                rows.append({"mode": mode, "error": f"out of memory: {str(e).splitlines()[0]}"})
            del pipe
            if device.type == "cuda":
                torch.cuda.empty_cache()
    size = SIZES[args.family]
    result = {"config": "tiny" if args.tiny else f"{args.family}-{size}", "family": args.family,
              "batch": args.batch, "steps": args.steps,
              "repeats": args.repeats, "per_forward": args.per_forward, "precision": args.precision,
              "gradient_checkpointing": args.gradient_checkpointing, "torch": torch.__version__,
              "wall_s": time.perf_counter() - t_start, "modes": rows}
    if not rows:
        return 0
    ok = [r for r in rows if "error" not in r]
    device_name = ok[0]["device"] if ok else peak_flops(device)[0]
    print(f"{result['config']} on {device_name}: batch {args.batch}, {args.steps} DDIM steps, CFG, "
          f"{args.precision} autocast, {args.per_forward or 'all'} timestep(s) per training call")
    print("| mode | trainable | sampling /s | training /s | epoch /s | peak MB | sampling MFU | training MFU |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['mode']} | {r['error']} |  |  |  |  |  |  |")
            continue
        mem = f"{r['peak_memory_mb']:.0f}" if r["peak_memory_mb"] is not None else "n/a (CPU)"
        mfu = [f"{r[k]:.1%}" if r[k] is not None else f"{r[k.replace('mfu', 'tflops_per_s')]:.3f} TFLOP/s"
               for k in ("sample_mfu", "train_mfu")]
        print(f"| {r['mode']} | {r['trainable_params'] / 1e6:.2f} M | {r['sample_per_s']:.2f} | {r['train_per_s']:.2f} | "
              f"{r['epoch_per_s']:.2f} | {mem} | {mfu[0]} | {mfu[1]} |")
    if ok and ok[0]["peak_flops"] is None and device.type == "cuda":
        print(f"no peak FLOP/s known for {device_name!r}: add it to PEAK_BF16_FLOPS for MFU")
    print(f"wall time {result['wall_s']:.0f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
