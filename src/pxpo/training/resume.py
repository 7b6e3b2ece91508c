"""``--resume=RUN``: the run's own config.yaml, with the options given beside it on top.

Options that change what the run is (the model, the algorithm, the batch arithmetic, the
evaluation set, where the run lives) cannot change mid-run and are refused; every other change is
allowed and named in a warning.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from pathlib import Path

from pxpo.config import load_yaml, parse_overrides
from pxpo.errors import UserError
from pxpo.training.config import RunConfig

logger = logging.getLogger(__name__)  # before the Accelerator exists: RANK says which process reports

FROZEN = {
    "model": "the model being fine-tuned",
    "train.algorithm": "the algorithm",
    "train.batch_size": "the batch arithmetic",
    "train.timestep_fraction": "the batch arithmetic (gradient accumulation)",
    "sample.batch_size": "the batch arithmetic",
    "sample.num_batches": "the batch arithmetic",
    "sample.num_steps": "the sampler the policy is trained for",
    "sample.height": "the latent grid",
    "sample.width": "the latent grid",
    "seed": "the random state (it continues from the checkpoint)",
    "eval_seed": "the evaluation set (before and after must compare)",
    "eval_samples": "the evaluation set (before and after must compare)",
    "out_dir": "where the run lives (a resumed run continues in its folder; to start a new run from its "
    "weights use --model.name=RUN)",
    "run_name": "where the run lives (a resumed run continues in its folder; to start a new run from its "
    "weights use --model.name=RUN)",
}
IGNORED = {"resume", "world_size"}  # world_size: a record, checked against the launch (distributed.check_world_size)


def saved_config(run: str | Path) -> RunConfig:
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise UserError(f"--resume={run}: no run there (a run folder holds config.yaml and checkpoint/)")
    return load_yaml(RunConfig(), path)


def differences(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every field that differs."""
    out = []
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if dataclasses.is_dataclass(a):
            out += differences(a, b, prefix + f.name + ".")
        elif a != b:
            out.append((prefix + f.name, a, b))
    return out


def _frozen(key: str) -> str | None:
    for k, why in FROZEN.items():
        if key == k or key.startswith(k + "."):
            return why
    return None


def check_resume(cfg: RunConfig, warn=True) -> list[tuple[str, object, object]]:
    """Compare ``cfg`` with RUN/config.yaml: refuse frozen changes, warn about the others."""
    saved = saved_config(cfg.resume)
    changes = [c for c in differences(saved, cfg) if c[0] not in IGNORED]
    refused = [(k, a, b, _frozen(k)) for k, a, b in changes if _frozen(k)]
    if refused:
        lines = "; ".join(f"{k} from {a!r} to {b!r} ({why})" for k, a, b, why in refused)
        raise UserError(
            f"--resume={cfg.resume}: cannot change mid-run: {lines}. Drop those options, or start a new run"
        )
    if warn and os.environ.get("RANK", "0") == "0":  # once, not once per process
        for k, a, b in changes:
            logger.warning(f"--resume: {k} changes from {a!r} (saved in config.yaml) to {b!r}")
    return changes


def run_finished(run: str | Path, epochs_done: int) -> bool:
    """Whether the run wrote its summary after ``epochs_done`` epochs (a kill between the last
    checkpoint and the summary leaves it unfinished: a resume then only finishes it)."""
    try:
        summary = json.loads((Path(run) / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return summary.get("epochs", epochs_done) >= epochs_done and (Path(run) / "weights").is_dir()


def resume_config(argv: list[str], prog: str, description: str) -> RunConfig:
    """The config of ``pxpo train --resume=RUN [options]``: RUN's config.yaml, then ``options``."""
    probe = parse_overrides(
        RunConfig(),
        [a for a in argv if a.startswith(("--resume=", "-h", "--help"))],
        prog=prog,
        description=description,
    )
    cfg = parse_overrides(copy.deepcopy(saved_config(probe.resume)), argv, prog=prog, description=description)
    return cfg
