"""The config schema, read from the dataclasses: each dotted option's type, the sections, the
choices a ``Literal`` allows, and the one-line errors for an unknown key or a value outside its
choices. :mod:`pxpo.config` parses the command line and YAML with it."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal

from pxpo.errors import ConfigError


@functools.lru_cache(maxsize=None)
def schema(cls: type) -> tuple[dict[str, Any], dict[str, type]]:
    """(dotted option -> type hint, dotted section -> dataclass) of a config class."""
    options, sections = {}, {}
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            sections[f.name] = tp
            sub_options, sub_sections = schema(tp)
            options.update({f"{f.name}.{k}": v for k, v in sub_options.items()})
            sections.update({f"{f.name}.{k}": v for k, v in sub_sections.items()})
        else:
            options[f.name] = tp
    return options, sections


def choices(tp: Any) -> tuple | None:
    """The values a ``Literal[...]`` (or ``Optional[Literal[...]]``) type allows; None for other types."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [choices(a) for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1 and inner[0] is not None:
            return inner[0] + ((None,) if type(None) in typing.get_args(tp) else ())
    return None


def choice_error(key: str, value: Any, allowed: tuple) -> ConfigError:
    names = ", ".join("''" if c == "" else "null" if c is None else str(c) for c in allowed)
    return ConfigError(f"{key}={value!r}: use one of {names}")


def check_choices(cfg, prefix: str = "") -> None:
    """Every ``Literal`` field of ``cfg`` holds one of its choices (for configs built in Python;
    the command line and YAML files are checked as they are read)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_choices(value, f"{prefix}{f.name}.")
        elif (allowed := choices(hints[f.name])) is not None and value not in allowed:
            raise choice_error(prefix + f.name, value, allowed)


def check_key(cls: type, key: str) -> None:
    """A dotted key names an option or a section of ``cls``; otherwise say what is there."""
    options, sections = schema(cls)
    if key in options or key in sections:
        return
    moved = getattr(cls, "MOVED", {})
    if key in moved:
        raise ConfigError(
            f"{key} is now {moved[key]} (a variant measured as worse, kept to reproduce it): write --{moved[key]}=VALUE"
        )
    parts = key.split(".")
    for i in range(1, len(parts)):
        head = ".".join(parts[:i])
        if head in options:
            raise ConfigError(f"{head} is not a section")
        if head not in sections:
            parts = parts[:i]
            break
    parent = ".".join(parts[:-1])
    where = parent or "the top level"
    names = sorted(
        {
            k[len(parent) + 1 if parent else 0 :].split(".")[0]
            for k in [*options, *sections]
            if not parent or k.startswith(parent + ".")
        }
    )
    raise ConfigError(f"unknown option {key!r}: {where} has {', '.join(names)}")


def flat_keys(cls: type, data: dict, prefix: str = ""):
    """The dotted keys a nested mapping sets, down to the options (a dict-valued option's own keys,
    say reward.params, are values, not options)."""
    _, sections = schema(cls)
    for k, v in data.items():
        key = f"{prefix}{k}"
        yield key
        if isinstance(v, dict) and key in sections:
            yield from flat_keys(cls, v, key + ".")
