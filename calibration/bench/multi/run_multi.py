"""Driver of one multi-GPU call: plans the selected phases within a time budget and runs each
sub-run as its own process on the first ``world`` GPUs (``CUDA_VISIBLE_DEVICES``), killed
``points.GRACE_S`` after its budget if its own deadline has not ended it.

``plan`` is pure (tested without torch); ``main`` runs it. Output folders follow the repo
layout: collectives to ``calibration/profiles/<GPU>/collective_<n>.csv``, forwards and
training to ``calibration/validation/<GPU>/multi/``.

Usage: ``python3 calibration/bench/multi/run_multi.py --gpu H200-SXM --gpus 8 --total-s 500
[--dry-run] PHASE ...`` (phases: coll, tp, ddp, fsdp, pp; none = ``points.CALLS[0]``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass

try:
    from fleetsim.calibration.bench.multi import points as pts
except ImportError:
    import _paths  # noqa: F401
    import points as pts  # type: ignore[no-redef]

BENCH = "calibration/bench"


@dataclass(frozen=True)
class SubRun:
    """One process: its name, argv, the GPUs it sees and its budget / kill time (s)."""

    name: str
    argv: tuple[str, ...]
    gpus: int
    budget_s: float
    timeout_s: float


def plan(phases: list[str], gpus: int, total_s: float, gpu: str, python: str = "python3") -> list[SubRun]:
    """Sub-runs of ``phases`` on a machine of ``gpus`` GPUs within ``total_s`` (``points.phase_budgets``)."""
    prof, val = f"calibration/profiles/{gpu}", f"calibration/validation/{gpu}/multi"
    out: list[SubRun] = []
    for phase, runs in pts.phase_budgets(phases, gpus, total_s).items():
        for world, budget in runs:
            b = str(budget)
            argv: tuple[str, ...]
            if phase == "coll":
                argv = (f"{BENCH}/multi/collectives.py", "--out", prof, "--world", str(world), "--budget-s", b)
            elif phase == "tp":
                argv = (f"{BENCH}/multi/tp_forward.py", "--out", val, "--tp", str(world), "--budget-s", b)
            elif phase == "ddp":
                argv = (f"{BENCH}/train_bench.py", "--out", val, "--world", str(world), "--budget-s", b,
                        "--models", "gpt2-1.3b,gpt2-2.7b", "--steps", "10", "--warmup", "3")
            else:
                argv = (f"{BENCH}/multi/train_parallel.py", "--out", val, "--kind", phase, "--world", str(world),
                        "--budget-s", b)
            out.append(SubRun(f"{phase}{world}", (python, *argv), world, float(budget),
                              float(budget) + pts.GRACE_S))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("phases", nargs="*", default=[])
    p.add_argument("--gpu", required=True, help="catalog GPU name (H200-SXM, H100-SXM)")
    p.add_argument("--gpus", type=int, required=True)
    p.add_argument("--total-s", type=float, default=500.0)
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    phases = args.phases or list(pts.CALLS[0])
    try:
        runs = plan(phases, args.gpus, args.total_s, args.gpu, sys.executable)
    except ValueError as exc:
        p.error(str(exc))
    t0 = time.monotonic()
    for r in runs:
        line = f"[run_multi] {r.name}: {' '.join(r.argv[1:])} (budget {r.budget_s:.0f} s)"
        print(line, flush=True)
        if args.dry_run:
            continue
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(r.gpus))}
        try:
            rc = subprocess.run(r.argv, env=env, timeout=r.timeout_s, check=False).returncode
        except subprocess.TimeoutExpired:
            rc = 124
        print(f"[run_multi] {r.name} rc={rc} at {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
