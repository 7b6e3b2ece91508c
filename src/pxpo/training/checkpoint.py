"""Checkpoints that survive a crash: written aside, sealed with a manifest, renamed into place.

Layout of ``RUN/checkpoint/``::

    epoch_000004/          one complete checkpoint (after 4 epochs): accelerate's state
                           (model, optimizer, random states), pxpo_state.pt, MANIFEST.json
    epoch_000005/
    latest -> epoch_000005 the newest complete one
    .incomplete-epoch_000006/   a save in progress (or one a crash interrupted)

A save writes into ``.incomplete-<name>/`` (every process calls accelerate's ``save_state``),
fsyncs every file, writes ``MANIFEST.json`` (epoch, each file's size and sha256) last, renames the
folder into place, then points ``latest`` at it (a symlink swapped with ``os.replace``) and deletes
all but the newest ``keep`` complete ones. A kill at any moment leaves either the new checkpoint
complete or the previous one untouched. A failed write (disk full, permissions) removes the partial
folder and raises a UserError that says the previous checkpoint is intact.

``find_resumable`` picks the newest checkpoint whose manifest verifies, and says why it passed
over any other (an interrupted save, a damaged file).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import time
from pathlib import Path

from accelerate.logging import get_logger

from pxpo.errors import UserError

logger = get_logger(__name__)  # accelerate's: the main process reports

MANIFEST = "MANIFEST.json"
STATE = "pxpo_state.pt"
LATEST = "latest"
PREFIX = "epoch_"


def name_for(epochs_done: int) -> str:
    return f"{PREFIX}{epochs_done:06d}"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path, epochs_done: int) -> dict:
    """fsync every file in ``folder``, then write and fsync MANIFEST.json (the seal)."""
    files = {}
    for p in _files(folder):
        _fsync(p)
        files[str(p.relative_to(folder))] = {"size": p.stat().st_size, "sha256": sha256(p)}
    manifest = {"format": 1, "epochs_done": epochs_done, "time": time.time(), "files": files}
    part = folder / (MANIFEST + ".part")
    part.write_text(json.dumps(manifest, indent=1))
    _fsync(part)
    os.replace(part, folder / MANIFEST)
    for d in {folder, *(p.parent for p in _files(folder))}:
        _fsync(d)
    return manifest


def verify(folder: Path) -> str | None:
    """None when ``folder`` is a complete checkpoint; otherwise what is wrong, in a few words."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (the save did not finish)"
    except (ValueError, KeyError, TypeError) as e:
        return f"{MANIFEST} is unreadable ({e})"
    if STATE not in files:
        return f"{MANIFEST} does not list {STATE}"
    for rel, meta in files.items():
        p = folder / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != meta["size"]:
            return f"{rel} has {p.stat().st_size} bytes, the manifest says {meta['size']}"
        if sha256(p) != meta["sha256"]:
            return f"{rel} does not match its sha256 in the manifest"
    return None


def _epochs(folder: Path) -> int:
    try:
        return int(folder.name[len(PREFIX) :])
    except ValueError:
        return -1


