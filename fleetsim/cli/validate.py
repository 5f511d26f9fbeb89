"""``fleetsim validate``: predicted versus measured, section by section.

Sections: ``ops`` (held-out single operators), ``forward`` (whole forward passes, own
profile and cross-GPU from a same-architecture profile) and ``training``
(``fleetsim.training_validate.validation_rows()``). Ground truth: the package's
``calibration/validation/<GPU>/`` or ``--validation-dir``; the published Korthikanti et al.
2022 tables are not shipped and come from ``--published-dir`` or ``$FLEETSIM_PUBLISHED_DIR``.
Each section prints its points and its error summary against the targets; ``--csv-dir``
also saves the tables. Exit code 0, or 1 with ``--strict`` when a target is missed, or 2
with one line naming the flag when an input is wrong or selects nothing.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fleetsim.cli.args import check_out_dir

SECTIONS = ("ops", "forward", "training")
OPTIONAL = ("intervals", "power", "lora")
"""Sections run only when ``--only`` names them."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("validate", help="compare predictions with measured ground truth",
                              description=__doc__)
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections to run (default: {','.join(SECTIONS)}; also "
                   f"{', '.join(OPTIONAL)})")
    p.add_argument("--gpu", action="append", default=None,
                   help="validate only this GPU's ground truth (repeatable), e.g. H100-SXM")
    p.add_argument("--validation-dir", type=Path, default=None,
                   help="ground-truth root holding <GPU>/ folders (default: the package's calibration/validation)")
    p.add_argument("--profile-dir", type=Path, default=None,
                   help="calibration profile root (default: the package's calibration/profiles)")
    p.add_argument("--published-dir", type=Path, default=None,
                   help="folder of the published Korthikanti et al. 2022 tables, e.g. ../shared/data/published "
                        "(default: $FLEETSIM_PUBLISHED_DIR; not shipped with the package)")
    p.add_argument("--csv-dir", type=Path, default=None, help="also write the tables here")
    p.add_argument("--points", action="store_true", help="print every point, not only summaries")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--engine", action="append", default=None,
                   help="validate this engine profile instead of the sections (repeatable or comma-separated: "
                        "hf-transformers, torch-compile on the H200 ground truth; vllm, sglang, trtllm on "
                        "the published serving figures with --published-serving)")
    p.add_argument("--published-serving", action="store_true",
                   help="with --engine: also simulate the published serving rows (minutes)")
    p.add_argument("--published-split", choices=("fit", "test"), default=None,
                   help="with --published-serving: only the rows of this split")
    p.set_defaults(func=run)


def _sections(text: str) -> list[str]:
    from fleetsim.hardware.errors import ConfigError, suggest

    out = []
    for s in (x.strip() for x in text.split(",") if x.strip()):
        if s not in SECTIONS + OPTIONAL:
            raise ConfigError(f"--only: unknown section {s!r} (expected a comma-separated subset of "
                              f"{', '.join(SECTIONS + OPTIONAL)}){suggest(s, SECTIONS + OPTIONAL)}")
        out.append(s)
    if not out:
        raise ConfigError(f"--only: no section given (expected a comma-separated subset of {', '.join(SECTIONS)})")
    return out


@dataclass
class _Inputs:
    """The checked command line: what to validate, against which data."""

    sections: list[str]
    validation_root: Path
    profile_root: Path | None
    published: Path | None
    gpus: list[str] | None
    """Catalog names of the ``--gpu`` filter (None: every GPU with data)."""
    section_gpus: dict[str, list[str]]
    """GPUs with ground truth, per selected section."""


