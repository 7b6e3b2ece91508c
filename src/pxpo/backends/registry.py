"""Models by name: a short name a plugin registered (the testbed's ``shapes-tiny`` and
``shapes-parts``), a diffusers SD/SDXL directory, a pxpo run folder, or a hub id.

Everything loads with ``local_files_only=True`` unless the user allows downloads: pxpo never
fetches weights behind a user's back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pxpo import plugins
from pxpo.errors import MissingFile, UserError

NAMED: dict[str, Path] = {}  # short name -> a shipped pipeline folder (plugins register theirs: shapes-tiny, ...)


@dataclass(frozen=True)
class ModelWorld:
    """What a testbed knows about the pictures its models draw, registered by its plugin:
    ``recognise(name_or_path)`` says whether a model is one of its own (named, pretrained by it, or
    fine-tuned from one); ``check_prompts(prompts)`` refuses words those models never learnt;
    ``judge(images [B, 3, H, W], prompts) -> {measure: value}`` reads the parts the prompts name (logged
    with each evaluation, so a reward bought by damaging the pictures shows)."""

    recognise: Callable[[str], bool]
    check_prompts: Callable[[list[str]], None]
    judge: Callable[..., dict]
    name: str = ""  # the world's name (``pxpo pretrain --world``), for tools that treat worlds apart


WORLDS: list[ModelWorld] = []


def register_model(name: str, path: Path) -> None:
    """A short model name for a shipped pipeline folder (``--model.name=NAME``)."""
    NAMED[name] = Path(path)


def register_world(world: ModelWorld) -> None:
    WORLDS.append(world)


def world_of(name_or_path: str) -> ModelWorld | None:
    """The registered world whose models include ``name_or_path`` (None for any other model)."""
    plugins.load()
    return next((w for w in WORLDS if w.recognise(name_or_path)), None)


def is_embedded(name_or_path: str) -> bool:
    """A model of a registered world (the shipped shapes models, one ``pxpo pretrain`` wrote, or a run
    fine-tuned from them): small enough to train every weight, and it knows only its world's words."""
    return world_of(name_or_path) is not None


def resolve_model(name_or_path: str) -> str:
    """A short name -> its shipped directory; a pxpo run folder -> its ``weights/``; a path or hub
    id is returned as is."""
    plugins.load()
    if name_or_path in NAMED:
        path = NAMED[name_or_path]
        if not (path / "model_index.json").is_file():
            raise MissingFile(
                f"the embedded model {name_or_path!r} is missing at {path}; "
                "reinstall pxpo or run `pxpo pretrain --out=<dir>`"
            )
        return str(path)
    run = Path(name_or_path)
    if (run / "config.yaml").is_file() and not (run / "model_index.json").is_file():
        weights = run / "weights"
        if (weights / "model_index.json").is_file():
            return str(weights)
        if (weights / "pytorch_lora_weights.safetensors").is_file():
            raise MissingFile(
                f"run folder {name_or_path!r} holds LoRA adapters, not a whole pipeline: "
                "start from its base model (model.name in its config.yaml), or sample it "
                f"with `pxpo sample --model={name_or_path}`"
            )
        raise MissingFile(
            f"run folder {name_or_path!r} has no weights/ yet (a run saves them with each "
            f"checkpoint); continue it with --resume={name_or_path}"
        )
    return name_or_path


def run_base_model(name_or_path: str) -> str | None:
    """For a pxpo run folder, the model.name its config.yaml started from; None otherwise."""
    config = Path(name_or_path) / "config.yaml"
    if not config.is_file() or (Path(name_or_path) / "model_index.json").is_file():
        return None
    import yaml

    try:
        return str((yaml.safe_load(config.read_text()) or {}).get("model", {}).get("name", "")) or None
    except (yaml.YAMLError, AttributeError):
        return None


def check_pipeline_dir(source: str, name_or_path: str) -> None:
    """A local diffusers directory holds model_index.json and a folder per component it names."""
    import json

    root = Path(source)
    if not root.is_dir():
        return
    index = root / "model_index.json"
    if not index.is_file():
        raise MissingFile(
            f"model directory {source!r} has no model_index.json: give a diffusers "
            "pipeline directory (e.g. one written by `pxpo pretrain --out=DIR`) or a run folder"
        )
    try:
        components = json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise MissingFile(f"{index} is not valid JSON ({e}); the pipeline directory is damaged") from None
    missing = [
        k
        for k, v in components.items()
        if not k.startswith("_")
        and k != "safety_checker"
        and isinstance(v, list)
        and v[0] is not None
        and not (root / k).is_dir()
    ]
    if missing:
        raise MissingFile(
            f"model directory {name_or_path!r} is incomplete: model_index.json names "
            f"{', '.join(m + '/' for m in missing)} but the folder has no such "
            "subfolder; copy the whole pipeline directory"
        )


