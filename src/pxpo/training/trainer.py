"""The training loop: sample -> reward -> latent grid -> advantages -> objective -> update.

One epoch:
1. sample ``sample.num_batches`` x ``sample.batch_size`` trajectories (DDIM, eta > 0, CFG) and score
   each batch's images while the next batch samples (rewards run in a worker thread);
2. reduce reward maps to the latent grid (PXPO) or take scalars (DDPO); compute advantages over the
   whole epoch's samples (gathered across processes);
3. ``train.inner_epochs`` passes over shuffled samples, each trajectory's timesteps shuffled and the
   first ``timestep_fraction`` of them trained; gradients accumulate over a minibatch's trained
   timesteps before one AdamW step with grad-norm clipping (DDPO's schedule).
"""
from __future__ import annotations

import copy
import json
import math
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pxpo import world
from pxpo.advantages import PerPromptStats, compute_advantages
from pxpo.latent_map import to_latent_grid
from pxpo.models.finetune import prepare_unet, resolve_mode, save_weights
from pxpo.errors import UserError
from pxpo.models.registry import check_model_source, is_embedded, load_pipeline
from pxpo.objectives import default_clip_range, kl_to_reference, objective
from pxpo.prompts import get_prompts
from pxpo.rewards import RewardError, needs_reference
from pxpo.rewards.colour import region_mask
from pxpo.rewards.compose import AsyncReward, build_reward
from pxpo.training.artifacts import RunDir
from pxpo.training.checkpoint import Checkpoints, save_weights_atomic
from pxpo.training.config import RunConfig
from pxpo.training.guards import NonFiniteGuard
from pxpo.training.resume import check_resume, run_finished
from pxpo.training.rundir import reserve
from pxpo.training.signals import StopSignals, stopped
from pxpo.training.validate import validate_config
from pxpo.sampling import gaussian_log_prob
from pxpo.trajectory import Trajectories, sample_trajectories, step_gaussian


