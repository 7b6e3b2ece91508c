"""Errors that are the user's to fix: the command line prints their message (no traceback) and exits 2.

``UserError`` covers what is neither a bad option value (``pxpo.config.ConfigError``) nor a bad
reward (``pxpo.rewards.RewardError``): a run folder that is taken or cannot be written, a checkpoint
that cannot be saved, a resume that would change what cannot change mid-run. Its message says what
happened and what to do.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message names the option or path and what to change."""


class RunStopped(Exception):
    """A run stopped before its last epoch with a checkpoint written (a signal, or non-finite
    updates); ``message`` says why and how to go on, ``exit_code`` is what the command returns."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
