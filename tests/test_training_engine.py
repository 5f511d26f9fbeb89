"""The SimPy step engine against closed forms where both apply, contention arithmetic and
determinism."""

from __future__ import annotations

import pandas as pd
import pytest
import simpy
from _training_stub import COLL_BPS, GEMM_S, StubCost
from fleetsim.hardware.catalog import get_gpu
from fleetsim.sim.training.engine import EngineSpec, _Gpu
from fleetsim.workloads.models import load_model

from fleetsim.training import estimate_train_step

GPU = get_gpu("H100-SXM")
MODEL = load_model("gpt2-medium")
P = MODEL.params_total()
LAYER_S = 12 * GEMM_S  # 4 forward + 8 backward GEMMs


def _est(**kw: object):
    base: dict[str, object] = dict(micro_batch=2, global_batch=8, seq_len=1024, gpu=GPU,
                                   cost_model=StubCost(), check_memory=False,
                                   execution="graph")  # device-time closed forms
    cluster = kw.pop("cluster", "2xH100-SXM")
    base.update(kw)
    return estimate_train_step(MODEL, cluster, **base)  # type: ignore[arg-type]


def test_unoverlapped_allreduce_adds_exactly() -> None:
    """dp=2, no overlap: step = m * L * (t_f + t_b) + (fp32 gradients) / bandwidth."""
    est = _est(dp=2, overlap_grad_reduce=False)
    m = 8 // (2 * 2)
    assert est.time_s == pytest.approx(m * 24 * LAYER_S + 4 * P / COLL_BPS, rel=1e-12)
    assert est.exposed_comm_s == pytest.approx(4 * P / COLL_BPS, rel=1e-9)


def test_zero1_adds_parameter_allgather() -> None:
    """ZeRO-1 swaps the all-reduce for a reduce-scatter (same stub price) and adds the
    all-gather of the 16-bit weights after the optimizer: + 2 P / bandwidth."""
    z0 = _est(dp=2, overlap_grad_reduce=False)
    z1 = _est(dp=2, overlap_grad_reduce=False, zero=1)
    assert z1.time_s - z0.time_s == pytest.approx(2 * P / COLL_BPS, rel=1e-9)


def test_overlap_hides_part_of_the_reduction() -> None:
    no = _est(dp=2, overlap_grad_reduce=False)
    yes = _est(dp=2, overlap_grad_reduce=True)
    compute = 2 * 24 * LAYER_S
    assert compute < yes.time_s < no.time_s
    # buckets issued during the last backward: at least the last bucket stays exposed
    tl = yes.timeline
    comm = tl[tl.stream == "comm"]
    assert len(comm) >= 2
    assert yes.time_s == pytest.approx(comm.end_s.max(), rel=1e-12)


def test_tensor_parallel_collectives_on_the_critical_path() -> None:
    """tp=2 without SP: two all-reduces of 2 T h bytes per layer in forward and in backward,
    plus the vocab-parallel embedding (forward) and LM-head input (forward and backward)."""
    est = _est(tp=2, dp=1)
    T, h = 2 * 1024, MODEL.hidden_size
    ar = 2 * T * h / COLL_BPS
    per_mb = 24 * (LAYER_S + 4 * ar) + 3 * ar
    assert est.time_s == pytest.approx(4 * per_mb, rel=1e-12)
    assert est.result.tp_comm_s == pytest.approx(4 * 24 * 4 * ar, rel=1e-12)


def test_zero3_gathers_every_unit_twice_per_microbatch() -> None:
    est = _est(dp=2, zero=3)
    tl = est.timeline
    gathers = tl[(tl.stream == "comm") & (tl.name == "param_all_gather")]
    units = 16  # 24 layers in at most 16 units
    assert len(gathers) == 2 * 2 * units
    assert est.time_s > 2 * 24 * LAYER_S


def test_contention_integral() -> None:
    """Compute of 2 s from t = 0.5 with comm busy on [1, 2] at slowdown 1 (half rate): 0.5 s
    at full rate, 1 s of wall time for 0.5 s of work, then 1 s: ends at 3."""
    env = simpy.Environment()
    spec = EngineSpec(p=1, v=1, m=1, orders=[[]], units=[[[]]], p2p_s=0.0, dp_reduce=None, comm_slowdown=1.0)
    g = _Gpu(env, 0, spec, [])
    g.comm_starts, g.comm_ends = [1.0], [2.0]
    assert g.compute_end(0.5, 2.0) == pytest.approx(3.0)
    assert g.compute_end(2.5, 1.0) == pytest.approx(3.5)
    assert g.compute_end(0.0, 0.5) == pytest.approx(0.5)
    assert g.compute_end(1.5, 0.25) == pytest.approx(2.0)


