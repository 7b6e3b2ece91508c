"""The one interface between the RL core and a model family (k-diffusion's idea: wrap any network
in one class). A backend (:mod:`pxpo.backends`) implements it for a diffusers pipeline; everything in
:mod:`pxpo.core` (sampling, re-scoring, the policy update) goes through it and nothing else.

A denoising step is a Gaussian policy ``p(x_{t-1} | x_t, c) = N(mean, std^2)``: the backend says
what ``mean`` and ``std`` are (DDIM for Stable Diffusion, an SDE step for flow models) and the core
keeps its log-probability per latent element, so per-pixel credit needs nothing model-specific.
"""

from __future__ import annotations

from typing import Protocol

import torch

# the precisions of frozen weights (model.frozen_dtype); what trains stays float32
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Backbone(Protocol):
    """A diffusion model family behind the five things the policy step needs.

    ``cond`` is a dict of per-sample tensors ([B, ...], float32) that the backend's model needs at
    every call (prompt embeddings, pooled embeddings, ...): the trajectories keep it, so re-scoring
    gives the sampler's numbers exactly.
    """

    pipe: object  # the diffusers pipeline
    model: torch.nn.Module  # the denoising network that trains (a UNet, a transformer)

    @property
    def device(self) -> torch.device: ...

    def latent_shape(self, batch: int, height: int | None, width: int | None) -> tuple[int, int, int, int]:
        """[B, C, h, w] of x_T for pictures of ``height`` x ``width`` (None: the model's own size)."""

    def picture_size(self, height: int | None, width: int | None) -> tuple[int, int]:
        """(H, W): the given size (checked against the latent grid), or the model's own."""

    def encode(
        self, prompts: list[str], negative: str | list[str], height: int, width: int, cache=None
    ) -> dict[str, torch.Tensor]:
        """The conditioning of each prompt and its negative (``cache``: a backend's prompt cache)."""

    def set_steps(self, num_steps: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Prepare ``num_steps`` sampling steps for latents of ``shape`` [B, C, h, w] (flow models shift
        their schedule with the picture's size); returns the timesteps [n]."""

    def init_noise(self, x: torch.Tensor) -> torch.Tensor:
        """x_T from a standard normal draw (scaled as the scheduler wants)."""

    def guided_output(
        self, model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, cond: dict, guidance: float
    ) -> torch.Tensor:
        """The network's (classifier-free guided) output at x_t [B, C, h, w], float32."""

    def gaussian(
        self, output: torch.Tensor, t: torch.Tensor, x: torch.Tensor, eta: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy's Gaussian at x_t: (mean [B, C, h, w], std [B, 1, 1, 1]), at least float32."""

    def std(self, t: torch.Tensor, x: torch.Tensor, eta: float) -> torch.Tensor:
        """The std of :meth:`gaussian` without a model output (it does not depend on one)."""

    def deterministic_step(self, output: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x_{t-1} of the noise-free (ODE) step, for steps that are not trained."""

    def step_weights(self, timesteps: torch.Tensor, eta: float) -> torch.Tensor:
        """Per-transition weights [B, n] that even out the schedule's share of each step's gradient."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, h, w] -> images [B, 3, H, W] in [0, 1]."""

    def prepare_training(
        self,
        mode: str,
        rank: int,
        alpha: float,
        targets: list[str] | None,
        gradient_checkpointing: bool,
        frozen_dtype: str,
    ) -> list[torch.nn.Parameter]:
        """Freeze what does not train; make ``model`` (``full``) or LoRA adapters on it (``lora``)
        trainable; return the trained parameters."""

    def save_weights(self, model: torch.nn.Module, mode: str, directory) -> object:
        """Save what diffusers loads: the whole pipeline (full) or LoRA weights."""
