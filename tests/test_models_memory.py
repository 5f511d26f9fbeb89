"""Memory footprint: weights, KV bytes per token, KV capacity, Korthikanti activations."""

from __future__ import annotations

from math import floor

import pytest
from fleetsim.hardware.errors import InfeasibleError
from fleetsim.workloads.memory import (
    activation_bytes_per_layer_korthikanti,
    kv_cache_bytes_per_token,
    max_kv_tokens,
    memory_breakdown,
    serving_activation_bytes,
    weight_bytes,
)
from fleetsim.workloads.models import load_model
from fleetsim.workloads.parallel import ParallelConfig


@pytest.mark.parametrize("name", ["llama-3.1-8b", "llama-3.2-1b", "gpt2", "mixtral-8x7b",
                                  "deepseek-v3", "qwen3-235b-a22b", "gemma-2-9b"])
def test_unsharded_bf16_weights_are_two_bytes_per_param(name: str) -> None:
    m = load_model(name)
    assert weight_bytes(m) == 2 * m.params_total()


def test_tp_shards_everything_but_norms() -> None:
    m = load_model("llama-3.1-70b")
    norms = (2 * m.num_layers + 1) * m.hidden_size  # replicated on every rank
    for tp in (2, 4, 8):
        got = weight_bytes(m, ParallelConfig(tp=tp))
        assert got * tp == 2 * (m.params_total() + (tp - 1) * norms)


def test_kv_projection_replicated_when_tp_exceeds_kv_heads() -> None:
    m = load_model("llama-3.1-8b")  # 32 heads, 8 KV heads of 128
    h, L = m.hidden_size, m.num_layers
    norms = (2 * L + 1) * h
    got = weight_bytes(m, ParallelConfig(tp=16))
    # each of 16 ranks holds one whole KV head: K and V projections stored twice over
    extra_kv = L * 2 * h * 128 * 8
    assert got * 16 == 2 * (m.params_total() + 15 * norms + extra_kv)
    assert kv_cache_bytes_per_token(m, ParallelConfig(tp=16)) == L * 2 * 128 * 2
    assert kv_cache_bytes_per_token(m, ParallelConfig(tp=8)) == L * 2 * 128 * 2
    assert kv_cache_bytes_per_token(m, ParallelConfig(tp=4)) == L * 2 * 2 * 128 * 2


def test_expert_parallel_splits_routed_experts_only() -> None:
    m = load_model("deepseek-v3")
    experts = m.num_moe_layers * m.num_experts * m.expert_params()
    got = weight_bytes(m, ParallelConfig(dp=8, ep=8))
    assert got == 2 * (m.params_total() - experts + experts / 8)


def test_fp8_keeps_embeddings_in_bf16() -> None:
    m = load_model("llama-3.1-8b")
    small = (2 * m.num_layers + 1) * m.hidden_size + m.embedding_params() + m.lm_head_params()
    assert weight_bytes(m, dtype="fp8") == (m.params_total() - small) * 1 + small * 2


def test_pipeline_tied_embedding_copy_on_last_stage() -> None:
    m = load_model("gpt2")
    par = ParallelConfig(pp=2)
    last = weight_bytes(m, par, stage=1)
    assert last == 2 * (6 * m.params_per_layer("dense") + m.final_norm_params()
                        + m.vocab_size * m.hidden_size)
    assert weight_bytes(m, par) == max(weight_bytes(m, par, stage=0), last)


def test_kv_bytes_per_token_published() -> None:
    # well-known figures: Llama-3.1-8B 128 KiB/token, 70B 320 KiB/token (bf16),
    # DeepSeek-V3 MLA 61 * (512 + 64) * 2 = 70,272 bytes/token
    assert kv_cache_bytes_per_token(load_model("llama-3.1-8b")) == 128 * 1024
    assert kv_cache_bytes_per_token(load_model("llama-3.1-70b")) == 320 * 1024
    assert kv_cache_bytes_per_token(load_model("llama-3.1-70b"), ParallelConfig(tp=8)) == 40 * 1024
    assert kv_cache_bytes_per_token(load_model("llama-3.1-8b"), kv_dtype="fp8") == 64 * 1024
    ds = load_model("deepseek-v3")
    assert kv_cache_bytes_per_token(ds) == 70272
    assert kv_cache_bytes_per_token(ds, ParallelConfig(tp=8)) == 70272  # latent replicated
    assert kv_cache_bytes_per_token(load_model("llama-3.1-70b"), ParallelConfig(pp=3)) == (
        27 * 2 * 8 * 128 * 2)


def test_activation_peak_by_hand() -> None:
    m = load_model("llama-3.1-8b")
    T, h = 8192, 4096
    residual = 2 * T * h * 2
    mlp = T * 3 * 14336 * 2  # gate+up output and the activation output
    logits = 2 * 256 * 128256 * 4
    assert mlp > logits
    assert serving_activation_bytes(m, max_batched_tokens=T) == residual + mlp


def test_max_kv_tokens_llama8b_h100() -> None:
    m = load_model("llama-3.1-8b")
    mem = 80e9
    act = serving_activation_bytes(m)
    want = floor((0.9 * mem - 2 * m.params_total() - act) / (128 * 1024))
    assert max_kv_tokens(m, mem) == want
    assert 400_000 < want < 450_000
    b = memory_breakdown(m, mem)
    assert b.weight_bytes + b.activation_bytes + b.kv_bytes <= b.usable_bytes


def test_does_not_fit_names_breakdown() -> None:
    with pytest.raises(InfeasibleError, match=r"weights 811\.\d+ GB .* 72\.00 GB usable"):
        max_kv_tokens(load_model("llama-3.1-405b"), 80e9)
    assert max_kv_tokens(load_model("llama-3.1-405b"), 80e9, ParallelConfig(tp=8), dtype="fp8") > 0


def test_korthikanti_formulas() -> None:
    s, b, h, a = 2048, 1, 12288, 96  # GPT-3 175B
    base = s * b * h * (34 + 5 * a * s / h)
    assert activation_bytes_per_layer_korthikanti(s, b, h, a) == base
    # eq. 2 at t=1 reduces to eq. 1
    assert activation_bytes_per_layer_korthikanti(s, b, h, a, t=1) == base
    t = 8
    assert activation_bytes_per_layer_korthikanti(s, b, h, a, t) == pytest.approx(
        s * b * h * (10 + 24 / t + 5 * a * s / (h * t)))
    assert activation_bytes_per_layer_korthikanti(s, b, h, a, t, sp=True) == pytest.approx(base / t)
    assert activation_bytes_per_layer_korthikanti(s, b, h, a, t, sp=True, recompute="selective") == (
        pytest.approx(34 * s * b * h / t))
    assert activation_bytes_per_layer_korthikanti(s, b, h, a, t, recompute="full") == 2 * s * b * h
    # the paper: selective recompute + SP cuts activation memory ~5x vs tensor parallel alone
    ratio = (activation_bytes_per_layer_korthikanti(s, b, h, a, t)
             / activation_bytes_per_layer_korthikanti(s, b, h, a, t, sp=True, recompute="selective"))
    assert 4.5 < ratio < 6.5
