"""pxpo at the size of SD 1.5, SDXL, SD3.5 Medium or FLUX.1-dev on one GPU: samples/s, peak memory, MFU.

    python benchmarks/gpu.py [--batch=8] [--steps=20] [--modes=lora,full] [--repeats=3] [--json=PATH]
    python benchmarks/gpu.py --family=sdxl --batch=4     # SDXL base's architecture at 1024 px
    python benchmarks/gpu.py --save=DIR --modes=         # only write the random pipeline, for pxpo train
    python benchmarks/gpu.py --tiny [--family=sdxl]      # a small config that runs on a CPU in seconds (the test)

The pipeline is the family's architecture built from its config (:mod:`pxpo.bench.architectures`), with random weights:
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

from pxpo.bench.architectures import SIZES, build_pipeline

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


def peak_flops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


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
    train = TrainConfig(
        algorithm="pxpo",
        objective="clipped",
        lr=3e-4 if mode == "lora" else 1e-5,
        batch_size=args.batch,
        kl_coef=0.0,
        timesteps_per_forward=args.per_forward,
    )
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
    row = {
        "mode": mode,
        "trainable_params": trainable,
        "sample_s": t_sample,
        "train_s": t_train,
        "sample_per_s": args.batch / t_sample,
        "train_per_s": args.batch / t_train,
        "epoch_per_s": args.batch / (t_sample + t_train),
        "peak_memory_mb": peak_mb,
        "unet_forward_flops": f_fwd,
        "unet_forward_backward_flops": f_fb,
        "sample_tflops_per_s": flops_sample / t_sample / 1e12,
        "train_tflops_per_s": flops_train / t_train / 1e12,
        "device": name,
        "peak_flops": peak,
        "sample_mfu": flops_sample / t_sample / peak if peak else None,
        "train_mfu": flops_train / t_train / peak if peak else None,
    }
    policy = accel = None  # free the model and optimizer before the next mode (round_ still closes over them)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a small config that runs on a CPU (the test)")
    ap.add_argument(
        "--family",
        default="sd15",
        choices=tuple(SIZES),
        help="the architecture: sd15, sdxl, sd35 (SD3.5 Medium), flux (FLUX.1-dev); default sd15",
    )
    ap.add_argument("--save", default="", help="also write the random pipeline here (diffusers layout)")
    ap.add_argument("--batch", type=int, default=0, help="pictures per batch (default 8; --tiny 2)")
    ap.add_argument("--steps", type=int, default=0, help="DDIM steps (default 20; --tiny 2)")
    ap.add_argument("--modes", default="lora,full", help="comma-separated: lora, full")
    ap.add_argument("--repeats", type=int, default=0, help="timed rounds after one warm-up (default 3; --tiny 1)")
    ap.add_argument(
        "--per_forward",
        type=int,
        default=1,
        help="train.timesteps_per_forward: trained timesteps per UNet call (1 as DDPO; 0 = all)",
    )
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
    result = {
        "config": "tiny" if args.tiny else f"{args.family}-{size}",
        "family": args.family,
        "batch": args.batch,
        "steps": args.steps,
        "repeats": args.repeats,
        "per_forward": args.per_forward,
        "precision": args.precision,
        "gradient_checkpointing": args.gradient_checkpointing,
        "torch": torch.__version__,
        "wall_s": time.perf_counter() - t_start,
        "modes": rows,
    }
    if not rows:
        return 0
    ok = [r for r in rows if "error" not in r]
    device_name = ok[0]["device"] if ok else peak_flops(device)[0]
    print(
        f"{result['config']} on {device_name}: batch {args.batch}, {args.steps} DDIM steps, CFG, "
        f"{args.precision} autocast, {args.per_forward or 'all'} timestep(s) per training call"
    )
    print("| mode | trainable | sampling /s | training /s | epoch /s | peak MB | sampling MFU | training MFU |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['mode']} | {r['error']} |  |  |  |  |  |  |")
            continue
        mem = f"{r['peak_memory_mb']:.0f}" if r["peak_memory_mb"] is not None else "n/a (CPU)"
        mfu = [
            f"{r[k]:.1%}" if r[k] is not None else f"{r[k.replace('mfu', 'tflops_per_s')]:.3f} TFLOP/s"
            for k in ("sample_mfu", "train_mfu")
        ]
        print(
            f"| {r['mode']} | {r['trainable_params'] / 1e6:.2f} M | {r['sample_per_s']:.2f} | {r['train_per_s']:.2f} | "
            f"{r['epoch_per_s']:.2f} | {mem} | {mfu[0]} | {mfu[1]} |"
        )
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