def _check(args: argparse.Namespace) -> _Inputs:
    """Every flag checked before any work; each failure is one line naming the flag."""
    from fleetsim.calibration import profile_dirs
    from fleetsim.hardware.catalog import get_gpu
    from fleetsim.hardware.errors import ConfigError, FleetsimError
    from fleetsim.training_validate import published_gpus
    from fleetsim.validation_data import (
        SECTION_FILES,
        VALIDATION_ROOT,
        check_dir,
        gpus_with_data,
        published_dir,
    )

    sections = _sections(args.only)
    if args.validation_dir is not None:
        root, where = check_dir(args.validation_dir, "--validation-dir"), f"--validation-dir {str(args.validation_dir)!r}"
    else:
        root, where = VALIDATION_ROOT, f"the package's validation data {str(VALIDATION_ROOT)!r}"
    proot = None
    if args.profile_dir is not None:
        proot = check_dir(args.profile_dir, "--profile-dir")
        if not profile_dirs(proot):
            raise ConfigError(f"--profile-dir {str(proot)!r} holds no calibration profile "
                              "(expected <GPU>/ folders of profile CSVs)")
    published = published_dir(args.published_dir) if "training" in sections or args.published_dir else None
    if args.csv_dir is not None and args.csv_dir.exists() and not args.csv_dir.is_dir():
        raise ConfigError(f"--csv-dir {str(args.csv_dir)!r} is not a directory")
    files_of = {**SECTION_FILES, "power": POWER_FILE, "lora": "engines/hf_lora.csv"}
    section_gpus = {s: gpus_with_data(root, [files_of[s]] if s in files_of else SECTION_FILES.values())
                    for s in sections}
    if published is not None and "training" in sections:
        section_gpus["training"] = sorted({*section_gpus["training"], *published_gpus(published)})
    have = sorted({g for names in section_gpus.values() for g in names})
    if not have:
        files = ", ".join(f"<GPU>/{files_of.get(s, 'any of the above')}" for s in sections)
        raise ConfigError(f"{where} holds no ground truth for --only {','.join(sections)} (expected {files})")
    gpus = None
    if args.gpu:
        gpus = []
        hint = "" if published is not None or "training" not in sections else             "; the published A100 rows need --published-dir or $FLEETSIM_PUBLISHED_DIR"
        for g in args.gpu:
            try:
                name = get_gpu(g).name
            except FleetsimError:
                raise ConfigError(f"--gpu {g!r}: unknown GPU (GPUs with validation data: {', '.join(have)}{hint})") from None
            if name not in have:
                raise ConfigError(f"--gpu {g!r}: no validation data for {name} in {where} (GPUs with data: "
                                  f"{', '.join(have)}{hint})")
            gpus.append(name)
    return _Inputs(sections, root, proot, published, gpus, section_gpus)


def _show(title: str, df: pd.DataFrame) -> None:
    print(f"\n== {title}")
    if df.empty:
        print("(no rows)")
        return
    with pd.option_context("display.max_rows", 500, "display.width", 200,
                           "display.float_format", lambda x: f"{x:.4g}"):
        print(df.to_string(index=False))


def _absent(title: str, inputs: _Inputs, section: str) -> bool:
    """Print a note and return True when ``section`` has no ground truth for the selected GPUs."""
    have = inputs.section_gpus[section]
    if inputs.gpus is None and have or inputs.gpus is not None and set(inputs.gpus) & set(have):
        return False
    which = "" if inputs.gpus is None else f" for {', '.join(inputs.gpus)}"
    print(f"\n== {title}: no ground truth{which} (GPUs with data in this section: {', '.join(have) or 'none'})")
    return True


def run(args: argparse.Namespace) -> int:
    from fleetsim import training_validate as tv
    from fleetsim import validate_forward as vf
    from fleetsim.hardware.errors import ConfigError
    from fleetsim.validation_data import PUBLISHED_ENV

    if args.engine:
        return run_engines(args)
    if args.published_serving or args.published_split:
        raise ConfigError("--published-serving/--published-split: only with --engine NAME")
    inp = _check(args)
    if args.csv_dir is not None:
        check_out_dir(str(args.csv_dir), "--csv-dir")
    root, proot, gpus = inp.validation_root, inp.profile_root, inp.gpus
    missed: list[str] = []
    tables: dict[str, pd.DataFrame] = {}
    if "ops" in inp.sections and not _absent("held-out operators", inp, "ops"):
        rows = vf.heldout_rows(root, proot, gpus)
        summ = vf.summarize_heldout(rows)
        if args.points:
            _show("held-out operators (device time)", rows)
        _show(f"held-out operators: median |error| per kind (target <= {vf.TARGETS['ops']:.0%}, own profile)", summ)
        tables.update(ops_points=rows, ops_summary=summ)
        if not summ.empty:
            own = summ[summ["predictor"] == "own"]
            missed += [f"ops {r.gpu} {r.kind}: median {r.median_err:.1%}" for r in own.itertuples()
                       if r.median_err > vf.TARGETS["ops"]]
    if "forward" in inp.sections and not _absent("forward passes", inp, "forward"):
        rows = vf.forward_rows(root, proot, gpus)
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
    if "training" in inp.sections:
        if inp.published is None:
            print(f"\npublished Korthikanti et al. 2022 rows: skipped (not shipped with fleetsim; point "
                  f"--published-dir or ${PUBLISHED_ENV} at the folder holding korthikanti2022_table5.csv, "
                  "e.g. ../shared/data/published)")
        if not _absent("training", inp, "training"):
            sel = None if gpus is None else set(gpus)
            rows = tv.validation_rows(inp.published, root, sel)
            _show("training", rows)
            tables["training_points"] = rows
            if len(rows):
                print(f"training MAPE {rows['error'].abs().mean():.1%} over {len(rows)} points")
                groups = training_groups(rows)
                print()
                print(groups.to_string(index=False))
                missed += [
                    f"training {g.source} {g.gpu} {g.metric}: {g.within}/{g.n} within {g.target:.0%} "
                    f"(max |error| {g.max_abs_error:.1%})"
                    for g in groups.itertuples()
                    if g.within < g.n and np.isfinite(g.target)
                ]
            rep_df = tv.measurement_repeatability(root, sel)
            if len(rep_df):
                print("\nrepeatability of our measurements (same configuration, two runs):")
                for bound, part in rep_df.groupby("gpu_bound"):
                    print(f"  {'GPU-bound' if bound else 'host-bound'} rows: {len(part)}, step time "
                          f"max |diff| {part['step_diff'].abs().max():.1%} (mean "
                          f"{part['step_diff'].abs().mean():.1%}), summed kernel time max |diff| "
                          f"{part['kernel_diff'].abs().max():.1%}")
                tables["training_repeatability"] = rep_df
    if "intervals" in inp.sections and not _absent("prediction intervals", inp, "intervals"):
        tables.update(_intervals(root, proot, gpus, args.points, missed))
    if "power" in inp.sections and not _absent("power", inp, "power"):
        tables.update(_power(root, gpus, args.points, missed))
    if "lora" in inp.sections and not _absent("LoRA", inp, "lora"):
        tables.update(_lora(root, gpus, args.points, missed))
    if args.csv_dir is not None:
        for name, df in tables.items():
            vf.write_csv(df, args.csv_dir / f"{name}.csv")
    if missed:
        print("\ntargets missed:\n  " + "\n  ".join(missed))
    else:
        print("\nall targets met")
    return 1 if (missed and args.strict) else 0


