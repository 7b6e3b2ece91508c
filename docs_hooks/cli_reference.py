"""mkdocs hook: docs/reference/cli.md's option tables, generated at build time from the commands' config
dataclasses, so that the reference lists exactly the options the code has.

Each command's options are the fields of its dataclass, nested sections as dotted names
(``--train.lr``). A field's help is its ``metadata["help"]`` (``pxpo.config.opt``) or else the string
literal right after it in the class body (the docstring convention jsonargparse reads). Its type
comes from the annotations (a ``Literal`` lists its choices), its default from the dataclass.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import textwrap
import typing

MARKER = "<!-- pxpo:cli-options -->"

# (command line, "module:Class" of its options, one line on what it does)
COMMANDS = [
    ("pxpo train", "pxpo.training.config:RunConfig", "fine-tune with PXPO or DDPO (the main job)"),
    ("pxpo sample", "pxpo.sample_cli:SampleCommand", "pictures from a run or a model for given prompts and seeds"),
    ("pxpo refine", "pxpo.apps.refine:RefineConfig", "refine one picture round after round from brush strokes"),
    ("pxpo studio", "pxpo.apps.studio:StudioConfig", "the local web app: paint marks, train rounds"),
    ("pxpo studio export", "pxpo.apps.studio:ExportConfig", "a studio or refine session as a plain dataset"),
    ("pxpo evaluate", "pxpo.testbed.evaluate:EvaluateConfig", "the model-free evaluator on a model's pictures"),
    ("pxpo pretrain", "pxpo.testbed.pretrain.run:PretrainConfig", "train the embedded model from scratch"),
    ("pxpo pretrain-segmenter", "pxpo.testbed.segment.train:SegmenterTrainConfig", "train the shapes-world segmenter"),
    ("pxpo evaluate-segmenter", "pxpo.testbed.segment.metrics:SegmenterEvalConfig", "per-class IoU of the segmenter"),
]


def _load(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _docstrings(cls: type) -> dict[str, str]:
    """Attribute docstrings: the string literal that follows a field in the class body (and its bases')."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                found[node.target.id] = " ".join(nxt.value.value.split())
    return found


def _type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return (
            f"{getattr(origin, '__name__', str(origin))}[{inner}]"
            if inner
            else getattr(origin, "__name__", str(origin))
        )
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("*", "\\*").replace("<", "&lt;")


def _code(value) -> str:
    if value is dataclasses.MISSING:
        return "(required)"
    text = repr(value) if isinstance(value, str) else str(value)
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(option, type, default, help) for every leaf field, sections flattened into dotted names."""
    hints = typing.get_type_hints(cls, include_extras=False)
    docs = _docstrings(cls)
    out, sections = [], []
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name, f.type)
        help_ = f.metadata.get("help") or docs.get(f.name, "")
        if dataclasses.is_dataclass(tp):
            sections.append((f.name, tp, help_))
            continue
        out.append((f"--{prefix}{f.name}", _type_name(tp), _code(_default(f)), help_))
    for name, tp, help_ in sections:  # sections after the top-level options, as in a YAML file's order
        out.append((f"**{prefix}{name}**", "", "", help_))
        out += rows(tp, f"{prefix}{name}.")
    return out


def render() -> str:
    parts = []
    for command, path, what in COMMANDS:
        cls = _load(path)
        parts += [
            f"## `{command}`",
            "",
            f"{what[0].upper()}{what[1:]} (`{path}`).",
            "",
            "| option | type | default | what it does |",
            "|---|---|---|---|",
        ]
        for option, tp, default, help_ in rows(cls):
            option_cell = option if option.startswith("**") else f"`{option}`"
            parts.append(f"| {option_cell} | {_cell(tp)} | {default} | {_cell(help_)} |")
        parts.append("")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, render())
    return markdown
