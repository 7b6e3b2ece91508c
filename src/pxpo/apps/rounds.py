"""A refinement round: a person's marks on pictures turned into per-pixel rewards, and PXPO epochs
on variations of those pictures. ``pxpo refine`` (the command line) and ``pxpo studio`` (the web
page) both run :func:`train_round`, which runs the core's epoch (:func:`pxpo.core.epoch.run_epoch`),
the same collect -> rewards -> advantages -> update that ``pxpo train`` runs.

A variation x of a marked picture I is scored by

    r_ij = s_ij * (1 - dE(x_ij, I_ij) / dE_max)                                    (CIELAB)

liked pixels (s > 0) earn for staying as they are, disliked ones (s < 0) for becoming different,
unmarked pixels are neutral. Variations share the picture's x_T (so its layout) with fresh step
noise: pixel (i, j) means the same place in all of them, and PXPO's per-pixel baseline compares like
with like.

Strokes files (the image's height and width):
- PNG with alpha, painted on a transparent layer: green-ish paint (G > R) = liked (+), red-ish
  paint (R > G) = disliked (-), strength = alpha / 255; transparent = no opinion;
- PNG without alpha (greyscale or RGB, read as grey): 128 = no opinion, 255 = +1, 0 = -1;
- ``.npy``: a float array [H, W] in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pxpo.rewards.base import RewardResult
from pxpo.errors import ConfigError, MissingFile, UserError


@dataclass
class RoundOptions:
    """the options of a session's rounds, shared by ``pxpo refine`` and ``pxpo studio``"""

    model: str = "shapes-tiny"
    """the model (fixed when the session starts): shapes-tiny or a diffusers SD directory"""
    finetune: Literal["auto", "full", "lora"] = "auto"
    """auto: full for shapes-tiny, LoRA for SD directories (fixed when the session starts)"""
    num_steps: int = 20
    """DDIM steps (fixed when the session starts)"""
    guidance: float = 5.0
    """classifier-free guidance (fixed when the session starts)"""
    eta: float = 1.0
    """DDIM eta > 0 (fixed when the session starts)"""
    epochs: int = 4
    """PXPO epochs per round (sample variations -> reward -> one update)"""
    variations: int = 8
    """variations of each marked picture per epoch (same x_T, fresh step noise)"""
    lr: float = 1e-4
    """AdamW learning rate"""
    kl_coef: float = 1.0
    """weight of the per-pixel KL to the previous round's model on the liked pixels (pxpo train's kl_region=hold
    anchor; 0 = off)
    """
    timestep_fraction: float = 1.0
    """share of each variation's DDIM steps a round trains on, the noisiest first (pxpo train's timestep_order=first);
    1 = every step
    """
    replay: bool = True
    """also train on the marks of the round's earlier rounds (its branch)"""
    threads: int = 2
    """torch CPU threads"""


def check_round_options(cfg) -> None:
    """Refuse bad round options (RoundOptions: pxpo refine's or pxpo studio's) before anything loads, naming
    the option."""
    for name in ("num_steps", "epochs", "variations", "threads"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name}={getattr(cfg, name)}: must be at least 1")
    if cfg.variations < 2:
        raise ConfigError(f"--variations={cfg.variations}: a round compares variations, so it needs at least 2")
    if cfg.eta <= 0:
        raise ConfigError(f"--eta={cfg.eta}: the policy needs eta > 0 for a density (use 1.0)")
    if cfg.lr <= 0:
        raise ConfigError(f"--lr={cfg.lr}: must be positive")
    if cfg.kl_coef < 0:
        raise ConfigError(f"--kl_coef={cfg.kl_coef}: must be 0 (off) or more")
    if not 0 < cfg.timestep_fraction <= 1:
        raise ConfigError(f"--timestep_fraction={cfg.timestep_fraction}: choose a value in (0, 1] (1 = every step)")


def round_settings(cfg) -> dict:
    """The settings a round records (and trains with), from the round options."""
    return {
        "epochs": cfg.epochs,
        "variations": cfg.variations,
        "lr": cfg.lr,
        "replay": cfg.replay,
        "kl_coef": cfg.kl_coef,
        "timestep_fraction": cfg.timestep_fraction,
    }


