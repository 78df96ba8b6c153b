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


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per field of a flat dataclass, typed from its default, documented by the field's docstring."""
    import dataclasses

    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        help_ = f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        elif isinstance(default, tuple):
            parser.add_argument(flag, nargs="+", default=default, help=help_)
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
