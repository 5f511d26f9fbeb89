"""Sustained-load ratios and host dispatch per call in whole-model estimates.

Oracles: hand computations (linear interpolation of the ratio in log arithmetic intensity;
the two-stage pipeline worked by hand), and the committed bench module's call list."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import _cost_synth as S  # noqa: N812
import numpy as np
import pytest
from fleetsim.calibration import MeasuredCostModel
from fleetsim.calibration.bench.host import HOST_CALLS
from fleetsim.calibration.ops import AttentionOp, CollectiveOp, ElementwiseOp, GemmOp
from fleetsim.calibration.sustain import SERVING_CALLS, host_seconds
from fleetsim.hardware.errors import ConfigError, ProfileError
from fleetsim.workloads.models import load_model

from fleetsim.estimate import eager_pipeline_s, estimate_ops
from fleetsim.validate_forward import _host_calls, reference_host_calls, reference_ops

SUSTAINED = [  # op_class, flops, bytes, ratio
    ("gemm_big", 1.0e12, 1.0e8, 1.10),   # AI 1e4
    ("gemm_small", 1.0e9, 1.0e7, 1.00),  # AI 1e2
    ("attention_prefill", 4.0e11, 1.0e8, 1.20),  # AI 4e3
    ("memory_copy", 0.0, 1.0e9, 1.02),
]
HOST = {"linear": 20e-6, "rms_norm": 9e-6, "add": 7e-6, "sdpa_prefill_gqa": 30e-6, "sdpa_decode_gqa": 25e-6,
        "silu_mul": 15e-6, "rope": 40e-6, "index": 11e-6, "argmax": 8e-6, "copy_": 6e-6}


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture(scope="module")
def prof(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    spec = S.gpu()
    root = S.write_profile(tmp_path_factory.mktemp("sus"), spec)
    _write(root / "sustained.csv", ["op_class", "shape", "flops", "bytes", "burst_s", "early_s", "sustained_s",
                                    "ratio", "sm_clock_mhz", "power_w", "duration_s"],
           [[c, "x", f, b, 1e-3, 1e-3, r * 1e-3, r, 1500, 690, 8.0] for c, f, b, r in SUSTAINED])
    _write(root / "host_dispatch.csv", ["call", "host_s", "p10_s", "p90_s"],
           [[c, t, t, t] for c, t in HOST.items()])
    return root, spec


def test_ratio_interpolates_in_log_intensity(prof: tuple[Path, object]) -> None:
    root, spec = prof
    cm = MeasuredCostModel(root, spec)  # type: ignore[arg-type]
    m = 1000.0  # square GEMM m=n=k: AI = 2m^3 / (3 m^2 x 2 B) = m / 3
    ops = [GemmOp("g", 1000, 1000, 1000), GemmOp("g", 8192 * 4, 8192 * 4, 8192 * 4), GemmOp("g", 1, 4096, 4096),
           ElementwiseOp("e", "rmsnorm", 4096, 1e6), CollectiveOp("c", "all_reduce", 1e6, 2),
           AttentionOp("a", (4096,), (4096,), 32, 8, 128, 128)]
    r = cm.sustained_ratios(ops, spec)  # type: ignore[arg-type]
    ai = m / 3.0
    expect = 1.00 + (1.10 - 1.00) * (math.log(ai) - math.log(1e2)) / (math.log(1e4) - math.log(1e2))
    assert r[0] == pytest.approx(expect, rel=1e-12)
    assert r[1] == pytest.approx(1.10)   # above the largest class: held at its ratio
    assert r[2] == pytest.approx(1.00)   # weight streaming: below the smallest
    assert r[3] == pytest.approx(1.02)   # streaming kernels: the copy ratio
    assert r[4] == 1.0                   # collectives: not a compute kernel
    assert r[5] == pytest.approx(1.20)   # one attention class: its ratio everywhere


def test_estimate_keeps_burst_and_applies_ratio(prof: tuple[Path, object]) -> None:
    root, spec = prof
    cm = MeasuredCostModel(root, spec)  # type: ignore[arg-type]
    ops = [GemmOp("g", 4096, 4096, 4096, count=2), ElementwiseOp("e", "rmsnorm", 4096, 1e7, count=2)]
    est = estimate_ops(ops, spec, graphs=True, cost_model=cm)  # type: ignore[arg-type]
    burst, _ = cm.op_times(ops, spec, graphs=True)  # type: ignore[arg-type]
    np.testing.assert_allclose(est.ops["burst_s"], burst, rtol=1e-12)
    np.testing.assert_allclose(est.ops["time_s"], burst * est.ops["sustained_ratio"], rtol=1e-12)
    assert est.time_s == pytest.approx(float((2 * est.ops["time_s"]).sum()), rel=1e-12)
    off = estimate_ops(ops, spec, graphs=True, cost_model=cm, sustained=False)  # type: ignore[arg-type]
    assert off.time_s == pytest.approx(2 * float(burst.sum()), rel=1e-12)


def test_eager_host_time_is_sum_of_measured_calls(prof: tuple[Path, object]) -> None:
    root, spec = prof
    cm = MeasuredCostModel(root, spec)  # type: ignore[arg-type]
    ops = [GemmOp("g", 1, 4096, 4096), ElementwiseOp("e", "silu_mul", 4096, 1e4), ElementwiseOp("e", "unknown", 1, 1e4)]
    host = cm.host_times(ops, spec)  # type: ignore[arg-type]
    assert host[0] == pytest.approx(HOST["linear"])
    assert host[1] == pytest.approx(HOST["silu_mul"])
    assert host[2] == pytest.approx(cm.host_launch_s(spec))  # type: ignore[arg-type]
    ref = cm.host_times(ops, spec, [("linear", "view", "transpose"), ("add",), ()])  # type: ignore[arg-type]
    eager = cm.host_launch_s(spec)  # type: ignore[arg-type]
    assert ref[0] == pytest.approx(HOST["linear"] + 2 * eager)  # calls the table lacks: eager interval
    assert ref[1] == pytest.approx(HOST["add"])
    # tiny kernels: host-bound, so the iteration is the host total plus the last kernel
    est = estimate_ops(ops, spec, graphs=False, cost_model=cm, sustained=False)  # type: ignore[arg-type]
    dev = est.ops["time_s"].to_numpy()
    assert est.time_s == pytest.approx(eager_pipeline_s(list(dev), [1, 1, 1], host), rel=1e-12)


def test_pipeline_with_per_operator_host_times() -> None:
    # host 5, 1, 1; device 1, 10, 1: ends 6, 16, 17
    assert eager_pipeline_s([1, 10, 1], [1, 1, 1], [5.0, 1.0, 1.0]) == 17.0
    # a block of two repeated twice, host-bound: host 3 per op -> issue 3, 6, 9, 12; +1
    assert eager_pipeline_s([1, 1], [2, 2], [3.0, 3.0]) == 13.0
    assert eager_pipeline_s([1, 1], [1, 1], [2.0, 2.0]) == eager_pipeline_s([1, 1], [1, 1], 2.0)
    with pytest.raises(ConfigError):
        eager_pipeline_s([1, 1], [1, 1], [2.0])
    with pytest.raises(ConfigError):
        eager_pipeline_s([1], [1], [2.0], launches=[1])


def test_host_seconds_fallbacks() -> None:
    assert host_seconds([("a", "b"), (), ("a", "z"), None], {"a": 1.0, "b": 2.0}, 0.5,
                        [9.0, 7.0, 9.0, 4.0]) == [3.0, 0.0, 1.5, 4.0]


def test_call_names_are_benchmarked() -> None:
    """Every call name the cost model looks up is one the host-dispatch suite measures."""
    used = {c for calls in SERVING_CALLS.values() for c in calls}
    for llama in (True, False):
        used |= {c for calls in _host_calls(llama).values() for c in calls}
    assert used <= set(HOST_CALLS)
    model = load_model("llama-3.1-8b")
    ops = reference_ops(model, 1, 1, 700, 2)
    calls = reference_host_calls(ops, model)
    assert all(c == () for op, c in zip(ops, calls, strict=True) if isinstance(op, CollectiveOp))
    assert {c for cs in calls for c in cs} <= set(HOST_CALLS)


def test_bad_sustained_table_is_a_profile_error(prof: tuple[Path, object], tmp_path: Path) -> None:
    root, spec = prof
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    _write(bad / "sustained.csv", ["op_class", "flops", "bytes", "burst_s", "sustained_s", "ratio"],
           [["gemm_big", 1e12, 1e8, 1e-3, 1.1e-3, -1.0]])
    with pytest.raises(ProfileError, match="ratio"):
        MeasuredCostModel(bad, spec)  # type: ignore[arg-type]
    _write(bad / "sustained.csv", ["op_class", "flops", "bytes", "burst_s", "sustained_s", "ratio"],
           [["memory_copy", 0, 1e8, 1e-3, 1.1e-3, 1.1]])
    with pytest.raises(ProfileError, match="gemm"):
        MeasuredCostModel(bad, spec)  # type: ignore[arg-type]
    _write(bad / "sustained.csv", ["op_class", "flops", "bytes", "burst_s", "sustained_s", "ratio"],
           [["gemm_big", 1e12, 1e8, 1e-3, 1.1e-3, 1.1]])
    _write(bad / "host_dispatch.csv", ["call", "host_s"], [["linear", "fast"]])
    with pytest.raises(ProfileError, match="host_s"):
        MeasuredCostModel(bad, spec)  # type: ignore[arg-type]
