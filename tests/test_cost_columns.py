"""Columnar batch pricing equals the object API; attention sums by hand."""

from __future__ import annotations

from pathlib import Path

import _cost_synth as S  # noqa: N812
import numpy as np
import pytest
from fleetsim.calibration import MeasuredCostModel, RooflineCostModel
from fleetsim.calibration.columns import (
    OpColumns,
    attention_columns,
    columns_of,
    elementwise_columns,
    gemm_columns,
)
from fleetsim.calibration.opbatch import attention_arrays
from fleetsim.calibration.ops import AttentionOp, CollectiveOp, ElementwiseOp, GemmOp
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.graph import serving_step_ops
from fleetsim.workloads.models import load_model
from fleetsim.workloads.parallel import ParallelConfig, Seq


def _ops() -> list:
    rng = np.random.default_rng(3)
    ops: list = []
    for name, tp in (("llama-3.1-8b", 1), ("llama-3.1-70b", 4), ("mixtral-8x7b", 2)):
        batch = [Seq(1, int(c)) for c in rng.integers(16, 6000, size=20)] + [Seq(700, 300), Seq(1200)]
        ops += [op for op in serving_step_ops(load_model(name), batch, ParallelConfig(tp=tp))
                if not isinstance(op, CollectiveOp)]
    return ops


@pytest.mark.parametrize("mode", ["graph", "eager", "stream"])
def test_columns_price_like_op_times(tmp_path: Path, mode: str) -> None:
    spec = S.gpu()
    ops = _ops()
    for cm in (MeasuredCostModel(S.write_profile(tmp_path, spec), spec), RooflineCostModel()):
        cols, pos = columns_of(ops)
        assert len(cols) == len(ops)
        got = cm.price_columns(cols, spec, mode=mode)
        want, src = cm.price(ops, spec, mode=mode)
        for kind, (t, s) in got.items():
            np.testing.assert_allclose(t, want[pos[kind]], rtol=1e-12)
            assert list(s) == [src[i] for i in pos[kind]]
        assert set(got) == {"gemm", "attention", "elementwise"}


def test_attention_sums_by_hand() -> None:
    # two causal prefills of 300 and 500 tokens on empty caches; one decode batch over 3 contexts
    pairs = 300 * 301 / 2 + 500 * 501 / 2
    a = attention_columns([2, 3], [800, 3], [800, 900 + 1000 + 1100], [pairs, 3000], 32, 8, 128)
    b = attention_arrays([AttentionOp("p", (300, 500), (300, 500), 32, 8, 128, 128),
                          AttentionOp("d", (1, 1, 1), (900, 1000, 1100), 32, 8, 128, 128, causal=True)])
    for f in ("batch", "q_eq", "kv_eq", "phase", "flops", "bytes"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-12)
    assert a.flops[0] == pytest.approx(2 * 32 * 256 * pairs)
    assert list(map(bool, a.causal)) == [True, False]  # a decode is never masked


def test_gemm_and_elementwise_columns() -> None:
    g = gemm_columns([1, 300], 6144, 4096, dtype=["bf16", "fp8"])
    np.testing.assert_allclose(g.flops, [2 * 6144 * 4096, 2 * 300 * 6144 * 4096])
    assert g.bytes[1] == pytest.approx((300 * 4096 + 4096 * 6144) * 1 + 300 * 6144 * 2)  # fp8 in, bf16 out
    e = elementwise_columns("rmsnorm", [1e6, 2e6])
    assert e.kernel == ["rmsnorm", "rmsnorm"] and list(e.bytes) == [1e6, 2e6]
    spec = S.gpu()
    out = RooflineCostModel().price_columns(OpColumns(gemm=g, elementwise=e), spec, graphs=True)
    t, _ = RooflineCostModel().op_times([GemmOp("a", 1, 6144, 4096), GemmOp("b", 300, 6144, 4096, "fp8"),
                                         ElementwiseOp("r", "rmsnorm", 1, 1e6), ElementwiseOp("r", "rmsnorm", 1, 2e6)],
                                        spec, graphs=True)
    np.testing.assert_allclose(np.concatenate([out["gemm"][0], out["elementwise"][0]]), t, rtol=1e-12)


def test_bad_columns_raise() -> None:
    with pytest.raises(ConfigError, match="one length"):
        gemm_columns([1, 2], [1, 2, 3], 4)
    with pytest.raises(ConfigError, match="sequence"):
        attention_columns([0], [1], [1], [1], 8, 8, 64)
    with pytest.raises(ConfigError, match="no columnar form"):
        columns_of([CollectiveOp("c", "all_reduce", 1e6, 2)])
