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

The kernel sequence above is that of the default ``Kernels()`` (vLLM's). An engine profile's
``kernels`` section changes it (``calibration.engines.Kernels``): separate q/k/v and
gate/up GEMMs; norms as ``norm_kernels`` streaming kernels (fp32 values when upcast) with a
separate residual add, or folded into the next GEMM; rotary and activation as several
kernels or none; logits for every new token (plus an fp32 cast); decode K/V repeated to all
query heads (two copies per layer, attention over H KV heads); further small kernels per
layer. Split kernels are named ``<op>.<i>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from math import ceil

from fleetsim.calibration.engines import Kernels
from fleetsim.calibration.ops import AttentionOp, ElementwiseOp, GemmOp, Op, dtype_bytes
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.graph_common import (
    act_dtype,
    act_op,
    active_experts,
    check_kv_dtype,
    collective,
    ew_op,
    layer_groups,
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


DEFAULT_KERNELS = Kernels()
"""vLLM's kernel sequence (the graph of the module docstring)."""


def _pieces(name: str, elements: int, reads: float, writes: float, dtype: str, n: int, k: int) -> list[Op]:
    """``k`` streaming kernels of one unfused operator, each over ``elements`` values."""
    return [ew_op(f"{name}.{i}", "add", elements, reads, writes, dtype, n) for i in range(k)]


def _norm(name: str, model: ModelSpec, T: int, h: int, act: str, n: int, K: Kernels,
          residual: bool) -> list[Op]:
    """A norm (with the residual add before it when ``residual``) as the profile runs it."""
    if K.norm == "fused_residual" or (not residual and K.norm == "fused_gemm"):
        return [norm_op(name, model, T, h, act, n, fused_add=residual)]
    out: list[Op] = []
    if residual and K.norm == "separate":
        out.append(ew_op(f"{name}_residual", "add", T * h, 2, 1, act, n))
    if K.norm == "fused_gemm":
        return out
    if K.norm_kernels == 1 and not K.norm_fp32:
        return out + [norm_op(name, model, T, h, act, n)]
    return out + _pieces(name, T * h, 1, 1, "fp32" if K.norm_fp32 else act, n, K.norm_kernels)


def _rotary(T: int, heads: int, kvr: int, dim: int, act: str, n: int, K: Kernels) -> list[Op]:
    e = T * (heads + kvr) * dim
    if K.rotary == "fused":
        return []
    if K.rotary_kernels == 1:
        return [ew_op("rotary", "rotary", e, 1, 1, act, n, 6.0)]
    return _pieces("rotary", ceil(e / 2), 2, 1, act, n, K.rotary_kernels)


def _mlp(prefix: str, model: ModelSpec, rows: int, ffn: int, dtype: str, act: str, n: int,
         K: Kernels, batch: int = 1) -> list[Op]:
    """Up (gate+up fused or not), activation, down GEMMs for ``rows`` tokens."""
    h = model.hidden_size
    if not model.mlp_gated:
        ups: list[Op] = [GemmOp(f"{prefix}fc1", rows, ffn, h, dtype, batch, n)]
    elif K.fused_gate_up:
        ups = [GemmOp(f"{prefix}gate_up_proj", rows, 2 * ffn, h, dtype, batch, n)]
    else:
        ups = [GemmOp(f"{prefix}gate_proj", rows, ffn, h, dtype, batch, n),
               GemmOp(f"{prefix}up_proj", rows, ffn, h, dtype, batch, n)]
    if K.activation == "fused":
        acts: list[Op] = []
    elif K.activation_kernels == 1:
        acts = [act_op(f"{prefix}act", model, rows * batch, ffn, act, n)]
    else:
        acts = _pieces(f"{prefix}act", rows * batch * ffn, 1.5, 1, act, n, K.activation_kernels)
    down = GemmOp(f"{prefix}{'down_proj' if model.mlp_gated else 'fc2'}", rows, h, ffn, dtype, batch, n)
    return [*ups, *acts, down]


def _attn_pre_ops(model: ModelSpec, par: ParallelConfig, T: int, dtype: str, act: str,
                  kv_dtype: str, n: int, K: Kernels) -> list[Op]:
    h, tp = model.hidden_size, par.tp
    heads = model.num_heads // tp
    out: list[Op] = _norm("input_norm", model, T, h, act, n, K, residual=True)
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
                *_rotary(T, heads, 1, rope, act, n, K)]
        cache_e = T * (r + rope)
    else:
        kvr = par.kv_heads_per_rank(model)
        hd, vhd = model.head_dim, model.value_head_dim
        if K.fused_qkv:
            out.append(GemmOp("qkv_proj", T, heads * hd + kvr * (hd + vhd), h, dtype, 1, n))
        else:
            out += [GemmOp("q_proj", T, heads * hd, h, dtype, 1, n),
                    GemmOp("k_proj", T, kvr * hd, h, dtype, 1, n),
                    GemmOp("v_proj", T, kvr * vhd, h, dtype, 1, n)]
        if model.qk_norm:
            out.append(norm_op("qk_norm", model, T * (heads + kvr), hd, act, n))
        if model.position_embedding == "rope":
            out += _rotary(T, heads, kvr, hd, act, n, K)
        cache_e = T * kvr * (hd + vhd)
    ab = dtype_bytes(act)
    out.append(ElementwiseOp("kv_cache_write", "reshape_and_cache", cache_e,
                             cache_e * (ab + kvb), 0.0, act, n))
    return out


def _attn_post_ops(model: ModelSpec, par: ParallelConfig, T: int, dtype: str, act: str,
                   n: int, K: Kernels) -> list[Op]:
    h, tp = model.hidden_size, par.tp
    heads = model.num_heads // tp
    out: list[Op] = [GemmOp("o_proj", T, h, heads * model.value_head_dim, dtype, 1, n)]
    if tp > 1:
        out.append(collective("tp_allreduce_attn", "all_reduce", T * h * dtype_bytes(act), tp, n))
    if model.sandwich_norm:
        out.append(norm_op("post_attn_norm", model, T, h, act, n))
    out += _norm("pre_mlp_norm", model, T, h, act, n, K, residual=True)
    return out


def _mlp_block_ops(model: ModelSpec, par: ParallelConfig, kind: LayerKind, T: int, dtype: str,
                   act: str, n: int, K: Kernels) -> list[Op]:
    h, tp = model.hidden_size, par.tp
    ab = dtype_bytes(act)
    out: list[Op] = []
    if kind == "dense":
        out += _mlp("", model, T, model.intermediate_size // tp, dtype, act, n, K)
    else:
        E, k = model.num_experts, model.num_experts_per_tok
        e_local, m_e = active_experts(model, par, T)
        out += [GemmOp("router", T, E, h, act, 1, n),
                ew_op("topk_route", "topk_softmax", T * E, 1, 0.5, "fp32", n, 4.0)]
        if par.ep > 1:
            out.append(collective("ep_dispatch", "all_to_all", ceil(T / tp) * k * h * ab, par.ep, n))
        out.append(ew_op("moe_permute", "moe_permute", e_local * m_e * h, 1, 1, act, n, 0.0))
        out += _mlp("expert_", model, m_e, model.moe_intermediate_size // par.expert_tp,
                    dtype, act, n, K, batch=e_local)
        out.append(ew_op("moe_unpermute", "moe_unpermute", T * h, k, 1, act, n, float(k)))
        if par.ep > 1:
            out.append(collective("ep_combine", "all_to_all", ceil(T / tp) * k * h * ab, par.ep, n))
        if model.shared_ffn_size:
            out += _mlp("shared_", model, T, model.shared_ffn_size // tp, dtype, act, n, K)
            if model.shared_expert_gate:
                out.append(GemmOp("shared_expert_gate", T, 1, h, act, 1, n))
    if tp > 1:
        out.append(collective("tp_allreduce_mlp", "all_reduce", T * h * ab, tp, n))
    if model.sandwich_norm:
        out.append(norm_op("post_mlp_norm", model, T, h, act, n))
    return out


@lru_cache(maxsize=4096)
def _token_ops(model: ModelSpec, par: ParallelConfig, stage: int | None, dtype: str, kv_dtype: str,
               T: int, n_emit: int, K: Kernels = DEFAULT_KERNELS) -> tuple[tuple[Op, ...], tuple[tuple[_Group, tuple[Op, ...], tuple[Op, ...]], ...], tuple[Op, ...]]:
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
        pre = _attn_pre_ops(model, par, T, dtype, act, kv_dtype, n, K)
        post = _attn_post_ops(model, par, T, dtype, act, n, K) + _mlp_block_ops(
            model, par, kind, T, dtype, act, n, K)
        body.append((g, tuple(pre), tuple(post)))
    tail: list[Op] = []
    if last:
        tail += _norm("final_norm", model, T, h, act, 1, K, residual=True)
        if n_emit:
            v_local = ceil(model.vocab_size / tp)
            rows = T if K.logits == "all" else n_emit
            tail.append(GemmOp("lm_head", rows, v_local, h, dtype, 1, 1))
            if K.logits_fp32:
                tail.append(ew_op("logits_fp32", "copy", rows * v_local, 1, 2, act, 1, 0.0))
            if tp > 1:
                tail.append(collective("logits_gather", "all_gather", rows * model.vocab_size * ab, tp, 1))
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
                   kv_dtype: str, K: Kernels = DEFAULT_KERNELS) -> list[Op]:
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
    if prefill and K.extra_kernels_prefill is not None:
        out += _pieces("extra_prefill", sum(s.new_tokens for s in prefill), 1, 1, act, n,
                       round(K.extra_kernels_prefill.value))
    if decode:
        kv = tuple(s.kv_len if w is None else min(s.kv_len, w) for s in decode)
        kv_heads = kvr
        if K.decode_kv_expand and heads > kvr:
            out.append(kv_expand_op(sum(kv), kvr, heads, hd + vhd, kv_dtype, n))
            kv_heads = heads
        out.append(AttentionOp("attn_decode", (1,) * len(decode), kv, heads, kv_heads, hd, vhd, True,
                               act, kv_dtype, n))
        if K.extra_kernels_decode is not None:
            out += _pieces("extra_decode", len(decode), 1, 1, act, n, round(K.extra_kernels_decode.value))
    return out


KV_EXPAND = "kv_expand"
"""Name of the ``decode_kv_expand`` copy operator (priced per SM per cycle by the engine profile)."""


def kv_expand_op(kv_tokens: int, kv_heads: int, heads: int, dims: int, kv_dtype: str, n: int) -> ElementwiseOp:
    """K and V repeated from ``kv_heads`` to ``heads`` heads (``repeat_kv``): two copy
    kernels per layer that read the cached K/V once and write them ``heads / kv_heads`` times."""
    e = kv_tokens * heads * dims
    b = dtype_bytes(kv_dtype)
    return ElementwiseOp(KV_EXPAND, "copy", e, (e + kv_tokens * kv_heads * dims) * b, 0.0, kv_dtype, n)


def serving_step_ops(model: ModelSpec, batch: Sequence[Seq], parallel: ParallelConfig | None = None,
                     dtype: str = "bf16", kv_dtype: str | None = None,
                     stage: int | None = None, kernels: Kernels | None = None) -> list[Op]:
    """Operators one GPU (a TP rank of pipeline ``stage``) runs for one serving iteration.

    ``batch``: the sequences scheduled this iteration. A sequence with one new token and a
    non-empty cache is a decode; anything else is a prefill (chunk). ``dtype`` is the weight
    dtype, ``kv_dtype`` the KV-cache dtype (default: the activation dtype). An empty batch
    gives an empty list. ``kernels``: the engine profile's kernel sequence (default vLLM's).
    """
    K = kernels if kernels is not None else DEFAULT_KERNELS
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
    head, body, tail = _token_ops(model, par, stage, dtype, kvd, T, n_emit, K)
    ops: list[Op] = list(head)
    for (_, local, n), pre, post in body:
        ops.extend(pre)
        ops.extend(_attention_ops(model, par, local, n, prefill, decode, dtype, act, kvd, K))
        ops.extend(post)
    ops.extend(tail)
    return ops


_DEFAULT_PARALLEL = ParallelConfig()