class Trainer:
    def __init__(self, cfg: RunConfig):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        # bad settings, a refused resume, an incomplete model folder or a taken run folder fail here,
        # before any model loads or any folder is made
        validate_config(cfg)
        if cfg.resume:
            check_resume(cfg)
        check_model_source(cfg.model.name)
        torch.set_num_threads(cfg.threads)
        n_train_t = max(1, math.ceil(cfg.sample.num_steps * cfg.train.timestep_fraction))
        self.n_train_t = n_train_t
        self.accel = Accelerator(mixed_precision=cfg.model.mixed_precision, gradient_accumulation_steps=n_train_t)
        self.folder = reserve(cfg.out_dir, cfg.run_name, cfg.resume, self.accel)  # rank 0's choice on every rank
        set_seed(cfg.seed, device_specific=True)
        self.pipe = load_pipeline(cfg.model.name, cfg.model.allow_download, device=self.accel.device)
        self.embedded = is_embedded(cfg.model.name)
        self.mode = resolve_mode(cfg.model.finetune, self.embedded)
        t = cfg.train
        self.reward = AsyncReward(build_reward(cfg.reward.weights or cfg.reward.name, cfg.reward.params))
        self.use_reference = uses_reference(cfg.reward.reference, self.reward)
        # The starting weights draw the reference images: a frozen copy (full fine-tuning) or the
        # same UNet with its LoRA adapters switched off (no copy of a large model).
        self.ref_unet = (copy.deepcopy(self.pipe.unet).requires_grad_(False).eval()
                         if (self.use_reference or t.kl_coef > 0) and self.mode == "full" else None)
        self.params = prepare_unet(self.pipe, self.mode, cfg.model.lora_rank, cfg.model.lora_alpha,
                                   cfg.model.lora_targets, cfg.model.gradient_checkpointing)
        opt = torch.optim.AdamW(self.params, lr=t.lr, betas=(t.adam_beta1, t.adam_beta2),
                                weight_decay=t.weight_decay, eps=t.adam_eps)
        self.unet, self.opt = self.accel.prepare(self.pipe.unet, opt)
        self.prompt_fn = get_prompts(cfg.prompts.name, **cfg.prompts.params)
        self.tracker = PerPromptStats(t.buffer_size, t.min_count, t.adv_norm)
        self.loss_fn = objective(t.algorithm, t.objective)
        f = self.pipe.vae_scale_factor
        h = (cfg.sample.height or self.pipe.unet.config.sample_size * f) // f
        w = (cfg.sample.width or self.pipe.unet.config.sample_size * f) // f
        self.latent_hw = (h, w)
        self.clip_range = t.clip_range or default_clip_range(t.algorithm, self.latent_hw)
        self.kl_weight = region_mask(t.kl_region, h, w)  # [h, w] latent pixels held by the KL penalty
        self.rng = np.random.default_rng(cfg.seed + 1000 * self.accel.process_index)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1000 * self.accel.process_index)
        self.guard = NonFiniteGuard(t.max_nonfinite)
        self.checkpoints = Checkpoints(self.folder.path / "checkpoint", cfg.keep_checkpoints)
        self.start_epoch, self.before = 0, None
        if cfg.resume:
            self.load_checkpoint()
        self.folder.create()  # exclusive mkdir + lock of a new run's folder; a resume holds its lock already
        self.run = RunDir(self.folder.path, cfg, self.accel.is_main_process, cfg.tensorboard, self.start_epoch)

    # ---- prompts and sampling -------------------------------------------------------------
    def prompts(self, n: int, rng: np.random.Generator) -> tuple[list[str], list[dict]]:
        prompts, meta = self.prompt_fn(n, rng)
        if self.embedded:
            world.check_vocabulary(prompts)
        return prompts, meta

    def sample(self, prompts, meta, generator) -> Trajectories:
        """Trajectories of the current policy; with references, ``metadata[i]["reference"]`` holds
        the starting model's image drawn from the same x_T and the same per-step noise."""
        s = self.cfg.sample
        state = generator.get_state() if self.use_reference else None

        def draw(gen, unet=None):
            with self.accel.autocast():
                return sample_trajectories(self.pipe, prompts, meta, s.num_steps, s.guidance, s.eta,
                                           self.cfg.prompts.negative, s.height or None, s.width or None,
                                           gen, unet=unet)

        traj = draw(generator)
        if state is not None:
            with self.reference_unet() as ref_unet:
                ref = draw(torch.Generator().set_state(state), ref_unet)
            traj.metadata = [{**m, "reference": img} for m, img in zip(traj.metadata, ref.images)]
        return traj

    @contextmanager
    def reference_unet(self):
        """The UNet with the starting weights: draws reference images and anchors ``train.kl_coef``."""
        if self.ref_unet is not None:
            yield self.ref_unet
            return
        unet = self.accel.unwrap_model(self.unet)
        unet.disable_adapters()
        try:
            yield unet
        finally:
            unet.enable_adapters()

    def collect(self) -> tuple[Trajectories, torch.Tensor, torch.Tensor | None, dict]:
        """One epoch's samples: trajectories, scalar rewards [N], latent reward maps [N, h, w] or None."""
        s = self.cfg.sample
        trajs, futures = [], []
        for _ in range(s.num_batches):
            prompts, meta = self.prompts(s.batch_size, self.rng)
            tr = self.sample(prompts, meta, self.gen)
            trajs.append(tr)
            futures.append(self.reward.submit(tr.images, tr.prompts, tr.metadata))
        results = [f.result() for f in futures]
        traj = Trajectories.cat(trajs)
        scalars = torch.cat([r.scalar for r in results]).float()
        maps = None
        if all(r.map is not None for r in results):
            maps = to_latent_grid(torch.cat([r.map for r in results]).float(), self.latent_hw,
                                  self.cfg.reward.latent_pool)
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
        all_prompts = gather_object(traj.prompts) if self.accel.num_processes > 1 else traj.prompts
        adv = compute_advantages(all_rewards, all_prompts, t.advantages, t.adv_clip_max, self.tracker, t.adv_norm)
        n = len(traj)
        i = self.accel.process_index
        return adv[i * n:(i + 1) * n].to(self.accel.device)

    def update(self, traj: Trajectories, adv: torch.Tensor) -> dict:
        t, s = self.cfg.train, self.cfg.sample
        guidance = s.guidance if t.cfg else 1.0
        stats: dict[str, list[float]] = {}
        n, steps = len(traj), s.num_steps
        for _ in range(t.inner_epochs):
            perm = torch.randperm(n, generator=self.gen)
            tperm = torch.stack([torch.randperm(steps, generator=self.gen) for _ in range(n)])  # [n, T]
            for mb in perm.split(t.batch_size):
                sub, a = traj.index(mb), adv[mb]
                rows = torch.arange(len(mb))
                for k in range(self.n_train_t):
                    j = tperm[mb, k]  # [b] a different timestep per sample
                    with self.accel.accumulate(self.unet), self.accel.autocast():
                        if t.kl_coef > 0:
                            with torch.no_grad(), self.reference_unet() as ref_unet:
                                ref_mean, _, _ = step_gaussian(self.pipe, sub, j, guidance, s.eta, unet=ref_unet)
                        mean, std, x_prev = step_gaussian(self.pipe, sub, j, guidance, s.eta, unet=self.unet)
                        lp = gaussian_log_prob(x_prev, mean, std).float()
                        loss, st = self.loss_fn(lp, sub.log_probs[rows, j], a,
                                                **({"clip_range": self.clip_range} if t.objective == "clipped" else {}))
                        if t.kl_coef > 0:
                            kl_map = kl_to_reference(mean.float(), ref_mean.float(), std.float())  # [b, h, w]
                            kl = (kl_map * self.kl_weight.to(kl_map)).mean()
                            loss = loss + t.kl_coef * kl
                            st = {**st, "kl": kl.detach()}
                        self.accel.backward(loss)
                        self.guard.observe(sub.timesteps[rows, j], loss=loss, log_prob=lp)
                        if self.accel.sync_gradients:
                            norm = self.accel.clip_grad_norm_(self.params, t.max_grad_norm)
                            stats.setdefault("grad_norm", []).append(float(norm))
                            self.guard.observe(sub.timesteps[rows, j], gradient_norm=norm)
                        if self.guard.step_ok(self.accel.sync_gradients):  # skips non-finite updates
                            self.opt.step()
                        self.opt.zero_grad(set_to_none=True)
                    stats.setdefault("loss", []).append(loss.item())
                    for key, v in st.items():
                        stats.setdefault(key, []).append(v.item())
        return {k: float(np.mean(v)) for k, v in stats.items()}

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

    # ---- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, epoch: int) -> None:
        """An atomic, verified checkpoint after ``epoch`` (0-based) and the exported weights/."""
        images, reward, info = self.before
        state = {"epoch": epoch, "tracker": self.tracker.state_dict(), "rng": self.rng.bit_generator.state,
                 "gen": self.gen.get_state(), "before_reward": reward, "before_info": info,
                 "before_images": (images.clamp(0, 1) * 255).round().to(torch.uint8)}
        self.checkpoints.save(epoch + 1, self.accel, state, self.run.path)
        self.export_weights()

    def export_weights(self) -> None:
        if self.accel.is_main_process:
            save_weights_atomic(lambda d: save_weights(self.pipe, self.accel.unwrap_model(self.unet), self.mode, d),
                                self.run.path)

    def load_checkpoint(self) -> None:
        """Continue from the newest checkpoint that verifies (chosen by rank 0), saying what was passed over."""
        folder = self.checkpoints.resumable(self.accel)
        self.accel.load_state(str(folder))
        state = torch.load(folder / "pxpo_state.pt", weights_only=False)
        self.tracker.load_state_dict(state["tracker"])
        self.rng.bit_generator.state = state["rng"]
        self.gen.set_state(state["gen"])
        self.start_epoch = state["epoch"] + 1
        if "before_images" in state:
            self.before = (state["before_images"].float() / 255, state["before_reward"], state["before_info"])
        if self.start_epoch >= self.cfg.epochs and run_finished(self.folder.path, self.start_epoch):
            raise UserError(f"run {self.cfg.resume} is finished (epochs={self.start_epoch}); to train on, "
                            f"give more with --epochs=N (N > {self.start_epoch})")

    # ---- the loop -------------------------------------------------------------------------
    def train(self) -> Path:
        """Train to ``cfg.epochs``; Ctrl-C / SIGTERM stop after the epoch in progress with a checkpoint."""
        with StopSignals() as self.signals:
            try:
                return self._train()
            finally:
                self.run.close()
                self.reward.close()
                self.folder.release()

    def _train(self) -> Path:
        cfg = self.cfg
        if self.before is None:  # a new run (a resumed one keeps its original before-images and reward)
            before_images, before_reward = self.evaluate()
            self.before = (before_images, before_reward, self.eval_info)
            self.run.grid(f"epoch_{self.start_epoch:04d}_before.png", before_images)
            self.run.log(self.start_epoch, {"eval_reward": before_reward})
        before_images, before_reward, before_info = self.before
        bar = tqdm(range(self.start_epoch, cfg.epochs), desc="epochs", initial=self.start_epoch, total=cfg.epochs,
                   disable=not self.accel.is_main_process)
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
                       **{f"reward/{k}": v for k, v in info.items()}, **stats, **self.guard.epoch_stats(),
                       "time_sample": t1 - t0, "time_train": t2 - t1}
            last = epoch == cfg.epochs - 1
            if last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
                bar.set_postfix(phase="eval")
                images, eval_reward = self.evaluate()
                metrics["eval_reward"] = eval_reward
                self.run.grid(f"epoch_{epoch + 1:04d}.png", images)
            self.run.log(epoch + 1, metrics)
            bar.set_postfix(phase="done", reward=f"{scalars.mean():.3f}", eval_reward=f"{eval_reward:.3f}")
            signum = self.signals.agreed(self.accel)
            if last or signum or self.guard.should_stop or (cfg.save_every and (epoch + 1) % cfg.save_every == 0):
                self.save_checkpoint(epoch)
            if signum and not last:
                bar.close()
                raise stopped(signum, self.run.path, epoch + 1, cfg.epochs)
            if self.guard.should_stop:
                bar.close()
                raise self.guard.stopped(self.run.path, epoch + 1)
        if self.start_epoch >= cfg.epochs:  # stopped after its last checkpoint, before finishing: finish now
            self.export_weights()
        after_images, after_reward = self.evaluate()
        self.run.before_after(before_images, after_images, before_reward, after_reward)
        self.run.reward_curve()
        if self.accel.is_main_process:
            (self.run.path / "summary.json").write_text(json.dumps(
                {"eval_reward_before": before_reward, "eval_reward_after": after_reward,
                 "eval_info_before": before_info, "eval_info_after": self.eval_info,
                 "finetune": self.mode, "clip_range": self.clip_range,
                 "skipped_steps": self.guard.skipped_total, "epochs": cfg.epochs}, indent=2))
        return self.run.path


def uses_reference(setting: str, reward) -> bool:
    """Whether training draws reference images: ``reward.reference`` = "auto" (when the reward
    declares ``needs_reference``), "always" or "never"."""
    return needs_reference(reward) if setting == "auto" else setting == "always"
