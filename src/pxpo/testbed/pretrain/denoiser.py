"""Stage 2 of pretraining: the UNet and the text encoder, on latents of the frozen VAE.

Standard latent-diffusion training: epsilon prediction under SD's noise schedule, captions dropped
10% of the time (the empty prompt) so classifier-free guidance works (and, with ``part_dropout``,
parts of captions, so partial captions such as "a red circle" mean something), min-SNR-5 loss weighting
(Hang et al. 2023) to converge faster, and an exponential moving average of the UNet's weights,
which is what gets shipped.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from tqdm.auto import tqdm

from pxpo.testbed.pretrain.schedule import warmup_cosine

from pxpo.testbed.pretrain.data import PretrainWorld, pretrain_world
from pxpo.testbed.embedded import build_scheduler, build_text_encoder, build_unet


def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """Prompt embeddings [B, L, D] exactly as StableDiffusionPipeline computes them."""
    ids = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


class EMA:
    """Exponential moving average of a module's parameters, with the usual warm-up."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.999):
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay, self.step = decay, 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.step += 1
        d = min(self.decay, (1 + self.step) / (10 + self.step))
        for e, p in zip(self.module.parameters(), module.parameters()):
            e.lerp_(p, 1 - d)


def optimise(
    params: list,
    model: torch.nn.Module,
    ema: EMA,
    loss_of: Callable,
    stream,
    steps: int,
    lr: float,
    desc: str,
    progress: bool = True,
    every: int = 0,
    checkpoint: Callable | None = None,
) -> float:
    """The pretraining loop both stages share: AdamW (weight decay 1e-2) under a warm-up-cosine schedule,
    ``loss_of(batch)`` on each of ``steps`` batches of ``stream``, gradients clipped to norm 1, ``ema``
    following ``model``; ``checkpoint(step)`` every ``every`` steps and at the end. Returns the loss's
    moving average."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    sched = warmup_cosine(opt, steps, warmup=0.03)
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress)
    loss_avg = None
    for step in bar:
        loss = loss_of(next(stream))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.update(model)
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        bar.set_postfix(loss=f"{loss_avg:.4f}")
        if every and checkpoint is not None and (step % every == 0 or step == steps):
            checkpoint(step)
    return loss_avg


def drop_parts(batch, gen: torch.Generator, cfg_dropout: float, part_dropout: float) -> list[str]:
    """The shapes world's training captions of ``batch`` (see :mod:`pxpo.testbed.pretrain.data`)."""
    return pretrain_world("shapes").captions(batch, gen, cfg_dropout, part_dropout)


def train_denoiser(
    vae,
    tokenizer,
    steps: int = 8000,
    batch_size: int = 32,
    lr: float = 6e-4,
    cfg_dropout: float = 0.1,
    snr_gamma: float = 5.0,
    seed: int = 0,
    every: int = 0,
    on_checkpoint: Callable | None = None,
    progress: bool = True,
    part_dropout: float = 0.0,
    init: tuple | None = None,
    data: PretrainWorld | None = None,
):
    """Train UNet + text encoder; returns (EMA UNet, text encoder, last loss).

    ``on_checkpoint(step, unet, text_encoder)`` is called every ``every`` steps (sample grids).
    ``init``: (UNet, text encoder) to continue from instead of fresh ones (the EMA then starts at its
    full decay); ``part_dropout``: parts of captions left out (``data.captions``); ``data``: the world
    learnt from (the shapes world by default).
    """
    data = data or pretrain_world("shapes")
    torch.manual_seed(seed)
    if init is None:
        unet, text_encoder = build_unet(), build_text_encoder(tokenizer)
    else:
        unet, text_encoder = (m.train().requires_grad_(True) for m in init)
    scheduler = build_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod  # [T]
    snr = alphas_cumprod / (1 - alphas_cumprod)
    ema = EMA(unet)
    if init is not None:
        ema.step = 10_000  # trained weights: average at the full decay from the start
    # The text encoder is small and trained to the end without EMA: its EMA would lag the UNet's.
    params = list(unet.parameters()) + list(text_encoder.parameters())
    vae.requires_grad_(False).eval()
    gen = torch.Generator().manual_seed(seed)

    def loss_of(batch) -> torch.Tensor:
        images = batch.tensors()[0] * 2 - 1
        prompts = data.captions(batch, gen, cfg_dropout, part_dropout)
        with torch.no_grad():
            latents = vae.encode(images).latent_dist.sample(gen) * vae.config.scaling_factor  # [B,4,16,16]
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        noisy = scheduler.add_noise(latents, noise, t)
        pred = unet(noisy, t, encode_prompts(tokenizer, text_encoder, prompts)).sample
        weight = torch.clamp(snr[t], max=snr_gamma) / snr[t]  # min-SNR weighting for epsilon targets
        return (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()

    checkpoint = None if on_checkpoint is None else (lambda step: on_checkpoint(step, ema.module, text_encoder))
    loss_avg = optimise(
        params,
        unet,
        ema,
        loss_of,
        data.stream(batch_size, seed + 7),
        steps,
        lr,
        "denoiser",
        progress,
        every,
        checkpoint,
    )
    return ema.module, text_encoder, loss_avg
