"""One epoch of policy-gradient training: the loop ``pxpo train``, a refinement round and the studio
all run (:func:`run_epoch`).

    collect      sample batches of trajectories, scoring each batch while the next one samples
    latent grid  reward maps, opinion weights and hold maps pooled onto the latent grid
    advantages   the caller's baseline (pxpo train: per prompt, group or batch, over every process;
                 a refinement round: each pixel against the same pixel of the other variations)
    update       :meth:`pxpo.core.policy.Policy.update`, the KL holding the reward's hold maps when
                 ``train.kl_region=hold`` (and what it has no opinion on under ``unasked``)
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from pxpo.core.latent_map import results_to_latent_grid
from pxpo.core.trajectory import Trajectories


@dataclass
class Collected:
    """One epoch's samples (this process's share) and what their rewards say about them."""

    traj: Trajectories
    scalars: torch.Tensor  # [N] one reward per picture
    maps: torch.Tensor | None  # [N, h, w] reward maps on the latent grid (None: the reward gave scalars)
    weights: torch.Tensor | None  # [N, h, w] where the maps have an opinion (None: everywhere)
    holds: torch.Tensor | None  # [N, h, w] what the reward asks to keep (None: nothing)
    info: dict[str, float] = field(default_factory=dict)  # the means of the reward's logged values


@dataclass
class Epoch:
    collected: Collected
    stats: dict[str, float]  # the update's means (loss, approx_kl, clipfrac, ratio, grad_norm, kl)
    time_sample: float  # seconds sampling and scoring
    time_train: float  # seconds on advantages and the update


def _submit(reward, traj: Trajectories) -> Future:
    """Start scoring a batch: through ``reward.submit`` (an AsyncReward scores in a worker thread while
    the next batch samples), or by calling a plain reward now."""
    if hasattr(reward, "submit"):
        return reward.submit(traj.images, traj.prompts, traj.metadata)
    done: Future = Future()
    done.set_result(reward(traj.images, traj.prompts, traj.metadata))
    return done


def collect(
    batches: Iterable[Trajectories],
    reward,
    latent_hw: tuple[int, int],
    latent_pool: str = "area",
    hold_pool: str = "area",
) -> Collected:
    """Sample the epoch's batches (``batches`` draws each when iterated), score each, and put the
    reward maps on the ``latent_hw`` grid (:func:`pxpo.core.latent_map.results_to_latent_grid`)."""
    trajs, futures = [], []
    for traj in batches:
        trajs.append(traj)
        futures.append(_submit(reward, traj))
    results = [f.result() for f in futures]
    traj = Trajectories.cat(trajs)
    scalars = torch.cat([r.scalar for r in results]).float()
    maps, weights, holds = results_to_latent_grid(
        [r.map for r in results],
        [r.weight for r in results],
        [r.hold for r in results],
        latent_hw,
        latent_pool,
        hold_pool,
    )
    info: dict[str, list[float]] = {}
    for r in results:
        for k, v in r.info.items():
            info.setdefault(k, []).append(float(v.float().mean()) if torch.is_tensor(v) else float(v))
    return Collected(traj, scalars, maps, weights, holds, {k: float(np.mean(v)) for k, v in info.items()})


def run_epoch(
    policy,
    batches: Iterable[Trajectories],
    reward,
    advantages: Callable[[Collected], torch.Tensor],
    gen: torch.Generator,
    latent_hw: tuple[int, int],
    latent_pool: str = "area",
    hold_pool: str = "area",
) -> Epoch:
    """collect -> advantages -> one :meth:`Policy.update <pxpo.core.policy.Policy.update>`.

    ``advantages(collected)`` returns [N] (DDPO) or [N, h, w] (PXPO) for this process's samples;
    ``gen`` orders the update's minibatches and timesteps."""
    t0 = time.time()
    c = collect(batches, reward, latent_hw, latent_pool, hold_pool)
    t1 = time.time()
    adv = advantages(c)
    stats = policy.update(c.traj, adv, gen, holds=c.holds, weights=c.weights)
    return Epoch(c, stats, t1 - t0, time.time() - t1)
