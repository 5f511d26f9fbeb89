"""Context and expert parallelism against closed forms with the stub cost model."""

from __future__ import annotations

import pytest
from _training_stub import COLL_BPS, GEMM_S, StubCost
from fleetsim.hardware.catalog import get_gpu
from fleetsim.sim.training.memory import stage_params
from fleetsim.workloads.models import load_model

from fleetsim.training import estimate_train_step

GPU = get_gpu("H100-SXM")


def test_context_parallel_ring_exposed_beyond_attention() -> None:
    """cp=2, attention free in the stub: the K/V ring (all-gather of cp chunks) is fully
    exposed in forward and twice in backward (dK, dV travel back); gradients are then
    all-reduced over the cp ranks (Megatron reduces over dp x cp)."""
    m = load_model("llama-3.2-1b")
    b, s, cp = 1, 8192, 2
    est = estimate_train_step(m, "2xH100-SXM", micro_batch=b, global_batch=2, seq_len=s, cp=cp, dp=1,
                              overlap_grad_reduce=False, gpu=GPU, cost_model=StubCost(), check_memory=False,
                              execution="graph")
    T = b * s // cp
    ring = 2.0 * T * m.num_kv_heads * (m.head_dim + m.value_head_dim) * cp / COLL_BPS
    per_layer = 3 * 4 * GEMM_S + 3 * ring  # qkv, attn_out, mlp_up (gate fused), mlp_down
    grads = 4.0 * m.params_total() / COLL_BPS
    assert est.time_s == pytest.approx(2 * m.num_layers * per_layer + grads, rel=1e-12)


def test_expert_parallel_all_to_all_and_gradients() -> None:
    """Mixtral with ep=2 on dp=2: per layer 5 forward GEMMs (qkv, attn_out, router, grouped
    expert up, down) and two all-to-alls of the k routed tokens each way, mirrored in
    backward; then the un-overlapped gradient all-reduce of the GPU's local parameters
    (experts halved by ep)."""
    m = load_model("mixtral-8x7b")
    est = estimate_train_step(m, "2xH100-SXM", micro_batch=1, global_batch=2, seq_len=1024, dp=2, ep=2,
                              overlap_grad_reduce=False, gpu=GPU, cost_model=StubCost(), check_memory=False,
                              execution="graph")
    T, k, h = 1024, m.num_experts_per_tok, m.hidden_size
    a2a = 2.0 * T * k * h / COLL_BPS
    per_layer = 15 * GEMM_S + 4 * a2a
    dense, expert = stage_params(est.job, 0)
    assert expert == pytest.approx(m.num_layers * m.num_experts * m.expert_params() / 2)
    grads = 4.0 * (dense + expert) / COLL_BPS
    assert est.time_s == pytest.approx(m.num_layers * per_layer + grads, rel=1e-12)
