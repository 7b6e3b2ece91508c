"""Trajectory sampling from any :class:`~pxpo.core.backbone.Backbone`, and re-scoring for training.

``sample_trajectories`` runs the backbone's parts (text conditioning, the guided network output, the
policy's Gaussian step, the decoder) and stores what the policy gradient needs: latents x_T..x_0,
timesteps, per-element log-probabilities (:mod:`pxpo.core.gaussian`) and the conditioning.

``step_log_prob`` recomputes log p(x_{t-1} | x_t, c) for stored transitions under the current
weights. Called with the batch the sampler used, it reproduces the sampler's numbers exactly, so the
probability ratio before any update is 1 (the on-policy check).

``keep_graph`` (``train.reuse_sampling``): the sampler runs its first k steps' network calls with
gradients and keeps their Gaussian means, autograd graph and all, in ``Trajectories.means``; the
first, on-policy update then takes its means from there (:func:`kept_gaussian`) instead of running
the network again. The graph of those k steps stays in memory until that update's backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from pxpo.core.backbone import Backbone
from pxpo.core.gaussian import draw, gaussian_log_prob


@dataclass
class Trajectories:
    """A batch of B denoising trajectories of n steps (latent shape C x h x w)."""

    latents: torch.Tensor  # [B, n+1, C, h, w]  x_T, ..., x_0
    log_probs: torch.Tensor  # [B, n, C, h, w]  log p(x_{t-1} | x_t, c) per element, at sampling
    timesteps: torch.Tensor  # [B, n]  the timestep t of each transition
    # the backbone's conditioning, per sample: e.g. prompt_embeds, negative_embeds [B, L, D] (and SDXL's
    # text_embeds, negative_text_embeds [B, P], time_ids [B, 6])
    cond: dict[str, torch.Tensor]
    images: torch.Tensor  # [B, 3, H, W] decoded x_0 in [0, 1]
    prompts: list[str] = field(default_factory=list)
    metadata: list[dict] = field(default_factory=list)
    # [B, k, C, h, w] the sampler's Gaussian means of the first k steps with their autograd graph
    # (sample_trajectories(keep_graph=k)), else None; the on-policy update spends them
    means: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.latents.shape[0]

    def index(self, idx: torch.Tensor) -> "Trajectories":
        """The trajectories at ``idx`` (a [k] long tensor)."""
        pick = idx.tolist()
        return Trajectories(
            self.latents[idx],
            self.log_probs[idx],
            self.timesteps[idx],
            {k: v[idx] for k, v in self.cond.items()},
            self.images[idx],
            [self.prompts[i] for i in pick],
            [self.metadata[i] for i in pick],
            self.means[idx] if self.means is not None else None,
        )

    def transitions(self, rows: torch.Tensor, j: torch.Tensor) -> "Trajectories":
        """One transition per pair: trajectory ``rows[k]``'s step ``j[k]`` (both [K] long tensors), as K
        one-step trajectories (latents [K, 2, C, h, w]: x_t and x_{t-1}; log_probs [K, 1, C, h, w];
        timesteps [K, 1]; means [K, 1, C, h, w] when kept (every ``j[k]`` < k kept steps), else None;
        images left out: [0, 3, H, W]; every other per-sample field indexed by ``rows``). Several
        timesteps of the same trajectories then go through the UNet in one call
        (``step_gaussian(backbone, traj.transitions(rows, j), 0, ...)``)."""
        per_step = {
            "latents": torch.stack([self.latents[rows, j], self.latents[rows, j + 1]], dim=1),
            "log_probs": self.log_probs[rows, j].unsqueeze(1),
            "timesteps": self.timesteps[rows, j].unsqueeze(1),
            "images": self.images[:0],
            "means": self.means[rows, j].unsqueeze(1) if self.means is not None else None,
        }
        pick = rows.tolist()

        def take(v):  # a per-sample field: a tensor, a dict of tensors (the conditioning) or a list
            if torch.is_tensor(v):
                return v[rows]
            if isinstance(v, dict):
                return {k: x[rows] for k, x in v.items()}
            return [v[i] for i in pick]

        return Trajectories(
            **{f.name: per_step[f.name] if f.name in per_step else take(getattr(self, f.name)) for f in fields(self)}
        )

    @staticmethod
    def cat(parts: list["Trajectories"]) -> "Trajectories":
        cat = {k: torch.cat([getattr(p, k) for p in parts]) for k in ("latents", "log_probs", "timesteps", "images")}
        return Trajectories(
            **cat,
            cond={k: torch.cat([p.cond[k] for p in parts]) for k in parts[0].cond},
            prompts=sum((p.prompts for p in parts), []),
            metadata=sum((p.metadata for p in parts), []),
            means=torch.cat([p.means for p in parts]) if all(p.means is not None for p in parts) else None,
        )


@torch.no_grad()  # the kept steps (keep_graph) enable gradients themselves
def sample_trajectories(
    backbone: Backbone,
    prompts: list[str],
    metadata: list[dict] | None = None,
    num_steps: int = 20,
    guidance: float = 5.0,
    eta: float | list[float] = 1.0,
    negative_prompt: str | list[str] = "",
    height: int | None = None,
    width: int | None = None,
    generator: torch.Generator | None = None,
    model=None,
    init_latents: torch.Tensor | None = None,
    prompt_cache=None,
    shard: tuple[int, int] = (0, 1),
    keep_graph: int = 0,
) -> Trajectories:
    """Sample B = len(prompts) trajectories with the backbone's Gaussian step (DDIM(eta) for SD) and
    classifier-free guidance.

    ``model`` overrides ``backbone.model`` (e.g. a frozen copy that draws reference images). All noise
    comes from ``generator`` in a fixed order, so two calls from equal generator states with the
    same prompts share x_T and every step's noise. ``init_latents`` [B, C, h, w] gives x_T (before
    the scheduler's init_noise_sigma) instead of drawing it; ``generator`` then draws only step noise.
    ``prompt_cache``: a backend's prompt cache (precomputed prompt embeddings).
    Latents and log-probabilities are float32 whatever precision the networks run in.
    ``eta``: one value for every step, or one per step (length ``num_steps``); a step with eta 0 is
    deterministic (no noise drawn, log-probability 0: such a step cannot be trained).
    ``shard`` = (index, count): the generator draws the noise of count * B trajectories and this call
    keeps rows index * B ... (index + 1) * B, so count processes with equal generators together draw
    exactly the trajectories one process would draw for all their prompts (multi-process training).
    ``keep_graph`` = k > 0: the first k steps run the network with gradients (through ``model``: pass
    the trained, e.g. DDP-wrapped, copy) and ``means`` [B, k, C, h, w] keeps their means and graph;
    every other number is the same as without. Everything else runs without gradients.
    """
    model = model if model is not None else backbone.model
    height, width = backbone.picture_size(height, width)
    device = backbone.device
    cond = backbone.encode(prompts, negative_prompt, height, width, prompt_cache)
    b = len(prompts)
    shape = tuple(backbone.latent_shape(b, height, width))
    if init_latents is not None and tuple(init_latents.shape) != shape:
        raise ValueError(f"init_latents has shape {tuple(init_latents.shape)}; expected {shape}")
    x = init_latents if init_latents is not None else draw_noise(shape, generator, torch.float32, shard)
    x = x.to(device, torch.float32)
    steps = backbone.set_steps(num_steps, shape)
    x = backbone.init_noise(x)
    if isinstance(eta, (int, float)) and eta <= 0:
        raise ValueError(
            f"eta must be > 0 for a policy with a density (got {eta}); DDPO and PXPO use eta=1.0 "
            "(per-step etas may be 0 on steps that are not trained)"
        )
    etas = [float(eta)] * num_steps if isinstance(eta, (int, float)) else [float(e) for e in eta]
    if len(etas) != num_steps or min(etas) < 0 or any(e == 0 for e in etas[:keep_graph]):
        raise ValueError(f"eta {eta!r}: give one value >= 0 or {num_steps}, and > 0 on the {keep_graph} kept steps")
    latents, log_probs, means = [x], [], []
    for k, t in enumerate(steps):
        with torch.set_grad_enabled(k < keep_graph):
            out = backbone.guided_output(model, x, t, cond, guidance)
            if etas[k] == 0:  # deterministic: no noise drawn, nothing to score
                x = backbone.deterministic_step(out, t, x).detach()
                lp = torch.zeros_like(x)
            else:
                mean, std = backbone.gaussian(out, t, x, etas[k])  # [B, C, h, w], [B, 1, 1, 1]
                x, lp = draw(
                    mean, std, x, generator=generator, noise=draw_noise(x.shape, generator, x.dtype, shard, x.device)
                )
        if k < keep_graph:
            means.append(mean)  # with its graph; x (detached) and lp carry none
        latents.append(x)
        log_probs.append(lp.detach())
    timesteps = steps.to(device).unsqueeze(0).expand(b, -1).clone()  # [B, n]
    with torch.enable_grad():  # stacked into [B, k, C, h, w] with their graph
        means = torch.stack(means, dim=1) if means else None
    return Trajectories(
        latents=torch.stack(latents, dim=1),
        log_probs=torch.stack(log_probs, dim=1).float(),
        timesteps=timesteps,
        cond=cond,
        images=backbone.decode(x),
        prompts=list(prompts),
        metadata=list(metadata) if metadata is not None else [{} for _ in prompts],
        means=means,
    )


def draw_noise(
    shape: tuple, generator: torch.Generator | None, dtype: torch.dtype, shard: tuple[int, int] = (0, 1), device=None
) -> torch.Tensor:
    """Standard normal noise of ``shape`` [B, ...]: rows index*B ... (index+1)*B of one draw of
    [count*B, ...] from ``generator`` (on the generator's device, else on ``device``; shard (0, 1)
    is a plain draw)."""
    index, count = shard
    b = shape[0]
    device = generator.device if generator is not None else device
    full = torch.randn((count * b, *shape[1:]), generator=generator, device=device, dtype=dtype)
    return full[index * b : (index + 1) * b]


def step_gaussian(
    backbone: Backbone, traj: Trajectories, j: torch.Tensor | int, guidance: float, eta: float = 1.0, model=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The policy's Gaussian for transition ``j`` of each trajectory: (mean [B, C, h, w],
    std [B, 1, 1, 1], the stored x_{t-1} [B, C, h, w]).

    ``j`` is an int or a [B] long tensor (a different transition per trajectory, for shuffled
    timesteps). Gradients flow into the network through the mean. ``model`` overrides
    ``backbone.model`` (e.g. the DDP-wrapped training copy, or the frozen starting model).
    """
    b = len(traj)
    j = torch.as_tensor(j).long().expand(b) if torch.as_tensor(j).dim() == 0 else torch.as_tensor(j).long()
    rows = torch.arange(b)
    x_t, x_prev = traj.latents[rows, j], traj.latents[rows, j + 1]  # [B, C, h, w]
    t = traj.timesteps[rows, j]  # [B]
    if torch.all(t == t[0]):
        t = t[0]  # one timestep for the batch: the exact call the sampler made
    out = backbone.guided_output(model if model is not None else backbone.model, x_t, t, traj.cond, guidance)
    mean, std = backbone.gaussian(out, t, x_t, eta)
    return mean, std, x_prev


def kept_gaussian(
    backbone: Backbone, traj: Trajectories, eta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`step_gaussian` at step 0 of one-step trajectories that carry the sampler's means
    (``traj.transitions`` of a trajectory sampled with ``keep_graph``), without a network call: the
    sampler's own mean (its gradient reaches the network through the kept graph), std and stored x_{t-1}."""
    if traj.means is None:
        raise ValueError("kept_gaussian needs trajectories sampled with keep_graph > 0 (train.reuse_sampling)")
    x_t, x_prev = traj.latents[:, 0], traj.latents[:, 1]  # [B, C, h, w]
    return traj.means[:, 0], backbone.std(traj.timesteps[:, 0], x_t, eta), x_prev


def step_log_prob(
    backbone: Backbone, traj: Trajectories, j: torch.Tensor | int, guidance: float, eta: float = 1.0, model=None
) -> torch.Tensor:
    """log p_theta(x_{t-1} | x_t, c) per element [B, C, h, w] for transition ``j`` of each trajectory
    (arguments as :func:`step_gaussian`)."""
    mean, std, x_prev = step_gaussian(backbone, traj, j, guidance, eta, model)
    return gaussian_log_prob(x_prev, mean, std).float()
