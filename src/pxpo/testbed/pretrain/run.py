"""``pxpo pretrain``: reproduce the embedded model from scratch (VAE, then denoiser + text encoder)."""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pxpo.testbed import world
from pxpo.images import make_grid, save
from pxpo.testbed.embedded import assemble_pipeline, save_pipeline
from pxpo.testbed.tokenizer import build_tokenizer
from pxpo.testbed.pretrain.denoiser import train_denoiser
from pxpo.testbed.pretrain.vae import train_vae


@dataclass
class PretrainConfig:
    """the VAE and denoiser training runs"""

    out: str = "runs/pretrain"
    """pipeline directory to write (diffusers layout, safetensors)"""
    seed: int = 0
    """seed of the world stream, initialisation and noise"""
    vae_steps: int = 1000
    """VAE training steps"""
    vae_batch: int = 16
    """VAE batch size"""
    vae_lr: float = 1e-3
    """VAE peak learning rate"""
    unet_steps: int = 6000
    """UNet + text-encoder training steps"""
    unet_batch: int = 32
    """UNet batch size"""
    unet_lr: float = 6e-4
    """UNet + text-encoder peak learning rate"""
    init: str = ""
    """continue from this pipeline (e.g. shapes-tiny) instead of from scratch: its VAE and tokenizer are kept
    (vae_steps is ignored), its UNet and text encoder train on
    """
    part_dropout: float = 0.0
    """drop each part of a caption (shape, colour, background) with this probability, so partial captions ('a red
    circle') are learned; 0 = whole captions only
    """
    sample_every: int = 1000
    """steps between sample grids written to OUT/samples/"""
    threads: int = 2
    """torch CPU threads"""


def sample_grid_prompts(n: int = 16) -> list[str]:
    """Half held-out captions, half training captions: the grids show generalisation as it grows."""
    held, train = world.combinations("heldout"), world.combinations("train")
    picks = [held[i * len(held) // (n // 2)] for i in range(n // 2)]
    picks += [train[i * len(train) // (n // 2)] for i in range(n // 2)]
    return [world.caption(*p) for p in picks]


def pretrain(cfg: PretrainConfig) -> Path:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log: dict = {"config": asdict(cfg), "command": "pxpo pretrain " + " ".join(sys.argv[2:]), "torch": torch.__version__,
                 "machine": f"{platform.machine()} {torch.get_num_threads()} threads"}
    t0 = time.time()
    if cfg.init:
        from pxpo.backends.registry import load_pipeline

        start = load_pipeline(cfg.init)
        tokenizer, vae, init = start.tokenizer, start.vae, (start.unet, start.text_encoder)
        log["vae_seconds"], log["vae_final_mse"] = 0.0, None
    else:
        tokenizer, init = build_tokenizer(out / "tokenizer"), None
        vae, vae_mse = train_vae(cfg.vae_steps, cfg.vae_batch, cfg.vae_lr, seed=cfg.seed)
        log["vae_seconds"], log["vae_final_mse"] = round(time.time() - t0, 1), vae_mse
    with torch.no_grad():
        x = world.sample(16, seed=cfg.seed + 99, split="heldout").tensors()[0]
        rec = vae.decode(vae.encode(x * 2 - 1).latent_dist.mode()).sample.add(1).div(2)
    save(make_grid(torch.cat([x, rec]), nrow=16, scale=2), out / "samples" / "vae_reconstruction.png")
    prompts = sample_grid_prompts()

    def checkpoint(step, unet, text_encoder):
        pipe = assemble_pipeline(vae, unet, text_encoder, tokenizer)
        g = torch.Generator().manual_seed(0)
        imgs = pipe(prompts, height=64, width=64, num_inference_steps=20, guidance_scale=5.0,
                    generator=g, output_type="pt").images
        save(make_grid(imgs, nrow=8, scale=2), out / "samples" / f"step_{step:06d}.png")

    t1 = time.time()
    unet, text_encoder, loss = train_denoiser(vae, tokenizer, cfg.unet_steps, cfg.unet_batch, cfg.unet_lr,
                                              seed=cfg.seed, every=cfg.sample_every, on_checkpoint=checkpoint,
                                              part_dropout=cfg.part_dropout, init=init)
    log["denoiser_seconds"], log["denoiser_final_loss"] = round(time.time() - t1, 1), loss
    log["total_seconds"] = round(time.time() - t0, 1)
    save_pipeline(assemble_pipeline(vae, unet, text_encoder, tokenizer), out)
    (out / "pretrain_log.json").write_text(json.dumps(log, indent=2))
    return out
