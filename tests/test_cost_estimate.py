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

from fleetsim.estimate import estimate_forward, resolve_batch


def test_forward_time_is_sum_of_count_times_op_time() -> None:
    gpu, model = get_gpu("H100-SXM"), load_model("llama-3.1-8b")
    cm = RooflineCostModel()
    est = estimate_forward(model, gpu, 1024, cost_model=cm)
    ops = serving_step_ops(model, [Seq(1024)], ParallelConfig(tp=1), "bf16", None)
    expect = sum(op.count * cm.op_time(op, gpu).time_s for op in ops)
    assert est.time_s == pytest.approx(expect, rel=1e-12)
    assert list(est.ops.columns) == ["name", "kind", "count", "flops", "bytes", "time_s", "total_s", "source"]
    np.testing.assert_allclose(est.ops["total_s"], est.ops["count"] * est.ops["time_s"])
    flops = sum(op.count * op.flops for op in ops)
    assert est.tflops == pytest.approx(flops / est.time_s / 1e12)
    assert est.source_share == {"measured": 0.0, "interpolated": 0.0, "roofline": 1.0}


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
