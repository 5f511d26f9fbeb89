"""The thin ``fleetsim`` command line: parse, call the public API, print.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
A bad flag or a ``FleetsimError`` becomes one line on stderr (``fleetsim CMD: error: ...``)
and exit code 2, never a traceback; a warning becomes ``fleetsim CMD: warning: ...``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from fleetsim.cli.args import Parser, show_warning
from fleetsim.hardware.errors import FleetsimError

COMMANDS = ("specs", "plan", "simulate", "train", "power", "calibrate", "validate", "dashboard")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fleetsim",
        description="Performance simulator and planner for LLM training and serving on GPU clusters.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"fleetsim.cli.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit code (0, 2 for bad input, 130 when interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, already printed as one line)
        return exc.code if isinstance(exc.code, int) else 2
    with warnings.catch_warnings():
        warnings.showwarning = show_warning(args.command)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except FleetsimError as exc:
        print(f"fleetsim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader closed the pipe (``fleetsim ... | head``): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
