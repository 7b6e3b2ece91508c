"""The batched update against one UNet call per timestep, in one process, alternated.

    python benchmarks/speed_ab.py [ROUNDS] [--json=PATH] [KEY=VALUE ...]   (e.g. model.finetune=lora)

Two PXPO trainers at ``pxpo train``'s defaults (1 thread), one with ``train.timesteps_per_forward=1``
(one UNet forward + backward per trained timestep, as the update ran before and as DDPO and trl
run it), one with the default 0 (all of a minibatch's timesteps in one call). After a warm-up
epoch each they alternate, which goes first swapping every round, and the per-round ratios of
their epoch and training times are printed. Peak memory is the shared process's RSS, so it does
not separate the two: ``benchmarks/speed.py`` run once per setting does.
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


def main(argv: list[str]) -> int:
    out = next((a.split("=", 1)[1] for a in argv if a.startswith("--json=")), "")
    rounds = int(next((a for a in argv if a.isdigit()), 4))
    overrides = [a for a in argv if "=" in a and not a.startswith("--")]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tr = {pf: build_trainer("pxpo", [*overrides, f"train.timesteps_per_forward={pf}"], 1, os.path.join(tmp, str(pf)))
              for pf in (1, 0)}
        try:
            for t in tr.values():
                epoch(t)  # warm-up
            rows = {1: [], 0: []}
            for r in range(rounds):
                for pf in ((1, 0) if r % 2 == 0 else (0, 1)):
                    rows[pf].append(epoch(tr[pf]))
                    print(f"round {r + 1}/{rounds} timesteps_per_forward={pf}: "
                          + ", ".join(f"{k} {v:.2f}" for k, v in rows[pf][-1].items()), flush=True)
        finally:
            for t in tr.values():
                t.reward.close()
                t.run.close()
                t.folder.release()
    result = {"overrides": overrides}
    result.update({str(pf): {"median": {k: statistics.median(x[k] for x in rows[pf]) for k in rows[pf][0]},
                        "runs": rows[pf]} for pf in rows})
    for key in ("train_s", "epoch_s"):
        ratios = [a[key] / b[key] for a, b in zip(rows[1], rows[0])]
        result[f"{key}_ratio_1_over_0"] = {"per_round": ratios, "median": statistics.median(ratios)}
        print(f"{key}: one call per timestep / batched, per round {[round(x, 2) for x in ratios]}, "
              f"median {statistics.median(ratios):.2f}")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
