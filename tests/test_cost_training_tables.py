"""Cost-model tables for training kernels, checked against the committed profile rows
(measured oracles): SDPA backward, GEMMs in backward layouts and unaligned (GPT-2 vocab)
GEMMs, each its own family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fleetsim.calibration import get_cost_model
from fleetsim.calibration.opbatch import gemm_unaligned
from fleetsim.calibration.ops import AttentionOp, GemmOp
from fleetsim.hardware.catalog import get_gpu

PROFILES = Path(__file__).resolve().parents[1] / "calibration" / "profiles"


@pytest.fixture(scope="module")
def h100():  # noqa: ANN201
    gpu = get_gpu("H100-SXM")
    return gpu, get_cost_model(gpu)


def _price(h100, op):  # noqa: ANN001, ANN202
    gpu, cm = h100
    t, src = cm.op_times([op], gpu)
    return float(t[0]), src[0]


def test_attention_backward_is_the_measured_row(h100) -> None:  # noqa: ANN001
    df = pd.read_csv(PROFILES / "H100-SXM" / "attention.csv")
    r = df[(df.phase == "backward") & (df.batch == 2) & (df.q_len == 2048) & (df.num_heads == 32)
           & (df.num_kv_heads == 32) & (df.head_dim == 128)].iloc[0]
    t, src = _price(h100, AttentionOp("b", (2048, 2048), (2048, 2048), 32, 32, 128, 128, backward=True))
    assert src == "measured" and t == pytest.approx(float(r.time_s), rel=1e-6)
    fwd, _ = _price(h100, AttentionOp("f", (2048, 2048), (2048, 2048), 32, 32, 128, 128))
    assert 2.0 < t / fwd < 4.0  # 2.5x the FLOPs, similar efficiency


def test_backward_layout_gemms_use_their_table(h100) -> None:  # noqa: ANN001
    df = pd.read_csv(PROFILES / "H100-SXM" / "gemm_layout.csv")
    r = df[(df.layout == "nn") & (df.m == 4096) & (df.n == 2560) & (df.k == 7680)].iloc[0]
    t, src = _price(h100, GemmOp("qkv_dgrad", 4096, 2560, 7680, layout="nn"))
    assert src == "measured" and t == pytest.approx(float(r.time_s), rel=1e-6)
    tn, _ = _price(h100, GemmOp("qkv_dgrad", 4096, 2560, 7680))
    assert tn != t  # the forward-layout table gives another (interpolated) price


def test_unaligned_gemms_are_their_own_family(h100) -> None:  # noqa: ANN001
    assert gemm_unaligned(np.array([50257.0, 4096.0]), np.array([1024.0, 1024.0]), np.array([2.0, 2.0])).tolist() \
        == [1.0, 0.0]
    df = pd.read_csv(PROFILES / "H100-SXM" / "gemm.csv")
    r = df[(df.dtype == "bf16") & (df.m == 4096) & (df.n == 2560) & (df.k == 50257)].iloc[0]
    t, src = _price(h100, GemmOp("head_dgrad", 4096, 2560, 50257, layout="nn"))
    assert src == "measured" and t == pytest.approx(float(r.time_s), rel=1e-6)
    # an aligned neighbour is several times faster: it must not borrow the align-1 speed
    aligned, _ = _price(h100, GemmOp("x", 4096, 2560, 49152))
    assert aligned < 0.4 * t
