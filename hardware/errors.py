"""Error types shared by every layer.

Every error that reaches a user names the input that caused it. The CLI turns a
``FleetsimError`` into one line on stderr and exit code 2; anything else is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FleetsimError(ValueError):
    """Bad input from the user: a one-line message that names the input."""


class SpecError(FleetsimError):
    """A hardware or model spec is malformed, unknown or inconsistent."""


class ConfigError(FleetsimError):
    """A parallel, workload or scenario configuration is invalid."""


class InfeasibleError(FleetsimError):
    """A configuration that cannot run (does not fit, does not divide); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"infeasible: {reason}")
        self.reason = reason


class ProfileError(FleetsimError):
    """A calibration profile is corrupt or partial; the message names the file and row."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a "did you mean ...?" suffix listing the nearest known names, or ''."""
    pool = list(choices)
    lowered = {c.lower(): c for c in pool}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.4)
    if not close:
        return ""
    return " (did you mean " + ", ".join(repr(lowered[c]) for c in close) + "?)"


class InvariantError(FleetsimError):
    """A simulation result breaks an invariant that holds by construction (a simulator
    bug, not bad input); the message lists the violations on one line."""
