"""Operators one GPU runs for the forward and backward pass of one training micro-batch.

Megatron-LM layout: T = micro_batch * seq_len / cp tokens per rank. Column-parallel GEMMs
split N by tp, row-parallel ones split K. Without sequence parallelism each TP region ends in
an all-reduce of T*h activations (forward and backward: Megatron's f/g operators); with it,
an all-gather before and a reduce-scatter after each region, and norms/dropout run on T/tp
tokens (Korthikanti et al. 2022). Context parallelism (cp) passes KV chunks around a ring
(cp - 1 send/recv per layer, twice that in backward for dK/dV) and each rank computes 1/cp
of the causal (query, key) pairs (load-balanced, as Megatron's zig-zag split).

Backward conventions:

* Every GEMM (m, n, k) yields ``<name>_dgrad`` (m, k, n): dX = dY W^T, and ``<name>_wgrad``
  (k, n, m): dW = X^T dY; the same FLOPs each, so backward GEMMs are 2x forward.
* Attention backward is one ``AttentionOp`` named ``attn_bwd`` with the true q/kv lengths and
  heads but ``head_dim`` and ``v_head_dim`` scaled by 2.5 (rounded to integers), so its
  ``flops`` equal FlashAttention-2's backward (5 matmuls per (query, key) pair versus 2 in
  forward: recompute S, dV, dP, dQ, dK) and its bytes about 2.5x the forward IO. A cost model
  that profiles the backward kernel recognises it by name; the true dims are dims / 2.5.
* Elementwise ops have ``<name>_bwd`` twins moving 1.5x the forward bytes (read x and dy,
  write dx), with the same FLOPs.
* Pipeline: a stage sends its output activations forward (``pp_send``, all stages but the
  last) and its input gradients backward (``pp_send_grad``, all but the first); receives are
  the peers' sends and are not listed again.
* Recompute "full" replays each layer's whole forward (collectives included) at the start of
  the backward (``recompute.`` prefix); "selective" replays only the attention core.
"""

from __future__ import annotations

from dataclasses import replace
from math import ceil
from typing import Literal

from fleetsim.calibration.ops import (
    AttentionOp,
    CollectiveOp,
    ElementwiseOp,
    GemmOp,
    Op,
    dtype_bytes,
)
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.graph_common import (
    act_dtype,
    collective,
    ew_op,
    expert_tokens,
    layer_groups,
    mlp_ops,
    norm_op,
    resolve_stage,
)
from fleetsim.workloads.models import LayerKind, ModelSpec
from fleetsim.workloads.parallel import ParallelConfig

Recompute = Literal["none", "selective", "full"]
ATTN_BWD_DIM_FACTOR = 2.5
ELEMENTWISE_BWD_BYTES_FACTOR = 1.5


def _tp_enter(name: str, par: ParallelConfig, T: int, h: int, ab: float, n: int) -> list[Op]:
    """Entering a TP region: all-gather of the sequence shards under SP, nothing otherwise."""
    if par.sequence_parallel:
        return [collective(f"{name}_sp_allgather", "all_gather", T * h * ab, par.tp, n)]
    return []


def _tp_exit(name: str, par: ParallelConfig, T: int, h: int, ab: float, n: int) -> list[Op]:
    """Leaving a TP region: reduce-scatter under SP, all-reduce without, nothing at tp=1."""
    if par.tp == 1:
        return []
    if par.sequence_parallel:
        return [collective(f"{name}_sp_reducescatter", "reduce_scatter", T * h * ab, par.tp, n)]
    return [collective(f"{name}_tp_allreduce", "all_reduce", T * h * ab, par.tp, n)]


def _attention(model: ModelSpec, par: ParallelConfig, b: int, s: int, act: str, n: int,
               local: bool) -> AttentionOp:
    heads = model.num_heads // par.tp
    kvh = heads if model.is_mla else par.kv_heads_per_rank(model)
    q = s // par.cp
    w = model.sliding_window if local else None
    if par.cp == 1 and (w is None or s <= w):
        return AttentionOp("attn_fwd", (q,) * b, (s,) * b, heads, kvh, model.head_dim,
                           model.value_head_dim, True, act, act, n)
    # 1/cp of the (windowed) causal pairs, as a non-causal op with the mean keys per query
    pairs = s * (s + 1) // 2 if w is None else (min(s, w) * (min(s, w) + 1) // 2
                                                 + max(0, s - w) * w)
    kv_eff = ceil(pairs / s)
    return AttentionOp("attn_fwd", (q,) * b, (kv_eff,) * b, heads, kvh, model.head_dim,
                       model.value_head_dim, False, act, act, n)


