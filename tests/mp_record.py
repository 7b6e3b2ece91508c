"""``pxpo train`` that also records, after every policy update, each process's view of the run:
a sha256 of its trainable weights (before and after) and of its per-prompt statistics (the DDPO tracker), written as
one JSON line per update to ``$PXPO_RECORD/rank<R>.jsonl``. Launched by test_multiprocess.py under
torchrun (``python -m torch.distributed.run ... tests/mp_record.py train --...``)."""

import hashlib
import json
import os
import sys
from pathlib import Path

from pxpo.cli import main
from pxpo.training.trainer import Trainer


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def record(trainer: Trainer, before: str) -> None:
    buffers = trainer.tracker.state_dict()  # {prompt: [k] or [k, h, w] rewards kept}
    row = {
        "before": before,
        "weights": digest(trainer.policy.params),
        "tracker": digest(buffers[p] for p in sorted(buffers)),
        "prompt_means": {p: float(buffers[p].mean()) for p in sorted(buffers)},
    }
    out = Path(os.environ["PXPO_RECORD"])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"rank{trainer.rank}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


_epoch = Trainer.epoch


def epoch(self):
    """One epoch (one policy update), recorded."""
    before = digest(self.policy.params)
    out = _epoch(self)
    record(self, before)
    return out


Trainer.epoch = epoch

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