def check_model_source(name_or_path: str) -> str:
    """What can be checked without loading: a known name, a complete diffusers directory, a run
    folder with weights, or something shaped like a hub id. Returns the source to load."""
    source = resolve_model(name_or_path)
    if not Path(source).exists() and (source.startswith((".", "/")) or source.count("/") != 1):
        raise MissingFile(
            f"model {name_or_path!r} is not a diffusers directory (one holding "
            f"model_index.json), a run folder, a known name ({', '.join(NAMED)}) or a hub "
            "id like 'org/model'"
        )
    check_pipeline_dir(source, name_or_path)
    return source


# pipelines pxpo samples and re-scores (models.conditioning passes each one's text conditioning)
PIPELINES = {
    "StableDiffusionPipeline": "SD 1.x / 2.x",
    "StableDiffusionXLPipeline": "SDXL",
    "StableDiffusion3Pipeline": "SD3 / SD3.5",
    "FluxPipeline": "FLUX.1",
}
FLOW = ("StableDiffusion3Pipeline", "FluxPipeline")  # rectified flow: they keep their FlowMatchEulerDiscreteScheduler


def pipeline_class_name(source: str, name_or_path: str, allow_download: bool) -> str:
    """The ``_class_name`` in the model's model_index.json, refused unless pxpo supports it."""
    from diffusers import DiffusionPipeline

    try:
        index = DiffusionPipeline.load_config(source, local_files_only=not allow_download)
    except (OSError, EnvironmentError) as e:
        hint = (
            ""
            if allow_download or Path(source).is_dir()
            else " (downloads are off: pass --model.allow_download=true to fetch it)"
        )
        raise MissingFile(f"cannot load model {name_or_path!r}{hint}: {e}") from None
    name = index.get("_class_name", "")
    if name not in PIPELINES:
        raise UserError(
            f"model {name_or_path!r} is a {name or 'pipeline of unknown class'}; pxpo trains "
            + ", ".join(f"{k} ({v})" for k, v in PIPELINES.items())
        )
    return name


def ddim_config(config) -> dict:
    """The model's scheduler config for DDIM. A config without set_alpha_to_one (SDXL ships an Euler
    scheduler) gets SD's False: with DDIM's default True the last step has zero variance and no
    log-probability (sampling.ddim_mean_std)."""
    return {**config, **({} if "set_alpha_to_one" in config else {"set_alpha_to_one": False})}


def load_pipeline(name_or_path: str, allow_download: bool = False, dtype=None, device: str = "cpu"):
    """A ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` (as model_index.json names it)
    with a DDIM scheduler (the policy's sampler) and no safety checker, or a
    ``StableDiffusion3Pipeline`` with its flow-matching scheduler (the SDE step is the policy's)."""
    import diffusers
    import torch
    from diffusers import DDIMScheduler, DiffusionPipeline

    source = check_model_source(name_or_path)
    cls_name = pipeline_class_name(source, name_or_path, allow_download)
    extra = dict(safety_checker=None, requires_safety_checker=False) if cls_name == "StableDiffusionPipeline" else {}
    if cls_name in FLOW:  # components saved as absent (SD3 without T5 or an image encoder) load as absent
        extra = {
            k: None
            for k, v in DiffusionPipeline.load_config(source, local_files_only=not allow_download).items()
            if isinstance(v, list) and v[0] is None
        }
    try:
        pipe = getattr(diffusers, cls_name).from_pretrained(
            source, local_files_only=not allow_download, dtype=dtype or torch.float32, **extra
        )
    except (OSError, EnvironmentError) as e:
        hint = (
            ""
            if allow_download or Path(source).is_dir()
            else " (downloads are off: pass --model.allow_download=true to fetch it)"
        )
        raise MissingFile(f"cannot load model {name_or_path!r}{hint}: {e}") from None
    if cls_name not in FLOW:
        pipe.scheduler = DDIMScheduler.from_config(ddim_config(pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
