"""Numerical guard of the optimizer step: a non-finite loss, log-probability or gradient skips it.

The trainer reports each micro-step's quantities with ``observe`` and asks ``step_ok`` before
``opt.step()``. An update with anything non-finite is dropped (gradients are zeroed as usual), the
count goes to the epoch's ``skipped_steps`` metric, and after ``max_in_row`` skipped updates in a
row ``should_stop`` is set: the run then saves a checkpoint (its weights are those of the last
finite update) and stops with ``diagnosis``: which quantity, at which timesteps.
"""

from __future__ import annotations

import torch

from pxpo.errors import RunStopped


class NonFiniteGuard:
    def __init__(self, max_in_row: int = 3):
        self.max_in_row = max_in_row
        self.in_row = 0
        self.skipped = 0  # this epoch
        self.skipped_total = 0
        self._bad: list[str] = []
        self.diagnosis = ""

    def observe(self, timesteps: torch.Tensor, **quantities: torch.Tensor) -> None:
        """Record which of ``quantities`` hold NaN or inf at these diffusion timesteps."""
        for name, value in quantities.items():
            value = torch.as_tensor(value).detach()
            if not torch.isfinite(value).all():
                kind = "NaN" if torch.isnan(value).any() else "inf"
                ts = sorted({int(t) for t in torch.as_tensor(timesteps).reshape(-1).tolist()})
                self._bad.append(f"{name} was {kind} at timestep {', '.join(map(str, ts))}")

    def agree(self, accel) -> None:
        """Several processes: an update that any of them found non-finite is skipped by all."""
        if accel.num_processes == 1:
            return
        bad = accel.reduce(torch.tensor([float(bool(self._bad))], device=accel.device), reduction="sum")
        if bad.item() and not self._bad:
            self._bad.append("a non-finite value on another process")

    def step_ok(self, sync: bool = True) -> bool:
        """Whether the optimizer may step. Only an update that applies gradients (``sync``) counts."""
        if not sync:
            return True
        if not self._bad:
            self.in_row = 0
            return True
        self.skipped += 1
        self.skipped_total += 1
        self.in_row += 1
        self.diagnosis = "; ".join(dict.fromkeys(self._bad))
        self._bad = []
        return False

    @property
    def should_stop(self) -> bool:
        return self.in_row >= self.max_in_row

    def epoch_stats(self) -> dict:
        stats = {"skipped_steps": self.skipped}
        self.skipped = 0
        return stats

    def stopped(self, run_path, epochs_done: int) -> RunStopped:
        return RunStopped(
            f"stopped after {self.in_row} optimizer updates in a row with non-finite values "
            f"(last: {self.diagnosis}); none was applied, the checkpoint after epoch {epochs_done} "
            f"in {run_path}/checkpoint holds the last finite weights. Lower --train.lr or "
            "--train.max_grad_norm, or check the reward, then continue with: "
            f"pxpo train --resume={run_path}",
            1,
        )
