"""The training loop: sample -> reward -> latent grid -> advantages -> objective -> update.

One epoch:
1. sample ``sample.num_batches`` x ``sample.batch_size`` trajectories (DDIM, eta > 0, CFG) and score
   each batch's images while the next batch samples (rewards run in a worker thread);
2. reduce reward maps to the latent grid (PXPO) or take scalars (DDPO); compute advantages over the
   whole epoch's samples (gathered across processes);
3. the policy-update step (``policy.py``, shared with ``pxpo refine``): ``train.inner_epochs``
   passes over minibatches of ``train.batch_size`` samples, one AdamW step per minibatch.

With ``sample.group_size`` K > 1 each prompt is drawn K times from one x_T (shared-noise groups)
and ``train.advantages=group`` compares each pixel with the same pixel of its own group.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pxpo import world
from pxpo.advantages import GROUP_SCALES, NORMS, PerPromptStats, compute_advantages
from pxpo.latent_map import to_latent_grid
from pxpo.models.finetune import resolve_mode, save_weights
from pxpo.models.registry import is_embedded, load_pipeline
from pxpo.prompts import get_prompts
from pxpo.rewards import RewardError, needs_reference
from pxpo.rewards.colour import region_mask
from pxpo.rewards.compose import AsyncReward, build_reward
from pxpo.training.artifacts import RunDir
from pxpo.training.config import RunConfig
from pxpo.training.policy import Policy
from pxpo.trajectory import Trajectories, sample_trajectories


class Trainer:
    def __init__(self, cfg: RunConfig):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        validate_config(cfg)
        torch.set_num_threads(cfg.threads)
        t = cfg.train
        self.accel = Accelerator(mixed_precision=cfg.model.mixed_precision,
                                 gradient_accumulation_steps=max(1, math.ceil(cfg.sample.num_steps * t.timestep_fraction)))
        set_seed(cfg.seed, device_specific=True)
        self.pipe = load_pipeline(cfg.model.name, cfg.model.allow_download, device=self.accel.device)
        self.embedded = is_embedded(cfg.model.name)
        self.mode = resolve_mode(cfg.model.finetune, self.embedded)
        self.reward = AsyncReward(build_reward(cfg.reward.weights or cfg.reward.name, cfg.reward.params))
        self.use_reference = uses_reference(cfg.reward.reference, self.reward)
        f = self.pipe.vae_scale_factor
        h = (cfg.sample.height or self.pipe.unet.config.sample_size * f) // f
        w = (cfg.sample.width or self.pipe.unet.config.sample_size * f) // f
        self.latent_hw = (h, w)
        self.policy = Policy(self.accel, self.pipe, self.mode, t, cfg.sample, cfg.model, self.latent_hw,
                             keep_start=self.use_reference)
        self.unet, self.opt, self.params = self.policy.unet, self.policy.opt, self.policy.params
        self.clip_range = self.policy.clip_range
        self.prompt_fn = get_prompts(cfg.prompts.name, **cfg.prompts.params)
        self.tracker = PerPromptStats(t.buffer_size, t.min_count, t.adv_norm)
        self.rng = np.random.default_rng(cfg.seed + 1000 * self.accel.process_index)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1000 * self.accel.process_index)
        name = cfg.run_name or time.strftime("%Y%m%d-%H%M%S")
        self.run = RunDir(Path(cfg.out_dir) / name, cfg, self.accel.is_main_process, cfg.tensorboard)
        self.start_epoch = 0
        self.n_groups = 0  # shared-noise groups drawn so far (their ids)
        self.map_weights = None  # the last collect()'s opinion weights [N, h, w] (None = everywhere)
        # eval_hook(epoch, images) -> dict of task measures, logged with each evaluation (benchmarks)
        self.eval_hook = None
        if cfg.resume:
            self.load_checkpoint(Path(cfg.resume) / "checkpoint")

    # ---- prompts and sampling -------------------------------------------------------------
    def prompts(self, n: int, rng: np.random.Generator) -> tuple[list[str], list[dict]]:
        prompts, meta = self.prompt_fn(n, rng)
        if self.embedded:
            world.check_vocabulary(prompts)
        return prompts, meta

    def sample(self, prompts, meta, generator, group_size: int = 1) -> Trajectories:
        """Trajectories of the current policy; with references, ``metadata[i]["reference"]`` holds
        the starting model's image drawn from the same x_T and the same per-step noise.

        ``group_size`` K > 1: each prompt is drawn K times from one x_T with fresh step noise (a
        shared-noise group; ``metadata[i]["group"]`` names it)."""
        s = self.cfg.sample
        x_T = None
        if group_size > 1:
            c, (h, w) = self.pipe.unet.config.in_channels, self.latent_hw
            x_T = torch.randn((len(prompts), c, h, w), generator=generator).repeat_interleave(group_size, 0)
            ids = range(self.n_groups, self.n_groups + len(prompts))
            self.n_groups += len(prompts)
            meta = [{**m, "group": (self.accel.process_index, g)} for m, g in zip(meta, ids) for _ in range(group_size)]
            prompts = [p for p in prompts for _ in range(group_size)]
        state = generator.get_state() if self.use_reference else None

        def draw(gen, unet=None):
            with self.accel.autocast():
                return sample_trajectories(self.pipe, prompts, meta, s.num_steps, s.guidance, s.eta,
                                           self.cfg.prompts.negative, s.height or None, s.width or None,
                                           gen, unet=unet, init_latents=x_T)

        traj = draw(generator)
        if state is not None:
            with self.policy.reference_unet() as ref_unet:
                ref = draw(torch.Generator().set_state(state), ref_unet)
            traj.metadata = [{**m, "reference": img} for m, img in zip(traj.metadata, ref.images)]
        return traj

    def collect(self) -> tuple[Trajectories, torch.Tensor, torch.Tensor | None, dict]:
        """One epoch's samples: trajectories, scalar rewards [N], latent reward maps [N, h, w] or None."""
        s = self.cfg.sample
        trajs, futures = [], []
        for _ in range(s.num_batches):
            prompts, meta = self.prompts(s.batch_size // s.group_size, self.rng)
            tr = self.sample(prompts, meta, self.gen, s.group_size)
            trajs.append(tr)
            futures.append(self.reward.submit(tr.images, tr.prompts, tr.metadata))
        results = [f.result() for f in futures]
        traj = Trajectories.cat(trajs)
        scalars = torch.cat([r.scalar for r in results]).float()
        maps = None
        self.map_weights = None  # [N, h, w]: where the maps have an opinion (None = everywhere)
        if all(r.map is not None for r in results):
            rmap = torch.cat([r.map for r in results]).float()
            if all(r.weight is not None for r in results):
                # a latent pixel's reward: the mean over its footprint's pixels that have an opinion;
                # its weight: the share of its footprint that has one
                w = torch.cat([r.weight for r in results]).float()
                self.map_weights = to_latent_grid(w, self.latent_hw, "area")
                maps = to_latent_grid(rmap * w, self.latent_hw, "area") / self.map_weights.clamp_min(1e-6)
                if self.cfg.reward.latent_pool != "area":
                    maps = to_latent_grid(rmap, self.latent_hw, self.cfg.reward.latent_pool)
            else:
                maps = to_latent_grid(rmap, self.latent_hw, self.cfg.reward.latent_pool)
        elif self.cfg.train.algorithm == "pxpo":
            raise RewardError(f"reward {self.cfg.reward.weights or self.cfg.reward.name!r} gives only scalars; "
                              "PXPO needs a per-pixel map: use train.algorithm=ddpo or a map reward")
        info = {}
        for r in results:
            for k, v in r.info.items():
                info.setdefault(k, []).append(float(v.float().mean()) if torch.is_tensor(v) else float(v))
        return traj, scalars, maps, {k: float(np.mean(v)) for k, v in info.items()}

    # ---- advantages and update ------------------------------------------------------------
    def advantages(self, traj: Trajectories, scalars: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
        """Advantages over all processes' samples; returns this process's share."""
        from accelerate.utils import gather_object

        t = self.cfg.train
        rewards = maps if t.algorithm == "pxpo" else scalars
        all_rewards = self.accel.gather(rewards.to(self.accel.device)).cpu()
        weights = self.map_weights if t.algorithm == "pxpo" and t.advantages != "per-prompt" else None
        if weights is not None:
            weights = self.accel.gather(weights.to(self.accel.device)).cpu()
        keys = [m.get("group", p) for m, p in zip(traj.metadata, traj.prompts)]  # shared-noise group, else prompt
        all_prompts = gather_object(traj.prompts) if self.accel.num_processes > 1 else traj.prompts
        all_keys = gather_object(keys) if self.accel.num_processes > 1 else keys
        adv = compute_advantages(all_rewards, all_prompts, t.advantages, t.adv_clip_max, self.tracker, t.adv_norm,
                                 groups=all_keys, group_scale=t.group_scale, weights=weights)
        n = len(traj)
        i = self.accel.process_index
        return adv[i * n:(i + 1) * n].to(self.accel.device)

    def update(self, traj: Trajectories, adv: torch.Tensor) -> dict:
        return self.policy.update(traj, adv, self.gen)

    # ---- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> tuple[torch.Tensor, float]:
        """Images and mean reward on fixed prompts and noise (the same every call); the means of the
        reward's info (e.g. object_fraction) are kept in ``self.eval_info``."""
        cfg = self.cfg
        rng = np.random.default_rng(cfg.eval_seed)
        gen = torch.Generator().manual_seed(cfg.eval_seed)
        prompts, meta = self.prompts(cfg.eval_samples, rng)
        images, rewards, info = [], [], {}
        bs = cfg.sample.batch_size
        for i in range(0, len(prompts), bs):
            tr = self.sample(prompts[i:i + bs], meta[i:i + bs], gen)
            images.append(tr.images.cpu())
            result = self.reward.submit(tr.images, tr.prompts, tr.metadata).result()
            rewards.append(result.scalar.cpu())
            for k, v in result.info.items():
                info.setdefault(k, []).append(torch.as_tensor(v, dtype=torch.float32).cpu().reshape(-1))
        self.eval_info = {k: float(torch.cat(v).mean()) for k, v in info.items()}
        return torch.cat(images), float(torch.cat(rewards).mean())

    def _hook(self, epoch: int, images: torch.Tensor) -> dict:
        return {f"task/{k}": v for k, v in self.eval_hook(epoch, images).items()} if self.eval_hook else {}

    # ---- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, epoch: int) -> None:
        ckpt = self.run.path / "checkpoint"
        self.accel.wait_for_everyone()
        self.accel.save_state(str(ckpt))  # every rank calls it (a main-only call hangs multi-GPU runs)
        if self.accel.is_main_process:
            torch.save({"epoch": epoch, "tracker": self.tracker.state_dict(), "rng": self.rng.bit_generator.state,
                        "gen": self.gen.get_state()}, ckpt / "pxpo_state.pt")
            save_weights(self.pipe, self.accel.unwrap_model(self.unet), self.mode, self.run.path / "weights")

    def load_checkpoint(self, ckpt: Path) -> None:
        if not (ckpt / "pxpo_state.pt").is_file():
            raise FileNotFoundError(f"cannot resume: no checkpoint at {ckpt} (a run directory's checkpoint/)")
        self.accel.load_state(str(ckpt))
        state = torch.load(ckpt / "pxpo_state.pt", weights_only=False)
        self.tracker.load_state_dict(state["tracker"])
        self.rng.bit_generator.state = state["rng"]
        self.gen.set_state(state["gen"])
        self.start_epoch = state["epoch"] + 1

    # ---- the loop -------------------------------------------------------------------------
    def train(self) -> Path:
        cfg = self.cfg
        before_images, before_reward = self.evaluate()
        before_info = self.eval_info
        self.before_images = before_images
        self.run.grid(f"epoch_{self.start_epoch:04d}_before.png", before_images)
        self.run.log(self.start_epoch, {"eval_reward": before_reward, **self._hook(self.start_epoch, before_images)})
        bar = tqdm(range(self.start_epoch, cfg.epochs), desc="epochs", disable=not self.accel.is_main_process)
        eval_reward = before_reward
        for epoch in bar:
            t0 = time.time()
            bar.set_postfix(phase="sample", eval_reward=f"{eval_reward:.3f}")
            traj, scalars, maps, info = self.collect()
            t1 = time.time()
            adv = self.advantages(traj, scalars, maps)
            bar.set_postfix(phase="train", reward=f"{scalars.mean():.3f}", eval_reward=f"{eval_reward:.3f}")
            stats = self.update(traj, adv)
            t2 = time.time()
            metrics = {"reward_mean": float(scalars.mean()), "reward_std": float(scalars.std()),
                       **{f"reward/{k}": v for k, v in info.items()}, **stats,
                       "time_sample": t1 - t0, "time_train": t2 - t1}
            last = epoch == cfg.epochs - 1
            if last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
                bar.set_postfix(phase="eval")
                images, eval_reward = self.evaluate()
                metrics["eval_reward"] = eval_reward
                metrics.update(self._hook(epoch + 1, images))
                self.run.grid(f"epoch_{epoch + 1:04d}.png", images)
            self.run.log(epoch + 1, metrics)
            bar.set_postfix(phase="done", reward=f"{scalars.mean():.3f}", eval_reward=f"{eval_reward:.3f}")
            if last or (cfg.save_every and (epoch + 1) % cfg.save_every == 0):
                self.save_checkpoint(epoch)
        after_images, after_reward = self.evaluate()
        self.after_images = after_images
        self.run.before_after(before_images, after_images, before_reward, after_reward)
        self.run.reward_curve()
        if self.accel.is_main_process:
            (self.run.path / "summary.json").write_text(json.dumps(
                {"eval_reward_before": before_reward, "eval_reward_after": after_reward,
                 "eval_info_before": before_info, "eval_info_after": self.eval_info,
                 "finetune": self.mode, "clip_range": self.clip_range}, indent=2))
        self.run.close()
        self.reward.close()
        return self.run.path


def uses_reference(setting: str, reward) -> bool:
    """Whether training draws reference images: ``reward.reference`` = "auto" (when the reward
    declares ``needs_reference``), "always" or "never"."""
    return needs_reference(reward) if setting == "auto" else setting == "always"


def validate_config(cfg: RunConfig) -> None:
    """Reject settings that cannot work, saying what to change."""
    t, s = cfg.train, cfg.sample
    if t.algorithm not in ("pxpo", "ddpo"):
        raise ValueError(f"train.algorithm={t.algorithm!r}: use 'pxpo' or 'ddpo'")
    if t.objective not in ("sf", "clipped"):
        raise ValueError(f"train.objective={t.objective!r}: use 'clipped' or 'sf'")
    if s.eta <= 0:
        raise ValueError(f"sample.eta={s.eta}: the policy needs eta > 0 for a density (DDPO uses 1.0)")
    if t.timestep_order not in ("random", "first"):
        raise ValueError(f"train.timestep_order={t.timestep_order!r}: use 'random' or 'first'")
    if not 0 < t.timestep_fraction <= 1:
        raise ValueError(f"train.timestep_fraction={t.timestep_fraction}: choose a value in (0, 1]")
    per_epoch = s.batch_size * s.num_batches
    if per_epoch % t.batch_size:
        raise ValueError(f"sample.batch_size*sample.num_batches={per_epoch} samples per epoch is not a multiple "
                         f"of train.batch_size={t.batch_size}; change one of them")
    if s.group_size < 1 or s.batch_size % s.group_size:
        raise ValueError(f"sample.group_size={s.group_size} must be >= 1 and divide sample.batch_size={s.batch_size}")
    if t.group_scale not in GROUP_SCALES:
        raise ValueError(f"train.group_scale={t.group_scale!r}: use one of {', '.join(GROUP_SCALES)}")
    if cfg.reward.reference not in ("auto", "always", "never"):
        raise ValueError(f"reward.reference={cfg.reward.reference!r}: use 'auto', 'always' or 'never'")
    if t.adv_norm not in NORMS:
        raise ValueError(f"train.adv_norm={t.adv_norm!r}: use one of {', '.join(NORMS)}")
    region_mask(t.kl_region, 8, 8)  # a bad train.kl_region fails here, naming the choices
    if t.kl_coef < 0:
        raise ValueError(f"train.kl_coef={t.kl_coef}: use 0 (off) or a positive weight")
    if cfg.epochs < 1:
        raise ValueError(f"epochs={cfg.epochs}: train at least one epoch")
