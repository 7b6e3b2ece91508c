"""An epoch's advantages over every process's samples: the rewards gathered across processes
(accelerate), the core's advantages over the whole global batch
(:func:`pxpo.core.advantages.compute_advantages`), and this process's rows back. Also the checks a
reward's output gets first."""

from __future__ import annotations

import torch
from accelerate.logging import get_logger

from pxpo.core.advantages import PerPromptStats, compute_advantages, per_covered_pixel
from pxpo.core.epoch import Collected
from pxpo.core.objectives import anchors_everything, masked_advantages
from pxpo.rewards import RewardError
from pxpo.training.config import RunConfig

logger = get_logger(__name__)  # accelerate's: the main process reports


def global_advantages(
    accel, cfg: RunConfig, tracker: PerPromptStats, c: Collected, latent_hw: tuple[int, int]
) -> torch.Tensor:
    """Advantages over all processes' samples of ``c``; returns this process's share."""
    from accelerate.utils import gather_object

    t, x = cfg.train, cfg.experimental
    per_pixel = t.algorithm == "pxpo" and t.credit != "mask"  # mask: the image's advantage, spread after

    def gathered(v):  # every process's rows, on the CPU (None stays None)
        return None if v is None else accel.gather(v.to(accel.device)).cpu()

    all_rewards = gathered(c.maps if per_pixel else c.scalars)
    maps_weighted = per_pixel and t.advantages != "per-prompt"  # opinion weights and keep maps apply
    weights = gathered(c.weights) if maps_weighted else None
    keep = gathered(c.holds) if maps_weighted and t.keep_apart else None
    traj = c.traj
    keys = [m.get("group", p) for m, p in zip(traj.metadata, traj.prompts)]  # shared-noise group, else prompt
    several = accel.num_processes > 1
    all_prompts = gather_object(traj.prompts) if several else traj.prompts
    all_keys = gather_object(keys) if several else keys
    adv = compute_advantages(
        all_rewards,
        all_prompts,
        t.advantages,
        t.adv_clip_max,
        tracker,
        tracker.norm,  # experimental.adv_norm or train.adv_norm, set once in the tracker
        groups=all_keys,
        group_scale=x.group_scale,
        weights=weights,
        keep=keep,
        part_scale=x.part_scale,
    )
    if t.algorithm == "pxpo" and not per_pixel:  # train.credit=mask
        adv = masked_advantages(adv, gathered(c.weights), latent_hw)
    if t.loss_norm == "region" and weights is not None:
        adv = per_covered_pixel(adv, weights)  # the objective averaged over the pixels with an opinion
    n, i = len(traj), accel.process_index
    return adv[i * n : (i + 1) * n].to(accel.device)


def check_rewards(cfg: RunConfig, c: Collected, warned: bool) -> bool:
    """PXPO refuses a reward without maps; a KL that holds what the reward keeps says once (unless
    ``warned``) when the reward keeps nothing (it then anchors every pixel). Returns whether it has said so."""
    t, name = cfg.train, cfg.reward.weights or cfg.reward.name
    if t.kl_coef > 0 and not warned and anchors_everything(t.kl_region, c.holds, c.weights):
        warned = True
        logger.warning(
            f"train.kl_region={t.kl_region} anchors what the reward asks to keep or leaves alone, and "
            f"reward {name!r} keeps nothing and has an opinion everywhere, so the KL anchors every "
            "pixel (as train.kl_region=all). Unanchored, lr 1e-4 collapsed a two-sided colour map into "
            "noise; --train.kl_coef=0 turns the anchor off"
        )
    if c.maps is None and t.algorithm == "pxpo":
        raise RewardError(
            f"reward {name!r} gives only scalars; PXPO needs a per-pixel map: use train.algorithm=ddpo or a map reward"
        )
    return warned
