"""Fit the prediction-interval table ``calibration/intervals.csv`` from the committed
validation rows and print the held-out coverage of its 80% intervals.

Usage: ``python3 benchmarks/fit_intervals.py [--out PATH] [--points]``. The table is fitted
on every row; coverage is measured by cross-fitting (each row tested by a table fitted
without it: alternate shapes, and leave one GPU out). See docs/intervals.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fleetsim

from fleetsim.calibration.intervals import INTERVALS_CSV, crossfit, summarize_coverage  # noqa: E402

from fleetsim.interval_data import residual_rows, write_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=INTERVALS_CSV, help="where to write the table")
    ap.add_argument("--points", action="store_true", help="print every held-out row")
    args = ap.parse_args()
    rows = residual_rows()
    table = write_table(args.out, rows)
    with pd.option_context("display.max_rows", 500, "display.width", 200, "display.float_format", "{:.4g}".format):
        print(f"wrote {args.out} ({len(table)} lines from {len(rows)} rows)\n")
        print(table.to_string(index=False))
        for split in ("alternate", "gpu"):
            cov = crossfit(rows, split)
            if args.points:
                print(cov.to_string(index=False))
            print(f"\nheld-out coverage of the 80% interval (split: {split})")
            print(summarize_coverage(cov).to_string(index=False))


if __name__ == "__main__":
    main()
