"""Which weights train: the full denoising network (a UNet, or a flow model's transformer), or LoRA
adapters (peft) on its attention projections."""

from __future__ import annotations

from pathlib import Path

import torch

from pxpo.backends.conditioning import is_sdxl
from pxpo.core.backbone import DTYPES
from pxpo.errors import ConfigError


def resolve_mode(mode: str, embedded: bool) -> str:
    if mode == "auto":
        return "full" if embedded else "lora"
    if mode not in ("full", "lora"):
        raise ValueError(f"model.finetune={mode!r} is unknown; use 'full', 'lora' or 'auto'")
    return mode


def frozen_modules(pipe) -> list[torch.nn.Module]:
    """The VAE and the text encoder(s) (SDXL has two, SD3 three): never trained."""
    names = ("vae", "text_encoder", "text_encoder_2", "text_encoder_3")
    return [m for m in (getattr(pipe, n, None) for n in names) if m is not None]


def network_name(pipe) -> str:
    """The pipeline's denoising network: ``unet`` (SD, SDXL) or ``transformer`` (SD3, FLUX)."""
    return "unet" if getattr(pipe, "unet", None) is not None else "transformer"


def prepare_network(
    pipe,
    mode: str,
    rank: int = 4,
    alpha: float = 4.0,
    targets: list[str] | None = None,
    gradient_checkpointing: bool = False,
    frozen_dtype: str = "fp32",
) -> list[torch.nn.Parameter]:
    """Freeze VAE and text encoder(s) (in ``frozen_dtype``); make the network (or LoRA adapters on it,
    over base weights in ``frozen_dtype``) trainable in float32; return the trained params."""
    dtype = DTYPES[frozen_dtype]
    if dtype == torch.float16 and is_sdxl(pipe) and getattr(pipe.vae.config, "force_upcast", False):
        # diffusers' own SDXL pipeline decodes in fp32 then; pxpo refuses instead of undoing the saving
        raise ConfigError(
            "model.frozen_dtype=fp16: SDXL's VAE overflows in fp16 (its config says force_upcast); "
            "use --model.frozen_dtype=bf16, or a VAE fine-tuned for fp16"
        )
    for m in frozen_modules(pipe):
        m.requires_grad_(False).to(dtype)
    name = network_name(pipe)
    net = getattr(pipe, name)
    if mode == "lora":
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        targets = targets or ["to_q", "to_k", "to_v", "to_out.0"]
        net.requires_grad_(False).to(dtype)
        try:
            net.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets))
        except ValueError as e:  # peft: "Target modules {...} not found in the base model"
            raise ConfigError(
                f"model.lora_targets={targets} match no module of the {name} ({e}); name its attention "
                f"projections, e.g. --model.lora_targets='[to_q, to_k, to_v, to_out.0]'"
            ) from e
        cast_training_params(net, dtype=torch.float32)  # the adapters train in fp32 over half base weights
    else:
        net.requires_grad_(True)
    if gradient_checkpointing:
        net.enable_gradient_checkpointing()
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"no trainable parameters: model.lora_targets={targets} match no module of the {name}")
    return params


def save_weights(pipe, net, mode: str, directory: str | Path) -> Path:
    """Save what diffusers can load: the whole pipeline (full) or LoRA weights (``load_lora_weights``)."""
    directory = Path(directory)
    if mode == "lora":
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        name = network_name(pipe)
        layers = get_peft_model_state_dict(net)
        if name == "unet":  # the UNet loaders read diffusers' own key names; transformer loaders read peft's
            layers = convert_state_dict_to_diffusers(layers)
        # the pipeline's own saver (SD, SDXL, SD3); the adapter's config (rank, alpha) goes with it
        type(pipe).save_lora_weights(
            directory,
            safe_serialization=True,
            **{f"{name}_lora_layers": layers, f"{name}_lora_adapter_metadata": net.peft_config["default"].to_dict()},
        )
    else:
        name = network_name(pipe)
        original = getattr(pipe, name)
        setattr(pipe, name, net)
        pipe.save_pretrained(directory, safe_serialization=True)
        setattr(pipe, name, original)
    return directory