def run_engines(args: argparse.Namespace) -> int:
    """``--engine``: per profile, the fitted and the held-out rows apart (per-row error,
    MAPE, worst row) against ``fleetsim.validate_engines``'s targets."""
    from fleetsim import validate_engines as ve
    from fleetsim.hardware.errors import ConfigError

    names = ve.check_engines([n for text in args.engine for n in text.split(",") if n.strip()])
    if not names:
        raise ConfigError("--engine: no engine name given")
    if args.published_split and not args.published_serving:
        raise ConfigError("--published-split: only with --published-serving")
    if args.csv_dir is not None:
        check_out_dir(str(args.csv_dir), "--csv-dir")
    parts = []
    h200 = tuple(n for n in names if n in ve.H200_ENGINES)
    if h200:
        parts.append(ve.h200_rows(h200))
    pub = tuple(n for n in names if n in ve.PUBLISHED_ENGINES)
    if pub and not args.published_serving:
        print(f"\npublished serving rows of {', '.join(pub)}: skipped (add --published-serving; "
              "each row is a serving simulation, minutes in all)")
    elif pub:
        parts.append(ve.published_rows(pub, split=args.published_split))
    if not parts:
        return 0
    rows = pd.concat(parts, ignore_index=True)
    summ = ve.summary(rows)
    if args.points:
        _show("engine rows (error = predicted / measured - 1)", rows)
    _show(f"engine profiles: fitted and held-out rows apart (targets: MAPE per group; H200 rows "
          f"within {ve.WORST_ROW:.0%})", summ)
    if args.csv_dir is not None:
        rows.to_csv(args.csv_dir / "engine_points.csv", index=False)
        summ.to_csv(args.csv_dir / "engine_summary.csv", index=False)
    missed = [f"{r.engine} {r.group} ({r.split}): MAPE {r.mape:.1%}, worst {r.worst_row} {r.worst_error:+.1%}"
              for r in summ.itertuples() if r.met is False]
    print("\ntargets missed:\n  " + "\n  ".join(missed) if missed else "\nall targets met")
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


POWER_FILE = "engines/hf_power.csv"
"""Ground truth of the power section, per ``<GPU>/`` folder (``fleetsim.power_validation``)."""

POWER_TARGET = 0.10
"""Average board power of whole forward passes and training steps: |error| per phase MAPE."""


LORA_TARGET_PCT = 10.0
"""Held-out MAPE target of the time LoRA adds to a whole decode step."""


def _lora(root: Path, gpus: list[str] | None, points: bool, missed: list[str]) -> dict[str, pd.DataFrame]:
    """Whole Hugging Face decode steps with LoRA against the base model's estimate plus the
    simulator's LoRA kernel pricing (``fleetsim.lora_validation``; nothing fitted on them)."""
    from fleetsim.lora_validation import lora_rows, lora_summary

    rows = lora_rows(root)
    if gpus is not None:
        rows = rows[rows["gpu"].isin(gpus)]
    summ = lora_summary(rows) if len(rows) else pd.DataFrame()
    _show("LoRA: whole HF decode steps with adapters vs base estimate + LoRA kernel pricing (held out)", summ)
    if points and len(rows):
        _show("LoRA rows", rows)
    missed += [f"LoRA {r.gpu} ({r.pricing} pricing): added-time MAPE {r.delta_mape_pct:.1f}%"
               for r in summ.itertuples() if r.pricing == "shapes" and r.delta_mape_pct > LORA_TARGET_PCT]
    return {"lora_summary": summ, "lora_points": rows}


