"""Models by name: the embedded ``shapes-tiny``, a diffusers SD directory, or a hub id.

Everything loads with ``local_files_only=True`` unless the user allows downloads: pxpo never
fetches weights behind a user's back.
"""
from __future__ import annotations

from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
NAMED = {"shapes-tiny": WEIGHTS / "shapes-tiny"}
EMBEDDED = "shapes-tiny"


def resolve_model(name_or_path: str) -> str:
    """A short name -> its shipped directory; a path or hub id is returned as is."""
    if name_or_path in NAMED:
        path = NAMED[name_or_path]
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"the embedded model {name_or_path!r} is missing at {path}; "
                                    "reinstall pxpo or run `pxpo pretrain --out=<dir>`")
        return str(path)
    return name_or_path


def is_embedded(name_or_path: str) -> bool:
    return name_or_path == EMBEDDED or Path(name_or_path).resolve() == NAMED[EMBEDDED].resolve()


def load_pipeline(name_or_path: str = EMBEDDED, allow_download: bool = False, dtype=None, device: str = "cpu"):
    """A ``StableDiffusionPipeline`` with a DDIM scheduler (the policy's sampler) and no safety checker."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    source = resolve_model(name_or_path)
    if not Path(source).exists() and (source.startswith((".", "/")) or source.count("/") != 1):
        raise FileNotFoundError(f"model {name_or_path!r} is not a diffusers directory (one holding "
                                f"model_index.json), a known name ({', '.join(NAMED)}) or a hub id like 'org/model'")
    if Path(source).is_dir() and not (Path(source) / "model_index.json").is_file():
        raise FileNotFoundError(f"model directory {source!r} has no model_index.json: give a diffusers "
                                "pipeline directory (e.g. one written by `pxpo pretrain --out=DIR`)")
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            source, local_files_only=not allow_download, safety_checker=None, requires_safety_checker=False,
            dtype=dtype or torch.float32)
    except (OSError, EnvironmentError) as e:
        hint = "" if allow_download else " (downloads are off: pass --model.allow_download=true to fetch it)"
        raise FileNotFoundError(f"cannot load model {name_or_path!r}{hint}: {e}") from None
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