def _layer_forward(model: ModelSpec, par: ParallelConfig, kind: LayerKind, local: bool, b: int,
                   s: int, dtype: str, act: str, n: int) -> tuple[list[Op], AttentionOp]:
    h, tp = model.hidden_size, par.tp
    ab = dtype_bytes(act)
    T = b * s // par.cp
    Tn = ceil(T / tp) if par.sequence_parallel else T
    heads = model.num_heads // tp
    ops: list[Op] = [norm_op("input_norm", model, Tn, h, act, n)]
    ops += _tp_enter("attn", par, T, h, ab, n)
    if model.is_mla:
        assert model.kv_lora_rank is not None
        r, rope = model.kv_lora_rank, model.qk_rope_head_dim
        if model.q_lora_rank:
            ops += [GemmOp("q_a_proj", T, model.q_lora_rank, h, dtype, 1, n),
                    norm_op("q_a_norm", model, T, model.q_lora_rank, act, n),
                    GemmOp("q_b_proj", T, heads * model.head_dim, model.q_lora_rank, dtype, 1, n)]
        else:
            ops.append(GemmOp("q_proj", T, heads * model.head_dim, h, dtype, 1, n))
        ops += [GemmOp("kv_a_proj", T, r + rope, h, dtype, 1, n),
                norm_op("kv_a_norm", model, T, r, act, n),
                GemmOp("kv_b_proj", T, heads * (model.qk_nope_head_dim + model.value_head_dim),
                       r, dtype, 1, n),
                ew_op("rotary", "rotary", T * (heads + 1) * rope, 1, 1, act, n, 6.0)]
        kv_width = heads * (model.head_dim + model.value_head_dim)
    else:
        kvr = par.kv_heads_per_rank(model)
        hd, vhd = model.head_dim, model.value_head_dim
        ops.append(GemmOp("qkv_proj", T, heads * hd + kvr * (hd + vhd), h, dtype, 1, n))
        if model.qk_norm:
            ops.append(norm_op("qk_norm", model, T * (heads + kvr), hd, act, n))
        if model.position_embedding == "rope":
            ops.append(ew_op("rotary", "rotary", T * (heads + kvr) * hd, 1, 1, act, n, 6.0))
        kv_width = kvr * (hd + vhd)
    attn = _attention(model, par, b, s, act, n, local)
    ops.append(attn)
    if par.cp > 1:
        ops.append(collective("cp_kv_ring", "send_recv", T * kv_width * ab, 2, n * (par.cp - 1)))
    ops.append(GemmOp("o_proj", T, h, heads * model.value_head_dim, dtype, 1, n))
    ops += _tp_exit("attn", par, T, h, ab, n)
    if model.sandwich_norm:
        ops.append(norm_op("post_attn_norm", model, Tn, h, act, n))
    ops.append(ew_op("attn_residual", "bias_dropout_add", Tn * h, 2, 1, act, n, 2.0))
    ops.append(norm_op("pre_mlp_norm", model, Tn, h, act, n))
    ops += _tp_enter("mlp", par, T, h, ab, n)
    if kind == "dense":
        ops += mlp_ops("", model, T, model.intermediate_size // tp, dtype, act, n)
    else:
        E, k = model.num_experts, model.num_experts_per_tok
        e_local, m_e = E // par.ep, expert_tokens(model, par, T)
        ops += [GemmOp("router", T, E, h, act, 1, n),
                ew_op("topk_route", "topk_softmax", T * E, 1, 0.5, "fp32", n, 4.0)]
        if par.ep > 1:
            ops.append(collective("ep_dispatch", "all_to_all", ceil(T / tp) * k * h * ab, par.ep, n))
        ops.append(ew_op("moe_permute", "moe_permute", e_local * m_e * h, 1, 1, act, n, 0.0))
        ops += mlp_ops("expert_", model, m_e, model.moe_intermediate_size // par.expert_tp,
                       dtype, act, n, batch=e_local)
        ops.append(ew_op("moe_unpermute", "moe_unpermute", T * h, k, 1, act, n, float(k)))
        if par.ep > 1:
            ops.append(collective("ep_combine", "all_to_all", ceil(T / tp) * k * h * ab, par.ep, n))
        if model.shared_ffn_size:
            ops += mlp_ops("shared_", model, T, model.shared_ffn_size // tp, dtype, act, n)
            if model.shared_expert_gate:
                ops.append(GemmOp("shared_expert_gate", T, 1, h, act, 1, n))
    ops += _tp_exit("mlp", par, T, h, ab, n)
    if model.sandwich_norm:
        ops.append(norm_op("post_mlp_norm", model, Tn, h, act, n))
    ops.append(ew_op("mlp_residual", "bias_dropout_add", Tn * h, 2, 1, act, n, 2.0))
    return ops, attn


_BWD_COLLECTIVE = {"all_gather": "reduce_scatter", "reduce_scatter": "all_gather"}


def _backward_of(op: Op) -> list[Op]:
    """The backward ops of one forward op (see module docstring)."""
    if op.name == "pp_send":  # its gradient travels the other way: pp_send_grad upstream
        return []
    if isinstance(op, GemmOp):
        return [replace(op, name=f"{op.name}_dgrad", n=op.k, k=op.n),
                replace(op, name=f"{op.name}_wgrad", m=op.k, n=op.n, k=op.m)]
    if isinstance(op, AttentionOp):
        return [replace(op, name="attn_bwd",
                        head_dim=round(op.head_dim * ATTN_BWD_DIM_FACTOR),
                        v_head_dim=round(op.v_head_dim * ATTN_BWD_DIM_FACTOR))]
    if isinstance(op, ElementwiseOp):
        return [replace(op, name=f"{op.name}_bwd",
                        bytes_moved=op.bytes_moved * ELEMENTWISE_BWD_BYTES_FACTOR)]
    if isinstance(op, CollectiveOp):
        return [replace(op, name=f"{op.name}_bwd", kind=_BWD_COLLECTIVE.get(op.kind, op.kind))]
    return [replace(op, name=f"{op.name}_bwd")]


def _backward(ops: list[Op]) -> list[Op]:
    """Reverse-order backward. Without SP, Megatron's f operator makes the TP region's
    *entry* all-reduce in backward instead of its exit: the count of all-reduces is equal, so
    each forward all-reduce maps to one backward all-reduce of the same size."""
    out: list[Op] = []
    for op in reversed(ops):
        out.extend(_backward_of(op))
    return out


def training_microbatch_ops(model: ModelSpec, parallel: ParallelConfig | None = None,
                            micro_batch: int = 1, seq_len: int = 2048, dtype: str = "bf16",
                            recompute: Recompute = "none", stage: int | None = None
                            ) -> dict[str, list[Op]]:
    """``{"forward": [...], "backward": [...]}``: one GPU's operators for one micro-batch of
    ``micro_batch`` sequences of ``seq_len`` tokens on pipeline ``stage``."""
    par = parallel if parallel is not None else ParallelConfig()
    if micro_batch < 1 or seq_len < 1:
        raise ConfigError(f"micro_batch={micro_batch}, seq_len={seq_len}: both must be >= 1")
    if recompute not in ("none", "selective", "full"):
        raise ConfigError(f"recompute {recompute!r} not one of none, selective, full")
    if seq_len % par.cp:
        raise ConfigError(f"seq_len {seq_len} not divisible by cp={par.cp}")
    if par.sequence_parallel and (micro_batch * seq_len // par.cp) % par.tp:
        raise ConfigError(f"sequence_parallel: tokens {micro_batch * seq_len // par.cp} not divisible by tp={par.tp}")
    par.validate_for(model)
    layers, first, last = resolve_stage(par, model, stage)
    act = act_dtype(dtype)
    h, tp, ab = model.hidden_size, par.tp, dtype_bytes(act)
    b, s = micro_batch, seq_len
    T = b * s // par.cp
    Tn = ceil(T / tp) if par.sequence_parallel else T

    fwd: list[Op] = []
    if first:
        fwd.append(ew_op("embedding", "embedding", Tn * h, 1, 1, act, 1, 0.0))
        if model.position_embedding == "learned":
            fwd.append(ew_op("pos_embedding_add", "add", Tn * h, 2, 1, act, 1))
        if tp > 1:
            kind = "reduce_scatter" if par.sequence_parallel else "all_reduce"
            fwd.append(collective("embed_tp_reduce", kind, T * h * ab, tp, 1))
    layer_ops: list[Op] = []
    attn_ops: list[Op] = []
    for kind, local, n in layer_groups(model, layers):
        ops, attn = _layer_forward(model, par, kind, local, b, s, dtype, act, n)
        layer_ops += ops
        attn_ops.append(attn)
    fwd += layer_ops
    if last:
        fwd.append(norm_op("final_norm", model, Tn, h, act, 1))
        fwd += _tp_enter("lm_head", par, T, h, ab, 1)
        fwd.append(GemmOp("lm_head", T, ceil(model.vocab_size / tp), h, dtype, 1, 1))
        fwd.append(ew_op("cross_entropy", "cross_entropy", T * ceil(model.vocab_size / tp),
                         2, 0, "fp32", 1, 5.0))
        if tp > 1:
            fwd.append(collective("ce_tp_allreduce", "all_reduce", 3 * T * 4, tp, 1))
    else:
        fwd.append(collective("pp_send", "send_recv", Tn * h * ab, 2, 1))

    bwd: list[Op] = []
    if recompute == "full":
        bwd += [replace(op, name=f"recompute.{op.name}") for op in layer_ops]
    elif recompute == "selective":
        bwd += [replace(op, name=f"recompute.{op.name}") for op in attn_ops]
    bwd += _backward(fwd)
    if not first:
        bwd.append(collective("pp_send_grad", "send_recv", Tn * h * ab, 2, 1))
    return {"forward": fwd, "backward": bwd}
