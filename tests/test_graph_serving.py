"""Serving op graphs against closed-form FLOP/byte counts and sharding rules."""

from __future__ import annotations

import pytest
from fleetsim.calibration.ops import AttentionOp, CollectiveOp, GemmOp
from fleetsim.hardware.errors import ConfigError, InfeasibleError
from fleetsim.workloads.graph import matmul_flops, serving_step_ops, step_flops
from fleetsim.workloads.models import load_model
from fleetsim.workloads.parallel import ParallelConfig, Seq
from hypothesis import given, settings
from hypothesis import strategies as st


def _attn_flops(ops: list) -> float:
    return sum(o.flops * o.count for o in ops if isinstance(o, AttentionOp))


def _by_name(ops: list, name: str) -> list:
    return [o for o in ops if o.name == name]


def test_llama8b_prefill_forward_flops_closed_form() -> None:
    # Forward matmul FLOPs = 2 * (weights touched per token) * tokens + attention term.
    m = load_model("llama-3.1-8b")
    s, L, h, V = 1000, 32, 4096, 128256
    per_layer_weights = 2 * h * h + 2 * h * 1024 + 3 * h * 14336
    gemm = 2 * L * per_layer_weights * s + 2 * h * V * 1  # LM head for the one emitted token
    attn = L * 2 * 32 * (128 + 128) * (s * (s + 1) / 2)  # causal pairs s(s+1)/2
    ops = serving_step_ops(m, [Seq(s)])
    assert matmul_flops(ops) == pytest.approx(gemm + attn, rel=1e-12)
    assert _attn_flops(ops) == pytest.approx(attn, rel=1e-12)
    # elementwise work is a small addition on top
    assert 0 < step_flops(ops) - matmul_flops(ops) < 0.01 * matmul_flops(ops)


def test_decode_gemm_bytes_equal_weight_bytes() -> None:
    # One decode token reads every matmul weight once: GEMM weight traffic = 2 bytes * params
    # outside the embedding table and norms.
    m = load_model("llama-3.1-8b")
    ops = serving_step_ops(m, [Seq(1, context=10)])
    w = sum(o.k * o.n * 2 * o.count for o in ops if isinstance(o, GemmOp))
    norms = (2 * m.num_layers + 1) * m.hidden_size
    assert w == 2 * (m.params_total() - m.embedding_params() - norms)


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_tp_divides_gemm_dims_and_flops(tp: int) -> None:
    m = load_model("llama-3.1-70b")
    batch = [Seq(300), Seq(1, 500), Seq(1, 4000)]
    one = serving_step_ops(m, batch)
    sh = serving_step_ops(m, batch, ParallelConfig(tp=tp))
    for col in ("qkv_proj", "gate_up_proj", "lm_head"):
        assert _by_name(sh, col)[0].n * tp == _by_name(one, col)[0].n
    for row in ("o_proj", "down_proj"):
        assert _by_name(sh, row)[0].k * tp == _by_name(one, row)[0].k
    assert matmul_flops(sh) * tp == pytest.approx(matmul_flops(one), rel=1e-12)


def test_collectives_iff_tp() -> None:
    m = load_model("qwen2.5-7b")
    batch = [Seq(64), Seq(1, 10)]
    assert not any(isinstance(o, CollectiveOp) for o in serving_step_ops(m, batch))
    ops = serving_step_ops(m, batch, ParallelConfig(tp=4))
    ar = [o for o in ops if isinstance(o, CollectiveOp) and o.kind == "all_reduce"]
    # two per layer plus the vocab-parallel embedding; bytes = tokens * hidden * 2
    assert sum(o.count for o in ar) == 2 * m.num_layers + 1
    assert all(o.bytes == 65 * m.hidden_size * 2 and o.group_size == 4 for o in ar)


def test_kv_heads_replicated_when_tp_exceeds_them() -> None:
    m = load_model("qwen2.5-7b")  # 28 heads, 4 KV heads
    ops = serving_step_ops(m, [Seq(16)], ParallelConfig(tp=4))
    a = _by_name(ops, "attn_prefill")[0]
    assert (a.num_heads, a.num_kv_heads) == (7, 1)
    with pytest.raises(InfeasibleError, match="tp=3"):
        serving_step_ops(m, [Seq(16)], ParallelConfig(tp=3))


def test_lm_head_only_for_emitting_sequences() -> None:
    m = load_model("llama-3.2-1b")
    ops = serving_step_ops(m, [Seq(256, emits_token=False), Seq(1, 50), Seq(1, 70)])
    assert _by_name(ops, "lm_head")[0].m == 2
    ops = serving_step_ops(m, [Seq(256, emits_token=False)])
    assert not _by_name(ops, "lm_head")


