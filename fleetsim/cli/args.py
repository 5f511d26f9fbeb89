"""Validated argparse types and the one-line-error parser shared by every subcommand.

A numeric flag takes one of these as ``type=``: argparse then reports a bad value as
``fleetsim CMD: error: argument --FLAG: expected ..., got 'VALUE'`` before anything runs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from fleetsim.hardware.checks import plural as plural
from fleetsim.hardware.errors import ConfigError


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (``PROG: error: ...``), exit 2.

    Subparsers made by ``add_subparsers`` inherit the class, so every subcommand behaves alike.
    """

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {text}\n")


def _int(text: str, what: str, ok: Callable[[int], bool]) -> int:
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(f) and f == int(f)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        value = int(f)  # ``1e6`` is a whole number
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _float(text: str, what: str, ok: Callable[[float], bool]) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (a count, a parallel degree, a token length)."""
    return _int(text, "an integer >= 1", lambda v: v >= 1)


def nonneg_int(text: str) -> int:
    """An integer >= 0 (a seed, a limit where 0 means none)."""
    return _int(text, "an integer >= 0", lambda v: v >= 0)


def port(text: str) -> int:
    """A TCP port, 1..65535."""
    return _int(text, "a port number 1..65535", lambda v: 1 <= v <= 65535)


def positive_float(text: str) -> float:
    """A finite number > 0 (a rate, a duration, a latency target)."""
    return _float(text, "a finite number > 0", lambda v: v > 0)


def nonneg_float(text: str) -> float:
    """A finite number >= 0 (an overhead, a buffer size)."""
    return _float(text, "a finite number >= 0", lambda v: v >= 0)


def fraction(text: str) -> float:
    """A share in (0, 1] (a memory utilisation, an acceptance rate)."""
    return _float(text, "a fraction in (0, 1]", lambda v: 0 < v <= 1)


def check_out_dir(path: str | None, flag: str = "--out") -> Path | None:
    """Create ``path`` (before any simulation) or fail in one line when it cannot be a directory we write to."""
    if path is None:
        return None
    if not path.strip():
        raise ConfigError(f"{flag}: empty path")
    out = Path(path).expanduser()
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"{flag} {path}: exists and is not a directory")
        if not os.access(out, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {path}: directory is not writable")
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create it ({exc.strerror or type(exc).__name__})") from None
    return out


def show_warning(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints ``fleetsim CMD: warning: MESSAGE`` (one line)."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: object = None, line: str | None = None) -> None:
        text = " ".join(str(message).split())
        print(f"fleetsim {command}: warning: {text}", file=sys.stderr)

    return show
