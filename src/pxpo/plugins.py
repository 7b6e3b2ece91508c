"""Built-in plugins: modules that register prompt sources, rewards and named models when imported.

The registries (:func:`pxpo.prompts.get_prompts`, :func:`pxpo.rewards.get_reward`,
:func:`pxpo.backends.registry.resolve_model`) load them before a lookup, by module name, so the core
names them without importing the testbed: the testbed depends on the core, never the reverse. A
user's own prompts and rewards need no plugin: ``package.module:function`` names them directly.
"""

from __future__ import annotations

import importlib
from typing import Any

BUILTIN = ("pxpo.testbed.plugin",)  # the shapes world, its segmenter rewards and its embedded models
_loaded: set[str] = set()


def load() -> None:
    """Import each built-in plugin once (each registers its names)."""
    for name in BUILTIN:
        if name not in _loaded:
            _loaded.add(name)
            importlib.import_module(name)


def load_object(spec: str, what: str, error: type[Exception]) -> Any:
    """The object a ``package.module:name`` spec names (a user's reward, prompt source or detector), or
    ``error`` with a message that says which part failed: the module's import, or its missing name."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise error(f"{what} {spec!r}: cannot import module {module_name!r} ({e})") from None
    if not attr or not hasattr(module, attr):
        raise error(f"{what} {spec!r}: module {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)
