"""Pipeline schedules against closed forms: bubble (p-1)/m for GPipe and 1F1B, (p-1)/(v m)
for interleaved 1F1B, step time (m + p - 1)(t_f + t_b) for uniform stages without
communication, and the in-flight micro-batches that bound activation memory."""

from __future__ import annotations

import pytest
from _training_stub import GEMM_S, StubCost
from fleetsim.hardware.catalog import get_gpu
from fleetsim.sim.training.schedule import max_in_flight, stage_orders

from fleetsim.training import estimate_train_step

GPU = get_gpu("H100-SXM")
# gpt2-medium: 24 layers; per layer 4 forward GEMMs (qkv, attn_out, mlp_up, mlp_down)
T_F_LAYER = 4 * GEMM_S
T_B_LAYER = 8 * GEMM_S


def _run(p: int, m: int, schedule: str, v: int = 1):
    return estimate_train_step(
        "gpt2-medium", f"{p}xH100-SXM", micro_batch=1, global_batch=m, seq_len=1024, pp=p, dp=1,
        vpp=v, schedule=schedule, gpu=GPU, cost_model=StubCost(coll_bps=None), check_memory=False,
        execution="graph",  # device-time closed forms: no host dispatch term
    )


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize(("p", "m"), [(2, 4), (4, 8), (4, 16), (8, 8), (3, 7)])
def test_bubble_gpipe_1f1b(schedule: str, p: int, m: int) -> None:
    if 24 % p:
        pytest.skip("layers must divide")
    est = _run(p, m, schedule)
    layers = 24 // p
    tf, tb = layers * T_F_LAYER, layers * T_B_LAYER
    assert est.bubble_fraction == pytest.approx((p - 1) / m, rel=1e-9)
    assert est.time_s == pytest.approx((m + p - 1) * (tf + tb), rel=1e-9)


@pytest.mark.parametrize(("p", "v", "m"), [(2, 2, 4), (4, 2, 8), (4, 3, 8), (2, 3, 6), (4, 2, 16)])
def test_bubble_interleaved(p: int, v: int, m: int) -> None:
    est = _run(p, m, "interleaved", v)
    layers = 24 // p
    tf, tb = layers * T_F_LAYER, layers * T_B_LAYER
    assert est.bubble_fraction == pytest.approx((p - 1) / (v * m), rel=1e-9)
    assert est.time_s == pytest.approx(m * (tf + tb) + (p - 1) * (tf + tb) / v, rel=1e-9)


def test_one_stage_has_no_bubble() -> None:
    est = _run(1, 5, "1f1b")
    assert est.bubble_fraction == 0.0
    assert est.time_s == pytest.approx(5 * 24 * (T_F_LAYER + T_B_LAYER), rel=1e-12)


@pytest.mark.parametrize(("p", "m"), [(4, 8), (4, 2), (8, 16)])
def test_in_flight_counts(p: int, m: int) -> None:
    g = stage_orders("gpipe", p, m)
    o = stage_orders("1f1b", p, m)
    for s in range(p):
        assert max_in_flight(g[s]) == m
        assert max_in_flight(o[s]) == min(p - s, m)


@pytest.mark.parametrize(("p", "v", "m"), [(4, 2, 8), (8, 3, 64), (35, 3, 280)])
def test_interleaved_in_flight_matches_korthikanti(p: int, v: int, m: int) -> None:
    """Stage 0 holds L (1 + (p-1)/(p v)) layers' activations (Korthikanti et al. sec. 4.2.3):
    in chunks of L/(p v) layers that is p v + p - 1 chunks."""
    order = stage_orders("interleaved", p, m, v)[0]
    assert max_in_flight(order) == p * v + p - 1


@pytest.mark.parametrize("schedule,v", [("gpipe", 1), ("1f1b", 1), ("interleaved", 2)])
def test_every_action_once(schedule: str, v: int) -> None:
    p, m = 4, 8
    for order in stage_orders(schedule, p, m, v):
        fs = sorted((a.micro_batch, a.chunk) for a in order if a.kind == "F")
        bs = sorted((a.micro_batch, a.chunk) for a in order if a.kind == "B")
        assert fs == bs == sorted((i, c) for i in range(m) for c in range(v))


def test_uneven_split_imbalance_emerges() -> None:
    """layer_split (8, 16): the heavier stage 1 bounds the step: it starts after stage 0's
    first forward (8 layers), then computes back to back, and stage 0 ends with the last
    backward of its 8 layers. The idle of stage 0 is the imbalance, m * 8 layers."""
    m = 6
    est = estimate_train_step(
        "gpt2-medium", "2xH100-SXM", {"pp": 2, "dp": 1, "layer_split": (8, 16)}, micro_batch=1,
        global_batch=m, seq_len=1024, gpu=GPU, cost_model=StubCost(coll_bps=None), check_memory=False,
        execution="graph",
    )
    layer = T_F_LAYER + T_B_LAYER
    assert est.breakdown["stage_imbalance_s"] == pytest.approx(m * 8 * layer, rel=1e-12)
    assert est.time_s >= m * 16 * layer
    # stage 1 waits only for the first activation (8 layers' forward): no bubble after it
    assert est.time_s == pytest.approx(8 * T_F_LAYER + m * 16 * layer + 8 * T_B_LAYER, rel=1e-12)
