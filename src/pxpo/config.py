"""Typed configuration: nested dataclasses, YAML files and ``--key=value`` overrides.

Every field is declared with :func:`opt` (default + one-line help), so ``--help`` lists them all.
Nested sections are addressed with dots: ``--train.lr=1e-4``. A YAML file given with
``--config=FILE`` is applied first, then the overrides in order.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from pxpo.errors import ConfigError


def opt(default: Any, help: str, **kw) -> Any:
    """A dataclass field with its help line (mutable defaults are copied per instance)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def section(cls: type, help: str) -> Any:
    return dataclasses.field(default_factory=cls, metadata={"help": help})


def _fields(cfg) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cfg)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        for a in args:
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: cannot read {value!r} as {tp}")
    if isinstance(value, str) and tp not in (str, Any):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"{key}: cannot parse {value!r} as YAML: {yaml_problem(e)}") from None
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "2e-5" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        return str(value)
    if origin in (list, tuple):
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, inner, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping like {{name: value}}, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, kt, key): _coerce(v, vt, key) for k, v in value.items()}
    return value


def set_value(cfg, dotted: str, value: Any) -> None:
    """Set ``cfg.a.b = value`` with type checking; unknown keys raise ConfigError with the choices."""
    parts = dotted.split(".")
    node = cfg
    for i, part in enumerate(parts):
        fields = _fields(node)
        if part not in fields:
            where = ".".join(parts[:i]) or "the top level"
            raise ConfigError(f"unknown option {dotted!r}: {where} has {', '.join(sorted(fields))}")
        hints = typing.get_type_hints(type(node))
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(getattr(node, part)):
                if not isinstance(value, dict):
                    raise ConfigError(f"{dotted} is a section; set its fields, e.g. --{dotted}.NAME=VALUE")
                for k, v in value.items():
                    set_value(cfg, f"{dotted}.{k}", v)
            else:
                setattr(node, part, _coerce(value, hints[part], dotted))
        else:
            node = getattr(node, part)
            if not dataclasses.is_dataclass(node):
                raise ConfigError(f"{'.'.join(parts[: i + 1])} is not a section")


def apply_dict(cfg, data: dict, prefix: str = "") -> None:
    for k, v in (data or {}).items():
        set_value(cfg, f"{prefix}{k}", v)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def save_yaml(cfg, path: str | Path) -> Path:
    """Write ``cfg`` as YAML; atomically (a temporary file renamed into place), so a kill mid-write
    leaves the previous file, not half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    os.replace(tmp, path)
    return path


def load_yaml(cfg, path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options at the top level")
    apply_dict(cfg, data)
    reset_plugin_params(cfg, set(_flat_keys(data)))
    return cfg


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: ``line L, column C: problem (context)``, without PyYAML's excerpt."""
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    return f"{where}{problem}" + (f" ({context})" if context else "") + "; fix the YAML there"


def _flat_keys(data: dict, prefix: str = ""):
    for k, v in data.items():
        yield prefix + k
        if isinstance(v, dict) and k != "params":
            yield from _flat_keys(v, prefix + k + ".")


def reset_plugin_params(cfg, touched: set[str]) -> None:
    """A section naming a plugin (``name`` + ``params``, e.g. reward or prompts) whose ``name`` was set
    without its ``params`` starts from empty params: the default plugin's parameters (say, the
    colour reward's target) must not leak into another plugin."""
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section) and {"name", "params"} <= set(_fields(section)):
            if f"{f.name}.name" in touched and f"{f.name}.params" not in touched:
                section.params = {}


def help_lines(cfg, prefix: str = "") -> list[str]:
    lines = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"\n  [{prefix}{f.name}] {f.metadata.get('help', '')}")
            lines += help_lines(value, prefix + f.name + ".")
        else:
            lines.append(f"  --{prefix}{f.name}={value!r}\n      {f.metadata.get('help', '')}")
    return lines


def parse_overrides(cfg, argv: list[str], prog: str, description: str, finalize=None):
    """Apply ``--config=FILE`` then ``--key=value`` arguments to ``cfg``; ``--help`` prints every field.
    ``finalize(cfg, touched)`` then runs with the dotted keys the user set (e.g. to fill a preset's
    values into the others)."""
    if any(a in ("-h", "--help") for a in argv):
        print(f"usage: {prog} [--config=FILE.yaml] [--key=value ...]\n\n{description}\n\noptions (default shown):")
        print("\n".join(help_lines(cfg)))
        sys.exit(0)
    pairs = []
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"cannot read argument {arg!r}: write options as --key=value (see {prog} --help)")
        key, value = arg[2:].split("=", 1)
        pairs.append((key.replace("-", "_"), value))
    touched = {k for k, _ in pairs if k != "config"}
    for key, value in pairs:
        if key == "config":
            load_yaml(cfg, value)
            touched |= set(_flat_keys(yaml.safe_load(Path(value).read_text()) or {}))
    for key, value in pairs:
        if key != "config":
            set_value(cfg, key, value)
    reset_plugin_params(cfg, {k for k, _ in pairs if k != "config"})
    if finalize is not None:
        finalize(cfg, touched)
    return cfg
