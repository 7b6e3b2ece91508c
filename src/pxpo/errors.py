"""Errors that are the user's to fix: the command line prints their message as one line
``pxpo COMMAND: error: ...`` (no traceback; ``--debug`` adds it) and exits 2.

Every error a user can cause subclasses :class:`UserError`: a bad option value
(:class:`ConfigError`), a broken reward (:class:`pxpo.rewards.RewardError`), a run folder
that is taken or cannot be written, a resume that would change what cannot change mid-run, a model
folder or strokes file that cannot be read. Its message says what happened and what to change.
Any other exception is a bug in pxpo (or in code it runs) and shows its traceback.

``UserError`` subclasses ``ValueError``, so code that catches ``ValueError`` keeps catching it.
"""

from __future__ import annotations


class UserError(ValueError):
    """Something the user can fix; the message names the option or path and what to change."""


class ConfigError(UserError):
    """A configuration value a user gave is wrong; the message names the option and what to change."""


class MissingFile(UserError, FileNotFoundError):
    """A file or folder the user named is not there, or not what it should be (a model folder
    without model_index.json, a session folder without its database)."""


class RunStopped(Exception):
    """A run stopped before its last epoch with a checkpoint written (a signal, or non-finite
    updates); ``message`` says why and how to go on, ``exit_code`` is what the command returns."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
