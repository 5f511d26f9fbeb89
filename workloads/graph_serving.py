"""Operators one GPU runs for one serving iteration (continuous batching, chunked prefill).

The batch mixes prefill chunks and decodes (``Seq(new_tokens, context)``). Token-parallel
operators (GEMMs, norms, collectives) see all T new tokens at once; attention is one op for
the prefill sequences and one for the decodes, each with their own q/kv lengths. Identical
layers are grouped with ``count``. What is modelled, per layer (vLLM-style kernels):

* norm with the residual add fused in (``add_rmsnorm``), QKV GEMM (N = (H + 2 KV) hd / tp;
  KV heads replicated when tp > KV), q/k norm (Qwen3), rotary, KV-cache write, attention,
  output GEMM (K = H vhd / tp), TP all-reduce of T*h activations; MLP gate+up (N = 2 ffn / tp),
  activation, down, all-reduce. Gemma2 adds its post-attention/post-MLP norms.
* MoE: router GEMM, top-k softmax, permute, grouped expert GEMMs (batch = local experts,
  M = ceil(T k / E) under uniform routing), unpermute/reduce, shared experts, EP dispatch and
  combine all-to-alls when ep > 1 (each TP rank dispatches T/tp tokens).
* MLA (DeepSeek): q_a/q_b (or q) and kv_a projections (latent ones replicated across TP);
  prefill runs MHA after up-projecting the cached latent of every prefill key with kv_b
  (head_dim = nope + rope, v_head_dim); decode runs the absorbed form: W_UK folded into the
  query (batched GEMM), MQA over the latent cache (head_dim = kv_lora + rope, v = kv_lora),
  W_UV applied after. This is what vLLM and SGLang run.
* Sliding-window layers (Gemma2 local): a query sees at most ``window`` keys; a long prefill
  chunk is expressed as a non-causal AttentionOp with the exact number of (query, key) pairs.
* Embedding gather (+ all-reduce of the vocab-parallel embedding when tp > 1) on the first
  pipeline stage; final norm, LM head (only the rows that emit a token, N = V / tp), logits
  all-gather and sampling on the last; a pipeline send of T*h activations between stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from math import ceil

from fleetsim.calibration.ops import AttentionOp, ElementwiseOp, GemmOp, Op, dtype_bytes
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.graph_common import (
    act_dtype,
    active_experts,
    check_kv_dtype,
    collective,
    ew_op,
    layer_groups,
    mlp_ops,
    norm_op,
    resolve_stage,
)
from fleetsim.workloads.models import LayerKind, ModelSpec
from fleetsim.workloads.parallel import ParallelConfig, Seq

_Group = tuple[LayerKind, bool, int]


@lru_cache(maxsize=256)
def _stage_plan(model: ModelSpec, parallel: ParallelConfig, stage: int | None
                ) -> tuple[tuple[_Group, ...], bool, bool]:
    parallel.validate_for(model)
    if parallel.cp > 1 or parallel.sequence_parallel:
        raise ConfigError(
            f"serving graphs do not model context or sequence parallelism (cp={parallel.cp}, "
            f"sequence_parallel={parallel.sequence_parallel})"
        )
    layers, first, last = resolve_stage(parallel, model, stage)
    return tuple(layer_groups(model, layers)), first, last


def _attn_pre_ops(model: ModelSpec, par: ParallelConfig, T: int, dtype: str, act: str,
                  kv_dtype: str, n: int) -> list[Op]:
    h, tp = model.hidden_size, par.tp
    heads = model.num_heads // tp
    out: list[Op] = [norm_op("input_norm", model, T, h, act, n, fused_add=True)]
    kvb = dtype_bytes(kv_dtype)
    if model.is_mla:
        assert model.kv_lora_rank is not None
        r, rope = model.kv_lora_rank, model.qk_rope_head_dim
        if model.q_lora_rank:
            out += [GemmOp("q_a_proj", T, model.q_lora_rank, h, dtype, 1, n),
                    norm_op("q_a_norm", model, T, model.q_lora_rank, act, n),
                    GemmOp("q_b_proj", T, heads * model.head_dim, model.q_lora_rank, dtype, 1, n)]
        else:
            out.append(GemmOp("q_proj", T, heads * model.head_dim, h, dtype, 1, n))
        out += [GemmOp("kv_a_proj", T, r + rope, h, dtype, 1, n),
                norm_op("kv_a_norm", model, T, r, act, n),
                ew_op("rotary", "rotary", T * (heads + 1) * rope, 1, 1, act, n, 6.0)]
        cache_e = T * (r + rope)
    else:
        kvr = par.kv_heads_per_rank(model)
        hd, vhd = model.head_dim, model.value_head_dim
        out.append(GemmOp("qkv_proj", T, heads * hd + kvr * (hd + vhd), h, dtype, 1, n))
        if model.qk_norm:
            out.append(norm_op("qk_norm", model, T * (heads + kvr), hd, act, n))
        if model.position_embedding == "rope":
            out.append(ew_op("rotary", "rotary", T * (heads + kvr) * hd, 1, 1, act, n, 6.0))
        cache_e = T * kvr * (hd + vhd)
    ab = dtype_bytes(act)
    out.append(ElementwiseOp("kv_cache_write", "reshape_and_cache", cache_e,
                             cache_e * (ab + kvb), 0.0, act, n))
    return out


def _attn_post_ops(model: ModelSpec, par: ParallelConfig, T: int, dtype: str, act: str,
                   n: int) -> list[Op]:
    h, tp = model.hidden_size, par.tp
    heads = model.num_heads // tp
    out: list[Op] = [GemmOp("o_proj", T, h, heads * model.value_head_dim, dtype, 1, n)]
    if tp > 1:
        out.append(collective("tp_allreduce_attn", "all_reduce", T * h * dtype_bytes(act), tp, n))
    if model.sandwich_norm:
        out.append(norm_op("post_attn_norm", model, T, h, act, n))
    out.append(norm_op("pre_mlp_norm", model, T, h, act, n, fused_add=True))
    return out


def _mlp_block_ops(model: ModelSpec, par: ParallelConfig, kind: LayerKind, T: int, dtype: str,
                   act: str, n: int) -> list[Op]:
    h, tp = model.hidden_size, par.tp
    ab = dtype_bytes(act)
    out: list[Op] = []
    if kind == "dense":
        out += mlp_ops("", model, T, model.intermediate_size // tp, dtype, act, n)
    else:
        E, k = model.num_experts, model.num_experts_per_tok
        e_local, m_e = active_experts(model, par, T)
        out += [GemmOp("router", T, E, h, act, 1, n),
                ew_op("topk_route", "topk_softmax", T * E, 1, 0.5, "fp32", n, 4.0)]
        if par.ep > 1:
            out.append(collective("ep_dispatch", "all_to_all", ceil(T / tp) * k * h * ab, par.ep, n))
        out.append(ew_op("moe_permute", "moe_permute", e_local * m_e * h, 1, 1, act, n, 0.0))
        out += mlp_ops("expert_", model, m_e, model.moe_intermediate_size // par.expert_tp,
                       dtype, act, n, batch=e_local)
        out.append(ew_op("moe_unpermute", "moe_unpermute", T * h, k, 1, act, n, float(k)))
        if par.ep > 1:
            out.append(collective("ep_combine", "all_to_all", ceil(T / tp) * k * h * ab, par.ep, n))
        if model.shared_ffn_size:
            out += mlp_ops("shared_", model, T, model.shared_ffn_size // tp, dtype, act, n)
            if model.shared_expert_gate:
                out.append(GemmOp("shared_expert_gate", T, 1, h, act, 1, n))
    if tp > 1:
        out.append(collective("tp_allreduce_mlp", "all_reduce", T * h * ab, tp, n))
    if model.sandwich_norm:
        out.append(norm_op("post_mlp_norm", model, T, h, act, n))
    return out


@lru_cache(maxsize=4096)
def _token_ops(model: ModelSpec, par: ParallelConfig, stage: int | None, dtype: str, kv_dtype: str,
               T: int, n_emit: int) -> tuple[tuple[Op, ...], tuple[tuple[_Group, tuple[Op, ...], tuple[Op, ...]], ...], tuple[Op, ...]]:
    """Everything that depends only on the token counts: (head ops, per-group (pre, post)
    ops around attention, tail ops)."""
    groups, first, last = _stage_plan(model, par, stage)
    act = act_dtype(dtype)
    h, tp, ab = model.hidden_size, par.tp, dtype_bytes(act)
    head: list[Op] = []
    if first:
        head.append(ew_op("embedding", "embedding", T * h, 1, 1, act, 1, 0.0))
        if model.position_embedding == "learned":
            head.append(ew_op("pos_embedding_add", "add", T * h, 2, 1, act, 1))
        if tp > 1:
            head.append(collective("tp_allreduce_embed", "all_reduce", T * h * ab, tp, 1))
    body = []
    for g in groups:
        kind, _, n = g
        pre = _attn_pre_ops(model, par, T, dtype, act, kv_dtype, n)
        post = _attn_post_ops(model, par, T, dtype, act, n) + _mlp_block_ops(
            model, par, kind, T, dtype, act, n)
        body.append((g, tuple(pre), tuple(post)))
    tail: list[Op] = []
    if last:
        tail.append(norm_op("final_norm", model, T, h, act, 1, fused_add=True))
        if n_emit:
            v_local = ceil(model.vocab_size / tp)
            tail.append(GemmOp("lm_head", n_emit, v_local, h, dtype, 1, 1))
            if tp > 1:
                tail.append(collective("logits_gather", "all_gather", n_emit * model.vocab_size * ab, tp, 1))
            tail.append(ew_op("sampling", "sampling", n_emit * model.vocab_size, 2, 0, "fp32", 1, 5.0))
    else:
        tail.append(collective("pp_send", "send_recv", T * h * ab, 2, 1))
    return tuple(head), tuple(body), tuple(tail)


def _window_pairs(q: int, c: int, w: int) -> int:
    """(query, key) pairs of q new tokens after c cached ones when each sees <= w keys."""
    n1 = max(0, min(c + q, w) - c)
    return n1 * c + n1 * (n1 + 1) // 2 + (q - n1) * w


def _attention_ops(model: ModelSpec, par: ParallelConfig, local: bool, n: int,
                   prefill: Sequence[Seq], decode: Sequence[Seq], dtype: str, act: str,
                   kv_dtype: str) -> list[Op]:
    heads = model.num_heads // par.tp
    out: list[Op] = []
    w = model.sliding_window if local else None
    if model.is_mla:
        assert model.kv_lora_rank is not None
        r, rope, nope = model.kv_lora_rank, model.qk_rope_head_dim, model.qk_nope_head_dim
        vhd = model.value_head_dim
        if prefill:
            kv_tok = sum(s.kv_len for s in prefill)
            out.append(GemmOp("kv_b_proj", kv_tok, heads * (nope + vhd), r, dtype, 1, n))
            out.append(AttentionOp("attn_prefill", tuple(s.new_tokens for s in prefill),
                                   tuple(s.kv_len for s in prefill), heads, heads,
                                   model.head_dim, vhd, True, act, act, n))
        if decode:
            td = len(decode)
            out.append(GemmOp("q_absorb", td, r, nope, act, heads, n))
            out.append(AttentionOp("attn_decode", (1,) * td, tuple(s.kv_len for s in decode),
                                   heads, 1, r + rope, r, True, act, kv_dtype, n))
            out.append(GemmOp("o_absorb", td, vhd, r, act, heads, n))
        return out
    kvr = par.kv_heads_per_rank(model)
    hd, vhd = model.head_dim, model.value_head_dim
    if prefill:
        full = [s for s in prefill if w is None or s.kv_len <= w]
        windowed = [s for s in prefill if w is not None and s.kv_len > w]
        if full:
            out.append(AttentionOp("attn_prefill", tuple(s.new_tokens for s in full),
                                   tuple(s.kv_len for s in full), heads, kvr, hd, vhd, True,
                                   act, kv_dtype, n))
        if windowed:
            assert w is not None
            kv_eff = tuple(ceil(_window_pairs(s.new_tokens, s.context, w) / s.new_tokens)
                           for s in windowed)
            out.append(AttentionOp("attn_prefill_window", tuple(s.new_tokens for s in windowed),
                                   kv_eff, heads, kvr, hd, vhd, False, act, kv_dtype, n))
    if decode:
        kv = tuple(s.kv_len if w is None else min(s.kv_len, w) for s in decode)
        out.append(AttentionOp("attn_decode", (1,) * len(decode), kv, heads, kvr, hd, vhd, True,
                               act, kv_dtype, n))
    return out


def serving_step_ops(model: ModelSpec, batch: Sequence[Seq], parallel: ParallelConfig | None = None,
                     dtype: str = "bf16", kv_dtype: str | None = None,
                     stage: int | None = None) -> list[Op]:
    """Operators one GPU (a TP rank of pipeline ``stage``) runs for one serving iteration.

    ``batch``: the sequences scheduled this iteration. A sequence with one new token and a
    non-empty cache is a decode; anything else is a prefill (chunk). ``dtype`` is the weight
    dtype, ``kv_dtype`` the KV-cache dtype (default: the activation dtype). An empty batch
    gives an empty list.
    """
    par = parallel if parallel is not None else _DEFAULT_PARALLEL
    if not batch:
        return []
    act = act_dtype(dtype)
    kvd = check_kv_dtype(kv_dtype) if kv_dtype is not None else act
    prefill: list[Seq] = []
    decode: list[Seq] = []
    T = n_emit = 0
    for s in batch:
        if not isinstance(s, Seq):
            raise ConfigError(f"batch items must be Seq, got {type(s).__name__}")
        T += s.new_tokens
        n_emit += s.emits_token
        (decode if s.is_decode else prefill).append(s)
    head, body, tail = _token_ops(model, par, stage, dtype, kvd, T, n_emit)
    ops: list[Op] = list(head)
    for (_, local, n), pre, post in body:
        ops.extend(pre)
        ops.extend(_attention_ops(model, par, local, n, prefill, decode, dtype, act, kvd))
        ops.extend(post)
    ops.extend(tail)
    return ops


_DEFAULT_PARALLEL = ParallelConfig()
