"""``pxpo sample``: pictures from a trained run or any model, for given prompts and seeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from pxpo.errors import ConfigError, MissingFile


@dataclass
class SampleCommand:
    """the model, the prompts and seeds, and where the grid goes"""

    model: str = "shapes-tiny"
    """a run directory (its weights/), shapes-tiny, an SD directory or cached hub id"""
    prompts: list[str] = field(default_factory=lambda: ["a red circle on a blue background"])
    """prompts, e.g. --prompts='[a red circle on a blue background, a green cross on a white background]'"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    """one image per prompt and seed"""
    steps: int = 20
    """DDIM steps"""
    guidance: float = 5.0
    """classifier-free guidance scale"""
    eta: float = 1.0
    """DDIM eta (0 = deterministic DDIM)"""
    negative: str = ""
    """negative prompt"""
    out: str = "samples.png"
    """grid picture to write (one row per prompt)"""
    threads: int = 2
    """torch CPU threads"""


def load_for_sampling(model: str):
    """A pipeline for a run directory (full weights or LoRA on its base model) or a model name/path."""
    from pxpo.backends.registry import load_pipeline

    run = Path(model)
    weights = run / "weights"
    if (weights / "model_index.json").is_file():
        return load_pipeline(str(weights))
    if (weights / "pytorch_lora_weights.safetensors").is_file():
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        pipe = load_pipeline(cfg["model"]["name"])
        pipe.load_lora_weights(str(weights))
        return pipe
    if (run / "config.yaml").is_file() and not (run / "model_index.json").is_file():
        raise MissingFile(f"run directory {model!r} has no weights/ yet (it saves them at its end)")
    return load_pipeline(model)


def check_command(cmd: SampleCommand) -> None:
    """Bad values fail before a model loads; the embedded model (or a run fine-tuned from it) is
    given only words it knows, as ``pxpo train`` does."""
    from pxpo.backends.registry import world_of

    for name in ("steps", "threads"):
        if getattr(cmd, name) <= 0:
            raise ConfigError(f"{name}={getattr(cmd, name)}: use a positive number")
    if not cmd.prompts or not cmd.seeds:
        raise ConfigError("give at least one prompt (--prompts='[...]') and one seed (--seeds='[0]')")
    world = world_of(cmd.model)
    if world is not None:
        world.check_prompts(cmd.prompts)


@torch.no_grad()
def run(cmd: SampleCommand) -> Path:
    from pxpo.images import make_grid, save

    check_command(cmd)
    torch.set_num_threads(cmd.threads)
    pipe = load_for_sampling(cmd.model)
    images = []
    for prompt in cmd.prompts:
        for seed in cmd.seeds:
            g = torch.Generator().manual_seed(seed)
            images.append(
                pipe(
                    prompt,
                    num_inference_steps=cmd.steps,
                    guidance_scale=cmd.guidance,
                    eta=cmd.eta,
                    negative_prompt=cmd.negative or None,
                    generator=g,
                    output_type="pt",
                ).images
            )
    grid = make_grid(torch.cat(images), nrow=len(cmd.seeds), scale=2)
    return save(grid, cmd.out)
