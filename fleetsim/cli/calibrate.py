"""``fleetsim calibrate``: run the microbenchmark harness on this machine's GPU.

Thin wrapper over ``fleetsim.calibration.bench.harness``. PyTorch is an optional
dependency: it is imported only inside ``run``, and a machine without it (or without a
CUDA GPU) gets one line saying what is missing (exit code 2).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from fleetsim.calibration.bench import harness
from fleetsim.hardware.errors import FleetsimError


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
    try:
        harness.check_requirements(args.device)
    except harness.MissingRequirement as exc:
        raise FleetsimError(str(exc)) from None
    try:
        harness.parse_only(args.only, harness.SUITES)
    except ValueError as exc:
        raise FleetsimError(str(exc)) from None
    if args.budget_s <= 0:
        raise FleetsimError(f"--budget-s must be positive, got {args.budget_s}")
    invocation = "fleetsim " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    harness.run_calibration(args, invocation)
    return 0
