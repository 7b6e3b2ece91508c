"""Prompt sources, looked up by name. A source is ``source(n, rng) -> (prompts, metadata)``.

Shipped: ``list`` (a given list, drawn at random or cycled), ``file`` (one prompt per line),
``fixed`` (one prompt, e.g. for refining one image from brush strokes); the testbed's plugin
adds ``shapes-world`` (captions of the embedded models' world, their parsed contents as metadata). Your own:
``"package.module:function"`` naming a factory ``(**params) -> source``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from pxpo import plugins
from pxpo.errors import ConfigError, MissingFile

PromptSource = Callable[[int, np.random.Generator], tuple[list[str], list[dict]]]
REGISTRY: dict[str, Callable[..., PromptSource]] = {}


def register(name: str):
    def deco(factory):
        REGISTRY[name] = factory
        return factory

    return deco


@register("list")
def prompt_list(prompts: list[str], order: str = "random") -> PromptSource:
    """Prompts from a list, drawn at ``random`` or in ``cycle`` order."""
    if not prompts:
        raise ConfigError("prompt source 'list' needs a non-empty prompts list, e.g. prompts: [a cat, a dog]")
    if order not in ("random", "cycle"):
        raise ConfigError(f"prompt order {order!r} is unknown; use 'random' or 'cycle'")
    state = {"i": 0}

    def source(n, rng):
        if order == "random":
            out = [prompts[i] for i in rng.integers(0, len(prompts), size=n)]
        else:
            out = [prompts[(state["i"] + k) % len(prompts)] for k in range(n)]
            state["i"] += n
        return out, [{} for _ in out]

    return source


@register("file")
def prompt_file(path: str, order: str = "random") -> PromptSource:
    """One prompt per non-empty line of a text file."""
    p = Path(path)
    if not p.is_file():
        raise MissingFile(f"prompt file {path!r} does not exist")
    return prompt_list([line.strip() for line in p.read_text().splitlines() if line.strip()], order)


@register("fixed")
def fixed(prompt: str) -> PromptSource:
    """The same prompt every time."""
    return prompt_list([prompt], "cycle")


def get_prompts(name: str, **params) -> PromptSource:
    """Build prompt source ``name`` (registered, or ``module:factory``) with ``params``."""
    plugins.load()
    if name in REGISTRY:
        factory = REGISTRY[name]
    elif ":" in name:
        factory = plugins.load_object(name, "prompt source", ConfigError)
    else:
        raise ConfigError(
            f"unknown prompt source {name!r}; registered: {', '.join(sorted(REGISTRY))}; "
            "or give your own as 'package.module:factory'"
        )
    try:
        return factory(**params)
    except TypeError as e:
        raise ConfigError(f"prompt source {name!r} does not take parameters {sorted(params)}: {e}") from None
