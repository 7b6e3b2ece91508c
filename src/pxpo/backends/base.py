"""What every backend shares: its diffusers pipeline, the pipeline's denoising network (a UNet or a
transformer), which weights train and how they are saved, and the check of a picture size."""

from __future__ import annotations

import torch

from pxpo.backends.finetune import network_name, prepare_network, save_weights
from pxpo.errors import ConfigError


class PipelineBackbone:
    """The parts of :class:`~pxpo.core.backbone.Backbone` that do not depend on the model family.
    A subclass gives the text conditioning, the schedule, the network call, the step and decoding."""

    def __init__(self, pipe):
        self.pipe = pipe

    @property
    def model(self) -> torch.nn.Module:
        return getattr(self.pipe, network_name(self.pipe))

    @property
    def device(self) -> torch.device:
        return self.model.device

    def prepare_training(
        self,
        mode: str,
        rank: int = 4,
        alpha: float = 4.0,
        targets: list[str] | None = None,
        gradient_checkpointing: bool = False,
        frozen_dtype: str = "fp32",
    ) -> list[torch.nn.Parameter]:
        return prepare_network(self.pipe, mode, rank, alpha, targets, gradient_checkpointing, frozen_dtype)

    def save_weights(self, model, mode: str, directory):
        return save_weights(self.pipe, model, mode, directory)


def checked_size(height: int | None, width: int | None, default: int, step: int, why: str) -> tuple[int, int]:
    """(height, width), each ``default`` where not given; refused unless both are multiples of ``step``
    (``why`` says what makes the step, e.g. "the VAE factor 8")."""
    height, width = height or default, width or default
    if height % step or width % step:
        raise ConfigError(f"height and width must be multiples of {step} ({why}), got {height}x{width}")
    return height, width
