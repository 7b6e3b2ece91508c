"""Typed configuration: nested dataclasses, read from the command line and YAML by jsonargparse.

A config is a dataclass. Each field has a type (``Literal[...]`` where the choices are fixed), a
default, and a docstring under it: the docstring's first paragraph is the one line ``--help`` shows,
later paragraphs (why the default, what was measured) are for the API reference only. Sections are
dataclass fields of dataclass type, addressed with dots: ``--train.lr=1e-4``.

    pxpo train --config=FILE.yaml --train.lr=1e-4 --reward.params='{target: red}' --print_config

YAML files given with ``--config=FILE`` apply first, then the options in the order given;
``--print_config`` prints the resolved config as YAML (as the run's config.yaml will hold it) and exits.

jsonargparse parses, types and checks every value; this module adds pxpo's conventions around it:
options are written ``--key=value``; every mistake is one line naming the option
(:class:`ConfigError`); a section that names a plugin (``name`` + ``params``: reward, prompts) starts
from empty params when another plugin is named without them; and ``finalize(cfg, touched)`` learns
which options the user set (model presets fill in the others).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import os
import re
import shutil
import sys
import typing
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser, DefaultHelpFormatter, Namespace
from jsonargparse import get_loader, set_parsing_settings

from pxpo.config_schema import check_choices, check_key, choice_error, choices, flat_keys, schema
from pxpo.errors import ConfigError

__all__ = [
    "ConfigError",
    "apply_dict",
    "check_choices",
    "help_text",
    "load_yaml",
    "parse_overrides",
    "save_yaml",
    "set_value",
]

set_parsing_settings(docstring_parse_attribute_docstrings=True)  # a field's docstring is its help


# ---- the parser ---------------------------------------------------------------------------------
class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help (type and default after each option) with the description as written, up
    to 120 columns wide."""

    def __init__(self, prog, **kw):
        width = min(shutil.get_terminal_size().columns, 120) - 2
        super().__init__(prog, **{"max_help_position": 40, "width": width, **kw})

    def _format_action_invocation(self, action):
        return "--print_config" if action.dest == "print_config" else super()._format_action_invocation(action)

    def _get_help_string(self, action):
        text = super()._get_help_string(action)
        return text.replace("default: %(default)s", "default: ''") if action.default == "" else text


@functools.lru_cache(maxsize=None)
def parser_for(cls: type, prog: str = "", description: str = "") -> ArgumentParser:
    parser = ArgumentParser(
        prog=prog or None,
        description=description or None,
        exit_on_error=False,
        usage=f"{prog or '%(prog)s'} [--config=FILE.yaml] [--key=value ...] [--print_config]",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--config", action=ActionConfigFile, help="a YAML file of options, applied before the --key=value options"
    )
    parser.add_class_arguments(cls, fail_untyped=True, sub_configs=True)
    for action in parser._actions:  # one line of help: the docstring's first paragraph
        if action.dest in schema(cls)[1]:  # a section given whole
            action.help = "the section's options: a YAML file, or a mapping like {name: value}"
        elif action.dest == "print_config":
            action.help = "print the resolved config as YAML (as config.yaml holds it) and exit"
        elif isinstance(action.help, str) and action.help:
            action.help = " ".join(action.help.strip().split("\n\n")[0].split())
    return parser


def help_text(cls: type, prog: str = "", description: str = "") -> str:
    return parser_for(cls, prog, description).format_help()


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _namespace(cfg) -> Namespace:
    ns = Namespace()
    options, _ = schema(type(cfg))
    for key in options:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        ns[key] = copy.deepcopy(value)
    return ns


def _assign(cfg, values: dict) -> None:
    for f in dataclasses.fields(cfg):
        if f.name not in values:
            continue
        if dataclasses.is_dataclass(getattr(cfg, f.name)):
            _assign(getattr(cfg, f.name), values[f.name])
        else:
            setattr(cfg, f.name, values[f.name])


WORDS = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "text",
    dict: "a mapping like {name: value}",
    list: "a list like [a, b]",
}


