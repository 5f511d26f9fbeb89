"""estimate_forward: sums the priced operator graph; shorthand batches; errors."""

from __future__ import annotations

import numpy as np
import pytest
from fleetsim.calibration import RooflineCostModel
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.graph import serving_step_ops
from fleetsim.workloads.models import load_model
from fleetsim.workloads.parallel import ParallelConfig, Seq

from fleetsim.estimate import eager_pipeline_s, estimate_forward, resolve_batch


def test_forward_time_is_sum_of_count_times_op_time() -> None:
    gpu, model = get_gpu("H100-SXM"), load_model("llama-3.1-8b")
    cm = RooflineCostModel()
    est = estimate_forward(model, gpu, 1024, cost_model=cm, graphs=True)
    ops = serving_step_ops(model, [Seq(1024)], ParallelConfig(tp=1), "bf16", None)
    expect = sum(op.count * cm.op_time(op, gpu, graphs=True).time_s for op in ops)
    assert est.time_s == pytest.approx(expect, rel=1e-12)
    assert list(est.ops.columns) == ["name", "kind", "count", "flops", "bytes", "burst_s", "sustained_ratio", "time_s", "total_s", "source", "power_w"]
    np.testing.assert_allclose(est.ops["total_s"], est.ops["count"] * est.ops["time_s"])
    flops = sum(op.count * op.flops for op in ops)
    assert est.tflops == pytest.approx(flops / est.time_s / 1e12)
    assert est.source_share == pytest.approx({"measured": 0.0, "interpolated": 0.0, "roofline": 1.0})


def test_tp_adds_priced_collectives_and_names_resolve() -> None:
    est = estimate_forward("llama-3.1-8b", "H100", [Seq(1, 2000)] * 32, tp=2, graphs=True,
                           cost_model=RooflineCostModel())
    coll = est.ops[est.ops["kind"] == "collective"]
    assert len(coll) >= 2 and (coll["time_s"] > 0).all()
    assert est.gpu == "H100-SXM" and est.tp == 2 and est.graphs


def test_batch_shorthands() -> None:
    assert resolve_batch(300) == [Seq(300)]
    assert resolve_batch((4, 100)) == [Seq(100)] * 4
    assert resolve_batch((8, 1, 700)) == [Seq(1, 700)] * 8
    for bad in (0, -3, True, (0, 10), [], ["x"], (1, 2, 3, 4), 1.5):
        with pytest.raises(ConfigError):
            resolve_batch(bad)
    with pytest.raises(ConfigError, match="tp must be"):
        estimate_forward("llama-3.1-8b", "H100", 10, tp=0)


def test_eager_pipeline_hand_cases() -> None:
    # host issues at 2, 4, 6; a 10 s kernel lets the host run ahead: ends 12, 13, 14
    assert eager_pipeline_s([10, 1, 1], [1, 1, 1], 2.0) == 14.0
    # launch-bound: every kernel waits for its launch: 6, 11, 16
    assert eager_pipeline_s([1, 1, 1], [1, 1, 1], 5.0) == 16.0
    # a layer block (count 2) of two kernels repeats: launches at 1,2 | 3,4,5,6 | 7
    # device: k0 1-2, block [3 s, 1 s] x2: 2-5, 5-6, 6-9, 9-10, tail 10-11
    assert eager_pipeline_s([1, 3, 1, 1], [1, 2, 2, 1], 1.0) == 11.0
    # two launches for one operator double its host cost
    assert eager_pipeline_s([1], [1], 2.0, launches=[2]) == 5.0


def test_eager_estimate_is_at_least_device_time_and_launch_bound_for_tiny_batches() -> None:
    gpu = get_gpu("H100-SXM")
    cm = RooflineCostModel()
    big = estimate_forward("llama-3.1-8b", gpu, 4096, cost_model=cm)
    assert big.time_s >= big.ops["total_s"].sum() * (1 - 1e-12)
    assert big.time_s == pytest.approx(big.ops["total_s"].sum(), rel=0.01)  # GEMM-bound
    tiny = estimate_forward("llama-3.2-1b", gpu, 1, cost_model=cm)
    n_kernels = int(tiny.ops.loc[tiny.ops["kind"] != "collective", "count"].sum())
    assert tiny.time_s >= n_kernels * gpu.kernel_overhead_s
