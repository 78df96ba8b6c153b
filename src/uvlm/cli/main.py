"""``uvlm``: the command-line entry point.

Every subcommand module defines ``register(subparsers)`` which adds its parser and sets ``func`` to a function
taking the parsed namespace. A :class:`~uvlm.errors.UserError` anywhere becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from typing import Sequence

from uvlm import __version__
from uvlm.errors import UserError

#: Subcommand modules, in the order ``uvlm --help`` lists them.
COMMAND_MODULES = ("uvlm.cli.experiments", "uvlm.cli.recipes", "uvlm.cli.data", "uvlm.cli.score", "uvlm.cli.vision", "uvlm.cli.run", "uvlm.cli.llm")
COMMAND_MODULES += ("uvlm.cli.harness",)
COMMAND_MODULES += ("uvlm.cli.llava",)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (``uvlm data generate: error: ...``) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="uvlm", description="Unified vision-language model experiments.")
    parser.add_argument("--version", action="version", version=f"uvlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (it may be replaced, e.g. under pytest)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _show_progress_logs() -> None:
    """Training code logs progress through ``logging`` (``uvlm.*`` loggers): show it on stderr, one line each."""
    logger = logging.getLogger("uvlm")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    _show_progress_logs()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad flag (already printed on one line)
        return int(e.code or 0)
    if not getattr(args, "func", None):
        # a command group without its subcommand, or no command at all
        target = getattr(args, "_parser", parser)
        target.print_help()
        return 2 if args.command else 0
    try:
        with warnings.catch_warnings():
            # libraries' deprecation notices are for the developers of uvlm, not for its users
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            rc = args.func(args)
    except UserError as e:
        print(f"uvlm: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("uvlm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
