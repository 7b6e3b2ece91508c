"""A run owns its folder: names that cannot collide, exclusive creation, and a lock held while it lives.

``reserve`` runs before any model loads: it picks the folder (rank 0's choice, broadcast to every
process), refuses one that exists (a new run) or one that another live process holds (a resume),
and for a resume takes the lock at once. ``RunFolder.create`` makes a new run's folder exclusively
(``mkdir`` fails if another process made it first) and takes the lock; nothing is created before
then, so a run that fails while loading leaves nothing behind. The lock (``fcntl.flock`` on
``.lock``) belongs to the open file: the kernel drops it when the process ends, kill -9 included.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from pathlib import Path

from pxpo.errors import UserError

LOCK = ".lock"


def default_name(now: float | None = None) -> str:
    """``YYYYmmdd-HHMMSS.mmm-xxxxxxxx``: local time to the millisecond and 32 random bits."""
    now = time.time() if now is None else now
    return (
        time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        + f".{int(round(now * 1000)) % 1000:03d}-{secrets.token_hex(4)}"
    )


def _lock(path: Path) -> int:
    """Take ``path/.lock`` or raise UserError naming the process that holds it."""
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"cannot write in run folder {path}: {e.strerror}; choose a writable --out_dir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 100).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise UserError(
            f"run folder {path} is in use by another pxpo process (pid {holder}); wait for it to "
            "finish or stop it, or choose another --run_name"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


class RunFolder:
    """The folder of one run and, on the main process, its lock."""

    def __init__(self, path: Path, resume: bool, main: bool, fd: int | None = None):
        self.path, self.resume, self.main, self.fd = Path(path), resume, main, fd

    def create(self) -> "RunFolder":
        """Make a new run's folder exclusively and lock it (main process); a no-op for a resume."""
        if not self.main or self.fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.mkdir()
        except FileExistsError:
            raise UserError(
                f"run folder {self.path} was created by another process a moment ago; choose another --run_name"
            ) from None
        except OSError as e:
            raise UserError(
                f"cannot create run folder {self.path}: {e.strerror}; choose a writable --out_dir "
                "(and free disk space if it is full)"
            ) from None
        self.fd = _lock(self.path)
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the file drops the flock
            self.fd = None


def reserve(out_dir: str, run_name: str, resume: str, accel=None) -> RunFolder:
    """Choose the run's folder before any work: rank 0 decides, every rank gets its answer."""
    main = accel is None or accel.is_main_process
    answer = [None, None]  # [path, error message]
    if main:
        try:
            answer[0] = str(_choose(out_dir, run_name, resume))
        except UserError as e:
            answer[1] = str(e)
    if accel is not None and accel.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(answer, from_process=0)
    if answer[1]:
        raise UserError(answer[1])
    folder = RunFolder(Path(answer[0]), bool(resume), main)
    if resume and main:
        folder.fd = _lock(folder.path)
    return folder


def _choose(out_dir: str, run_name: str, resume: str) -> Path:
    if resume:
        path = Path(resume)
        if not (path / "config.yaml").is_file():
            raise UserError(f"--resume={resume}: no run there (a run folder holds config.yaml and checkpoint/)")
        return path
    path = Path(out_dir) / (run_name or default_name())
    if path.exists():
        raise UserError(
            f"run folder {path} already exists: choose another --run_name, or continue that run with --resume={path}"
        )
    return path
