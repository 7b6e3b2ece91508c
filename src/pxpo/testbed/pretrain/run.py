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
    family: Literal["unet", "flow"] = "unet"
    """the denoiser: unet (SD 1.5's classes, DDIM; shapes-tiny, shapes-parts, shapes-scenes) or flow (SD3's classes,
    rectified flow; shapes-flow). flow needs --init: the VAE and tokenizer of that pipeline are kept, and its text
    encoder's weights start both of SD3's
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


def save_grid(pipe, prompts: list[str], out: Path, step: int) -> None:
    """A pretraining checkpoint's sample grid: ``prompts`` at 64 px, 20 steps, guidance 5, fixed noise."""
    g = torch.Generator().manual_seed(0)
    imgs = pipe(
        prompts, height=64, width=64, num_inference_steps=20, guidance_scale=5.0, generator=g, output_type="pt"
    ).images
    save(make_grid(imgs, nrow=8, scale=2), out / "samples" / f"step_{step:06d}.png")


def pretrain(cfg: PretrainConfig) -> Path:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log: dict = {
        "config": asdict(cfg),
        "command": "pxpo pretrain " + " ".join(sys.argv[2:]),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
    }
    data = pretrain_world(cfg.world)
    t0 = time.time()
    if cfg.family == "flow":
        return pretrain_flow(cfg, data, out, log, t0)
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
            vae, log["vae_final_mse"] = train_vae(
                cfg.vae_tune_steps, cfg.vae_batch, cfg.vae_lr, seed=cfg.seed, data=data, init=vae
            )
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
        save_grid(assemble_pipeline(vae, unet, text_encoder, tokenizer), prompts, out, step)

    t1 = time.time()
    unet, text_encoder, loss = train_denoiser(
        vae,
        tokenizer,
        cfg.unet_steps,
        cfg.unet_batch,
        cfg.unet_lr,
        seed=cfg.seed,
        every=cfg.sample_every,
        on_checkpoint=checkpoint,
        part_dropout=cfg.part_dropout,
        init=init,
        data=data,
    )
    log["denoiser_seconds"], log["denoiser_final_loss"] = round(time.time() - t1, 1), loss
    log["total_seconds"] = round(time.time() - t0, 1)
    save_pipeline(assemble_pipeline(vae, unet, text_encoder, tokenizer), out)
    (out / "pretrain_log.json").write_text(json.dumps(log, indent=2))
    return out


def pretrain_flow(cfg: PretrainConfig, data, out: Path, log: dict, t0: float) -> Path:
    """The SD3-architecture model: --init's VAE (fine-tuned first with --vae_tune_steps) and tokenizer, a
    new transformer and text encoders trained by rectified flow (:mod:`pxpo.testbed.pretrain.flow`)."""
    from pxpo.backends.registry import load_pipeline
    from pxpo.errors import ConfigError
    from pxpo.testbed.embedded_flow import assemble_flow_pipeline, flow_vae
    from pxpo.testbed.pretrain.flow import train_flow

    if not cfg.init:
        raise ConfigError(
            "pxpo pretrain --family=flow needs --init=PIPELINE (e.g. shapes-parts): the flow model "
            "keeps its VAE and tokenizer"
        )
    start = load_pipeline(cfg.init)
    if not knows(start.tokenizer, data):
        raise ConfigError(
            f"--init={cfg.init} does not know the {cfg.world} world's words; start from a model of "
            f"that world (shapes-parts for shapes, shapes-scenes for scenes)"
        )
    vae = start.vae
    if cfg.vae_tune_steps > 0:
        vae, log["vae_final_mse"] = train_vae(
            cfg.vae_tune_steps, cfg.vae_batch, cfg.vae_lr, seed=cfg.seed, data=data, init=vae
        )
    log["vae_seconds"] = round(time.time() - t0, 1)
    prompts = data.grid_prompts(16)

    def checkpoint(step, pipe):
        save_grid(pipe, prompts, out, step)

    t1 = time.time()
    transformer, encoders, loss = train_flow(
        flow_vae(vae),
        start.tokenizer,
        data,
        cfg.unet_steps,
        cfg.unet_batch,
        cfg.unet_lr,
        part_dropout=cfg.part_dropout,
        seed=cfg.seed,
        text_init=start.text_encoder,
        every=cfg.sample_every,
        on_checkpoint=checkpoint,
    )
    log["denoiser_seconds"], log["denoiser_final_loss"] = round(time.time() - t1, 1), loss
    log["total_seconds"] = round(time.time() - t0, 1)
    save_pipeline(assemble_flow_pipeline(vae, transformer, encoders, start.tokenizer), out)
    (out / "pretrain_log.json").write_text(json.dumps(log, indent=2))
    return out


def knows(tokenizer, data) -> bool:
    """Whether ``tokenizer`` holds every word of ``data``'s world as it would itself, and its captions' length."""
    vocab = tokenizer.get_vocab()
    return tokenizer.model_max_length >= data.max_tokens and all(w + "</w>" in vocab for w in data.vocabulary)