def _power(root: Path, gpus: list[str] | None, points: bool, missed: list[str]) -> dict[str, pd.DataFrame]:
    """The power model: its kernel fit per profile, the cap model's fit on the Zeus traces, and
    whole iterations of Hugging Face models against NVML (``fleetsim.power_validation``)."""
    import json

    from fleetsim.calibration.measured import profile_dirs
    from fleetsim.calibration.power import POWER_MODEL_FILE
    from fleetsim.calibration.power_cap import FIT_CSV
    from fleetsim.power_validation import limiter_rows, power_rows, summary

    fits = []
    for gpu, d in profile_dirs().items():
        path = d / POWER_MODEL_FILE
        if path.exists():
            fit = json.loads(path.read_text()).get("fit") or {}
            for part in ("fitted", "held_out"):
                r = fit.get(part) or {}
                fits.append({"gpu": gpu, "rows": part, "n": r.get("rows"), "mape_pct": r.get("mape_pct"),
                             "worst": r.get("worst")})
    _show("power model: kernel power by occupancy vs NVML micro-benchmarks (power_occupancy.csv)",
          pd.DataFrame(fits))
    zeus = pd.read_csv(FIT_CSV)[["gpu", "gamma", "static_share", "cap_headroom", "n_fit", "n_test", "mape_thr_fit",
                                 "mape_thr_test", "mape_power_fit", "mape_power_test"]]
    _show("power caps: throughput and power vs limit on the Zeus traces (MAPE %, fitted / held-out curves)", zeus)
    missed += [f"power caps {r.gpu}: held-out MAPE throughput {r.mape_thr_test}%, power {r.mape_power_test}%"
               for r in zeus.itertuples() if max(r.mape_thr_test, r.mape_power_test) > 5.0]
    lim = limiter_rows()
    if len(lim):
        lim["clock_model"] = lim["clock_model"].str.split(":").str[0]
    _show("power caps held out: a 1 kW GEMM under the board's own 700 W limit (throughput ratio, clock)", lim)
    rows = power_rows(root)
    if gpus is not None:
        rows = rows[rows["gpu"].isin(gpus)]
    if points:
        _show("power: whole iterations (error = predicted / measured - 1)", rows)
    summ = summary(rows)
    _show(f"power: average board power of whole Hugging Face iterations vs NVML (all rows held out; "
          f"target MAPE <= {POWER_TARGET:.0%})", summ)
    missed += [f"power {r.gpu} {r.phase}: MAPE {r.power_mape_pct:.1f}%, worst {r.worst_power}"
               for r in summ.itertuples() if r.power_mape_pct > 100 * POWER_TARGET]
    return {"power_points": rows, "power_summary": summ, "power_kernel_fit": pd.DataFrame(fits), "power_caps": zeus,
            "power_limiter": lim}


INTERVAL_TARGET = (0.75, 0.85)
"""Held-out coverage the 80% interval should reach overall."""


def _intervals(root: Path, proot: Path | None, gpus: list[str] | None, points: bool,
               missed: list[str]) -> dict[str, pd.DataFrame]:
    """Coverage of the 80% interval on held-out rows (``calibration.intervals.crossfit``)."""
    from fleetsim.calibration.intervals import crossfit, summarize_coverage
    from fleetsim.interval_data import residual_rows

    rows = residual_rows(root, proot)
    out: dict[str, pd.DataFrame] = {}
    for split, what in (("alternate", "every 10th shape held out"), ("gpu", "one GPU held out")):
        cov = crossfit(rows, split)
        if gpus is not None:
            cov = cov[cov["gpu"].isin(gpus)]
        if points:
            _show(f"prediction intervals ({what})", cov)
        summ = summarize_coverage(cov)
        _show(f"prediction intervals: coverage of the 80% interval on held-out rows ({what}; target "
              f"{INTERVAL_TARGET[0]:.0%}-{INTERVAL_TARGET[1]:.0%} overall)", summ)
        out[f"intervals_{split}"] = summ
        total = float(summ["coverage"].iloc[-1])
        if split == "alternate" and not INTERVAL_TARGET[0] <= total <= INTERVAL_TARGET[1]:
            missed.append(f"intervals: held-out coverage {total:.1%}")
    return out