def test_prefill_and_decode_attention_split() -> None:
    m = load_model("llama-3.1-8b")
    ops = serving_step_ops(m, [Seq(100, context=400), Seq(1, 9), Seq(1, 99)])
    pre, dec = _by_name(ops, "attn_prefill")[0], _by_name(ops, "attn_decode")[0]
    assert (pre.q_lens, pre.kv_lens) == ((100,), (500,))
    assert (dec.q_lens, dec.kv_lens, dec.phase) == ((1, 1), (10, 100), "decode")
    assert pre.count == dec.count == 32
    assert _by_name(ops, "qkv_proj")[0].m == 102


def test_moe_flops_match_active_params() -> None:
    # Uniform routing with T*k divisible by E: routed-expert FLOPs = 2 * T * k * expert params.
    for name, T in (("mixtral-8x7b", 512), ("qwen3-235b-a22b", 256), ("deepseek-v3", 256)):
        m = load_model(name)
        ops = serving_step_ops(m, [Seq(T)])
        lm = 2 * m.hidden_size * m.vocab_size
        mla_norms = (m.q_lora_rank or 0) + (m.kv_lora_rank or 0)
        per_tok = sum(
            n * (m.active_params_per_layer(kind) - m.layer_norm_params() - mla_norms
                 - (2 * m.head_dim if m.qk_norm else 0)
                 - (m.num_experts if m.router_bias and kind == "moe" else 0))
            for kind, n in (("dense", m.num_dense_layers), ("moe", m.num_moe_layers)))
        got = matmul_flops(ops) - _attn_flops(ops) - lm
        assert got == pytest.approx(2 * T * per_tok, rel=1e-12), name


