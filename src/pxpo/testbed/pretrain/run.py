"""``pxpo pretrain``: reproduce an embedded model (VAE, then denoiser + text encoder) on a world by name."""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from pxpo.images import make_grid, save
from pxpo.testbed.embedded import assemble_pipeline, build_text_encoder, save_pipeline
from pxpo.testbed.tokenizer import build_tokenizer
from pxpo.testbed.pretrain.data import pretrain_world
from pxpo.testbed.pretrain.denoiser import train_denoiser
from pxpo.testbed.pretrain.vae import train_vae


@dataclass
class PretrainConfig:
    """the VAE and denoiser training runs"""

    out: str = "runs/pretrain"
    """pipeline directory to write (diffusers layout, safetensors)"""
    world: Literal["shapes", "scenes"] = "shapes"
    """the world learnt from: shapes (one object on a background; shapes-tiny, shapes-parts) or scenes (a sky, a
    ground and 1-3 objects; shapes-scenes)
    """
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
    """continue from this pipeline (e.g. shapes-tiny) instead of from scratch: its VAE is kept (vae_steps is
    ignored) and its UNet trains on; so do its tokenizer and text encoder when they hold the world's words, else a
    new tokenizer and text encoder start
    """
    vae_tune_steps: int = 0
    """with --init: fine-tune its VAE on the world for this many steps first (at vae_lr, batch vae_batch); 0 keeps
    it as it is
    """
    part_dropout: float = 0.0
    """drop each part of a caption (the shapes world: shape, colour, background; scenes: each object, its
    attributes, the sky, the ground) with this probability, so partial captions are learned; 0 = whole captions
    """
    sample_every: int = 1000
    """steps between sample grids written to OUT/samples/"""
    threads: int = 2
    """torch CPU threads"""


def pretrain(cfg: PretrainConfig) -> Path:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log: dict = {"config": asdict(cfg), "command": "pxpo pretrain " + " ".join(sys.argv[2:]), "torch": torch.__version__,
                 "machine": f"{platform.machine()} {torch.get_num_threads()} threads"}
    data = pretrain_world(cfg.world)
    t0 = time.time()
    if cfg.init:
        from pxpo.backends.registry import load_pipeline

        start = load_pipeline(cfg.init)
        tokenizer, vae, init = start.tokenizer, start.vae, (start.unet, start.text_encoder)
        if not knows(tokenizer, data):  # another world's words: the UNet carries on under a new text encoder
            tokenizer = build_tokenizer(out / "tokenizer", data.vocabulary, data.max_tokens)
            init = (start.unet, build_text_encoder(tokenizer))
            log["new_text_encoder"] = True
        log["vae_seconds"], log["vae_final_mse"] = 0.0, None
        if cfg.vae_tune_steps > 0:
            vae, log["vae_final_mse"] = train_vae(cfg.vae_tune_steps, cfg.vae_batch, cfg.vae_lr, seed=cfg.seed,
                                                  data=data, init=vae)
            log["vae_seconds"] = round(time.time() - t0, 1)
    else:
        tokenizer, init = build_tokenizer(out / "tokenizer", data.vocabulary, data.max_tokens), None
        vae, vae_mse = train_vae(cfg.vae_steps, cfg.vae_batch, cfg.vae_lr, seed=cfg.seed, data=data)
        log["vae_seconds"], log["vae_final_mse"] = round(time.time() - t0, 1), vae_mse
    with torch.no_grad():
        x = data.sample(16, cfg.seed + 99, "heldout").tensors()[0]
        rec = vae.decode(vae.encode(x * 2 - 1).latent_dist.mode()).sample.add(1).div(2)
    save(make_grid(torch.cat([x, rec]), nrow=16, scale=2), out / "samples" / "vae_reconstruction.png")
    prompts = data.grid_prompts(16)

    def checkpoint(step, unet, text_encoder):
        pipe = assemble_pipeline(vae, unet, text_encoder, tokenizer)
        g = torch.Generator().manual_seed(0)
        imgs = pipe(prompts, height=64, width=64, num_inference_steps=20, guidance_scale=5.0,
                    generator=g, output_type="pt").images
        save(make_grid(imgs, nrow=8, scale=2), out / "samples" / f"step_{step:06d}.png")

    t1 = time.time()
    unet, text_encoder, loss = train_denoiser(vae, tokenizer, cfg.unet_steps, cfg.unet_batch, cfg.unet_lr,
                                              seed=cfg.seed, every=cfg.sample_every, on_checkpoint=checkpoint,
                                              part_dropout=cfg.part_dropout, init=init, data=data)
    log["denoiser_seconds"], log["denoiser_final_loss"] = round(time.time() - t1, 1), loss
    log["total_seconds"] = round(time.time() - t0, 1)
    save_pipeline(assemble_pipeline(vae, unet, text_encoder, tokenizer), out)
    (out / "pretrain_log.json").write_text(json.dumps(log, indent=2))
    return out


def knows(tokenizer, data) -> bool:
    """Whether ``tokenizer`` holds every word of ``data``'s world as it would itself, and its captions' length."""
    vocab = tokenizer.get_vocab()
    return tokenizer.model_max_length >= data.max_tokens and all(w + "</w>" in vocab for w in data.vocabulary)
