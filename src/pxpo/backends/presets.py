"""Model presets: ``--model.preset=sd15 | sd21 | sdxl | sd35 | flux`` picks a model family and its RL settings.

A preset fills every option it names that the user did not set (on the command line or in a
``--config`` file); what the user sets wins. The resolved values, and the preset's name, are written
to the run's config.yaml like every other option, so a run records what it ran with.

DDPO's defaults (Black et al. 2024; ddpo-pytorch's config/base.py, trl's DDPOConfig): 50 DDIM steps at
eta 1 and guidance 5, LoRA r4 on the attention projections at lr 3e-4, AdamW weight decay 1e-4, clip
range 1e-4 (pxpo's default 0 = auto keeps DDPO's 1e-4 for DDPO and scales it for PXPO's per-pixel
ratios), advantages clipped at 5, grad-norm clip 1, every timestep trained, CFG at training, one
inner epoch, per-prompt statistics over a buffer of 16, no KL term. Batches: 32 samples per process
and epoch in 4 batches of 8, 2 optimizer steps of 16: 8 processes give DDPO's paper-scale 256
samples per epoch.

``sd35`` takes Flow-GRPO's settings for SD3.5 Medium instead where they differ (Liu et al. 2025): 10
sampling steps with the SDE step's noise level 0.7 (``sample.eta``), guidance 4.5, 512 px, LoRA r32
alpha 64 on the transformer's joint attention (image and text projections), lr 3e-4, KL 0.04.
``flux`` takes the per-pixel FLUX.1-dev setup of BoxFlow-GRPO (SDG, 2026): 10 steps, 512 px, LoRA r64
(alpha 128, Flow-GRPO's alpha = 2 r) on both streams' attention, lr 3e-4; FLUX.1-dev's guidance is
distilled into the transformer (3.5, its pipeline's default; one forward, no CFG), the SDE step's
noise level Flow-GRPO's 0.7, and no KL term (Flow-GRPO's FLUX runs use none).

The model itself is checked when it loads (:func:`check_pipeline`): SDXL needs a
``StableDiffusionXLPipeline``, SD 2.1 a v-prediction scheduler, SD 1.5 an epsilon one, SD3.5 a
``StableDiffusion3Pipeline`` and FLUX a ``FluxPipeline`` (flow-matching models).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pxpo.config import ConfigError, apply_dict

DDPO = {
    "model.finetune": "lora",
    "model.lora_rank": 4,
    "model.lora_alpha": 4.0,
    "sample.num_steps": 50,
    "sample.eta": 1.0,
    "sample.guidance": 5.0,
    "sample.batch_size": 8,
    "sample.num_batches": 4,
    "train.batch_size": 16,
    "train.lr": 3e-4,
    "train.weight_decay": 1e-4,
    "train.adv_clip_max": 5.0,
    "train.max_grad_norm": 1.0,
    "train.timestep_fraction": 1.0,
    "train.timesteps_per_forward": 1,
    "train.inner_epochs": 1,
    "train.cfg": True,
    "train.advantages": "per-prompt",
    "train.buffer_size": 16,
    "train.min_count": 16,
    "train.kl_coef": 0.0,
}


# LoRA targets on SD3's joint attention: the image stream's and the text stream's projections
SD3_ATTENTION = [
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
]


# FLUX's attention has the same names: both streams' projections in its joint blocks, and the single
# blocks' attn.to_q/k/v match the first three
FLUX_ATTENTION = SD3_ATTENTION


@dataclass(frozen=True)
class Preset:
    name: str
    what: str
    model: str  # the hub id used when model.name is not given (downloads stay off unless allowed)
    pipeline: str  # the diffusers pipeline class the model must be
    prediction_type: str  # the scheduler's prediction type the model must have
    size: int  # default picture height and width
    settings: dict = field(default_factory=dict)

    def values(self) -> dict:
        return {
            "model.name": self.model,
            "sample.height": self.size,
            "sample.width": self.size,
            **DDPO,
            **self.settings,
        }


PRESETS = {
    p.name: p
    for p in (
        Preset(
            "sd15",
            "Stable Diffusion 1.5, 512 px, epsilon prediction",
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "StableDiffusionPipeline",
            "epsilon",
            512,
        ),
        Preset(
            "sd21",
            "Stable Diffusion 2.1, 768 px, v-prediction",
            "stabilityai/stable-diffusion-2-1",
            "StableDiffusionPipeline",
            "v_prediction",
            768,
        ),
        Preset(
            "sdxl",
            "Stable Diffusion XL base 1.0, 1024 px: two text encoders, pooled embeddings and time ids",
            "stabilityai/stable-diffusion-xl-base-1.0",
            "StableDiffusionXLPipeline",
            "epsilon",
            1024,
        ),
        Preset(
            "sd35",
            "Stable Diffusion 3.5 Medium, 512 px: rectified flow, Flow-GRPO's SDE step and settings",
            "stabilityai/stable-diffusion-3.5-medium",
            "StableDiffusion3Pipeline",
            "flow",
            512,
            {
                "sample.num_steps": 10,
                "sample.eta": 0.7,
                "sample.guidance": 4.5,
                "model.lora_rank": 32,
                "model.lora_alpha": 64.0,
                "model.lora_targets": SD3_ATTENTION,
                "train.kl_coef": 0.04,
            },
        ),
        Preset(
            "flux",
            "FLUX.1-dev, 512 px: rectified flow with distilled guidance, BoxFlow-GRPO's per-pixel settings",
            "black-forest-labs/FLUX.1-dev",
            "FluxPipeline",
            "flow",
            512,
            {
                "sample.num_steps": 10,
                "sample.eta": 0.7,
                "sample.guidance": 3.5,
                "model.lora_rank": 64,
                "model.lora_alpha": 128.0,
                "model.lora_targets": FLUX_ATTENTION,
            },
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"model.preset={name!r} is unknown; use one of {', '.join(PRESETS)} (or '' for none)"
        ) from None


def apply_preset(cfg, touched: set[str] | frozenset = frozenset()) -> None:
    """Set the preset's values on ``cfg`` except the dotted keys in ``touched`` (what the user set)."""
    if not cfg.model.preset:
        return
    apply_dict(cfg, {k: v for k, v in get_preset(cfg.model.preset).values().items() if k not in touched})


def check_pipeline(preset_name: str, pipe, model_name: str) -> None:
    """The loaded model is of the preset's family; otherwise say what to change."""
    if not preset_name:
        return
    p = get_preset(preset_name)
    cls = type(pipe).__name__
    if cls != p.pipeline:
        raise ConfigError(
            f"model.preset={p.name} expects a {p.pipeline}, but model {model_name!r} is a {cls}; "
            f"choose the preset of that model ({', '.join(PRESETS)}) or another --model.name"
        )
    kind = getattr(pipe.scheduler.config, "prediction_type", None) or "flow"  # flow schedulers name none
    if kind != p.prediction_type:
        raise ConfigError(
            f"model.preset={p.name} expects a {p.prediction_type} model, but the scheduler of "
            f"{model_name!r} predicts {kind}; choose the preset of that model or another --model.name"
        )
