"""Ctrl-C and SIGTERM: finish the current epoch, write a checkpoint, say how to resume, exit 130/143.

``StopSignals`` replaces the SIGINT and SIGTERM handlers while a run trains (main thread only; the
previous handlers come back on exit, unless a signal arrived: then a second one still exits at once). The first signal only sets ``signum``: the loop notices it at
the end of the epoch in progress, saves a checkpoint and raises :class:`~pxpo.errors.RunStopped`,
which the command line turns into the resume command and exit code 128 + signal (130 for SIGINT,
143 for SIGTERM). A second signal exits at once: checkpoints are written atomically, so the newest
complete one is still there.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading

from pxpo.errors import RunStopped

NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class StopSignals:
    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in NAMES:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.signum is not None:
            return  # stopping: a second signal while the run winds down still exits at once, with 128 + signal
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        # print, not logging: a signal may arrive while a log call holds the logging lock
        if self.signum is not None:
            print(
                f"\n{NAMES[signum]} again: exiting now, without a new checkpoint (the newest complete one is kept)",
                file=sys.stderr,
                flush=True,
            )
            os._exit(128 + signum)
        self.signum = signum
        print(
            f"\n{NAMES[signum]}: finishing this epoch, then writing a checkpoint (Ctrl-C again to exit at once)",
            file=sys.stderr,
            flush=True,
        )

    def agreed(self, accel=None) -> int | None:
        """The signal any process received (processes stop together), or None."""
        if accel is None or accel.num_processes == 1:
            return self.signum
        import torch

        got = accel.gather(torch.tensor([self.signum or 0], device=accel.device)).max().item()
        return int(got) or None


def resume_command(run_path) -> str:
    return f"pxpo train --resume={shlex.quote(str(run_path))}"


def stopped(signum: int, run_path, epochs_done: int, epochs: int) -> RunStopped:
    return RunStopped(
        f"stopped by {NAMES.get(signum, signum)} after epoch {epochs_done} of {epochs}; checkpoint "
        f"saved in {run_path}/checkpoint. Continue with:\n  {resume_command(run_path)}",
        128 + signum,
    )
