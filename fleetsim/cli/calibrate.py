"""``fleetsim calibrate``: run the microbenchmark harness on this machine's GPU.

Thin wrapper over ``fleetsim.calibration.bench.harness``. PyTorch is an optional
dependency: it is imported only inside ``run``, and a machine without it (or without a
CUDA GPU) gets one line saying what is missing (exit code 2).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from fleetsim.calibration.bench import harness
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.errors import FleetsimError, SpecError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "calibrate",
        help="measure this GPU's kernel times into a profile ($FLEETSIM_PROFILE_DIR/<GPU>/)",
        description="Measure GEMM, attention, memory-bound, MoE, collective, copy, launch and "
                    "power figures of this machine's GPU into a calibration profile "
                    "(see docs/calibration.md).",
    )
    harness.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _check_flags(args)
    try:
        harness.check_requirements(args.device)
    except harness.MissingRequirement as exc:
        raise FleetsimError(str(exc)) from None
    invocation = "fleetsim " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    harness.run_calibration(args, invocation)
    return 0


def _check_flags(args: argparse.Namespace) -> None:
    """Every flag is checked before PyTorch or the GPU is looked for, so a bad flag is named first."""
    try:
        harness.parse_only(args.only, harness.SUITES)
    except ValueError as exc:
        raise FleetsimError(str(exc)) from None
    for flag, value, ok, want in (
        ("--budget-s", args.budget_s, lambda v: v > 0, "> 0"),
        ("--sustained-s", args.sustained_s, lambda v: v > 0, "> 0"),
        ("--pool-gib", args.pool_gib, lambda v: v > 0, "> 0"),
    ):
        if value is not None and not (math.isfinite(value) and ok(value)):
            raise FleetsimError(f"{flag} must be a finite number {want}, got {value}")
    if args.catalog_gpu is not None:
        try:
            get_gpu(args.catalog_gpu)
        except SpecError as exc:
            raise FleetsimError(f"--catalog-gpu: {exc}") from None
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise FleetsimError(f"--out {args.out}: exists and is not a directory")
