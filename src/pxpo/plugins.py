"""Built-in plugins: modules that register prompt sources, rewards and named models when imported.

The registries (:func:`pxpo.prompts.get_prompts`, :func:`pxpo.rewards.get_reward`,
:func:`pxpo.backends.registry.resolve_model`) load them before a lookup, by module name, so the core
names them without importing the testbed: the testbed depends on the core, never the reverse. A
user's own prompts and rewards need no plugin: ``package.module:function`` names them directly.
"""
from __future__ import annotations

import importlib

BUILTIN = ("pxpo.testbed.plugin",)  # the shapes world, its segmenter rewards and its embedded models
_loaded: set[str] = set()


def load() -> None:
    """Import each built-in plugin once (each registers its names)."""
    for name in BUILTIN:
        if name not in _loaded:
            _loaded.add(name)
            importlib.import_module(name)
