"""The ``pxpo`` command: ``pxpo pretrain | train | sample | ...``.

Errors a user can cause (:class:`pxpo.errors.UserError`: bad options, taken run folders, broken
rewards, missing model folders) and a full disk print one line ``pxpo COMMAND: error: ...`` and exit
2; ``--debug`` adds the traceback. Any other exception is a bug: it prints its traceback and a line
asking to report it, and exits 1. A run stopped by Ctrl-C / SIGTERM prints how to resume it and
exits 130 / 143. Run messages (warnings, resume notes) go through :mod:`logging` to stderr as
``pxpo COMMAND: [warning: ]message``; what a command was asked for (a summary, a path) is printed.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import traceback


def _pretrain(argv: list[str]) -> int:
    from pxpo.config import parse_overrides
    from pxpo.testbed.pretrain.run import PretrainConfig, pretrain

    cfg = parse_overrides(
        PretrainConfig(),
        argv,
        prog="pxpo pretrain",
        description="Reproduce the embedded model shapes-tiny from scratch.",
    )
    out = pretrain(cfg)
    print(f"saved pipeline to {out}")
    return 0


def _pretrain_segmenter(argv: list[str]) -> int:
    from pxpo.testbed.segment.train import main

    return main(argv)


def _evaluate_segmenter(argv: list[str]) -> int:
    from pxpo.testbed.segment.metrics import main

    return main(argv)


def _evaluate(argv: list[str]) -> int:
    from pxpo.testbed.evaluate import main

    return main(argv)


def _train(argv: list[str]) -> int:
    from pxpo.config import parse_overrides
    from pxpo.backends.presets import apply_preset
    from pxpo.training.config import RunConfig
    from pxpo.training.resume import resume_config
    from pxpo.training.trainer import Trainer

    kw = dict(prog="pxpo train", description="Fine-tune a diffusion model with PXPO (per-pixel rewards) or DDPO.")
    resuming = any(a.startswith("--resume=") and a != "--resume=" for a in argv)
    cfg = resume_config(argv, **kw) if resuming else parse_overrides(RunConfig(), argv, **kw, finalize=apply_preset)
    path = Trainer(cfg).train()
    if os.environ.get("RANK", "0") == "0":  # one report from a multi-process run
        print_summary(path)
        print(f"run saved in {path}")
    return 0


def print_summary(run) -> None:
    """Eval reward and the reward's own measures, before -> after, from the run's summary.json."""
    import json
    from pathlib import Path

    path = Path(run) / "summary.json"
    if not path.is_file():  # a process other than rank 0 of a multi-process run
        return
    summary = json.loads(path.read_text())
    print(f"eval reward: {summary['eval_reward_before']:.4f} before -> {summary['eval_reward_after']:.4f} after")
    before, after = summary.get("eval_info_before", {}), summary.get("eval_info_after", {})
    for key in after:
        if key in before:
            print(f"  {key}: {before[key]:.4f} -> {after[key]:.4f}")
    if summary.get("skipped_steps"):
        print(f"  skipped non-finite updates: {summary['skipped_steps']}")


def _sample(argv: list[str]) -> int:
    from pxpo.config import parse_overrides
    from pxpo.sample_cli import SampleCommand, run

    cmd = parse_overrides(
        SampleCommand(),
        argv,
        prog="pxpo sample",
        description="Images from a trained run or any model, one per prompt and seed.",
    )
    print(f"wrote {run(cmd)}")
    return 0


def _refine(argv: list[str]) -> int:
    from pxpo.apps.refine import main

    return main(argv)


def _studio(argv: list[str]) -> int:
    from pxpo.apps.studio import main

    return main(argv)


def _rewards(argv: list[str]) -> int:
    from pxpo.rewards import available

    for name, desc in available().items():
        print(f"  {name:<28}{desc}")
    return 0


COMMANDS = {
    "train": (_train, "fine-tune with PXPO or DDPO (the main job)"),
    "sample": (_sample, "images from a run or a model for given prompts and seeds"),
    "refine": (_refine, "refine one picture round after round from a person's brush strokes"),
    "studio": (_studio, "a local web app: paint likes and dislikes on pictures, PXPO refines round by round"),
    "rewards": (_rewards, "list the registered rewards"),
    "pretrain": (_pretrain, "train the embedded model shapes-tiny from scratch"),
    "evaluate": (_evaluate, "score a pipeline's held-out images: object colour, background, shape"),
    "pretrain-segmenter": (_pretrain_segmenter, "train the shapes-world segmenter (segment-* rewards)"),
    "evaluate-segmenter": (_evaluate_segmenter, "per-class IoU of the segmenter on world images"),
}


WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


class RunMessages(logging.Handler):
    """The ``pxpo`` loggers' messages as ``pxpo COMMAND: message`` (warnings and errors with their
    level first) on the current ``sys.stderr``, looked up per message so that a replaced stderr
    (a test's capture) gets them. accelerate's loggers (training) mark each message with the
    process's rank: kept when several processes run, dropped when one does."""

    def __init__(self, command: str):
        super().__init__()
        self.command = command

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
            message = record.getMessage()
            if int(os.environ.get("WORLD_SIZE", "1")) == 1 and message.startswith("[RANK 0] "):
                message = message[len("[RANK 0] ") :]
            sys.stderr.write(f"pxpo {self.command}: {level}{message}\n")
            sys.stderr.flush()
        except Exception:  # a closed stream must not turn a message into a crash
            self.handleError(record)


def setup_logging(command: str, debug: bool = False) -> None:
    """Run messages of ``pxpo COMMAND`` to stderr: INFO and up (DEBUG with ``--debug``)."""
    logger = logging.getLogger("pxpo")
    for handler in [h for h in logger.handlers if isinstance(h, RunMessages)]:
        logger.removeHandler(handler)
    logger.addHandler(RunMessages(command))
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = any(a in ("--debug", "--debug=true") for a in argv)  # full tracebacks of user errors
    argv = [a for a in argv if a not in ("--debug", "--debug=true", "--debug=false")]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<22}{help_}" for name, (_, help_) in COMMANDS.items()]
        print(
            "usage: pxpo COMMAND [--key=value ...]\n\ncommands:\n"
            + "\n".join(lines)
            + "\n\n`pxpo COMMAND --help` lists every option of a command; `--debug` adds tracebacks to errors."
        )
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    fn, _ = COMMANDS[argv[0]]
    from pxpo.errors import RunStopped, UserError

    setup_logging(argv[0], debug)
    try:
        return fn(argv[1:])
    except RunStopped as e:  # a checkpoint is written; the message says how to continue
        if os.environ.get("RANK", "0") == "0":
            print(f"pxpo {argv[0]}: {e}", file=sys.stderr)
        return e.exit_code
    except UserError as e:  # the message says what to change
        if debug:
            traceback.print_exc()
        print(
            f"pxpo {argv[0]}: error: {one_line(e)}"
            + ("" if debug else " (--debug shows the traceback)" if e.__cause__ is not None else ""),
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:  # before training started (a training run stops at an epoch's end)
        print(f"\npxpo {argv[0]}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if isinstance(e, OSError) and e.errno in WRITE_ERRORS:  # a full disk or a read-only folder
            if debug:
                traceback.print_exc()
            print(
                f"pxpo {argv[0]}: error: cannot write {e.filename or 'a file'}: {e.strerror}; free disk space or "
                "choose a writable --out_dir (a stopped run continues from its newest checkpoint with "
                "pxpo train --resume=RUN)",
                file=sys.stderr,
            )
            return 2
        traceback.print_exc()  # a bug (in pxpo, or in code it runs): the traceback is what a fix needs
        print(
            f"pxpo {argv[0]}: internal error: {type(e).__name__}: {one_line(e)}. This is a bug, not a mistake "
            "in the options: please report it with the traceback above",
            file=sys.stderr,
        )
        return 1


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
