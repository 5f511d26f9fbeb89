"""Plain-text tables for the CLI (stable, width-independent output)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

_HUGE = 1e15
"""Floats at or above this magnitude print in 6 significant digits (``5.70176e+290``), not
as hundreds of digits."""


def _huge(v: Any) -> bool:
    return isinstance(v, float) and math.isfinite(v) and abs(v) >= _HUGE


def _short(v: Any) -> Any:
    return f"{v:.6g}" if _huge(v) else v


def print_frame(df: pd.DataFrame) -> None:
    """Print a DataFrame as an aligned text table without the index."""
    cols = [c for c in df.columns if df[c].map(_huge).any()]
    if cols:
        df = df.assign(**{str(c): df[c].map(_short) for c in cols})
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_colwidth", 60):
        print(df.to_string(index=False))
