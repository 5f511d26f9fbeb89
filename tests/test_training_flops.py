"""Training FLOPs against Narayanan et al. 2021 eq. 3 and MFU/HFU bookkeeping."""

from __future__ import annotations

import pytest
from _training_stub import StubCost
from fleetsim.hardware.catalog import get_gpu
from fleetsim.sim.training.flops import hardware_flops, model_flops
from fleetsim.workloads.models import load_model

from fleetsim.training import estimate_train_step
from fleetsim.training_validate import megatron_gpt


def eq3(B: int, s: int, L: int, h: int, V: int) -> float:
    """72 B s L h^2 (1 + s/(6h) + V/(12 h L))."""
    return 72 * B * s * L * h * h * (1 + s / (6 * h) + V / (12 * h * L))


def eq3_recompute(B: int, s: int, L: int, h: int, V: int) -> float:
    """96 B s L h^2 (1 + s/(6h) + V/(16 h L)): full activation recomputation."""
    return 96 * B * s * L * h * h * (1 + s / (6 * h) + V / (16 * h * L))


@pytest.mark.parametrize(("L", "h", "a", "s", "V", "B"), [
    (96, 12288, 96, 2048, 51200, 1536),  # GPT-3 175B (Narayanan table 1 row)
    (128, 25600, 160, 2048, 51200, 3072),  # 1T
    (24, 1024, 16, 1024, 50257, 32),
])
def test_model_flops_eq3(L: int, h: int, a: int, s: int, V: int, B: int) -> None:
    m = load_model(megatron_gpt("g", L, h, a, 4 * h, V, s))
    assert model_flops(m, B, s) == pytest.approx(eq3(B, s, L, h, V), rel=1e-12)
    assert hardware_flops(m, B, s, "full") == pytest.approx(eq3_recompute(B, s, L, h, V), rel=1e-12)
    assert hardware_flops(m, B, s, "none") == model_flops(m, B, s)
    sel = hardware_flops(m, B, s, "selective") - model_flops(m, B, s)
    assert sel == pytest.approx(4 * B * s * s * h * L, rel=1e-12)  # attention forward once more


def test_gqa_swiglu_matmul_count() -> None:
    """Llama-3.1-8B: 2 x (q, k, v, o, gate, up, down weights) per token per layer."""
    m = load_model("llama-3.1-8b")
    h, f, kv = m.hidden_size, m.intermediate_size, m.num_kv_heads * m.head_dim
    per_layer = 2 * (h * h + 2 * h * kv + h * h + 3 * h * f) + 4 * 4096 * h
    want = 3 * 4096 * (m.num_layers * per_layer + 2 * h * m.vocab_size)
    assert model_flops(m, 1, 4096) == pytest.approx(want, rel=1e-12)


def test_mfu_definition() -> None:
    gpu = get_gpu("H100-SXM")
    est = estimate_train_step("gpt2-medium", "2xH100-SXM", micro_batch=4, global_batch=16, seq_len=1024,
                              recompute="full", gpu=gpu, cost_model=StubCost(), check_memory=False)
    mf = model_flops(est.job.model, 16, 1024)
    assert est.mfu == pytest.approx(mf / (est.time_s * 2 * gpu.flops("bf16")), rel=1e-12)
    assert est.hfu > est.mfu
    assert est.tokens_per_s == pytest.approx(16 * 1024 / est.time_s)
