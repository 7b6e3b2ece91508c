"""Which weights train: the full UNet, or LoRA adapters (peft) on its attention projections."""
from __future__ import annotations

from pathlib import Path

import torch


def resolve_mode(mode: str, embedded: bool) -> str:
    if mode == "auto":
        return "full" if embedded else "lora"
    if mode not in ("full", "lora"):
        raise ValueError(f"model.finetune={mode!r} is unknown; use 'full', 'lora' or 'auto'")
    return mode


def prepare_unet(pipe, mode: str, rank: int = 4, alpha: float = 4.0, targets: list[str] | None = None,
                 gradient_checkpointing: bool = False) -> list[torch.nn.Parameter]:
    """Freeze VAE and text encoder; make the UNet (or LoRA adapters on it) trainable; return the params."""
    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    unet = pipe.unet
    if mode == "lora":
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                    target_modules=targets or ["to_q", "to_k", "to_v", "to_out.0"]))
    else:
        unet.requires_grad_(True)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    params = [p for p in unet.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"no trainable parameters: LoRA targets {targets} match no UNet module")
    return params


def save_weights(pipe, unet, mode: str, directory: str | Path) -> Path:
    """Save what diffusers can load: the whole pipeline (full) or LoRA weights (``load_lora_weights``)."""
    directory = Path(directory)
    if mode == "lora":
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=layers, safe_serialization=True)
    else:
        original = pipe.unet
        pipe.unet = unet
        pipe.save_pretrained(directory, safe_serialization=True)
        pipe.unet = original
    return directory
