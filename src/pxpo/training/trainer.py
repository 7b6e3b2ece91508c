"""``pxpo train``: the core's epoch (:func:`pxpo.core.epoch.run_epoch`) run for ``epochs``, with what a
run needs around it: a model loaded by name, rewards and prompts by name, evaluation, checkpoints
and resume, several processes (accelerate).

One epoch:
1. sample ``sample.num_batches`` x ``sample.batch_size`` trajectories (the backbone's Gaussian step,
   DDIM with eta > 0 for SD, CFG) and score each batch's images while the next batch samples
   (rewards run in a worker thread);
2. reduce reward maps to the latent grid (PXPO) or take scalars (DDPO); compute advantages over the
   whole epoch's samples (gathered across processes: :meth:`Trainer.advantages`);
3. the policy-update step (``core/policy.py``, shared with ``pxpo refine``): ``train.inner_epochs``
   passes over minibatches of ``train.batch_size`` samples, one AdamW step per minibatch. With
   ``train.reuse_sampling`` the sampling pass keeps its graph and the first minibatch backpropagates
   through it instead of running the network again (``core/reuse.py``).

With ``sample.group_size`` K > 1 each prompt is drawn K times from one x_T (shared-noise groups)
and ``train.advantages=group`` compares each pixel with the same pixel of its own group.

Under several processes the batches are global: each process samples and trains its rows of them
(``distributed.py``), with rewards gathered before advantages and gradients averaged by DDP.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pxpo.backends import backbone_for
from pxpo.backends.conditioning import PromptCache, text_encoders
from pxpo.backends.finetune import resolve_mode
from pxpo.core.advantages import PerPromptStats
from pxpo.core.epoch import Collected, Epoch, collect, run_epoch
from pxpo.errors import UserError
from pxpo.backends.presets import check_pipeline
from pxpo.backends.registry import check_model_source, load_pipeline, world_of
from pxpo.prompts import get_prompts
from pxpo.rewards import needs_reference
from pxpo.rewards.compose import AsyncReward, build_reward
from pxpo.training.artifacts import RunDir
from pxpo.training.checkpoint import Checkpoints, save_weights_atomic
from pxpo.training.config import RunConfig
from pxpo.training.global_advantages import check_rewards, global_advantages
from pxpo.training.distributed import check_batches, check_launch, check_world_size, mean_across, shard
from pxpo.training.guards import NonFiniteGuard
from pxpo.core.policy import Policy
from pxpo.training.resume import check_resume, run_finished, saved_config
from pxpo.core.reuse import step_etas
from pxpo.training.rundir import reserve
from pxpo.training.signals import StopSignals, stopped
from pxpo.training.validate import validate_config
from pxpo.core.trajectory import Trajectories, draw_noise, sample_trajectories


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
        t = cfg.train
        self.accel = Accelerator(
            mixed_precision=cfg.model.mixed_precision,
            gradient_accumulation_steps=max(1, math.ceil(cfg.sample.num_steps * t.timestep_fraction)),
        )
        # several processes: one process group, global batches split evenly, the same count on resume
        self.world, self.rank = self.accel.num_processes, self.accel.process_index
        check_launch(self.world)
        check_batches(cfg.sample.batch_size, cfg.sample.group_size, t.batch_size, self.world)
        if cfg.resume:
            check_world_size(saved_config(cfg.resume).world_size, self.world, cfg.resume)
        cfg.world_size = self.world  # recorded in config.yaml
        self.folder = reserve(cfg.out_dir, cfg.run_name, cfg.resume, self.accel)  # rank 0's choice on every rank
        set_seed(cfg.seed, device_specific=True)
        self.pipe = load_pipeline(cfg.model.name, cfg.model.allow_download, device=self.accel.device)
        check_pipeline(cfg.model.preset, self.pipe, cfg.model.name)
        self.backbone = backbone_for(self.pipe)
        self.prompt_cache = None  # memory mode: prompt embeddings computed once, text encoders off the accelerator
        if cfg.model.precompute_prompt_embeds:
            self.prompt_cache = PromptCache()
            for encoder in text_encoders(self.pipe):
                encoder.to("cpu")
        self.model_world = world_of(cfg.model.name)  # a testbed model's vocabulary and judge (None for others)
        self.mode = resolve_mode(cfg.model.finetune, self.model_world is not None)
        self.reward = AsyncReward(build_reward(cfg.reward.weights or cfg.reward.name, cfg.reward.params))
        self.use_reference = uses_reference(cfg.reward.reference, self.reward)
        self.etas = step_etas(cfg.train, cfg.sample)  # sample.eta, or per step with sample.untrained_eta
        self.latent_hw = tuple(self.backbone.latent_shape(1, cfg.sample.height or None, cfg.sample.width or None)[2:])
        self.policy = Policy(
            self.accel,
            self.backbone,
            self.mode,
            t,
            cfg.sample,
            cfg.model,
            self.latent_hw,
            keep_start=self.use_reference,
            step_weight=cfg.experimental.step_weight,
            kl_target_ratio=cfg.experimental.kl_target_ratio,
        )
        self.model, self.opt, self.params = self.policy.model, self.policy.opt, self.policy.params
        self.clip_range = self.policy.clip_range
        self.prompt_fn = get_prompts(cfg.prompts.name, **cfg.prompts.params)
        self.tracker = PerPromptStats(t.buffer_size, t.min_count, cfg.experimental.adv_norm or t.adv_norm)
        # the same state on every process: each draws the global batch's prompts and noise and keeps its rows
        self.rng = np.random.default_rng(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.guard = NonFiniteGuard(t.max_nonfinite)
        self.policy.guard = self.guard
        self.checkpoints = Checkpoints(self.folder.path / "checkpoint", cfg.keep_checkpoints)
        self.start_epoch, self.before = 0, None
        self.n_groups = 0  # shared-noise groups drawn so far (their ids)
        self.warned_hold = False
        # eval_hook(epoch, images) -> dict of task measures, logged with each evaluation (benchmarks)
        self.eval_hook = None
        if cfg.resume:
            self.load_checkpoint()
        self.folder.create()  # exclusive mkdir + lock of a new run's folder; a resume holds its lock already
        self.run = RunDir(self.folder.path, cfg, self.accel.is_main_process, cfg.tensorboard, self.start_epoch)

    # ---- prompts and sampling -------------------------------------------------------------
    def prompts(self, n: int, rng: np.random.Generator) -> tuple[list[str], list[dict]]:
        prompts, meta = self.prompt_fn(n, rng)
        if self.model_world is not None:
            self.model_world.check_prompts(prompts)
        return prompts, meta

    def sample(
        self, prompts, meta, generator, group_size: int = 1, sharded: bool = False, keep_graph: int = 0
    ) -> Trajectories:
        """Trajectories of the current policy; with references, ``metadata[i]["reference"]`` holds
        the starting model's image drawn from the same x_T and the same per-step noise.

        ``group_size`` K > 1: each prompt is drawn K times from one x_T with fresh step noise (a
        shared-noise group; ``metadata[i]["group"]`` names it). ``sharded``: ``prompts`` are this
        process's rows of a global batch, and the noise is those rows of the global batch's noise.
        ``keep_graph``: the policy's first steps keep their graph for the update (train.reuse_sampling)."""
        s = self.cfg.sample
        part = (self.rank, self.world) if sharded else (0, 1)
        x_T = None
        if group_size > 1:
            x_T = draw_noise(
                self.backbone.latent_shape(len(prompts), s.height or None, s.width or None),
                generator,
                torch.float32,
                part,
            ).repeat_interleave(group_size, 0)
            first = self.n_groups + part[0] * len(prompts)  # group ids over the global batch
            ids = range(first, first + len(prompts))
            self.n_groups += len(prompts) * part[1]
            meta = [{**m, "group": g} for m, g in zip(meta, ids) for _ in range(group_size)]
            prompts = [p for p in prompts for _ in range(group_size)]
        state = generator.get_state() if self.use_reference else None

        def draw(gen, model=None, keep=0):
            with self.accel.autocast():
                return sample_trajectories(
                    self.backbone,
                    prompts,
                    meta,
                    s.num_steps,
                    s.guidance,
                    self.etas,
                    self.cfg.prompts.negative,
                    s.height or None,
                    s.width or None,
                    gen,
                    model=model,
                    init_latents=x_T,
                    prompt_cache=self.prompt_cache,
                    shard=part,
                    keep_graph=keep,
                )

        # kept steps run through the trained (under several processes DDP-wrapped) network the update backpropagates
        traj = draw(generator, self.policy.model if keep_graph else None, keep_graph)
        if state is not None:
            with self.policy.reference_model() as ref_model:
                ref = draw(torch.Generator().set_state(state), ref_model)
            traj.metadata = [{**m, "reference": img} for m, img in zip(traj.metadata, ref.images)]
        return traj

    def batches(self):
        """This process's share of one epoch's batches, each drawn when iterated (so a batch samples
        while the one before it is scored): sample.num_batches of sample.batch_size / processes."""
        s = self.cfg.sample
        for _ in range(s.num_batches):
            prompts, meta = self.prompts(s.batch_size // s.group_size, self.rng)  # the global batch's
            rows = shard(len(prompts), self.rank, self.world)
            yield self.sample(
                prompts[rows], meta[rows], self.gen, s.group_size, sharded=True, keep_graph=self.policy.keep_graph()
            )

    def collect(self) -> Collected:
        """This process's share of one epoch's samples and their rewards on the latent grid."""
        return collect(
            self.batches(), self.reward, self.latent_hw, self.cfg.reward.latent_pool, self.cfg.experimental.hold_pool
        )

    def epoch(self) -> Epoch:
        """One epoch: collect -> advantages -> the policy update (:func:`pxpo.core.epoch.run_epoch`)."""
        return run_epoch(
            self.policy,
            self.batches(),
            self.reward,
            self.advantages,
            self.gen,
            self.latent_hw,
            self.cfg.reward.latent_pool,
            self.cfg.experimental.hold_pool,
        )

    # ---- advantages ----------------------------------------------------------------------
    def advantages(self, c: Collected) -> torch.Tensor:
        """Advantages over all processes' samples (:mod:`pxpo.training.global_advantages`); this process's share."""
        self.warned_hold = check_rewards(self.cfg, c, self.warned_hold)
        return global_advantages(self.accel, self.cfg, self.tracker, c, self.latent_hw)

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
            with self.policy.averaged():  # train.ema_decay: the weights' moving average
                tr = self.sample(prompts[i : i + bs], meta[i : i + bs], gen)
            images.append(tr.images.cpu())
            result = self.reward.submit(tr.images, tr.prompts, tr.metadata).result()
            rewards.append(result.scalar.cpu())
            for k, v in result.info.items():
                info.setdefault(k, []).append(torch.as_tensor(v, dtype=torch.float32).cpu().reshape(-1))
        images = torch.cat(images)
        self.eval_info = {k: float(torch.cat(v).mean()) for k, v in info.items()}
        if self.model_world is not None:  # e.g. shapes-world captions: the evaluator's reading of the named parts
            self.eval_info.update(self.model_world.judge(images, prompts))
        return images, float(torch.cat(rewards).mean())

    def _hook(self, epoch: int, images: torch.Tensor) -> dict:
        return {f"task/{k}": v for k, v in self.eval_hook(epoch, images).items()} if self.eval_hook else {}

    # ---- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, epoch: int) -> None:
        """An atomic, verified checkpoint after ``epoch`` (0-based) and the exported weights/."""
        images, reward, info = self.before
        state = {
            "epoch": epoch,
            "tracker": self.tracker.state_dict(),
            "rng": self.rng.bit_generator.state,
            "gen": self.gen.get_state(),
            "kl_coef": self.policy.kl_coef,
            "ema": self.policy.ema.state_dict() if self.policy.ema is not None else None,
            "before_reward": reward,
            "before_info": info,
            "before_images": (images.clamp(0, 1) * 255).round().to(torch.uint8),
        }
        self.checkpoints.save(epoch + 1, self.accel, state, self.run.path)
        self.export_weights()

    def export_weights(self) -> None:
        if self.accel.is_main_process:
            with self.policy.averaged():
                save_weights_atomic(
                    lambda d: self.backbone.save_weights(self.accel.unwrap_model(self.model), self.mode, d),
                    self.run.path,
                )

    def load_checkpoint(self) -> None:
        """Continue from the newest checkpoint that verifies (chosen by rank 0), saying what was passed over."""
        folder = self.checkpoints.resumable(self.accel)
        self.accel.load_state(str(folder))
        state = torch.load(folder / "pxpo_state.pt", weights_only=False)
        self.tracker.load_state_dict(state["tracker"])
        self.rng.bit_generator.state = state["rng"]
        self.gen.set_state(state["gen"])
        self.policy.kl_coef = state.get("kl_coef", self.policy.kl_coef)  # the adaptive KL's weight goes on
        if self.policy.ema is not None and state.get("ema") is not None:
            self.policy.ema.load_state_dict(state["ema"])
        self.start_epoch = state["epoch"] + 1
        if "before_images" in state:
            self.before = (state["before_images"].float() / 255, state["before_reward"], state["before_info"])
        if self.start_epoch >= self.cfg.epochs and run_finished(self.folder.path, self.start_epoch):
            raise UserError(
                f"run {self.cfg.resume} is finished (epochs={self.start_epoch}); to train on, "
                f"give more with --epochs=N (N > {self.start_epoch})"
            )

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
            self.run.log(
                self.start_epoch, {"eval_reward": before_reward, **self._hook(self.start_epoch, before_images)}
            )
        before_images, before_reward, before_info = self.before
        self.before_images = before_images
        bar = tqdm(
            range(self.start_epoch, cfg.epochs),
            desc="epochs",
            initial=self.start_epoch,
            total=cfg.epochs,
            disable=not self.accel.is_main_process,
        )
        eval_reward = before_reward
        for epoch in bar:
            bar.set_postfix(phase="sample and train", eval_reward=f"{eval_reward:.3f}")
            ep = self.epoch()
            scalars = self.accel.gather(
                ep.collected.scalars.to(self.accel.device)
            ).cpu()  # the global batch's, for the log
            info = ep.collected.info
            # means over every process's samples (rank 0 writes them)
            shared = mean_across(self.accel, {**{f"reward/{k}": v for k, v in info.items()}, **ep.stats})
            metrics = {
                "reward_mean": float(scalars.mean()),
                "reward_std": float(scalars.std()),
                **shared,
                **self.guard.epoch_stats(),
                "time_sample": ep.time_sample,
                "time_train": ep.time_train,
            }
            last = epoch == cfg.epochs - 1
            if last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
                bar.set_postfix(phase="eval")
                images, eval_reward = self.evaluate()
                metrics["eval_reward"] = eval_reward
                metrics.update(self._hook(epoch + 1, images))
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
        self.policy.settle()  # train.ema_decay: the run ends with the weights' moving average
        after_images, after_reward = self.evaluate()
        self.after_images = after_images
        self.run.before_after(before_images, after_images, before_reward, after_reward)
        self.run.reward_curve()
        if self.accel.is_main_process:
            (self.run.path / "summary.json").write_text(
                json.dumps(
                    {
                        "eval_reward_before": before_reward,
                        "eval_reward_after": after_reward,
                        "eval_info_before": before_info,
                        "eval_info_after": self.eval_info,
                        "finetune": self.mode,
                        "clip_range": self.clip_range,
                        "skipped_steps": self.guard.skipped_total,
                        "epochs": cfg.epochs,
                    },
                    indent=2,
                )
            )
        return self.run.path


def uses_reference(setting: str, reward) -> bool:
    """Whether training draws reference images: ``reward.reference`` = "auto" (when the reward
    declares ``needs_reference``), "always" or "never"."""
    return needs_reference(reward) if setting == "auto" else setting == "always"
