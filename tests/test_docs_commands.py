"""Every `pxpo train|pretrain|sample` command the README and the docs show parses as written: its options
exist, its choices are valid, its reward and prompts build by name. A command that is not checked here is
marked `# not tested` where it is shown; those that run in full have their own tests (test_docs_examples,
test_train_e2e, test_multiprocess, ...)."""
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
COMMAND = re.compile(r"^(?:PYTHONPATH=\S+\s+)?pxpo (train|pretrain|sample)\b(.*)$")


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
    else:
        from pxpo.sample_cli import SampleCommand

        parse_overrides(SampleCommand(), argv, prog="pxpo sample", description="")