def test_comm_slowdown_stretches_overlapped_compute() -> None:
    """With fast links the last backward is on the critical path; slowing it while the
    buckets reduce lengthens the step by exactly the contention time."""
    from fleetsim.sim.training.step import simulate_step

    cost = StubCost(coll_bps=1e12)
    fast = simulate_step(_est(dp=2).job, GPU, cost, comm_slowdown=0.0)
    slow = simulate_step(fast.job, GPU, cost, comm_slowdown=0.5)
    contention = slow.engine.stages[0].contention_s
    assert contention > 0
    assert fast.engine.stages[0].contention_s == pytest.approx(0.0, abs=1e-12)
    last_comm_fast = max(e[4] for e in fast.engine.events if e[1] == "comm")
    last_comm_slow = max(e[4] for e in slow.engine.events if e[1] == "comm")
    compute_end_fast = max(e[4] for e in fast.engine.events if e[1] == "compute")
    compute_end_slow = max(e[4] for e in slow.engine.events if e[1] == "compute")
    assert compute_end_slow - compute_end_fast == pytest.approx(contention, rel=1e-9)
    assert slow.step_s == pytest.approx(max(last_comm_slow, compute_end_slow), rel=1e-12)
    assert fast.step_s == pytest.approx(max(last_comm_fast, compute_end_fast), rel=1e-12)


def test_deterministic() -> None:
    a = _est(pp=2, dp=1, zero=0)
    b = _est(pp=2, dp=1, zero=0)
    pd.testing.assert_frame_equal(a.timeline, b.timeline)
    assert a.time_s == b.time_s


def test_optimizer_offload_closed_form() -> None:
    """ZeRO-Offload: the CPU Adam step streams 30 bytes per local parameter (fp32 master and
    moments in and out: 24, fp32 gradient in: 4, 16-bit weight out: 2) through the host
    memory's bandwidth shared by the node's GPUs; NVMe adds 24 bytes per parameter of
    optimizer state in and out. Copies cost nothing in the stub."""
    from fleetsim.hardware.catalog import get_memory_tier
    from fleetsim.sim.training.step import HOST_MEMORY_TIER

    base = _est(dp=2, zero=1, overlap_grad_reduce=False)
    cpu = _est(dp=2, zero=1, overlap_grad_reduce=False, offload_optimizer="cpu")
    nvme = _est(dp=2, zero=1, overlap_grad_reduce=False, offload_optimizer="nvme")
    pool = base.job.cluster.pools[0]
    per_node = pool.gpus_per_node or pool.node.gpus_per_node
    n = P / 2
    ddr = get_memory_tier(HOST_MEMORY_TIER).bandwidth_bps / per_node
    assert cpu.time_s - base.time_s == pytest.approx(n * 30 / ddr, rel=1e-9)
    nv = pool.node.nvme_bw_bps / per_node
    assert nvme.time_s - cpu.time_s == pytest.approx(n * 24 / nv, rel=1e-9)


def test_zero3_waits_are_not_bubble() -> None:
    est = _est(dp=2, zero=3, cost_model=StubCost(coll_bps=1e8))
    assert est.bubble_fraction == 0.0
    assert est.exposed_comm_s > 0


def test_param_offload_to_nvme_adds_the_shard_reads() -> None:
    """ZeRO-Infinity: each unit's weight shard is read from NVMe (bandwidth shared by the
    node's GPUs) before its all-gather; with the gathers exposed the step grows by at least
    the forward and backward shard reads of one micro-batch's first unit."""
    base = _est(dp=2, zero=3, cost_model=StubCost(coll_bps=1e8))
    nvme = _est(dp=2, zero=3, offload_params="nvme", cost_model=StubCost(coll_bps=1e8))
    fsdp = _est(dp=2, fsdp=True, cost_model=StubCost(coll_bps=1e8))
    assert fsdp.time_s == base.time_s
    assert nvme.time_s > base.time_s
    assert nvme.result.memory[0].weights_bytes == 0.0
    assert nvme.result.memory[0].nvme_bytes > 0


def test_training_prices_kernels_at_burst_times() -> None:
    """A profile's sustained-load ratios do not scale training kernels (docs/training.md:
    measured steps ran at burst prices); ``kernel_factor`` scales every kernel uniformly."""
    from fleetsim.sim.training.step import simulate_step

    from fleetsim.training import build_train_job

    class Sustained(StubCost):
        def sustained_ratios(self, ops, gpu):  # noqa: ANN001, ANN201
            return [1.5] * len(ops)

    job = build_train_job(MODEL, "1xH100-SXM", None, 2, 4, 1024, dp=1, execution="graph")
    a = simulate_step(job, GPU, StubCost(), record=False, check_memory=False)
    b = simulate_step(job, GPU, Sustained(), record=False, check_memory=False)
    c = simulate_step(job, GPU, StubCost(), record=False, check_memory=False, kernel_factor=2.0)
    assert b.step_s == a.step_s
    assert c.step_s == pytest.approx(2.0 * a.step_s, rel=1e-9)