def read_strokes(path: str | Path, height: int, width: int) -> torch.Tensor:
    """A strokes file -> signed map [H, W] in [-1, 1] (formats in the module docstring)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"strokes file {str(path)!r} does not exist")
    if path.suffix.lower() == ".npy":
        arr = np.load(path).astype(np.float32)
    else:
        img = Image.open(path)
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
            sign = np.sign(rgba[..., 1] - rgba[..., 0])
            arr = sign * rgba[..., 3]
        else:
            arr = (np.asarray(img.convert("L"), dtype=np.float32) - 128.0) / 127.0
    if arr.shape != (height, width):
        raise UserError(
            f"strokes {str(path)!r} are {'x'.join(map(str, arr.shape))}; paint them on the "
            f"{height}x{width} picture of the latest round (height x width)"
        )
    if not np.isfinite(arr).all():
        raise UserError(f"strokes {str(path)!r} hold NaN or inf values")
    return torch.from_numpy(np.clip(arr, -1.0, 1.0))


def strokes_overlay(image: torch.Tensor, strokes: torch.Tensor) -> torch.Tensor:
    """The picture [3, H, W] with liked pixels tinted green and disliked ones red (for compare_*.png)."""
    pos, neg = strokes.clamp(min=0), (-strokes).clamp(min=0)
    green = torch.tensor([0.1, 0.9, 0.1]).view(3, 1, 1)
    red = torch.tensor([0.95, 0.1, 0.1]).view(3, 1, 1)
    out = image * (1 - 0.7 * pos) + 0.7 * pos * green
    return out * (1 - 0.7 * neg) + 0.7 * neg * red


def strokes_reward(images: torch.Tensor, history: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """[V, 3, H, W] variations -> reward maps [V, H, W]: mean over (picture, strokes) pairs of
    strokes * CIELAB closeness to the picture."""
    from pxpo.rewards.colour import closeness_to

    maps = [strokes * closeness_to(images, picture.expand_as(images)) for picture, strokes in history]
    return torch.stack(maps).mean(dim=0)


class StrokesReward:
    """A target's marks as a reward: the map of :func:`strokes_reward`, an opinion only where some mark
    is, and the liked pixels as what to keep (the KL anchor's hold map)."""

    def __init__(self, history: list[tuple[torch.Tensor, torch.Tensor]]):
        self.history = history

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult:
        rmap = strokes_reward(images, self.history)  # [V, H, W]
        # a pixel nobody marked gets no credit and does not shrink the advantages' pooled scale
        opinion = (torch.stack([s.abs() for _, s in self.history]).amax(dim=0) > 0).float().expand_as(rmap)
        return RewardResult(
            map=rmap, weight=opinion, hold=liked_hold(self.history).expand_as(rmap), info={"strokes": rmap.mean()}
        )


def change_by_mark(before: torch.Tensor, after: torch.Tensor, strokes: torch.Tensor) -> dict:
    """Mean |change| per pixel (RGB in [0, 1]) between two pictures [3, H, W] on the liked, disliked
    and unmarked pixels of ``strokes`` [H, W] (None where there are none)."""
    change = (after - before).abs().mean(dim=0)  # [H, W]
    part = {"liked": strokes > 0, "disliked": strokes < 0, "unmarked": strokes == 0}
    return {f"change_{n}": float(change[m].mean()) if m.any() else None for n, m in part.items()}


@dataclass
class Target:
    """One picture a round refines: its prompt, its x_T [1, C, h, w] (the variations share it, so
    they share its layout) and the (picture [3, H, W], strokes [H, W]) pairs that score them: this
    round's marks, plus earlier rounds' when they are replayed."""

    prompt: str
    x_T: torch.Tensor
    history: list[tuple[torch.Tensor, torch.Tensor]]


def seed_latents(backbone, seed: int) -> torch.Tensor:
    """The x_T [1, C, h, w] of a seed, exactly as ``sample_trajectories`` draws it from a fresh
    ``torch.Generator().manual_seed(seed)``."""
    return torch.randn(backbone.latent_shape(1), generator=torch.Generator().manual_seed(seed))


def round_timesteps(fraction: float) -> dict:
    """The TrainConfig fields for a round's ``timestep_fraction``: below 1 the noisiest steps
    (``timestep_order=first``, pxpo train's recipe); 1 keeps the shuffled order refine was first
    measured with."""
    return {"timestep_fraction": fraction, "timestep_order": "first" if fraction < 1 else "random"}


def round_policy(
    backbone,
    mode: str,
    *,
    lr: float,
    variations: int,
    num_steps: int,
    guidance: float,
    eta: float,
    kl_coef: float = 0.0,
    timestep_fraction: float = 1.0,
):
    """The :class:`~pxpo.core.policy.Policy` a round updates: PXPO, score function, one
    minibatch of all variations of a picture, ``timestep_fraction`` of the timesteps (the noisiest
    first; 1 = every one), AdamW without weight decay. With
    ``kl_coef > 0`` the liked pixels are held by ``pxpo train``'s per-pixel KL anchor
    (``kl_region=hold``, the hold maps of :class:`StrokesReward`), anchored to the round's parent
    (``Policy.anchor_here``, called by the studio's engine when a round starts). A reference copy
    is kept either way, so a later round may switch the anchor on (:func:`set_round_settings`)."""
    from accelerate import Accelerator

    from pxpo.training.config import ModelConfig, SampleConfig, TrainConfig
    from pxpo.core.policy import Policy

    train = TrainConfig(
        algorithm="pxpo",
        objective="sf",
        lr=lr,
        weight_decay=0.0,
        batch_size=variations,
        kl_coef=kl_coef,
        kl_region="hold",
        kl_target=0.0,
        **round_timesteps(timestep_fraction),
    )
    sample = SampleConfig(num_steps=num_steps, guidance=guidance, eta=eta, batch_size=variations, group_size=variations)
    return Policy(
        Accelerator(gradient_accumulation_steps=num_steps),
        backbone,
        mode,
        train,
        sample,
        ModelConfig(),
        tuple(backbone.latent_shape(1)[2:]),
        keep_start=True,
    )


def set_round_settings(policy, settings: dict) -> None:
    """A round's own settings (lr, variations, kl_coef, timestep_fraction: each round records them) on
    the policy."""
    from dataclasses import replace

    policy.retrain(
        replace(
            policy.t,
            lr=settings["lr"],
            batch_size=settings["variations"],
            kl_coef=settings.get("kl_coef", 0.0),  # rounds saved before the anchor: none
            **round_timesteps(settings.get("timestep_fraction", 1.0)),
        )
    )  # before it: every step
    for g in policy.opt.param_groups:
        g["lr"] = settings["lr"]


def liked_hold(history: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The pixels to hold [H, W] in [0, 1]: the liked strength, averaged over the marks a round
    trains on, as :func:`strokes_reward` averages their maps."""
    return torch.stack([s.clamp(min=0) for _, s in history]).mean(dim=0)


def train_round(
    policy,
    targets: list[Target],
    *,
    epochs: int,
    variations: int,
    num_steps: int,
    guidance: float,
    eta: float,
    gen: torch.Generator,
    on_epoch=None,
) -> list[float]:
    """One round of refinement, shared by ``pxpo refine`` and ``pxpo studio``: per epoch and per
    target, one epoch of the core (:func:`pxpo.core.epoch.run_epoch`): ``variations`` trajectories
    from the target's x_T with fresh step noise, scored by :class:`StrokesReward`, group advantages
    weighted by where the marks have an opinion (each pixel against the same pixel of the other
    variations), the liked pixels held by the KL anchor (when ``policy.t.kl_coef > 0``), and one
    policy update. ``on_epoch(epoch, reward)`` is called after each epoch (progress). Returns the
    mean strokes reward per epoch."""
    from pxpo.core.advantages import compute_advantages
    from pxpo.core.epoch import run_epoch
    from pxpo.core.trajectory import sample_trajectories

    def advantages(c):
        return compute_advantages(c.maps, c.traj.prompts, "group", weights=c.weights)

    backbone = policy.backbone
    rewards = []
    for epoch in range(epochs):
        per_target = []
        for t in targets:
            x_T = t.x_T.expand(variations, -1, -1, -1)
            # train.reuse_sampling: the update reuses the sampler's network calls (sampled as the policy trains)
            same = (num_steps, guidance, eta) == (policy.s.num_steps, policy.s.guidance, policy.s.eta)
            keep = policy.keep_graph() if same else 0
            traj = sample_trajectories(
                backbone,
                [t.prompt] * variations,
                None,
                num_steps,
                guidance,
                eta,
                generator=gen,
                init_latents=x_T,
                model=policy.model if keep else None,
                keep_graph=keep,
            )
            ep = run_epoch(policy, [traj], StrokesReward(t.history), advantages, gen, tuple(x_T.shape[-2:]))
            per_target.append(ep.collected.info["strokes"])
        rewards.append(float(np.mean(per_target)))
        if on_epoch is not None:
            on_epoch(epoch + 1, rewards[-1])
    return rewards
