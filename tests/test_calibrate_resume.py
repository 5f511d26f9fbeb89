"""Suite loop: resume skips rows already on disk, the budget stops cleanly, failures are skipped.

Uses a fake timing backend (a measure function returning fixed numbers), so no torch.
"""

from __future__ import annotations

import csv

from fleetsim.calibration.bench.common import Budget, ProfileWriter
from fleetsim.calibration.bench.timing import BenchContext, run_rows


def _ctx(out, *, resume: bool, budget: Budget) -> BenchContext:
    return BenchContext(device="cpu", writer=ProfileWriter(out, resume=resume), budget=budget,
                        pool=None, props={"l2_bytes": 1 << 20}, quick=True, log=lambda m: None)


ROWS = [{"dtype": "bf16", "m": m, "n": 256, "k": 128, "batch": 1} for m in (1, 2, 4, 8, 16)]


def _fake(calls: list[int]):
    def measure(row):
        calls.append(int(row["m"]))
        t = 1e-6 * row["m"]
        return t, 0.9 * t, 1.1 * t
    return measure


def test_resume_measures_only_missing_rows(tmp_path) -> None:
    calls: list[int] = []
    ctx = _ctx(tmp_path, resume=False, budget=Budget(100.0))
    assert run_rows(ctx, "gemm", ROWS[:3], _fake(calls)) == 3
    assert calls == [1, 2, 4]
    calls.clear()
    ctx2 = _ctx(tmp_path, resume=True, budget=Budget(100.0))
    assert run_rows(ctx2, "gemm", [dict(r) for r in ROWS], _fake(calls)) == 2
    assert calls == [8, 16]
    with (tmp_path / "gemm.csv").open() as fh:
        ms = [int(r["m"]) for r in csv.DictReader(fh)]
    assert ms == [1, 2, 4, 8, 16]


def test_budget_stops_and_keeps_written_rows(tmp_path) -> None:
    now = [0.0]
    budget = Budget(2.5, clock=lambda: now[0])
    ctx = _ctx(tmp_path, resume=False, budget=budget)

    def slow(row):
        now[0] += 1.0  # each point costs one second of the fake clock
        return 1e-6, 1e-6, 1e-6

    assert run_rows(ctx, "gemm", ROWS, slow) == 3  # measured at t=0, 1, 2; stops at t=3
    with (tmp_path / "gemm.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 3


def test_unsupported_points_are_logged_not_fatal(tmp_path) -> None:
    ctx = _ctx(tmp_path, resume=False, budget=Budget(100.0))

    def flaky(row):
        if row["m"] == 2:
            raise RuntimeError("CUDA out of memory on this shape")
        if row["m"] == 4:
            return None  # not supported on this device
        return 1e-6, 1e-6, 1e-6

    assert run_rows(ctx, "gemm", ROWS, flaky) == 3
    assert len(ctx.skipped) == 1 and "out of memory" in ctx.skipped[0]
