"""Checks of a run's settings that need no model: each bad value fails with one message that names
the option and what to change, before a run folder is made or a model is loaded. (Options with fixed
choices are ``Literal`` types, checked as they are read; :func:`check_choices` checks them again
for configs built in Python.)"""

from __future__ import annotations

import os
from pathlib import Path

from pxpo.config import ConfigError, check_choices
from pxpo.rewards.colour import region_mask
from pxpo.training.config import RunConfig, TrainConfig
from pxpo.core.reuse import check_reuse


def _positive(name: str, value, what: str) -> None:
    if value <= 0:
        raise ConfigError(f"{name}={value}: {what}")


def validate_config(cfg: RunConfig) -> None:
    """Reject settings that cannot work, saying what to change."""
    t, s = cfg.train, cfg.sample
    check_choices(cfg)
    if s.eta <= 0:
        raise ConfigError(f"sample.eta={s.eta}: the policy needs eta > 0 for a density (DDPO uses 1.0)")
    _positive("sample.num_steps", s.num_steps, "sample at least 1 DDIM step per trajectory (10 is the default)")
    _positive("sample.batch_size", s.batch_size, "sample at least 1 trajectory per batch (16 is the default)")
    _positive("sample.num_batches", s.num_batches, "sample at least 1 batch per epoch")
    _positive(
        "train.batch_size",
        t.batch_size,
        "train on at least 1 trajectory per optimizer step; "
        "sample.batch_size*sample.num_batches must be a multiple of it",
    )
    _positive("train.inner_epochs", t.inner_epochs, "make at least 1 pass over each epoch's samples")
    _positive("train.lr", t.lr, "choose a positive learning rate (2e-4 is the default)")
    _positive("train.max_grad_norm", t.max_grad_norm, "choose a positive gradient-norm clip (1.0 is the default)")
    _positive(
        "train.max_nonfinite", t.max_nonfinite, "stop after at least 1 non-finite update in a row (3 is the default)"
    )
    if t.clip_range < 0:
        raise ConfigError(f"train.clip_range={t.clip_range}: use 0 (auto: 1e-4, scaled for PXPO) or a positive range")
    if not 0 < t.timestep_fraction <= 1:
        raise ConfigError(f"train.timestep_fraction={t.timestep_fraction}: choose a value in (0, 1]")
    if t.timesteps_per_forward < 0:
        raise ConfigError(
            f"train.timesteps_per_forward={t.timesteps_per_forward}: use 0 (all trained timesteps "
            "in one forward) or a positive count"
        )
    if t.adv_clip_max <= 0:
        raise ConfigError(f"train.adv_clip_max={t.adv_clip_max}: choose a positive bound (5 is the default)")
    per_epoch = s.batch_size * s.num_batches
    if per_epoch % t.batch_size:
        raise ConfigError(
            f"sample.batch_size*sample.num_batches={per_epoch} samples per epoch is not a multiple "
            f"of train.batch_size={t.batch_size}; change one of them"
        )
    if s.group_size < 1 or s.batch_size % s.group_size:
        raise ConfigError(
            f"sample.group_size={s.group_size}: use a number >= 1 that divides sample.batch_size={s.batch_size}"
        )
    check_reuse(t, s)
    if cfg.experimental.adv_norm and t.adv_norm != "pixel":
        raise ConfigError(
            f"experimental.adv_norm={cfg.experimental.adv_norm} replaces train.adv_norm=pixel; "
            f"drop one of it and train.adv_norm={t.adv_norm}"
        )
    if t.kl_region not in ("hold", "unasked"):
        region_mask(t.kl_region, 8, 8)  # a bad train.kl_region fails here, naming the choices
    if t.credit != "pixel" and t.algorithm != "pxpo":
        raise ConfigError(
            f"train.credit={t.credit} is a design of PXPO's per-pixel credit; DDPO has one advantage and "
            "one ratio per image: use train.algorithm=pxpo or drop train.credit"
        )
    if t.kl_coef < 0:
        raise ConfigError(f"train.kl_coef={t.kl_coef}: use 0 (off) or a positive weight")
    if t.kl_target < 0:
        raise ConfigError(
            f"train.kl_target={t.kl_target}: the adaptive KL's target must be > 0, or 0 for a fixed "
            "train.kl_coef (train.kl_coef=0 turns the KL off, whatever the target)"
        )
    if not 0 <= t.kl_loosen_rate < 1:
        raise ConfigError(
            f"train.kl_loosen_rate={t.kl_loosen_rate}: use a share in [0, 1) by which kl_coef may fall per update "
            f"({TrainConfig.kl_loosen_rate} by default; 0 never loosens)"
        )
    if not 0 <= t.ema_decay < 1:
        raise ConfigError(f"train.ema_decay={t.ema_decay}: use 0 (no average) or a decay in (0, 1), e.g. 0.9")
    if t.kl_tighten_rate < 0:
        raise ConfigError(
            f"train.kl_tighten_rate={t.kl_tighten_rate}: use a share >= 0 by which kl_coef may rise per update "
            f"({TrainConfig.kl_tighten_rate} by default; 0 never tightens)"
        )
    if cfg.experimental.kl_target_ratio < 0:
        raise ConfigError(
            f"experimental.kl_target_ratio={cfg.experimental.kl_target_ratio}: use a share of the asked pixels' KL > 0 "
            "(0.2 holds the unasked ones at a fifth of it), or 0 for train.kl_target"
        )
    if cfg.epochs < 1:
        raise ConfigError(f"epochs={cfg.epochs}: train at least one epoch")
    _positive("eval_samples", cfg.eval_samples, "evaluate on at least 1 image (16 is the default)")
    _positive("threads", cfg.threads, "use at least 1 torch CPU thread (e.g. --threads=2)")
    _positive("keep_checkpoints", cfg.keep_checkpoints, "keep at least the newest checkpoint")
    for name in ("eval_every", "save_every"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name}={getattr(cfg, name)}: use 0 (only at the end) or a positive number of epochs")
    if s.height < 0 or s.width < 0:
        raise ConfigError(f"sample.height/width={s.height}/{s.width}: use 0 (the model's size) or a positive size")
    check_model_options(cfg)
    check_out_dir(cfg.out_dir)


def check_model_options(cfg: RunConfig) -> None:
    """The precision options (memory modes) go together."""
    m = cfg.model
    if m.frozen_dtype != "fp32" and m.mixed_precision == "no":
        raise ConfigError(
            f"model.frozen_dtype={m.frozen_dtype} runs half-precision weights inside the UNet's "
            f"forward, which needs autocast: add --model.mixed_precision={m.frozen_dtype}"
        )


def check_out_dir(out_dir: str) -> None:
    """out_dir exists as a writable folder, or can be made inside the nearest one that does."""
    path = Path(out_dir).absolute()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"out_dir={out_dir!r}: {probe} is a file, not a folder; choose another --out_dir")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"out_dir={out_dir!r}: cannot write in {probe} (permission denied); choose a writable --out_dir"
        )
