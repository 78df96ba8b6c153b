"""Small helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
import os

from uvlm.data.config import parse_count


def add_group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """Add a command group (``uvlm data ...``) and return its sub-parsers; bare ``uvlm data`` prints its help."""
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(func=None, _parser=p)
    return p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", parser_class=type(p))


def count_arg(text: str) -> int:
    """argparse type for sample counts (``60000``, ``60K``, ``1.5M``)."""
    try:
        return parse_count(text)
    except Exception as e:  # argparse turns ArgumentTypeError into a one-line usage error
        raise argparse.ArgumentTypeError(str(e)) from None


def _int_arg(text: str, minimum: int, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v


def _fmt(n: int) -> str:
    return f"{n:,}" if abs(n) >= 100_000 else str(n)


def bounded_int(minimum: int | None, maximum: int):
    """argparse type: an integer in ``[minimum, maximum]`` (a value outside is a one-line usage error); ``minimum``
    ``None`` leaves the lower bound to the command's own check."""

    if minimum is None:
        what = f"an integer (at most {_fmt(maximum)})"
    elif minimum == 1:
        what = f"a positive integer (at most {_fmt(maximum)})"
    elif minimum == 0:
        what = f"an integer >= 0 (at most {_fmt(maximum)})"
    else:
        what = f"an integer in [{_fmt(minimum)}, {_fmt(maximum)}]"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v > maximum or (minimum is not None and v < minimum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    parse.__name__ = "integer"
    return parse


def bounded_float(minimum: float, maximum: float):
    """argparse type: a finite number in ``[minimum, maximum]`` (``inf`` and ``nan`` are refused)."""
    import math

    def parse(text: str) -> float:
        what = f"a number in [{minimum:g}, {maximum:g}]"
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(v) and minimum <= v <= maximum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    parse.__name__ = "number"
    return parse


#: Bounds of the CLI's numeric flags: beyond them a command cannot fit in memory or would never end.
MAX_WORKERS = 256
MAX_SEED = 2**32 - 1


def seed_arg(text: str) -> int:
    """argparse type: a seed in ``[0, 2^32 - 1]``."""
    return bounded_int(0, MAX_SEED)(text)


def workers_arg(text: str) -> int:
    """argparse type: a worker count in ``[1, MAX_WORKERS]``."""
    return bounded_int(1, MAX_WORKERS)(text)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_arg(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_arg(text, 0, "an integer >= 0")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (the string literal that follows the field's line)."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr) \
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def plain_doc(text: str) -> str:
    """A field docstring as help text: Sphinx roles (``:data:`ARMS```) and double backticks removed."""
    import re

    text = re.sub(r":\w+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    text = re.sub(r"\s*\(see [A-Z_]+\)", "", text)
    return text.replace("``", "'")


def _show_default(default) -> str:
    if isinstance(default, tuple):
        return " ".join(repr(v) if " " in str(v) else str(v) for v in default) or "none"
    if isinstance(default, str) and default == "":
        return "none"
    return str(default)


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, types: dict | None = None) -> None:
    """One ``--flag`` per field of a flat dataclass, typed from its default (or by ``types[field]``, an argparse type
    that also checks the range), documented by the field's docstring."""
    import dataclasses

    types = types or {}
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        help_ = f"{plain_doc(docs.get(f.name, ''))} (default: {_show_default(default)})".replace("%", "%%")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        elif isinstance(default, tuple):
            parser.add_argument(flag, nargs="+", default=default, help=help_)
        elif f.name in types:
            parser.add_argument(flag, type=types[f.name], default=default, help=help_)
        elif f.name in ("samples",):
            parser.add_argument(flag, type=count_arg, default=default, help=help_)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=help_)


def dataclass_from_args(cls: type, args: argparse.Namespace):
    import dataclasses

    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        if isinstance(f.default, tuple):
            kw[f.name] = tuple(kw[f.name])
    return cls(**kw)
