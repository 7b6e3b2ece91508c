"""Stage 2 of pretraining a flow model: the SD3 transformer and its text encoders, on latents of a
frozen VAE, by rectified flow (Liu et al. 2022; Esser et al. 2024).

    x_s = (1 - s) x_0 + s e,   e ~ N(0, I),   s ~ logit-normal(0, 1)   (SD3's sampling of s)
    loss = || v_theta(x_s, s, c) - (e - x_0) ||^2

Captions are dropped 10% of the time (classifier-free guidance) and in parts with ``part_dropout``, as
for the DDIM models; the transformer's EMA is what gets shipped.
"""

from __future__ import annotations

from typing import Callable

import torch

from pxpo.testbed.embedded_flow import assemble_flow_pipeline, build_text_encoders, build_transformer
from pxpo.testbed.pretrain.data import PretrainWorld
from pxpo.testbed.pretrain.denoiser import EMA, optimise


def vae_latents(vae, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Pictures [B, 3, H, W] in [-1, 1] -> SD3's latents (z - shift) * scale [B, 4, h, w]."""
    z = vae.encode(images).latent_dist.sample(gen)
    return (z - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor


def train_flow(
    vae,
    tokenizer,
    data: PretrainWorld,
    steps: int = 4000,
    batch_size: int = 32,
    lr: float = 5e-4,
    cfg_dropout: float = 0.1,
    part_dropout: float = 0.0,
    seed: int = 0,
    text_init=None,
    every: int = 0,
    on_checkpoint: Callable | None = None,
    progress: bool = True,
):
    """Train a fresh transformer and two text encoders (started from ``text_init``'s weights when given);
    returns (EMA transformer, [text encoders], last loss). ``on_checkpoint(step, pipe)`` every ``every``
    steps gets a pipeline over the EMA transformer."""
    torch.manual_seed(seed)
    transformer, encoders = build_transformer(), build_text_encoders(tokenizer, text_init)
    pipe = assemble_flow_pipeline(vae, transformer, encoders, tokenizer)  # its encode_prompt, with gradients
    ema = EMA(transformer)
    params = list(transformer.parameters()) + [p for e in encoders for p in e.parameters()]
    vae.requires_grad_(False).eval()
    gen = torch.Generator().manual_seed(seed)

    def loss_of(batch) -> torch.Tensor:
        prompts = data.captions(batch, gen, cfg_dropout, part_dropout)
        with torch.no_grad():
            x0 = vae_latents(vae, batch.tensors()[0] * 2 - 1, gen)  # [B, 4, h, w]
        noise = torch.randn(x0.shape, generator=gen)
        s = torch.sigmoid(torch.randn(batch_size, generator=gen))  # [B] logit-normal noise levels
        xs = (1 - s[:, None, None, None]) * x0 + s[:, None, None, None] * noise
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=x0.device, do_classifier_free_guidance=False
        )
        v = transformer(
            hidden_states=xs,
            timestep=s * 1000,
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
        return (v - (noise - x0)).pow(2).mean()

    checkpoint = (
        None
        if on_checkpoint is None
        else (lambda step: on_checkpoint(step, assemble_flow_pipeline(vae, ema.module, encoders, tokenizer)))
    )
    loss_avg = optimise(
        params,
        transformer,
        ema,
        loss_of,
        data.stream(batch_size, seed + 7),
        steps,
        lr,
        "flow",
        progress,
        every,
        checkpoint,
    )
    return ema.module, encoders, loss_avg
