"""Stage 1 of pretraining: the AutoencoderKL on shapes-world images."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from pxpo.testbed.pretrain.schedule import warmup_cosine

from pxpo.testbed.pretrain.data import PretrainWorld, pretrain_world
from pxpo.testbed.embedded import build_vae


def train_vae(
    steps: int = 1500,
    batch_size: int = 16,
    lr: float = 1e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    progress: bool = True,
    data: PretrainWorld | None = None,
    init=None,
):
    """Train the VAE to reconstruct world images in [-1, 1] (MSE + a small KL as in SD).

    ``init``: a VAE to fine-tune instead of a fresh one (another world's: its latent space stays close,
    so a denoiser trained on it carries on). Returns the VAE with ``config.scaling_factor`` set to 1 / std of its latents, so that scaled
    latents have unit variance as the diffusion model expects.
    """
    data = data or pretrain_world("shapes")
    torch.manual_seed(seed)
    vae = build_vae() if init is None else init.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = warmup_cosine(opt, steps, warmup=0.05)
    stream = data.stream(batch_size, seed)
    bar = tqdm(range(steps), desc="vae", disable=not progress)
    for _ in bar:
        x = next(stream).tensors()[0] * 2 - 1  # [B, 3, 64, 64] in [-1, 1]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        mse = (rec - x).pow(2).mean()
        kl = post.kl().mean() / x[0].numel()
        loss = mse + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(mse=f"{mse.item():.5f}")
    vae.eval()
    with torch.no_grad():
        x = data.sample(1024, seed + 1).tensors()[0] * 2 - 1
        z = torch.cat([vae.encode(c).latent_dist.sample() for c in x.split(128)])
        vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return vae, float(mse)