def one_line(cls: type, error: Exception) -> str:
    """jsonargparse's message as one line that names the option and what it expects."""
    text = str(error)
    m = re.match(r'Parser key "([^"]+)":\s*(.*)', text, re.S)
    if not m or m.group(1) not in schema(cls)[0]:
        return " ".join(text.split())
    key, rest = m.groups()
    got = re.search(r"(?:Got|Given) value: (.*?)(?:\n\s*- |\Z)", rest, re.S)
    value = got.group(1) if got else None
    tp = schema(cls)[0][key]
    if (allowed := choices(tp)) is not None and value is not None:
        return str(choice_error(key, value, allowed))
    word = WORDS.get(typing.get_origin(tp) or tp)
    if word and value is not None:
        return f"{key}: expected {word}, got {value!r}"
    return f"{key}: " + " ".join(rest.split())


def _read_mapping(key: str, tp: Any, value: str) -> str:
    """A mapping option (``--reward.params='{target: red}'``) as jsonargparse will read it: unchanged where
    its YAML loader reads it, rewritten from PyYAML's reading where that loader refuses it (the compact
    ``{parts:[[sky,blue]]}``); ``{target:red}`` (a key "target:red" with no value: YAML needs a space after
    a colon unless a bracket follows) gets a message that says so."""
    if (typing.get_origin(tp) or tp) is not dict:
        return value
    try:
        loaded = yaml.safe_load(value)
    except yaml.YAMLError:
        return value  # jsonargparse names the option and what it expects
    if not isinstance(loaded, dict):
        return value
    glued = [k for k, v in loaded.items() if v is None and isinstance(k, str) and ":" in k]
    if glued:
        name, _, rest = glued[0].partition(":")
        raise ConfigError(
            f"{key}: {glued[0]!r} reads as one name with no value; write a space after the colon: {{{name}: {rest}}}"
        )
    try:
        get_loader("yaml")(value)
        return value  # read as written: no second YAML dialect in between
    except yaml.YAMLError:
        return yaml.safe_dump(loaded, default_flow_style=True, sort_keys=False).strip()


def _wrap_scalar(tp: Any, value: str) -> str:
    """A list option given one item (``--seeds=3``) gets the list of it (``[3]``)."""
    if typing.get_origin(tp) is not list:
        return value
    try:
        loaded = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return value if isinstance(loaded, list) or loaded is None else yaml.safe_dump([loaded], default_flow_style=True)


# ---- YAML files ---------------------------------------------------------------------------------
def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: ``line L, column C: problem (context)``, without PyYAML's excerpt."""
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    return f"{where}{problem}" + (f" ({context})" if context else "") + "; fix the YAML there"


def read_yaml(cls: type, path: str | Path) -> dict:
    """A config file's options as a nested mapping, checked against ``cls`` (and upgraded by
    ``cls.upgrade(data)`` where a class renamed options since old files were written)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options at the top level")
    if hasattr(cls, "upgrade"):
        data = cls.upgrade(data)
    for key in flat_keys(cls, data):
        try:
            check_key(cls, key)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    return data


def save_yaml(cfg, path: str | Path) -> Path:
    """Write ``cfg`` as YAML; atomically (a temporary file renamed into place), so a kill mid-write
    leaves the previous file, not half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    os.replace(tmp, path)
    return path


# ---- applying options ---------------------------------------------------------------------------
def _apply(cfg, args: list[str], sources: list[set[str]]) -> None:
    """Parse ``args`` (``--key=value`` and ``--config=YAML`` text) on top of ``cfg``'s values, set
    the result on ``cfg``; ``sources``: the keys each source (file or command line) set, in order."""
    parser = parser_for(type(cfg))
    try:
        ns = parser.parse_args(args, namespace=_namespace(cfg))
    except ArgumentError as e:
        raise ConfigError(one_line(type(cfg), e)) from None
    values = ns.as_dict()
    values.pop("config", None)
    _assign(cfg, values)
    reset_plugin_params(cfg, sources)


