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


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
