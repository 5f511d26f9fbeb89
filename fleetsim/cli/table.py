"""Plain-text tables for the CLI (stable, width-independent output)."""

from __future__ import annotations

import pandas as pd


def print_frame(df: pd.DataFrame) -> None:
    """Print a DataFrame as an aligned text table without the index."""
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_colwidth", 60):
        print(df.to_string(index=False))
