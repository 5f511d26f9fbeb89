"""Grouped expert GEMMs are priced from the measured grouped kernels (moe.csv).

Oracle: the committed H100/H200 grouped_mm measurements. Held-out accuracy is checked by
leaving each measured expert shape out of the fit and predicting it from the others.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
from fleetsim.calibration.fit import MIN_TOKENS_PER_EXPERT
from fleetsim.calibration.measured import MeasuredCostModel
from fleetsim.calibration.ops import GemmOp
from fleetsim.calibration.profile import load_profile
from fleetsim.hardware.catalog import get_gpu

PROFILES = Path(__file__).resolve().parents[1] / "calibration" / "profiles"
GPUS = ["H100-SXM", "H200-SXM"]


def grouped_rows(prof):  # type: ignore[no-untyped-def]
    moe = prof.tables["moe"]
    g = moe[moe["impl"] == "grouped_mm"]
    return g[g["tokens"] * g["top_k"] / g["experts"] >= MIN_TOKENS_PER_EXPERT]


def op_of(r) -> GemmOp:  # type: ignore[no-untyped-def]
    m = math.ceil(r.tokens * r.top_k / r.experts)
    return GemmOp("expert", m, int(r.n), int(r.k), r.dtype, int(r.experts))


@pytest.mark.parametrize("gpu_name", GPUS)
def test_measured_grouped_points_are_reproduced(gpu_name: str) -> None:
    gpu = get_gpu(gpu_name)
    prof = load_profile(PROFILES / gpu_name)
    cm = MeasuredCostModel(prof, gpu)
    rows = grouped_rows(prof)
    assert len(rows) >= 16
    for r in rows.itertuples():
        c = cm.op_time(op_of(r), gpu, graphs=True)
        assert c.source == "measured"
        assert c.time_s == pytest.approx(r.time_s, rel=0.01)


@pytest.mark.parametrize("gpu_name", GPUS)
def test_held_out_expert_shapes(gpu_name: str) -> None:
    gpu = get_gpu(gpu_name)
    prof = load_profile(PROFILES / gpu_name)
    moe = prof.tables["moe"]
    rows = grouped_rows(prof)
    errors = []
    for e, n, k in rows[["experts", "n", "k"]].drop_duplicates().itertuples(index=False):
        keep = ~((moe["experts"] == e) & (moe["n"] == n) & (moe["k"] == k))
        held = copy.copy(prof)
        object.__setattr__(held, "tables", {**prof.tables, "moe": moe[keep]})
        cm = MeasuredCostModel(held, gpu)
        sel = rows[(rows["experts"] == e) & (rows["n"] == n) & (rows["k"] == k)]
        errors += [cm.op_time(op_of(r), gpu, graphs=True).time_s / r.time_s - 1 for r in sel.itertuples()]
    err = np.abs(errors)
    assert np.median(err) < 0.08, errors
    assert err.max() < 0.15, errors


def test_dense_gemms_do_not_see_grouped_points() -> None:
    gpu = get_gpu("H100-SXM")
    prof = load_profile(PROFILES / "H100-SXM")
    without = copy.copy(prof)
    object.__setattr__(without, "tables", {k: v for k, v in prof.tables.items() if k != "moe"})
    a, b = MeasuredCostModel(prof, gpu), MeasuredCostModel(without, gpu)
    for m in (1, 37, 512, 3000):
        op = GemmOp("dense", m, 28672, 4096)
        assert a.op_time(op, gpu).time_s == b.op_time(op, gpu).time_s



def test_grouped_gemm_of_an_unmeasured_dtype_borrows_the_bf16_grouped_efficiency() -> None:
    gpu = get_gpu("H200-SXM")
    cm = MeasuredCostModel(load_profile(PROFILES / "H200-SXM"), gpu)
    bf16 = cm.op_time(GemmOp("expert", 50, 512, 7168, "bf16", 256), gpu, graphs=True)
    fp8 = cm.op_time(GemmOp("expert", 50, 512, 7168, "fp8", 256), gpu, graphs=True)
    assert fp8.source == "roofline"
    # memory-bound: the same achieved bandwidth on the bytes each dtype moves
    bw16 = GemmOp("e", 50, 512, 7168, "bf16", 256).bytes_moved / bf16.time_s
    bw8 = GemmOp("e", 50, 512, 7168, "fp8", 256).bytes_moved / fp8.time_s
    assert bw8 == pytest.approx(bw16, rel=0.02)


@pytest.mark.parametrize("gpu_name", GPUS)
def test_dtype_borrow_rule_on_held_out_dense_dtypes(gpu_name: str) -> None:
    """Evidence for the rule: drop a dtype's GEMM rows and price them from bf16's table."""
    gpu = get_gpu(gpu_name)
    prof = load_profile(PROFILES / gpu_name)
    gemm = prof.tables["gemm"]
    limits = {"fp16": 0.05, "tf32": 0.08, "fp8": 0.20}
    for dtype, limit in limits.items():
        held = copy.copy(prof)
        object.__setattr__(held, "tables", {**prof.tables, "gemm": gemm[gemm["dtype"] != dtype]})
        cm = MeasuredCostModel(held, gpu)
        rows = gemm[gemm["dtype"] == dtype]
        err = [cm.op_time(GemmOp("g", int(r.m), int(r.n), int(r.k), dtype), gpu, graphs=True).time_s / r.time_s - 1
               for r in rows.itertuples()]
        assert np.median(np.abs(err)) < limit, (dtype, np.median(np.abs(err)))
