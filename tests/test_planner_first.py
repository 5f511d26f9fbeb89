"""The first analytic plan against hand-computed numbers on a closed-form replica."""

from __future__ import annotations

import math

import pytest
from fleetsim.hardware.errors import ConfigError
from fleetsim.planner.first_plan import (
    ReplicaTimer,
    ServingTargets,
    rank,
    size_replica,
    tp_candidates,
)


def linear_timer(kv: int = 100_000) -> ReplicaTimer:
    # P(n) = 1e-4 n s; I(b, c, k) = 10 ms + 0.2 ms * b + 0.05 ms * k
    return ReplicaTimer(lambda n: 1e-4 * n, lambda b, c, k: 0.01 + 0.0002 * b + 0.00005 * k, kv)


def test_batch_is_limited_by_tpot_target() -> None:
    t = ServingTargets(isl=1000, osl=100, tpot_s=0.05)
    b, p, d, ttft, tpot, x = size_replica(t, linear_timer())
    # k = b * 1000 / 100 = 10 b prompt tokens per iteration
    # TPOT(b) = 0.01 + 0.0002 b + 0.0005 b = 0.01 + 0.0007 b <= 0.05  ->  b = 57
    assert b == 57
    assert p == pytest.approx(0.1)
    assert d == pytest.approx(0.01 + 0.0007 * 57)
    assert tpot == pytest.approx(0.01 + 0.0007 * 57)
    assert ttft == pytest.approx(0.1 + tpot)
    assert x == pytest.approx(57 / (100 * (0.01 + 0.0007 * 57)))


def test_batch_is_limited_by_kv_cache() -> None:
    t = ServingTargets(isl=1000, osl=100)
    b, *_ = size_replica(t, linear_timer(kv=10_000))
    assert b == 10_000 // 1100


def test_unfit_and_unmet_targets_give_reasons() -> None:
    assert "KV cache" in str(size_replica(ServingTargets(isl=1000, osl=100), linear_timer(kv=500)))
    assert "TTFT" in str(size_replica(ServingTargets(isl=1000, osl=100, ttft_s=0.05), linear_timer()))
    assert "even one" in str(size_replica(ServingTargets(isl=1000, osl=100, tpot_s=0.005), linear_timer()))


def test_tp_candidates_divide_heads() -> None:
    assert tp_candidates(32, 8, 8) == [1, 2, 4, 8]
    assert tp_candidates(28, 4, 8) == [1, 2, 4]
    assert tp_candidates(25, 25, 8) == [1]


def test_bad_targets_are_named() -> None:
    with pytest.raises(ConfigError, match="isl"):
        ServingTargets(isl=0, osl=10)
    with pytest.raises(ConfigError, match="rate_rps"):
        ServingTargets(isl=10, osl=10, rate_rps=-1.0)
    with pytest.raises(ConfigError, match="tpot_s"):
        ServingTargets(isl=10, osl=10, tpot_s=math.nan)


def test_rank_orders_by_rate_then_gpus() -> None:
    from fleetsim.planner.first_plan import PlanRow

    def row(tp: int, gpus: int, tok: float, ok: bool) -> PlanRow:
        return PlanRow("X", tp, gpus // tp, gpus, 1, 1, 0, 0, 0, 0, 1, tok, True, 1, ok, None, None)

    rows = [row(1, 8, 100, False), row(2, 4, 50, True), row(4, 8, 80, True)]
    assert [r.tp for r in rank(rows, with_rate=True)] == [2, 4, 1]
    assert [r.tp for r in rank(rows, with_rate=False)] == [1, 4, 2]


def test_pipeline_engines_share_the_kv_cache_and_multiply_throughput() -> None:
    base = linear_timer()
    timer = ReplicaTimer(base.prefill_s, base.iteration_s, base.kv_capacity_tokens, engines=2)
    t = ServingTargets(isl=1000, osl=100, tpot_s=0.05)
    b, p, d, ttft, tpot, x = size_replica(t, timer)
    # per engine: KV allows 100000 // (1100 * 2) = 45 < 57 from the TPOT target
    assert b == 2 * 45
    assert tpot == pytest.approx(0.01 + 0.0007 * 45)
    assert x == pytest.approx(2 * 45 / (100 * tpot))


def test_pipeline_depths() -> None:
    from fleetsim.planner.first_plan import pipeline_depths

    assert pipeline_depths(16, 8, 126) == [1, 2]
    assert pipeline_depths(16, 1, 4) == [1, 2, 4]
    assert pipeline_depths(4, 8, 32) == []
