"""Shared property of the fuzz tests: an entry point either raises a ``FleetsimError`` whose
message is one non-empty line, or returns a result that passes the invariant checks.

Bugs the fuzzers found in code owned elsewhere are listed per test file in ``KNOWN``
(signature -> exact failing input): each has a strict-xfail regression case that turns into
a failure once the bug is fixed, and ``outcome`` lets the fuzzers pass over the same
signature so that they keep looking for new ones. A signature is
``ExceptionType@path:function`` of the innermost fleetsim frame. ``FLEETSIM_FUZZ_DISCOVER=FILE``
appends every unknown signature with its input to FILE instead of failing.
"""

from __future__ import annotations

import math
import os
import traceback
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from fleetsim.hardware.errors import FleetsimError
from fleetsim.sim.check import check_serving_result, check_train_estimate
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(deadline=None, derandomize=True, database=None,
                max_examples=300 if os.environ.get("FLEETSIM_FUZZ_DISCOVER") else 40,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
"""Deterministic in CI, no example database, no deadline (simulation times vary)."""

NUMBERS = st.one_of(
    st.integers(-5, 5), st.integers(-(2**63), 2**63), st.sampled_from([0, 1, 2, 3, 4, 8, 16, 1024, 10**12, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 0.5, -1.5, 1e-300, 1e308]),
)
"""Numbers of every awkward kind: zero, negative, huge, tiny, NaN, infinities."""
VALUES = st.one_of(NUMBERS, st.none(), st.booleans(), st.text(max_size=8), st.lists(st.integers(-2, 4), max_size=3),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
"""JSON-like values of any type."""


ROOT = Path(__file__).resolve().parents[1]


def signature(exc: BaseException) -> str:
    """``Type@path:function`` of the innermost frame inside the repository (not tests/)."""
    where = "?"
    for fr in traceback.extract_tb(exc.__traceback__):
        path = Path(fr.filename).resolve()
        if path.is_file() and path.is_relative_to(ROOT) and not path.is_relative_to(ROOT / "tests"):
            where = f"{path.relative_to(ROOT)}:{fr.name}"
    return f"{type(exc).__name__}@{where}"


def outcome(call: Callable[[], Any], known: Collection[str] = (), label: object = None) -> Any:
    """``call()``; a ``FleetsimError`` must be one line (then None is returned), any other
    exception must have a ``known`` signature (None), else the test fails."""
    try:
        return call()
    except FleetsimError as exc:
        msg = str(exc)
        if "\n" in msg or not msg.strip():
            sig = f"multi-line {type(exc).__name__}@{signature(exc).split('@')[1]}"
            if sig in known:
                return None
            if _discover(sig, label, msg):
                return None
            raise AssertionError(f"{type(exc).__name__} message is not one line: {msg!r}") from exc
        return None
    except Exception as exc:  # noqa: BLE001 - the property: nothing but FleetsimError escapes
        sig = signature(exc)
        if sig in known or _discover(sig, label, repr(exc)):
            return None
        raise


def _discover(sig: str, label: object, detail: str) -> bool:
    out = os.environ.get("FLEETSIM_FUZZ_DISCOVER")
    if not out:
        return False
    with open(out, "a") as f:
        f.write(f"{sig}\t{label!r}\t{detail[:300]!r}\n")
    return True


def assert_serving_ok(result: Any) -> None:
    assert check_serving_result(result) == []


def assert_train_ok(est: Any) -> None:
    assert check_train_estimate(est) == []
    assert math.isfinite(est.time_s) and est.time_s > 0


def known_cases(known: dict[str, Any], found: dict[str, Any] | None = None) -> list[Any]:
    """Regression parameters (signature, input). ``KNOWN`` holds bugs still open, each a
    strict xfail naming the input and the exception: an XPASS (the bug fixed) fails, so the
    entry then moves to ``FOUND``, the fixed bugs, which must pass like any other case."""
    import pytest

    open_bugs = [pytest.param(sig, case, id=sig,
                              marks=pytest.mark.xfail(strict=True, reason=f"{case!r} -> {sig}"))
                 for sig, case in sorted(known.items())]
    fixed = [pytest.param(sig, case, id=f"fixed-{sig}") for sig, case in sorted((found or {}).items())]
    return open_bugs + fixed
