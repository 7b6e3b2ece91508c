"""Two settings of one option, PXPO trainers in one process, alternated: the ratio of their epochs.

    python benchmarks/speed_ab.py [ROUNDS] [--compare=KEY:A,B] [--json=PATH] [KEY=VALUE ...]

Two PXPO trainers at ``pxpo train``'s defaults (1 thread, plus any ``KEY=VALUE`` overrides, e.g.
``model.finetune=lora``) that differ only in ``KEY``: ``A`` and ``B``. The default,
``train.timesteps_per_forward:1,0``, compares one UNet forward + backward per trained timestep (as
the update ran before, and as DDPO and trl run it) with all of a minibatch's timesteps in one call;
``--compare=train.reuse_sampling:never,auto`` compares recomputing the first update's UNet calls
with reusing the sampling pass's. After a warm-up epoch each they alternate, which goes first
swapping every round, and the per-round ratios A / B of their epoch and training times are printed
(> 1: B is faster). Peak memory is the shared process's RSS, so it does not separate the two:
``benchmarks/speed.py`` run once per setting does.
"""

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import build_trainer, epoch  # noqa: E402


def parse_compare(arg: str) -> tuple[str, str, str]:
    """``KEY:A,B`` -> (KEY, A, B)."""
    key, sep, values = arg.partition(":")
    a, comma, b = values.partition(",")
    if not (sep and comma and key and a and b):
        raise SystemExit(f"speed_ab.py: --compare={arg!r} is not KEY:A,B (e.g. train.reuse_sampling:never,auto)")
    return key, a, b


def main(argv: list[str]) -> int:
    out = next((a.split("=", 1)[1] for a in argv if a.startswith("--json=")), "")
    key, a, b = parse_compare(
        next((x.split("=", 1)[1] for x in argv if x.startswith("--compare=")), "train.timesteps_per_forward:1,0")
    )
    rounds = int(next((x for x in argv if x.isdigit()), 4))
    overrides = [x for x in argv if "=" in x and not x.startswith("--")]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tr = {v: build_trainer("pxpo", [*overrides, f"{key}={v}"], 1, os.path.join(tmp, v)) for v in (a, b)}
        try:
            for t in tr.values():
                epoch(t)  # warm-up
            rows = {a: [], b: []}
            for r in range(rounds):
                for v in (a, b) if r % 2 == 0 else (b, a):
                    rows[v].append(epoch(tr[v]))
                    print(
                        f"round {r + 1}/{rounds} {key}={v}: "
                        + ", ".join(f"{k} {x:.2f}" for k, x in rows[v][-1].items()),
                        flush=True,
                    )
        finally:
            for t in tr.values():
                t.reward.close()
                t.run.close()
                t.folder.release()
    result = {"overrides": overrides, "compare": key}
    result.update(
        {
            v: {"median": {k: statistics.median(x[k] for x in rows[v]) for k in rows[v][0]}, "runs": rows[v]}
            for v in rows
        }
    )
    for k in ("train_s", "epoch_s"):
        ratios = [x[k] / y[k] for x, y in zip(rows[a], rows[b])]
        result[f"{k}_ratio_{a}_over_{b}"] = {"per_round": ratios, "median": statistics.median(ratios)}
        print(
            f"{k}: {key}={a} / {key}={b}, per round {[round(x, 2) for x in ratios]}, "
            f"median {statistics.median(ratios):.2f}"
        )
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