def reset_plugin_params(cfg, sources: list[set[str]]) -> None:
    """A section naming a plugin (``name`` + ``params``, e.g. reward or prompts) whose ``name`` was set
    without its ``params`` starts from empty params: the default plugin's parameters (say, the
    colour reward's target) must not leak into another plugin. ``sources``: the dotted keys each
    source set, in order; the last source that sets either decides."""
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section) and {"name", "params"} <= {g.name for g in dataclasses.fields(section)}:
            last = [s for s in sources if {f"{f.name}.name", f"{f.name}.params", f.name} & s][-1:]
            if last and f"{f.name}.name" in last[0] and f"{f.name}.params" not in last[0]:
                section.params = {}


def _nest(data: dict) -> dict:
    out: dict = {}
    for key, value in data.items():
        node = out
        *head, leaf = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def apply_dict(cfg, data: dict) -> None:
    """Set the options of a nested (or dotted-key) mapping on ``cfg``, checked as a config file's are."""
    data = _nest(data)
    keys = set(flat_keys(type(cfg), data))
    for key in keys:
        check_key(type(cfg), key)
    if keys:
        _apply(cfg, [f"--config={yaml.safe_dump(data)}"], [keys])


def set_value(cfg, dotted: str, value: Any) -> None:
    """``cfg.a.b = value``, checked (unknown keys and wrong types raise ConfigError)."""
    apply_dict(cfg, {dotted: value})


def load_yaml(cfg, path: str | Path):
    """``cfg`` with a config file's options set on it."""
    data = read_yaml(type(cfg), path)
    if data:
        _apply(cfg, [f"--config={yaml.safe_dump(data)}"], [set(flat_keys(type(cfg), data))])
    return cfg


def parse_overrides(cfg, argv: list[str], prog: str, description: str, finalize=None):
    """Apply ``--config=FILE`` then ``--key=value`` arguments to ``cfg`` (in place; returned too).
    ``--help`` prints every option and exits; ``--print_config`` prints the result as YAML and exits.
    ``finalize(cfg, touched)`` runs before that with the dotted keys the user set (e.g. to fill a
    preset's values into the others)."""
    cls = type(cfg)
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(cls, prog, description))
        sys.exit(0)
    files, overrides, print_config = [], [], False
    options, sections = schema(cls)
    for arg in argv:
        if arg == "--print_config":
            print_config = True
            continue
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"cannot read argument {arg!r}: write options as --key=value (see {prog} --help)")
        key, value = arg[2:].split("=", 1)
        key = key.replace("-", "_")
        if key == "config":
            files.append(read_yaml(cls, value))
            continue
        check_key(cls, key)
        if key in sections:  # a whole section: a mapping, or a YAML file of one
            try:
                loaded = yaml.safe_load(Path(value).read_text() if Path(value).is_file() else value)
            except yaml.YAMLError:
                loaded = None
            if not isinstance(loaded, dict):
                raise ConfigError(
                    f"{key} is a section; set its fields, e.g. --{key}.NAME=VALUE, or give it a "
                    "mapping like {NAME: VALUE} or a YAML file of one"
                )
            for sub in flat_keys(cls, loaded, key + "."):
                check_key(cls, sub)
            overrides.append((key, yaml.safe_dump(loaded, default_flow_style=True).strip()))
        else:
            overrides.append((key, _wrap_scalar(options[key], _read_mapping(key, options[key], value))))
    sources = [set(flat_keys(cls, data)) for data in files]
    sources.append(
        {k for k, _ in overrides}
        | {s for k, v in overrides if k in sections for s in flat_keys(cls, yaml.safe_load(v), k + ".")}
    )
    args = [f"--config={yaml.safe_dump(data)}" for data in files if data]
    args += [f"--{k}={v}" for k, v in overrides]
    _apply(cfg, args, sources)
    if finalize is not None:
        finalize(cfg, set().union(*sources))
    if print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        sys.exit(0)
    return cfg
