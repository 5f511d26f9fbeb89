"""Checks of values given by users, each failing with one line that names the value.

Every public entry point (and every file parser) runs its numeric parameters through these
instead of trusting ``int()``/``float()``: a float with a fractional part, a bool, a string,
NaN or infinity is an error that names the parameter, never a silently truncated number.
``validation_line`` turns a pydantic ``ValidationError`` into the same one-line form.
"""

from __future__ import annotations

import numbers
import sys
import warnings
from pathlib import Path
from typing import Any

from fleetsim.hardware.errors import ConfigError, FleetsimError


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def integer(value: object, name: str, *, minimum: int | None = None, maximum: int | None = None,
            error: type[FleetsimError] = ConfigError) -> int:
    """``value`` as an int: an integer, or a float with no fractional part (``4096.0``).

    Bools, strings, fractional or non-finite floats and values outside
    ``[minimum, maximum]`` raise ``error`` naming ``name``."""
    bound = "" if minimum is None else f" >= {minimum}"
    want = f"{name} must be an integer{bound}, got {_shown(value)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(want)
    if not isinstance(value, numbers.Integral):
        f = float(value)
        if f != f or f in (float("inf"), float("-inf")) or f != int(f):
            raise error(want)
    out = int(value)  # type: ignore[call-overload]
    if minimum is not None and out < minimum:
        raise error(want)
    if maximum is not None and out > maximum:
        raise error(f"{name} must be at most {maximum}, got {_shown(value)}")
    return out


def positive_int(value: object, name: str, error: type[FleetsimError] = ConfigError) -> int:
    return integer(value, name, minimum=1, error=error)


def non_negative_int(value: object, name: str, error: type[FleetsimError] = ConfigError) -> int:
    return integer(value, name, minimum=0, error=error)


def number(value: object, name: str, *, above: float | None = None, at_least: float | None = None,
           at_most: float | None = None, error: type[FleetsimError] = ConfigError) -> float:
    """``value`` as a finite float, ``> above``, ``>= at_least`` and ``<= at_most`` where given."""
    conds = []
    if above is not None:
        conds.append(f"> {above:g}")
    if at_least is not None:
        conds.append(f">= {at_least:g}")
    if at_most is not None:
        conds.append(f"<= {at_most:g}")
    want = f"{name} must be a finite number{' ' + ' and '.join(conds) if conds else ''}, got {_shown(value)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(want)
    f = float(value)
    if f != f or f in (float("inf"), float("-inf")):
        raise error(want)
    if (above is not None and not f > above) or (at_least is not None and f < at_least) or (
            at_most is not None and f > at_most):
        raise error(want)
    return f


def positive(value: object, name: str, error: type[FleetsimError] = ConfigError) -> float:
    """A finite number > 0 (rates, durations, SLO targets)."""
    return number(value, name, above=0.0, error=error)


def non_negative(value: object, name: str, error: type[FleetsimError] = ConfigError) -> float:
    """A finite number >= 0."""
    return number(value, name, at_least=0.0, error=error)


def probability(value: object, name: str, error: type[FleetsimError] = ConfigError) -> float:
    """A number in [0, 1]."""
    return number(value, name, at_least=0.0, at_most=1.0, error=error)


def fraction(value: object, name: str, error: type[FleetsimError] = ConfigError) -> float:
    """A number in (0, 1] (a share of something that must not be empty)."""
    return number(value, name, above=0.0, at_most=1.0, error=error)


def validation_line(exc: Any, what: str) -> str:
    """One line for the first error of a pydantic ``ValidationError``:
    ``what: field 'a.b': problem (got X)``, ``what: unknown key 'k'``, ``what: missing key 'k'``."""
    errs = exc.errors()
    if not errs:
        return f"{what}: invalid"
    # an unknown key first: a misspelt key also shows up as the missing key it was meant to be
    err = next((e for e in errs if e.get("type") == "extra_forbidden"), errs[0])
    loc = ".".join(str(p) for p in err.get("loc", ()))
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"{what}: unknown key {loc!r}"
    if kind == "missing":
        return f"{what}: missing required key {loc!r}"
    msg = " ".join(str(err.get("msg", "invalid value")).removeprefix("Value error, ").split())
    if not loc:
        return msg if msg.startswith(what) else f"{what}: {msg}"
    value = err.get("input")
    shown = "" if isinstance(value, dict | list) else f" (got {_shown(value)})"
    return f"{what}: field {loc!r}: {msg}{shown}"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 GPU``, ``2 GPUs``, ``1 replica``: a count with its noun in the right number."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside fleetsim, so the warning
    shows the user's line rather than a line inside the library."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("fleetsim"):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, category, stacklevel=level)


__all__ = ["fraction", "integer", "non_negative", "non_negative_int", "number", "positive", "positive_int",
           "probability", "validation_line", "warn_user"]


def make_out_dir(out_dir: str | Path) -> Path:
    """``out_dir`` created (with its parents) for a command's files; one line naming it when
    it cannot be."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{out_dir}: cannot create the output directory "
                          f"({exc.strerror or type(exc).__name__})") from None
    return out