class Checkpoints:
    """The checkpoints of one run: ``root`` is ``RUN/checkpoint``."""

    def __init__(self, root: Path, keep: int = 2):
        self.root, self.keep = Path(root), keep

    def complete(self) -> list[Path]:
        """Checkpoint folders with a manifest, oldest first (not verified: see ``verify``)."""
        if not self.root.is_dir():
            return []
        found = [
            p
            for p in self.root.iterdir()
            if p.is_dir()
            and not p.is_symlink()
            and p.name.startswith(PREFIX)
            and _epochs(p) >= 0
            and (p / MANIFEST).is_file()
        ]
        return sorted(found, key=_epochs)

    def latest(self) -> Path | None:
        link = self.root / LATEST
        return self.root / os.readlink(link) if link.is_symlink() else None

    # ---- saving ---------------------------------------------------------------------------
    def save(self, epochs_done: int, accel, state: dict, run_path: Path) -> Path:
        """Write checkpoint ``epoch_<epochs_done>`` atomically; every process calls this."""
        import torch

        name = name_for(epochs_done)
        tmp, final = self.root / f".incomplete-{name}", self.root / name
        main = accel.is_main_process
        try:
            if main:
                self.root.mkdir(parents=True, exist_ok=True)
                if tmp.exists():
                    shutil.rmtree(tmp)
            accel.wait_for_everyone()
            accel.save_state(str(tmp))  # every rank calls it (a main-only call hangs multi-GPU runs)
            if main:
                torch.save(state, tmp / STATE)
            accel.wait_for_everyone()
            if main:
                write_manifest(tmp, epochs_done)
                self._install(tmp, final)
        except Exception as e:  # a full disk: OSError, torch's RuntimeError or safetensors' SafetensorError
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise self._write_error(name, e, run_path) from e
        return final

    def _install(self, tmp: Path, final: Path) -> None:
        """Rename the sealed folder into place, point ``latest`` at it, prune old ones."""
        trash = None
        if final.exists():  # a damaged or superseded one from before a fallback: replace it
            trash = self.root / f".trash-{final.name}-{os.getpid()}"
            os.rename(final, trash)
        os.rename(tmp, final)
        link = self.root / (LATEST + ".new")
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(final.name, link)
        os.replace(link, self.root / LATEST)
        _fsync(self.root)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        keep = self.complete()[-self.keep :]
        for old in self.complete():
            if old not in keep and old != final:
                shutil.rmtree(old, ignore_errors=True)

    def _write_error(self, name: str, e: Exception, run_path: Path) -> UserError:
        reason = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[-1]
        previous = self.latest()
        kept = (
            f"the previous checkpoint {previous.name} is intact"
            if previous is not None and previous.exists()
            else "no earlier checkpoint exists"
        )
        return UserError(
            f"cannot write checkpoint {name} in {self.root}: {reason}. The run stopped; {kept}. "
            "Free disk space (or make the folder writable), then continue with: "
            f"pxpo train --resume={shlex.quote(str(run_path))}"
        )

    # ---- resuming -------------------------------------------------------------------------
    def find_resumable(self) -> tuple[Path, list[str]]:
        """The newest checkpoint that verifies, and notes on every newer one passed over.

        Interrupted saves are removed, damaged checkpoints renamed ``.damaged-<name>`` (kept for a
        look, out of the way of later saves). Raises UserError when none verifies."""
        notes = []
        if self.root.is_dir():
            for stale in sorted(self.root.glob(".incomplete-*")):
                notes.append(
                    f"removing {stale.name}: a checkpoint save that did not finish (the run was "
                    "stopped while writing it)"
                )
                shutil.rmtree(stale, ignore_errors=True)
            for trash in self.root.glob(".trash-*"):  # a replaced checkpoint whose removal was cut short
                shutil.rmtree(trash, ignore_errors=True)
        for folder in reversed(self.complete()):
            problem = verify(folder)
            if problem is None:
                return folder, notes
            aside = self.root / f".damaged-{folder.name}"
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(folder, aside)
            notes.append(
                f"checkpoint {folder.name} is damaged ({problem}); moved it to {aside.name} and "
                "falling back to the newest complete checkpoint before it"
            )
        if (self.root / STATE).is_file():  # written by pxpo before checkpoints had manifests
            notes.append(f"{self.root} has no manifest (saved by an older pxpo): resuming from it unverified")
            return self.root, notes
        raise UserError(
            f"cannot resume: no complete checkpoint in {self.root}"
            + ("" if not notes else " (" + "; ".join(notes) + ")")
            + "; start the run again, or resume another run folder"
        )

    def resumable(self, accel) -> Path:
        """``find_resumable`` on the main process (it tidies the folder), logged, and shared with every rank."""
        answer = [None, None]
        if accel.is_main_process:
            try:
                folder, notes = self.find_resumable()
                for note in notes:
                    logger.info(f"resume: {note}")
                self.point_latest_at(folder)
                logger.info(f"resuming from {folder}")
                answer[0] = str(folder)
            except UserError as e:
                answer[1] = str(e)
        if accel.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(answer, from_process=0)
        if answer[1]:
            raise UserError(answer[1])
        return Path(answer[0])

    def point_latest_at(self, folder: Path) -> None:
        """After a fallback: ``latest`` names the checkpoint the run continues from."""
        if folder.parent != self.root or self.latest() == folder:
            return
        link = self.root / (LATEST + ".new")
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(folder.name, link)
        os.replace(link, self.root / LATEST)


def save_weights_atomic(save, run_path: Path) -> Path:
    """``save(folder)`` writes the exported pipeline; it replaces ``RUN/weights`` only once complete."""
    final, tmp, old = run_path / "weights", run_path / ".weights-incomplete", run_path / ".weights-old"
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    try:
        save(tmp)
        for p in _files(tmp):
            _fsync(p)
    except Exception as e:  # as in Checkpoints.save: each library reports a full disk its own way
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise UserError(
            f"cannot write the exported weights in {run_path}: {reason}; the checkpoint is saved: "
            f"free disk space, then continue with: pxpo train --resume={shlex.quote(str(run_path))}"
        ) from e
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final
