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


def _type_name(t: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(t, str(t))


def _value_ok(t: Any, v: Any) -> bool | None:
    """Whether the JSON value ``v`` fits the annotation ``t``; ``None`` when ``t`` is not a plain type checked here."""
    import math
    import types
    import typing

    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(t)
        if v is None:
            return type(None) in args
        checks = [_value_ok(a, v) for a in args if a is not type(None)]
        if any(c is None for c in checks):
            return None
        return any(checks)
    if origin is tuple:
        args = typing.get_args(t)
        if not isinstance(v, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_value_ok(args[0], x) for x in v)
        return len(v) == len(args) and all(_value_ok(a, x) for a, x in zip(args, v))
    if t is bool:
        return isinstance(v, bool)
    if t is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if t is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if t is str:
        return isinstance(v, str)
    return None


def _describe_type(t: Any) -> str:
    import types
    import typing

    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return " or ".join(_describe_type(a) for a in args) + " or null"
    if origin is tuple:
        args = typing.get_args(t)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe_type(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} values ({', '.join(_describe_type(a) for a in args)})"
    return _type_name(t)


def check_types(cls: type, d: Any, where: str, prefix: str | None = None) -> None:
    """Every value of the JSON object ``d`` has the type of its field of the dataclass ``cls``: bools are JSON
    ``true``/``false`` (not ``"yes"`` or ``1``), integers are integers, numbers are finite, strings are strings, lists
    have the right length and element types. Fields of other types (nested configs) are left to their own checks.
    Raises :class:`UserError` naming the key (``prefix`` + key, ``prefix`` defaulting to ``where.``) and the
    expected type."""
    import typing

    check_keys(cls, d, where)
    prefix = f"{where}." if prefix is None else prefix
    hints = typing.get_type_hints(cls)
    for key, value in d.items():
        t = hints.get(key)
        if t is None:
            continue
        ok = _value_ok(t, value)
        if ok is False:
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise UserError(f"{prefix}{key} must be {_describe_type(t)}, got {shown}: fix it in the config file")
