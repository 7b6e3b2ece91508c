"""The policy being trained and its one update step, shared by ``pxpo train``, ``pxpo refine`` and
``pxpo studio`` (all through :func:`pxpo.core.epoch.run_epoch`).

:class:`Policy` holds the fine-tuned network of a :class:`~pxpo.core.backbone.Backbone` (full or LoRA), its optimizer, the objective and, when
needed, the starting weights (reference pictures, KL anchor). :meth:`Policy.update` is the one
policy-gradient step every caller uses:

    for each inner epoch:
        shuffle the samples; per sample, order its timesteps (random, or the noisiest first)
        for each minibatch of train.batch_size samples:
            for each chunk of train.timesteps_per_forward of its n_train_t trained transitions
            (a different timestep per sample; by default all of them in one chunk):
                recompute the policy's Gaussian for every transition of the chunk in one batched
                network forward (CFG included), the objective (DDPO/PXPO, score function or clipped;
                objectives.py) and the optional KL; accumulate gradients
            one AdamW step with grad-norm clipping (DDPO's schedule: gradients summed over the
            trained timesteps of a minibatch)

``train.reuse_sampling`` (training/reuse.py): when the sampler kept its means with their graph
(``Trajectories.means``, sampled with ``keep_graph=policy.keep_graph()``), the first minibatch takes
its Gaussians from there instead of the network: it is on-policy, so they are what the network would give.
Every later minibatch and inner epoch recomputes; the kept graph is spent or dropped by the update.

Chunking changes how many transitions share a network call, not the gradient: every objective is a
mean over its transitions, so a chunk of c timesteps weighted c / n_train_t sums to the same
gradient as n_train_t one-timestep steps. Logged quantities stay tensors until the update ends
(no host sync per transition).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from contextlib import contextmanager

import torch
from diffusers.training_utils import EMAModel

from pxpo.core.advantages import per_covered_pixel
from pxpo.errors import UserError
from pxpo.core.backbone import DTYPES, Backbone
from pxpo.core.gaussian import gaussian_log_prob
from pxpo.core.objectives import (
    adapt_kl_coef,
    default_clip_range,
    kl_held_pixels,
    kl_to_reference,
    objective,
    relative_kl_target,
)
from pxpo.core.optim import make_optimizer
from pxpo.core.reuse import keep_steps, trained_steps
from pxpo.core.trajectory import Trajectories, kept_gaussian, step_gaussian
from pxpo.rewards.colour import region_mask

logger = logging.getLogger(__name__)


class Policy:
    def __init__(
        self,
        accel,
        backbone: Backbone,
        mode: str,
        train,
        sample,
        model,
        latent_hw: tuple[int, int],
        keep_start: bool = False,
        step_weight: str = "none",
        kl_target_ratio: float = 0.0,
    ):
        """``train``/``sample``/``model``: the config sections; ``keep_start``: keep the starting
        weights for reference pictures (a frozen copy for full fine-tuning; LoRA switches its
        adapters off instead); ``step_weight``, ``kl_target_ratio``: their ``experimental`` options. The KL anchor
        (``train.kl_coef > 0``) keeps the starting weights too, until :meth:`anchor_here` makes other
        weights the reference (a refinement round's parent)."""
        self.accel, self.backbone, self.mode, self.s = accel, backbone, mode, sample
        self.step_weight, self.kl_target_ratio = step_weight, kl_target_ratio
        self.retrain(train)
        self.frozen = frozen = model.frozen_dtype  # memory modes: frozen weights in half precision
        self.ref_model = (
            copy.deepcopy(backbone.model).requires_grad_(False).eval().to(DTYPES[frozen])
            if (keep_start or train.kl_coef > 0) and mode == "full"
            else None
        )
        self.params = backbone.prepare_training(
            mode, model.lora_rank, model.lora_alpha, model.lora_targets, model.gradient_checkpointing, frozen
        )
        opt = make_optimizer(self.params, train)
        self.model, self.opt = accel.prepare(backbone.model, opt)
        # train.ema_decay: a moving average of the trained weights, for evaluation and export (averaged())
        self.ema = EMAModel(self.params, decay=train.ema_decay) if train.ema_decay > 0 else None
        self.averaging = False
        self.loss_fn = objective(train.algorithm, train.objective, train.credit)
        self.clip_range = train.clip_range or default_clip_range(train.algorithm, latent_hw, credit=train.credit)
        # [h, w] latent pixels held by the KL ("hold": per sample, what the reward asks to keep)
        # (and every pixel when the reward holds none: an unanchored two-sided map collapsed into noise)
        per_sample = train.kl_region in ("hold", "unasked")
        self.kl_weight = torch.ones(latent_hw) if per_sample else region_mask(train.kl_region, *latent_hw)
        self.guard = None  # a training.guards.NonFiniteGuard: skips updates with NaN/inf (the trainer sets it)

    def retrain(self, train) -> None:
        """Use the ``train`` section from now on (a refinement round's own settings), with the batch
        arithmetic that follows from it: trained timesteps, backward passes per optimizer step."""
        self.t = train
        self.kl_coef = train.kl_coef  # moves each update when train.kl_target > 0 (adapt_kl_coef)
        self.n_train_t = trained_steps(train, self.s)
        self.per_forward = min(self.n_train_t, train.timesteps_per_forward or self.n_train_t)
        self.n_chunks = math.ceil(self.n_train_t / self.per_forward)  # backward passes per optimizer step

    def keep_graph(self) -> int:
        """How many leading steps the sampler keeps with their graph for this policy's next update
        (``sample_trajectories(keep_graph=...)``, through ``self.model``); 0: the update recomputes."""
        return keep_steps(self.t, self.s)

    def spends(self, traj: Trajectories, rows: int) -> bool:
        """Whether a minibatch of ``rows`` of ``traj``'s samples can use the sampler's kept means: it is
        all of them, in one backward pass, and every timestep it trains was kept."""
        needed = self.n_train_t if self.t.timestep_order == "first" else self.s.num_steps
        return traj.means is not None and rows == len(traj) and self.n_chunks == 1 and traj.means.shape[1] >= needed

    def anchor_here(self) -> None:
        """Make the weights the network holds now the reference (the KL anchor's and reference pictures'):
        a refinement round anchors the pixels a person liked to its parent round, whose picture they
        liked, not to the session's starting model, which would pull earlier rounds' changes back."""
        net = self.accel.unwrap_model(self.model)
        if self.ref_model is not None and self.mode == "full":  # the same module: copy the weights in (cast)
            self.ref_model.load_state_dict(net.state_dict())
            return
        self.ref_model = None  # LoRA: the base with these adapters; the old copy goes first
        ref = copy.deepcopy(net)
        for k in ("forward", "_original_forward"):  # accelerate's mixed-precision wrapper would call the original
            ref.__dict__.pop(k, None)
        self.ref_model = ref.requires_grad_(False).eval().to(DTYPES[self.frozen])

    @contextmanager
    def averaged(self):
        """The moving average of the trained weights (train.ema_decay) in the network for the block, the
        weights as trained back after it; with no average (or inside such a block), the network as it is."""
        if self.ema is None or self.averaging:
            yield
            return
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        self.averaging = True
        try:
            yield
        finally:
            self.averaging = False
            self.ema.restore(self.params)

    def settle(self) -> None:
        """Put the moving average (train.ema_decay) in the network for good: a run's end."""
        if self.ema is not None:
            self.ema.copy_to(self.params)

    @contextmanager
    def reference_model(self):
        """The network with the starting weights: draws reference pictures and anchors ``train.kl_coef``."""
        if self.ref_model is not None:
            yield self.ref_model
            return
        net = self.accel.unwrap_model(self.model)
        net.disable_adapters()
        try:
            yield net
        finally:
            net.enable_adapters()

    def update(
        self,
        traj: Trajectories,
        adv: torch.Tensor,
        gen: torch.Generator,
        holds: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> dict:
        """One policy-update step on an epoch's samples: ``adv`` is [N] (DDPO) or [N, h, w] (PXPO);
        ``holds`` [N, h, w]: what the reward asks to keep, ``weights`` [N, h, w]: where it has an opinion;
        the KL anchors per sample what ``train.kl_region`` (hold, unasked) picks of them
        (:func:`kl_held_pixels`; else the fixed region; None: every pixel). The sampler's kept
        means (``traj.means``) serve the first minibatch when they can, and are dropped from ``traj`` after.
        Returns the means of the logged quantities (loss, approx_kl, clipfrac, ratio, grad_norm, kl,
        kl_held: the KL per anchored pixel, kl_coef: the weight it had)."""
        t, s, accel = self.t, self.s, self.accel
        kl_weights = kl_held_pixels(t.kl_region, holds, weights)
        guidance = s.guidance if t.cfg else 1.0
        stats: dict[str, list[torch.Tensor]] = {}
        n, steps = len(traj), s.num_steps
        clip = {"clip_range": self.clip_range} if t.objective == "clipped" else {}
        # kl_region=hold with a reward that keeps nothing (kl_weights None): every pixel is anchored
        use_kl = t.kl_coef > 0
        anchor_rest = use_kl and t.kl_steps == "all" and self.n_train_t < steps  # per transition as a trained one
        accel.gradient_accumulation_steps = self.n_chunks  # one optimizer step per minibatch
        # several processes (``gen`` in the same state on each): this process holds rows r*n ... (r+1)*n
        # of the global epoch; it trains them in the global shuffle's order at the global draw's timesteps,
        # train.batch_size / W at a time, so W processes' minibatches together form one global minibatch
        world, r = accel.num_processes, accel.process_index
        # experimental.step_weight=balanced: each transition's advantage times its step's weight [n, steps]
        step_w = (
            self.backbone.step_weights(traj.timesteps, s.eta).to(adv.device) if self.step_weight == "balanced" else None
        )
        checking, gap = t.ratio_check != "off", None  # the on-policy check, until the first optimizer step
        for _ in range(t.inner_epochs):
            perm = torch.randperm(n * world, generator=gen)  # [W n] the global order
            perm = perm[(perm >= r * n) & (perm < (r + 1) * n)] - r * n  # [n] this process's rows in it
            if t.timestep_order == "first":  # the noisiest steps, where layout and colour are decided
                tperm = torch.arange(steps).expand(n, steps)
            elif t.timestep_order == "last":  # the least noisy first in the order, then the rest
                tperm = torch.arange(steps).roll(self.n_train_t).expand(n, steps)
            else:
                tperm = torch.stack([torch.randperm(steps, generator=gen) for _ in range(n * world)])[
                    r * n : (r + 1) * n
                ]
            for mb in perm.split(t.batch_size // world):
                if not self.spends(traj, len(mb)):
                    traj.means = None  # recomputed: the kept graph cannot serve (or already served) this one
                for k0 in range(0, self.n_train_t, self.per_forward):
                    j = tperm[mb, k0 : k0 + self.per_forward].T.reshape(
                        -1
                    )  # [c*b] slot k0 of every sample, then k0+1, ...
                    c = len(j) // len(mb)
                    rows = mb.repeat(c)  # [c*b] the trajectory of each transition
                    step = traj.transitions(rows, j)  # c*b one-step trajectories
                    with accel.accumulate(self.model), accel.autocast(), self.memory_hint(len(j)):
                        a = (
                            adv[rows]
                            if step_w is None
                            else adv[rows] * step_w[rows, j].view(-1, *[1] * (adv.dim() - 1))
                        )
                        loss, lp, st = self.chunk_loss(
                            step, a, guidance, clip, use_kl, kl_weights[rows] if kl_weights is not None else None
                        )
                        if anchor_rest and k0 == 0:  # the untrained steps' KL, in the minibatch's first pass
                            kl_rest, c_rest, st_rest = self.untrained_kl(traj, mb, tperm, guidance, kl_weights)
                            loss, st = loss + self.kl_coef * kl_rest * (c_rest / c), {**st, **st_rest}
                        if checking:  # per sample, the mean log-ratio over its latent elements
                            g = (lp.detach() - step.log_probs[:, 0].float()).mean(dim=(1, 2, 3)).abs().max()
                            gap = g if gap is None else torch.maximum(gap, g)
                        accel.backward(loss * (c * self.n_chunks / self.n_train_t))  # sums to DDPO's weighting
                        guard = self.guard
                        if guard is not None:
                            guard.observe(step.timesteps[:, 0], loss=loss, log_prob=lp)
                        if accel.sync_gradients:
                            norm = accel.clip_grad_norm_(self.params, t.max_grad_norm)
                            stats.setdefault("grad_norm", []).append(torch.as_tensor(norm).detach())
                            if guard is not None:
                                guard.observe(step.timesteps[:, 0], gradient_norm=norm)
                                guard.agree(accel)  # every process steps, or none: the weights stay equal
                        if guard is None or guard.step_ok(accel.sync_gradients):  # skips non-finite updates
                            self.opt.step()
                            if self.ema is not None and accel.sync_gradients:
                                self.ema.step(self.params)
                        checking = checking and not accel.sync_gradients
                        self.opt.zero_grad(set_to_none=True)
                    for key, v in {"loss": loss, **st}.items():
                        stats.setdefault(key, []).append(v.detach())
                traj.means = None  # spent: the backward freed its graph
        out = {k: float(torch.stack(v).float().mean()) for k, v in stats.items()}
        if gap is not None:  # the largest over every process, so that all of them stop alike
            out["ratio_gap"] = float(accel.gather(gap.reshape(1).to(accel.device)).max())
            check_on_policy(out["ratio_gap"], t.ratio_check)
        if use_kl:
            out["kl_coef"] = self.kl_coef
            if t.kl_target > 0 or self.kl_target_ratio > 0:  # every process moves the weight alike: by the KL over all
                kl_held, kl_asked = accel.reduce(
                    torch.tensor([out["kl_held"], out.get("kl_asked", math.nan)], device=accel.device), "mean"
                ).tolist()
                target = relative_kl_target(kl_asked, self.kl_target_ratio, t.kl_target)
                self.kl_coef = adapt_kl_coef(self.kl_coef, kl_held, target, t.kl_loosen_rate, t.kl_tighten_rate)
        return out

    @contextmanager
    def memory_hint(self, transitions: int):
        """A device out of memory in the update says which settings lower it."""
        try:
            yield
        except torch.OutOfMemoryError as e:
            raise UserError(
                f"out of device memory in the policy update: {transitions} transitions went through the network in "
                f"one call (train.timesteps_per_forward={self.t.timesteps_per_forward or 'all'}, "
                f"train.batch_size={self.t.batch_size}); lower --train.timesteps_per_forward (1 is DDPO's way) "
                "or --train.batch_size, or turn on --model.gradient_checkpointing=true"
            ) from e

    def anchored(self, kl_map: torch.Tensor, kl_weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The anchor's term of a KL map [K, h, w] over the pixels it holds (``kl_weights`` [K, h, w], or
        the fixed ``train.kl_region``): (the loss's KL, the mean KL per anchored pixel, detached)."""
        held = (kl_weights if kl_weights is not None else self.kl_weight).to(kl_map)  # [K|1, h, w]
        per_held = (kl_map * held).sum() / held.expand_as(kl_map).sum().clamp_min(1e-8)  # KL per anchored pixel
        if self.t.loss_norm == "region":  # the KL averaged over the held pixels
            held = per_covered_pixel(held, held)
        return (kl_map * held).mean(), per_held.detach()

    def untrained_kl(
        self,
        traj: Trajectories,
        mb: torch.Tensor,
        tperm: torch.Tensor,
        guidance: float,
        kl_weights: torch.Tensor | None,
    ) -> tuple[torch.Tensor, int, dict]:
        """``train.kl_steps=all``: the anchor on the steps of minibatch ``mb`` that the update does not train
        (``tperm[mb, n_train_t:]``; the least noisy under timestep_order=first, the noisiest under last), with no policy-gradient term:
        (the mean KL over those transitions, how many per sample, stats). A step sampled without noise
        (sample.untrained_eta=0) is charged as if sampled at sample.eta: its mean's shift over that std."""
        j = tperm[mb, self.n_train_t :].T.reshape(-1)  # [c'*b]
        rows = mb.repeat(len(j) // len(mb))
        step = dataclasses.replace(traj, means=None).transitions(rows, j)
        with torch.no_grad(), self.reference_model() as ref_model:
            ref_mean, _, _ = step_gaussian(self.backbone, step, 0, guidance, self.s.eta, model=ref_model)
        mean, std, _ = step_gaussian(self.backbone, step, 0, guidance, self.s.eta, model=self.model)
        kl_map = kl_to_reference(mean.float(), ref_mean.float(), std.float())  # [c'*b, h, w]
        kl, per_held = self.anchored(kl_map, kl_weights[rows] if kl_weights is not None else None)
        return kl, len(j) // len(mb), {"kl_untrained": kl.detach(), "kl_held_untrained": per_held}

    def chunk_loss(
        self,
        step: Trajectories,
        adv: torch.Tensor,
        guidance: float,
        clip: dict,
        use_kl: bool,
        kl_weights: torch.Tensor | None,
    ):
        """The objective (plus ``kl_coef`` * KL) of K one-step trajectories in one network call:
        (loss, log_prob [K, C, h, w], stats). ``adv`` [K] or [K, h, w]; ``kl_weights`` [K, h, w] or
        None (the fixed ``train.kl_region``). One-step trajectories that carry the sampler's means
        (``step.means``) take them instead of the network call."""
        s = self.s
        if use_kl:
            with torch.no_grad(), self.reference_model() as ref_model:
                ref_mean, _, _ = step_gaussian(self.backbone, step, 0, guidance, s.eta, model=ref_model)
        mean, std, x_prev = (
            kept_gaussian(self.backbone, step, s.eta)
            if step.means is not None  # the sampler's
            else step_gaussian(self.backbone, step, 0, guidance, s.eta, model=self.model)
        )
        lp = gaussian_log_prob(x_prev, mean, std).float()
        loss, st = self.loss_fn(lp, step.log_probs[:, 0], adv, **clip)
        if use_kl:
            kl_map = kl_to_reference(mean.float(), ref_mean.float(), std.float())  # [K, h, w]
            kl, per_held = self.anchored(kl_map, kl_weights)
            loss = loss + self.kl_coef * kl
            st = {**st, "kl": kl.detach(), "kl_held": per_held}
            asked = (1 - kl_weights.to(kl_map)).clamp_min(0) if kl_weights is not None else None
            if asked is not None and self.kl_target_ratio > 0 and asked.sum() > 0:  # the KL per asked pixel
                st["kl_asked"] = (kl_map.detach() * asked).sum() / asked.sum()
        return loss, lp, st


RATIO_TOLERANCE = 0.01  # nats per latent element: a per-sample ratio 1% off; bf16 against fp32 re-scoring is 0.035+


def check_on_policy(gap: float, mode: str = "error") -> None:
    """Before any update the re-scored log-probs must be the sampler's (ratio 1): ``gap`` is the largest
    per-sample mean |log p_rescored - log p_sampled| (nats per element) of the first minibatch."""
    if mode == "off" or not gap > RATIO_TOLERANCE:  # nan: non-finite log-probs, the update's guard acts on those
        return
    msg = (
        f"sampling and re-scoring disagree: before any update the re-scored log-probabilities differ from "
        f"the sampler's by up to {gap:.4g} nats per latent element (ratio {math.exp(min(gap, 50)):.4g} instead "
        f"of 1; tolerance {RATIO_TOLERANCE}). Sample and train in one precision (model.mixed_precision), keep "
        "the network deterministic (no dropout in train mode, the same attention kernels), and sample with the "
        "guidance you train with (train.cfg=true); --train.ratio_check=warn goes on anyway"
    )
    if mode == "warn":
        logger.warning(msg)
        return
    raise UserError(msg)
