"""Every `pxpo train|pretrain|sample|refine|studio` command the README and the docs show parses as written: its options
exist, its choices are valid, its reward and prompts build by name. A command that is not checked here is
marked `# not tested` where it is shown; those that run in full have their own tests (test_docs_examples,
test_train_e2e, test_multiprocess, ...). Every `python benchmarks/...py` or `python examples/...py` they
show (in code blocks or inline) names a script that exists and options that script defines; the long
runs themselves are benchmarks, with their commands and seeds beside their numbers."""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
COMMAND = re.compile(r"^(?:PYTHONPATH=\S+\s+)?pxpo (train|pretrain|sample|refine|studio)\b(.*)$")


MARKS = ("not tested", "not run")  # a command shown but not checked says so on its line
SHELL_ARRAY = re.compile(r"^([A-Z_]+)=\((.*)\)$")  # P=(--a=1 '--b={x: y}'), used as "${P[@]}"


def shown_commands() -> list[tuple[str, str, str]]:
    """(page:line, subcommand, arguments) of every pxpo command in a ```bash block, shell variables
    set in the block (P=(...), used as "${P[@]}") filled in."""
    out = []
    for page in PAGES:
        fenced, pending, start, env = None, "", 0, {}
        for i, line in enumerate(page.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = None if fenced is not None else line.strip()[3:].strip()
                env = {}
                continue
            if fenced not in ("bash", "sh", "shell"):
                continue
            text = (pending + " " + line.strip()) if pending else line.strip()
            if m := SHELL_ARRAY.match(text):
                env[m.group(1)] = m.group(2)
                continue
            for name, value in env.items():
                text = text.replace('"${%s[@]}"' % name, value)
            if text.endswith("\\"):
                pending, start = text[:-1], start or i
                continue
            pending, where = "", f"{page.relative_to(ROOT)}:{start or i}"
            start = 0
            m = COMMAND.match(text)
            if m and not any(mark in text for mark in MARKS) and "--help" not in text:
                out.append((where, m.group(1), m.group(2)))
    return out


COMMANDS = shown_commands()


def test_the_pages_show_commands():
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("where,command,args", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_shown_command_parses(where, command, args, monkeypatch):
    import pxpo.testbed  # noqa: F401  (the testbed's rewards and prompts)
    from pxpo.config import parse_overrides

    monkeypatch.chdir(ROOT)  # examples/... paths are relative to the repository
    argv = shlex.split(args, comments=True)
    argv = [a for a in argv if "<" not in a or not a.startswith("--resume")]
    if command == "train":
        from pxpo.backends.presets import apply_preset
        from pxpo.prompts import get_prompts
        from pxpo.rewards import build_reward
        from pxpo.training.config import RunConfig

        if any(a.startswith("--resume=") for a in argv):
            pytest.skip("a resume needs a run folder: tests/test_resume.py runs it")
        monkeypatch.syspath_prepend(str(ROOT / "examples"))
        cfg = parse_overrides(RunConfig(), argv, prog="pxpo train", description="", finalize=apply_preset)
        build_reward(cfg.reward.weights or cfg.reward.name, cfg.reward.params)
        get_prompts(cfg.prompts.name, **cfg.prompts.params)
    elif command == "pretrain":
        from pxpo.testbed.pretrain.run import PretrainConfig

        parse_overrides(PretrainConfig(), argv, prog="pxpo pretrain", description="")
    elif command == "refine":
        from pxpo.apps.refine import RefineConfig

        parse_overrides(RefineConfig(), argv, prog="pxpo refine", description="")
    elif command == "studio":
        from pxpo.apps.studio import StudioConfig

        parse_overrides(StudioConfig(), argv, prog="pxpo studio", description="")
    else:
        from pxpo.sample_cli import SampleCommand

        parse_overrides(SampleCommand(), argv, prog="pxpo sample", description="")


SCRIPT = re.compile(r"python ((?:benchmarks|examples)/[A-Za-z0-9_]+\.py)([^`\n|&;]*)")
IMPORTED = re.compile(r"^\s*from (pxpo(?:\.\w+)+) import", re.M)


def script_options(path: Path) -> set[str]:
    """The --options a script (or a pxpo module it imports from) defines: quoted '--name' strings."""
    texts = [path.read_text()]
    for module in IMPORTED.findall(texts[0]):
        f = ROOT / "src" / Path(*module.split("."))
        texts += [p.read_text() for p in (f.with_suffix(".py"), f / "__init__.py") if p.is_file()]
    return {o for t in texts for o in re.findall(r"""["'](--[A-Za-z][\w-]*)""", t)}


def train_options() -> set[str]:
    """pxpo train's --options, dotted (--seed, --train.lr, ...): scripts that pass the rest on take them."""
    import dataclasses

    from pxpo.training.config import RunConfig

    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            yield f"--{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                yield from walk(value, f"{prefix}{f.name}.")

    return set(walk(RunConfig(), ""))


def shown_scripts() -> list[tuple[str, str, list[str]]]:
    """(page:line, script, its --options) of every `python benchmarks|examples/....py` the pages show."""
    out = []
    for page in PAGES:
        for i, line in enumerate(page.read_text().splitlines(), 1):
            for m in SCRIPT.finditer(line):
                options = [o.split("=")[0] for o in re.findall(r"(?<![\w-])--[A-Za-z][\w=-]*", m.group(2))]
                out.append((f"{page.relative_to(ROOT)}:{i}", m.group(1), options))
    return out


SCRIPTS = shown_scripts()


def test_the_pages_show_scripts():
    assert len(SCRIPTS) >= 20


@pytest.mark.parametrize("where,script,options", SCRIPTS, ids=[f"{w} {s}" for w, s, _ in SCRIPTS])
def test_shown_script_exists_and_takes_its_options(where, script, options):
    path = ROOT / script
    assert path.is_file(), f"{where}: {script} does not exist"
    known = script_options(path)
    if "parse_known_args" in path.read_text():  # the rest goes on to pxpo train
        known |= train_options()
    unknown = sorted(set(options) - known)
    assert not unknown, f"{where}: {script} defines no {', '.join(unknown)}"
