"""``fleetsim validate``: predicted versus measured, section by section.

Sections: ``ops`` (held-out single operators), ``forward`` (whole forward passes, own
profile and cross-GPU from a same-architecture profile) and ``training`` (rows from
``fleetsim.training_validate.validation_rows()`` when that module is installed). Each
prints its points and its error summary against the targets; ``--csv-dir`` also saves the
tables. Exit code 0, or 1 with ``--strict`` when a target is missed.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SECTIONS = ("ops", "forward", "training")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("validate", help="compare predictions with measured ground truth",
                              description=__doc__)
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections to run (default: {','.join(SECTIONS)})")
    p.add_argument("--gpu", action="append", default=None,
                   help="validate only this GPU's ground truth (repeatable), e.g. H100-SXM")
    p.add_argument("--validation-dir", type=Path, default=None,
                   help="ground-truth root (default: the package's calibration/validation)")
    p.add_argument("--profile-dir", type=Path, default=None,
                   help="calibration profile root (default: the package's calibration/profiles)")
    p.add_argument("--csv-dir", type=Path, default=None, help="also write the tables here")
    p.add_argument("--points", action="store_true", help="print every point, not only summaries")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.set_defaults(func=run)


def _sections(text: str) -> list[str]:
    from fleetsim.hardware.errors import ConfigError, suggest

    out = []
    for s in (x.strip() for x in text.split(",") if x.strip()):
        if s not in SECTIONS:
            raise ConfigError(f"unknown validation section {s!r}{suggest(s, SECTIONS)}")
        out.append(s)
    return out


def _show(title: str, df: pd.DataFrame) -> None:
    print(f"\n== {title}")
    if df.empty:
        print("(no rows)")
        return
    with pd.option_context("display.max_rows", 500, "display.width", 200,
                           "display.float_format", lambda x: f"{x:.4g}"):
        print(df.to_string(index=False))


def run(args: argparse.Namespace) -> int:
    from fleetsim import validate_forward as vf
    from fleetsim.hardware.errors import ConfigError

    sections = _sections(args.only)
    for flag, path in (("--validation-dir", args.validation_dir), ("--profile-dir", args.profile_dir)):
        if path is not None and not path.is_dir():
            raise ConfigError(f"{flag} {str(path)!r} is not a directory")
    missed: list[str] = []
    tables: dict[str, pd.DataFrame] = {}
    if "ops" in sections:
        rows = vf.heldout_rows(args.validation_dir, args.profile_dir, args.gpu)
        summ = vf.summarize_heldout(rows)
        if args.points:
            _show("held-out operators (device time)", rows)
        _show(f"held-out operators: median |error| per kind (target <= {vf.TARGETS['ops']:.0%}, own profile)", summ)
        tables.update(ops_points=rows, ops_summary=summ)
        if not summ.empty:
            own = summ[summ["predictor"] == "own"]
            missed += [f"ops {r.gpu} {r.kind}: median {r.median_err:.1%}" for r in own.itertuples()
                       if r.median_err > vf.TARGETS["ops"]]
    if "forward" in sections:
        rows = vf.forward_rows(args.validation_dir, args.profile_dir, args.gpu)
        summ = vf.summarize_forward(rows)
        if args.points:
            _show("forward passes", rows)
        _show(f"forward passes: MAPE (targets: own <= {vf.TARGETS['forward']:.0%}, "
              f"cross-GPU <= {vf.TARGETS['cross']:.0%}; 'reference' graph)", summ)
        tables.update(forward_points=rows, forward_summary=summ)
        if not summ.empty:
            ref = summ[summ["graph"] == "reference"]
            for r in ref.itertuples():
                target = vf.TARGETS["cross"] if str(r.predictor).startswith("cross") else vf.TARGETS["forward"]
                if r.mape > target:
                    missed.append(f"forward {r.gpu} {r.predictor} {r.mode}: MAPE {r.mape:.1%}")
    if "training" in sections:
        try:
            mod = importlib.import_module("fleetsim.training_validate")
        except ModuleNotFoundError as exc:
            if exc.name != "fleetsim.training_validate":
                raise
            print("\n== training: skipped (fleetsim.training_validate is not installed)")
        else:
            kwargs = {} if args.validation_dir is None else {"measured_root": args.validation_dir}
            rows = pd.DataFrame(mod.validation_rows(**kwargs))
            if {"measured_s", "predicted_s"} <= set(rows.columns) and "error" not in rows.columns:
                rows["error"] = rows["predicted_s"] / rows["measured_s"] - 1.0
            _show("training", rows)
            if "error" in rows.columns and len(rows):
                print(f"training MAPE {rows['error'].abs().mean():.1%} over {len(rows)} points")
            if {"within_target", "target", "error"} <= set(rows.columns) and len(rows):
                groups = training_groups(rows)
                print()
                print(groups.to_string(index=False))
                missed += [
                    f"training {g.source} {g.gpu} {g.metric}: {g.within}/{g.n} within {g.target:.0%} "
                    f"(max |error| {g.max_abs_error:.1%})"
                    for g in groups.itertuples()
                    if g.within < g.n and np.isfinite(g.target)
                ]
                rep = getattr(mod, "measurement_repeatability", None)
                rep_df = rep(**({} if args.validation_dir is None else {"root": args.validation_dir})) \
                    if rep is not None else pd.DataFrame()
                if len(rep_df):
                    print("\nrepeatability of our measurements (same configuration, two runs):")
                    for bound, part in rep_df.groupby("gpu_bound"):
                        print(f"  {'GPU-bound' if bound else 'host-bound'} rows: {len(part)}, step time "
                              f"max |diff| {part['step_diff'].abs().max():.1%} (mean "
                              f"{part['step_diff'].abs().mean():.1%}), summed kernel time max |diff| "
                              f"{part['kernel_diff'].abs().max():.1%}")
                    tables["training_repeatability"] = rep_df
            tables["training_points"] = rows
    if args.csv_dir is not None:
        args.csv_dir.mkdir(parents=True, exist_ok=True)
        for name, df in tables.items():
            vf.write_csv(df, args.csv_dir / f"{name}.csv")
    validated = any(not df.empty for df in tables.values())
    if missed:
        print("\ntargets missed:\n  " + "\n  ".join(missed))
    else:
        print("\nall targets met" if validated else "\nnothing validated (no ground truth found)")
    return 1 if (missed and args.strict) else 0


def training_groups(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (source, GPU, metric): points, points within the target, mean and max |error|."""
    g = rows.assign(abs_error=rows["error"].abs()).groupby(["source", "gpu", "metric"], sort=False)
    out = g.agg(
        n=("error", "size"),
        within=("within_target", lambda s: int(sum(bool(x) for x in s if x is not None))),
        target=("target", "first"),
        mean_abs_error=("abs_error", "mean"),
        max_abs_error=("abs_error", "max"),
    ).reset_index()
    out["within"] = out["within"].astype(int)
    return out
