"""The ``pxpo`` command: ``pxpo pretrain | train | sample | ...``."""
from __future__ import annotations

import sys


def _pretrain(argv: list[str]) -> int:
    from pxpo.config import parse_overrides
    from pxpo.pretrain.run import PretrainConfig, pretrain

    cfg = parse_overrides(PretrainConfig(), argv, prog="pxpo pretrain",
                          description="Reproduce the embedded model shapes-tiny from scratch.")
    out = pretrain(cfg)
    print(f"saved pipeline to {out}")
    return 0


def _pretrain_segmenter(argv: list[str]) -> int:
    from pxpo.segment.train import main

    return main(argv)


def _evaluate_segmenter(argv: list[str]) -> int:
    from pxpo.segment.metrics import main

    return main(argv)


def _evaluate(argv: list[str]) -> int:
    from pxpo.evaluate import main

    return main(argv)


def _train(argv: list[str]) -> int:
    from pxpo.config import parse_overrides
    from pxpo.training.config import RunConfig
    from pxpo.training.trainer import Trainer

    cfg = parse_overrides(RunConfig(), argv, prog="pxpo train",
                          description="Fine-tune a diffusion model with PXPO (per-pixel rewards) or DDPO.")
    path = Trainer(cfg).train()
    print(f"run saved in {path}")
    return 0


def _sample(argv: list[str]) -> int:
    from pxpo.config import parse_overrides
    from pxpo.sample_cli import SampleCommand, run

    cmd = parse_overrides(SampleCommand(), argv, prog="pxpo sample",
                          description="Images from a trained run or any model, one per prompt and seed.")
    print(f"wrote {run(cmd)}")
    return 0


def _refine(argv: list[str]) -> int:
    from pxpo.refine import main

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
    "rewards": (_rewards, "list the registered rewards"),
    "pretrain": (_pretrain, "train the embedded model shapes-tiny from scratch"),
    "evaluate": (_evaluate, "score a pipeline's held-out images: object colour, background, shape"),
    "pretrain-segmenter": (_pretrain_segmenter, "train the shapes-world segmenter (segment-* rewards)"),
    "evaluate-segmenter": (_evaluate_segmenter, "per-class IoU of the segmenter on world images"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<22}{help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: pxpo COMMAND [--key=value ...]\n\ncommands:\n" + "\n".join(lines)
              + "\n\n`pxpo COMMAND --help` lists every option of a command.")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    fn, _ = COMMANDS[argv[0]]
    try:
        return fn(argv[1:])
    except (ValueError, FileNotFoundError) as e:  # user errors: the message says what to change
        print(f"pxpo {argv[0]}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
