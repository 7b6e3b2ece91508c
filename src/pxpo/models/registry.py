"""Models by name: the embedded ``shapes-tiny`` and ``shapes-parts``, a diffusers SD directory, or a hub id.

``shapes-parts`` is shapes-tiny trained 3500 steps more with each part of a caption dropped
(``pretrain_log.json`` in its folder holds the two ``pxpo pretrain`` commands), so it also draws
partial captions such as "a red circle"; ``pxpo train`` starts from it by default.

Everything loads with ``local_files_only=True`` unless the user allows downloads: pxpo never
fetches weights behind a user's back.
"""
from __future__ import annotations

from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
NAMED = {"shapes-tiny": WEIGHTS / "shapes-tiny", "shapes-parts": WEIGHTS / "shapes-parts"}
EMBEDDED = "shapes-tiny"


def resolve_model(name_or_path: str) -> str:
    """A short name -> its shipped directory; a pxpo run folder -> its ``weights/``; a path or hub
    id is returned as is."""
    if name_or_path in NAMED:
        path = NAMED[name_or_path]
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"the embedded model {name_or_path!r} is missing at {path}; "
                                    "reinstall pxpo or run `pxpo pretrain --out=<dir>`")
        return str(path)
    run = Path(name_or_path)
    if (run / "config.yaml").is_file() and not (run / "model_index.json").is_file():
        weights = run / "weights"
        if (weights / "model_index.json").is_file():
            return str(weights)
        if (weights / "pytorch_lora_weights.safetensors").is_file():
            raise FileNotFoundError(f"run folder {name_or_path!r} holds LoRA adapters, not a whole pipeline: "
                                    "start from its base model (model.name in its config.yaml), or sample it "
                                    f"with `pxpo sample --model={name_or_path}`")
        raise FileNotFoundError(f"run folder {name_or_path!r} has no weights/ yet (a run saves them with each "
                                f"checkpoint); continue it with --resume={name_or_path}")
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


def is_embedded(name_or_path: str) -> bool:
    """A shipped shapes model (``NAMED``), a model ``pxpo pretrain`` wrote (its folder holds pretrain_log.json),
    or a run folder (or its weights/) fine-tuned from one of them: all know only the shapes world's
    words, and all are small enough to train every weight."""
    path = Path(name_or_path)
    base = run_base_model(name_or_path) or (run_base_model(str(path.parent)) if path.name == "weights" else None)
    if base is not None and base != name_or_path:
        return is_embedded(base)
    if (path / "pretrain_log.json").is_file() and (path / "model_index.json").is_file():
        return True
    return name_or_path in NAMED or any(path.resolve() == p.resolve() for p in NAMED.values())


def check_pipeline_dir(source: str, name_or_path: str) -> None:
    """A local diffusers directory holds model_index.json and a folder per component it names."""
    import json

    root = Path(source)
    if not root.is_dir():
        return
    index = root / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"model directory {source!r} has no model_index.json: give a diffusers "
                                "pipeline directory (e.g. one written by `pxpo pretrain --out=DIR`) or a run folder")
    try:
        components = json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise FileNotFoundError(f"{index} is not valid JSON ({e}); the pipeline directory is damaged") from None
    missing = [k for k, v in components.items()
               if not k.startswith("_") and k != "safety_checker" and isinstance(v, list) and v[0] is not None and not (root / k).is_dir()]
    if missing:
        raise FileNotFoundError(f"model directory {name_or_path!r} is incomplete: model_index.json names "
                                f"{', '.join(m + '/' for m in missing)} but the folder has no such "
                                "subfolder; copy the whole pipeline directory")


def check_model_source(name_or_path: str) -> str:
    """What can be checked without loading: a known name, a complete diffusers directory, a run
    folder with weights, or something shaped like a hub id. Returns the source to load."""
    source = resolve_model(name_or_path)
    if not Path(source).exists() and (source.startswith((".", "/")) or source.count("/") != 1):
        raise FileNotFoundError(f"model {name_or_path!r} is not a diffusers directory (one holding "
                                f"model_index.json), a run folder, a known name ({', '.join(NAMED)}) or a hub "
                                "id like 'org/model'")
    check_pipeline_dir(source, name_or_path)
    return source


# pipelines pxpo samples and re-scores (models.conditioning passes each one's text conditioning)
PIPELINES = {"StableDiffusionPipeline": "SD 1.x / 2.x", "StableDiffusionXLPipeline": "SDXL"}


def pipeline_class_name(source: str, name_or_path: str, allow_download: bool) -> str:
    """The ``_class_name`` in the model's model_index.json, refused unless pxpo supports it."""
    from diffusers import DiffusionPipeline

    try:
        index = DiffusionPipeline.load_config(source, local_files_only=not allow_download)
    except (OSError, EnvironmentError) as e:
        hint = "" if allow_download or Path(source).is_dir() else " (downloads are off: pass --model.allow_download=true to fetch it)"
        raise FileNotFoundError(f"cannot load model {name_or_path!r}{hint}: {e}") from None
    name = index.get("_class_name", "")
    if name not in PIPELINES:
        raise ValueError(f"model {name_or_path!r} is a {name or 'pipeline of unknown class'}; pxpo trains "
                         + ", ".join(f"{k} ({v})" for k, v in PIPELINES.items()))
    return name


def ddim_config(config) -> dict:
    """The model's scheduler config for DDIM. A config without set_alpha_to_one (SDXL ships an Euler
    scheduler) gets SD's False: with DDIM's default True the last step has zero variance and no
    log-probability (sampling.ddim_mean_std)."""
    return {**config, **({} if "set_alpha_to_one" in config else {"set_alpha_to_one": False})}


def load_pipeline(name_or_path: str = EMBEDDED, allow_download: bool = False, dtype=None, device: str = "cpu"):
    """A ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` (as model_index.json names it)
    with a DDIM scheduler (the policy's sampler) and no safety checker."""
    import diffusers
    import torch
    from diffusers import DDIMScheduler

    source = check_model_source(name_or_path)
    cls_name = pipeline_class_name(source, name_or_path, allow_download)
    extra = dict(safety_checker=None, requires_safety_checker=False) if cls_name == "StableDiffusionPipeline" else {}
    try:
        pipe = getattr(diffusers, cls_name).from_pretrained(
            source, local_files_only=not allow_download, dtype=dtype or torch.float32, **extra)
    except (OSError, EnvironmentError) as e:
        hint = "" if allow_download or Path(source).is_dir() else " (downloads are off: pass --model.allow_download=true to fetch it)"
        raise FileNotFoundError(f"cannot load model {name_or_path!r}{hint}: {e}") from None
    pipe.scheduler = DDIMScheduler.from_config(ddim_config(pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