def test_expert_parallel_shards_experts_and_adds_all_to_all() -> None:
    m = load_model("qwen3-235b-a22b")
    ops = serving_step_ops(m, [Seq(1, 100)] * 64, ParallelConfig(tp=4, dp=2, ep=8))
    g = _by_name(ops, "expert_gate_up_proj")[0]
    assert g.batch == 16 and g.n == 2 * 1536  # experts 128/8, ffn unsplit under EP
    assert g.m == -(-64 * 8 * 2 // 128)  # tokens of 8/4 = 2 TP groups, top-8 of 128
    a2a = [o for o in ops if isinstance(o, CollectiveOp) and o.kind == "all_to_all"]
    assert {o.name for o in a2a} == {"ep_dispatch", "ep_combine"}
    assert all(o.group_size == 8 and o.bytes == 16 * 8 * 4096 * 2 for o in a2a)
    assert not any(o.kind == "all_to_all" for o in serving_step_ops(
        m, [Seq(8)], ParallelConfig(tp=4)) if isinstance(o, CollectiveOp))


def test_mla_prefill_and_absorbed_decode() -> None:
    m = load_model("deepseek-v3")
    ops = serving_step_ops(m, [Seq(64, context=192), Seq(1, 1000)], ParallelConfig(tp=8))
    pre = [o for o in _by_name(ops, "attn_prefill")]
    dec = [o for o in _by_name(ops, "attn_decode")]
    assert sum(o.count for o in pre) == 61 and pre[0].num_heads == 16
    assert (pre[0].head_dim, pre[0].v_head_dim) == (192, 128)
    assert (dec[0].num_kv_heads, dec[0].head_dim, dec[0].v_head_dim) == (1, 576, 512)
    kvb = _by_name(ops, "kv_b_proj")[0]
    assert kvb.m == 256 and kvb.n == 16 * 256  # up-project every prefill key
    assert _by_name(ops, "kv_a_proj")[0].n == 576  # latent projection replicated across TP


def _brute_window_pairs(q: int, c: int, w: int) -> int:
    return sum(min(c + j + 1, w) for j in range(q))


@pytest.mark.parametrize("q,c", [(5000, 0), (3000, 2000), (100, 4000), (4096, 0), (10, 50)])
def test_gemma2_local_layers_window_pairs_exact(q: int, c: int) -> None:
    m = load_model("gemma-2-9b")
    ops = serving_step_ops(m, [Seq(q, context=c)])
    att = [o for o in ops if isinstance(o, AttentionOp)]
    local = [o for o in att if o.count == 21 and o is att[0]][0]
    glob = att[-1]
    # the windowed chunk is a non-causal op with ceil(pairs / q) keys per query
    assert 0 <= local.score_pairs - _brute_window_pairs(q, c, 4096) < q
    assert glob.score_pairs == _brute_window_pairs(q, c, 10**9)


def test_gemma2_decode_kv_capped() -> None:
    m = load_model("gemma-2-9b")
    ops = serving_step_ops(m, [Seq(1, 9000)])
    kv = sorted(o.kv_lens[0] for o in ops if isinstance(o, AttentionOp))
    assert kv == [4096, 9001]


def test_pipeline_stages_partition_layers() -> None:
    m = load_model("llama-3.1-70b")
    par = ParallelConfig(pp=3)
    layers = 0
    for stage in range(3):
        ops = serving_step_ops(m, [Seq(32)], par, stage=stage)
        layers += _by_name(ops, "qkv_proj")[0].count
        assert bool(_by_name(ops, "embedding")) == (stage == 0)
        assert bool(_by_name(ops, "lm_head")) == (stage == 2)
        assert bool(_by_name(ops, "pp_send")) == (stage < 2)
    assert layers == 80
    with pytest.raises(ConfigError, match="stage"):
        serving_step_ops(m, [Seq(32)], par)
    split = ParallelConfig(pp=2, layer_split=(50, 30))
    assert _by_name(serving_step_ops(m, [Seq(4)], split, stage=1), "qkv_proj")[0].count == 30
    with pytest.raises(ConfigError, match="sums to 70"):
        serving_step_ops(m, [Seq(4)], ParallelConfig(pp=2, layer_split=(40, 30)), stage=0)


def test_fp8_weights_and_kv() -> None:
    m = load_model("llama-3.1-8b")
    ops = serving_step_ops(m, [Seq(1, 100)], dtype="fp8", kv_dtype="fp8")
    assert _by_name(ops, "qkv_proj")[0].dtype == "fp8"
    a = _by_name(ops, "attn_decode")[0]
    assert (a.dtype, a.kv_dtype) == ("bf16", "fp8")
    with pytest.raises(ConfigError, match="dtype"):
        serving_step_ops(m, [Seq(1, 100)], dtype="fp9")


def test_serving_rejects_cp_and_sp() -> None:
    m = load_model("llama-3.1-8b")
    with pytest.raises(ConfigError, match="cp=2"):
        serving_step_ops(m, [Seq(4)], ParallelConfig(cp=2))
    with pytest.raises(ConfigError, match="sequence_parallel=True"):
        serving_step_ops(m, [Seq(4)], ParallelConfig(tp=2, sequence_parallel=True))


def test_empty_batch_and_bad_seq() -> None:
    m = load_model("gpt2")
    assert serving_step_ops(m, []) == []
    with pytest.raises(ConfigError, match="new_tokens"):
        Seq(0)


def test_gpt2_has_learned_positions_and_no_rotary() -> None:
    ops = serving_step_ops(load_model("gpt2"), [Seq(8)])
    names = {o.name for o in ops}
    assert "pos_embedding_add" in names and "rotary" not in names and "fc1" in names


_seqs = st.lists(st.tuples(st.integers(1, 600), st.integers(0, 5000), st.booleans()),
                 min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(_seqs, st.sampled_from(["llama-3.1-8b", "mixtral-8x7b", "gemma-2-9b", "deepseek-v3"]),
       st.sampled_from([1, 2, 4]))
def test_random_batches_conserve_tokens_and_shard_flops(seqs: list, name: str, tp: int) -> None:
    m = load_model(name)
    batch = [Seq(q, c, e) for q, c, e in seqs]
    T = sum(q for q, _, _ in seqs)
    ops = serving_step_ops(m, batch, ParallelConfig(tp=tp))
    # every query token is attended once per layer
    layers = sum(o.count for o in ops if o.name in ("input_norm",))
    q_tok = sum(sum(o.q_lens) * o.count for o in ops if isinstance(o, AttentionOp))
    assert layers == m.num_layers and q_tok == T * m.num_layers
    assert all(o.m == T for o in ops if o.name in ("o_proj", "router"))
    emit = sum(e for _, _, e in seqs)
    assert sum(o.m for o in ops if o.name == "lm_head") == emit
    # TP splits the work of everything but replicated latent projections and the router
    one = serving_step_ops(m, batch)
    rep = {"router", "q_a_proj", "kv_a_proj", "shared_expert_gate"}
    f1 = sum(o.flops * o.count for o in one if isinstance(o, GemmOp | AttentionOp) and o.name not in rep)
    ft = sum(o.flops * o.count for o in ops if isinstance(o, GemmOp | AttentionOp) and o.name not in rep)
    assert ft * tp == pytest.approx(f1, rel=1e-9)


def test_small_decode_batches_touch_only_some_experts() -> None:
    """Expected active experts under uniform top-k routing: E (1 - (1 - k/E)^T)."""
    from fleetsim.calibration.ops import GemmOp
    from fleetsim.workloads.graph import serving_step_ops
    from fleetsim.workloads.models import load_model
    from fleetsim.workloads.parallel import ParallelConfig, Seq

    ds = load_model("deepseek-v3")  # 256 routed experts, top-8
    for batch, active in ((1, 8), (4, round(256 * (1 - (248 / 256) ** 4))), (512, 256)):
        ops = serving_step_ops(ds, [Seq(1, 1000)] * batch, ParallelConfig(tp=8))
        up = next(op for op in ops if isinstance(op, GemmOp) and op.name == "expert_gate_up_proj")
        assert up.batch == active
        assert up.batch * up.m >= batch * 8  # every routed row is computed
