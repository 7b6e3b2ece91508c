"""Trajectory sampling from any diffusers Stable Diffusion pipeline, and re-scoring for training.

``sample_trajectories`` runs the pipeline's own parts (text encoder, UNet, scheduler, VAE) with
classifier-free guidance (cond and uncond batched in one forward, as diffusers does), stepping with
the two halves of :func:`pxpo.sampling.ddim_step_with_logprob` (``ddim_mean_std``, ``ddim_draw``) and
storing what the policy gradient needs: latents x_T..x_0, timesteps, per-element log-probabilities
and prompt embeddings.

``step_log_prob`` recomputes log p(x_{t-1} | x_t, c) for stored transitions under the current
weights. Called with the batch the sampler used, it reproduces the sampler's numbers exactly, so the
probability ratio before any update is 1 (the on-policy check).

``keep_graph`` (``train.reuse_sampling``): the sampler runs its first k steps' UNet calls with
gradients and keeps their Gaussian means, autograd graph and all, in ``Trajectories.means``; the
first, on-policy update then takes its means from there (:func:`kept_gaussian`) instead of running
the UNet again. The graph of those k steps stays in memory until that update's backward.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from pxpo.models.conditioning import encode, unet_added_kwargs
from pxpo.sampling import ddim_draw, ddim_mean_std, ddim_ode_mean, ddim_std, gaussian_log_prob


@dataclass
class Trajectories:
    """A batch of B denoising trajectories of n steps (latent shape C x h x w)."""

    latents: torch.Tensor  # [B, n+1, C, h, w]  x_T, ..., x_0
    log_probs: torch.Tensor  # [B, n, C, h, w]  log p(x_{t-1} | x_t, c) per element, at sampling
    timesteps: torch.Tensor  # [B, n]  the timestep t of each transition
    prompt_embeds: torch.Tensor  # [B, L, D]
    negative_embeds: torch.Tensor  # [B, L, D]
    images: torch.Tensor  # [B, 3, H, W] decoded x_0 in [0, 1]
    prompts: list[str] = field(default_factory=list)
    metadata: list[dict] = field(default_factory=list)
    # SDXL's added conditioning (models.conditioning): text_embeds, negative_text_embeds [B, P], time_ids [B, 6]
    added: dict[str, torch.Tensor] = field(default_factory=dict)
    # [B, k, C, h, w] the sampler's Gaussian means of the first k steps with their autograd graph
    # (sample_trajectories(keep_graph=k)), else None; the on-policy update spends them
    means: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.latents.shape[0]

    def index(self, idx: torch.Tensor) -> "Trajectories":
        """The trajectories at ``idx`` (a [k] long tensor)."""
        pick = idx.tolist()
        return Trajectories(self.latents[idx], self.log_probs[idx], self.timesteps[idx],
                            self.prompt_embeds[idx], self.negative_embeds[idx], self.images[idx],
                            [self.prompts[i] for i in pick], [self.metadata[i] for i in pick],
                            {k: v[idx] for k, v in self.added.items()},
                            self.means[idx] if self.means is not None else None)

    def transitions(self, rows: torch.Tensor, j: torch.Tensor) -> "Trajectories":
        """One transition per pair: trajectory ``rows[k]``'s step ``j[k]`` (both [K] long tensors), as K
        one-step trajectories (latents [K, 2, C, h, w]: x_t and x_{t-1}; log_probs [K, 1, C, h, w];
        timesteps [K, 1]; means [K, 1, C, h, w] when kept (every ``j[k]`` < k kept steps), else None;
        images left out: [0, 3, H, W]; every other per-sample field indexed by ``rows``). Several
        timesteps of the same trajectories then go through the UNet in one call
        (``step_gaussian(pipe, traj.transitions(rows, j), 0, ...)``)."""
        per_step = {"latents": torch.stack([self.latents[rows, j], self.latents[rows, j + 1]], dim=1),
                    "log_probs": self.log_probs[rows, j].unsqueeze(1), "timesteps": self.timesteps[rows, j].unsqueeze(1),
                    "images": self.images[:0],
                    "means": self.means[rows, j].unsqueeze(1) if self.means is not None else None}
        pick = rows.tolist()

        def take(v):  # a per-sample field: a tensor, a dict of tensors (SDXL's added conditioning) or a list
            if torch.is_tensor(v):
                return v[rows]
            if isinstance(v, dict):
                return {k: x[rows] for k, x in v.items()}
            return [v[i] for i in pick]

        return Trajectories(**{f.name: per_step[f.name] if f.name in per_step else take(getattr(self, f.name))
                               for f in fields(self)})

    @staticmethod
    def cat(parts: list["Trajectories"]) -> "Trajectories":
        return Trajectories(*(torch.cat([getattr(p, k) for p in parts]) for k in
                              ("latents", "log_probs", "timesteps", "prompt_embeds", "negative_embeds", "images")),
                            sum((p.prompts for p in parts), []), sum((p.metadata for p in parts), []),
                            {k: torch.cat([p.added[k] for p in parts]) for k in parts[0].added},
                            torch.cat([p.means for p in parts]) if all(p.means is not None for p in parts) else None)


def guided_output(unet, latents, t, prompt_embeds, negative_embeds, guidance: float,
                  added: dict | None = None) -> torch.Tensor:
    """Classifier-free guidance, cond and uncond in one forward: eps_u + g (eps_c - eps_u).

    latents [B, C, h, w]; t int, 0-dim or [B]; embeds [B, L, D]; ``added``: SDXL's added
    conditioning (models.conditioning) -> [B, C, h, w] in float32: the network may run in bf16/fp16
    (autocast or half weights), the guidance and the DDIM/log-prob arithmetic after it run in fp32.
    """
    b = latents.shape[0]
    dtype = getattr(unet, "module", unet).dtype  # the network's own dtype, through a DDP wrapper too
    t = torch.as_tensor(t, device=latents.device)
    t2 = t.expand(b).repeat(2) if t.dim() == 0 else t.repeat(2)  # [2B]
    if guidance == 1.0:
        return unet(latents.to(dtype), t2[:b], prompt_embeds.to(dtype), **unet_added_kwargs(added, False, dtype)).sample.float()
    out = unet(torch.cat([latents, latents]).to(dtype), t2, torch.cat([negative_embeds, prompt_embeds]).to(dtype),
               **unet_added_kwargs(added, True, dtype)).sample.float()
    uncond, cond = out.chunk(2)
    return uncond + guidance * (cond - uncond)


def decode(pipe, latents: torch.Tensor) -> torch.Tensor:
    """Latents [B, C, h, w] -> images [B, 3, H, W] in [0, 1]."""
    vae = pipe.vae
    images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    return (images.float() / 2 + 0.5).clamp(0, 1)


def sample_trajectories(pipe, prompts: list[str], metadata: list[dict] | None = None, num_steps: int = 20,
                        guidance: float = 5.0, eta: float | list[float] = 1.0, negative_prompt: str | list[str] = "",
                        height: int | None = None, width: int | None = None,
                        generator: torch.Generator | None = None, unet=None,
                        init_latents: torch.Tensor | None = None, prompt_cache=None,
                        shard: tuple[int, int] = (0, 1), keep_graph: int = 0) -> Trajectories:
    """Sample B = len(prompts) trajectories with DDIM(eta) and classifier-free guidance.

    ``unet`` overrides ``pipe.unet`` (e.g. a frozen copy that draws reference images). All noise
    comes from ``generator`` in a fixed order, so two calls from equal generator states with the
    same prompts share x_T and every step's noise. ``init_latents`` [B, C, h, w] gives x_T (before
    the scheduler's init_noise_sigma) instead of drawing it; ``generator`` then draws only step noise.
    ``prompt_cache``: a models.conditioning.PromptCache (precomputed prompt embeddings).
    Latents and log-probabilities are float32 whatever precision the networks run in.
    ``eta``: one value for every step, or one per step (length ``num_steps``); a step with eta 0 is
    deterministic DDIM (no noise drawn, log-probability 0: such a step cannot be trained).
    ``shard`` = (index, count): the generator draws the noise of count * B trajectories and this call
    keeps rows index * B ... (index + 1) * B, so count processes with equal generators together draw
    exactly the trajectories one process would draw for all their prompts (multi-process training).
    ``keep_graph`` = k > 0: the first k steps run the UNet with gradients (through ``unet``: pass the
    trained, e.g. DDP-wrapped, copy) and ``means`` [B, k, C, h, w] keeps their means and graph; every
    other number is the same as without. Everything else runs without gradients.
    """
    with torch.no_grad():
        return _sample(pipe, prompts, metadata, num_steps, guidance, eta, negative_prompt, height, width,
                       generator, unet, init_latents, prompt_cache, shard, keep_graph)


def _sample(pipe, prompts, metadata, num_steps, guidance, eta, negative_prompt, height, width, generator, unet,
            init_latents, prompt_cache, shard, keep_graph) -> Trajectories:
    unet, scheduler = unet if unet is not None else pipe.unet, pipe.scheduler
    config = getattr(unet, "module", unet).config  # through a DDP wrapper too
    height = height or config.sample_size * pipe.vae_scale_factor
    width = width or config.sample_size * pipe.vae_scale_factor
    f = pipe.vae_scale_factor
    if height % f or width % f:
        raise ValueError(f"height and width must be multiples of the VAE factor {f}, got {height}x{width}")
    device = pipe.unet.device
    cond, uncond, added = encode(pipe, prompts, negative_prompt, height, width, device, prompt_cache)
    cond, uncond = cond.float(), uncond.float()
    added = {k: v.float() for k, v in added.items()}
    b = len(prompts)
    shape = (b, config.in_channels, height // f, width // f)
    if init_latents is not None and tuple(init_latents.shape) != shape:
        raise ValueError(f"init_latents has shape {tuple(init_latents.shape)}; expected {shape}")
    x = init_latents if init_latents is not None else draw_noise(shape, generator, torch.float32, shard)
    x = x.to(device, torch.float32)
    scheduler.set_timesteps(num_steps, device=device)
    x = x * scheduler.init_noise_sigma
    if isinstance(eta, (int, float)) and eta <= 0:
        raise ValueError(f"eta must be > 0 for a policy with a density (got {eta}); DDPO and PXPO use eta=1.0 "
                         "(per-step etas may be 0 on steps that are not trained)")
    etas = [float(eta)] * num_steps if isinstance(eta, (int, float)) else [float(e) for e in eta]
    if len(etas) != num_steps or min(etas) < 0 or any(e == 0 for e in etas[:keep_graph]):
        raise ValueError(f"eta {eta!r}: give one value >= 0 or {num_steps}, and > 0 on the {keep_graph} kept steps")
    latents, log_probs, means = [x], [], []
    for k, t in enumerate(scheduler.timesteps):
        with torch.set_grad_enabled(k < keep_graph):
            model_in = scheduler.scale_model_input(x, t)
            out = guided_output(unet, model_in, t, cond, uncond, guidance, added)
            if etas[k] == 0:  # deterministic: no noise drawn, nothing to score
                x = ddim_ode_mean(scheduler, out, t, x).detach()
                lp = torch.zeros_like(x)
            else:
                mean, std = ddim_mean_std(scheduler, out, t, x, etas[k])  # [B, C, h, w], [B, 1, 1, 1]
                x, lp = ddim_draw(mean, std, x, generator=generator,
                                  noise=draw_noise(x.shape, generator, x.dtype, shard, x.device))
        if k < keep_graph:
            means.append(mean)  # with its graph; x (detached) and lp carry none
        latents.append(x)
        log_probs.append(lp.detach())
    timesteps = scheduler.timesteps.to(device).unsqueeze(0).expand(b, -1).clone()  # [B, n]
    with torch.enable_grad():  # stacked into [B, k, C, h, w] with their graph
        means = torch.stack(means, dim=1) if means else None
    return Trajectories(
        latents=torch.stack(latents, dim=1), log_probs=torch.stack(log_probs, dim=1).float(),
        timesteps=timesteps, prompt_embeds=cond, negative_embeds=uncond, images=decode(pipe, x),
        prompts=list(prompts), metadata=list(metadata) if metadata is not None else [{} for _ in prompts],
        added=added, means=means,
    )


def draw_noise(shape: tuple, generator: torch.Generator | None, dtype: torch.dtype,
               shard: tuple[int, int] = (0, 1), device=None) -> torch.Tensor:
    """Standard normal noise of ``shape`` [B, ...]: rows index*B ... (index+1)*B of one draw of
    [count*B, ...] from ``generator`` (on the generator's device, else on ``device``; shard (0, 1)
    is a plain draw)."""
    index, count = shard
    b = shape[0]
    device = generator.device if generator is not None else device
    full = torch.randn((count * b, *shape[1:]), generator=generator, device=device, dtype=dtype)
    return full[index * b:(index + 1) * b]


def step_gaussian(pipe, traj: Trajectories, j: torch.Tensor | int, guidance: float, eta: float = 1.0,
                  unet=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The policy's Gaussian for transition ``j`` of each trajectory: (mean [B, C, h, w],
    std [B, 1, 1, 1], the stored x_{t-1} [B, C, h, w]).

    ``j`` is an int or a [B] long tensor (a different transition per trajectory, for shuffled
    timesteps). Gradients flow into the UNet through the mean. ``unet`` overrides ``pipe.unet``
    (e.g. the DDP-wrapped training copy, or the frozen starting model).
    """
    b = len(traj)
    j = torch.as_tensor(j).long().expand(b) if torch.as_tensor(j).dim() == 0 else torch.as_tensor(j).long()
    rows = torch.arange(b)
    x_t, x_prev = traj.latents[rows, j], traj.latents[rows, j + 1]  # [B, C, h, w]
    t = traj.timesteps[rows, j]  # [B]
    scheduler = pipe.scheduler
    if torch.all(t == t[0]):
        t = t[0]  # one timestep for the batch: the exact call the sampler made
    model_in = scheduler.scale_model_input(x_t, t)
    out = guided_output(unet if unet is not None else pipe.unet, model_in, t, traj.prompt_embeds, traj.negative_embeds,
                        guidance, traj.added)
    mean, std = ddim_mean_std(scheduler, out, t, x_t, eta)
    return mean, std, x_prev


def kept_gaussian(pipe, traj: Trajectories, eta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`step_gaussian` at step 0 of one-step trajectories that carry the sampler's means
    (``traj.transitions`` of a trajectory sampled with ``keep_graph``), without a UNet call: the
    sampler's own mean (its gradient reaches the UNet through the kept graph), std and stored x_{t-1}."""
    if traj.means is None:
        raise ValueError("kept_gaussian needs trajectories sampled with keep_graph > 0 (train.reuse_sampling)")
    x_t, x_prev = traj.latents[:, 0], traj.latents[:, 1]  # [B, C, h, w]
    return traj.means[:, 0], ddim_std(pipe.scheduler, traj.timesteps[:, 0], x_t, eta), x_prev


def step_log_prob(pipe, traj: Trajectories, j: torch.Tensor | int, guidance: float, eta: float = 1.0,
                  unet=None) -> torch.Tensor:
    """log p_theta(x_{t-1} | x_t, c) per element [B, C, h, w] for transition ``j`` of each trajectory
    (arguments as :func:`step_gaussian`)."""
    mean, std, x_prev = step_gaussian(pipe, traj, j, guidance, eta, unet)
    return gaussian_log_prob(x_prev, mean, std).float()
