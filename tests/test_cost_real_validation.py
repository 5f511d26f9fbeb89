"""The committed H100/H200 calibration profiles against the committed ground truth.

Targets (brief): held-out operators median error <= 5 %, whole-forward MAPE <= 5 % on the
GPU's own profile, <= 15 % for H200 predicted from the H100 profile. Where a target is
missed the measured gap is pinned as a regression bound and its cause is stated (see
docs/cost_model.md, "Validation").
"""

from __future__ import annotations

import pytest
from fleetsim.calibration.measured import PROFILE_ROOT

from fleetsim.validate_forward import (
    VALIDATION_ROOT,
    forward_rows,
    heldout_rows,
    summarize_forward,
    summarize_heldout,
)

HAVE = all((VALIDATION_ROOT / g / "forward.csv").exists() and (PROFILE_ROOT / g / "gemm.csv").exists()
           for g in ("H100-SXM", "H200-SXM"))
pytestmark = pytest.mark.skipif(not HAVE, reason="committed H100/H200 profiles or validation data absent")


@pytest.fixture(scope="module")
def forward() -> dict[tuple[str, str, str], float]:
    s = summarize_forward(forward_rows())
    s = s[s["graph"] == "reference"]
    return {(r.gpu, r.predictor, r.mode): float(r.mape) for r in s.itertuples()}


@pytest.fixture(scope="module")
def ops() -> dict[tuple[str, str, str], float]:
    s = summarize_heldout(heldout_rows())
    return {(r.gpu, r.predictor, r.kind): float(r.median_err) for r in s.itertuples()}


def test_heldout_gemm_meets_target(ops: dict) -> None:
    assert ops[("H100-SXM", "own", "gemm")] <= 0.05
    assert ops[("H200-SXM", "own", "gemm")] <= 0.05


def test_heldout_attention(ops: dict) -> None:
    assert ops[("H200-SXM", "own", "attention")] <= 0.05
    # H100: 6.1 % (target 5 %): 9 points, chunked prefill at q 768 / kv 3000 and small
    # GQA decodes off the measured grid dominate (the half-octave chunked grid,
    # ``--only attention_dense``, is not yet measured)
    assert ops[("H100-SXM", "own", "attention")] <= 0.065


def test_graph_decode(forward: dict) -> None:
    assert forward[("H100-SXM", "own", "decode_graph")] <= 0.05
    # H200 includes TP=2 rows whose in-graph all-reduces cost more than the profiled ones
    assert forward[("H200-SXM", "own", "decode_graph")] <= 0.065


def test_cross_gpu_h200_from_h100_profile(forward: dict) -> None:
    assert forward[("H200-SXM", "cross:H100-SXM", "decode_graph")] <= 0.15
    assert forward[("H200-SXM", "cross:H100-SXM", "prefill_eager")] <= 0.15


def test_eager_prefill_gap_is_pinned(forward: dict) -> None:
    # target 5 % missed: with the measured host_dispatch.csv (2026-11-22) the H100 eager
    # prefill MAPE is 6.3 % (was 9.7 % on the launch interval alone); the H200's is 11.4 %,
    # driven by short host-bound prompts (max error 51 %) whose host time varies between
    # machines of the kind (calibration/validation/*/repeat: up to 53 % on training steps).
    assert forward[("H100-SXM", "own", "prefill_eager")] <= 0.07
    assert forward[("H200-SXM", "own", "prefill_eager")] <= 0.12
