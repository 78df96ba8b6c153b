"""User-facing errors.

Anything the user can fix (a config value, a path, a checkpoint, a data file, a CLI flag) raises
:class:`UserError` with one line that names the problem and the fix. The CLI prints it as
``uvlm: error: <message>`` and exits with code 2, without a traceback.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any


class UserError(Exception):
    """A problem with the user's input; the message names the problem and how to fix it."""

    exit_code = 2

    def __init__(self, message: str):
        # One line: the CLI prints it verbatim.
        super().__init__(" ".join(str(message).split()))


def require(condition: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)


def check_keys(cls: type, d: Any, where: str) -> None:
    """A config dict must be a JSON object whose keys are all fields of the dataclass ``cls``."""
    require(isinstance(d, dict), f"{where} must be a JSON object, got {type(d).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    require(not unknown, f"unknown {where} key(s) {', '.join(unknown)}: use only {', '.join(sorted(names))}")
