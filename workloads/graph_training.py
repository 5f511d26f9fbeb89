"""Operators one GPU runs for one training micro-batch: the single source of training shapes.

``training_layer_graph`` gives one transformer layer of a kind (dense/MoE, full or
sliding-window attention) on one GPU: its forward, backward and recomputation operators in
the order eager PyTorch issues them, with the TP/CP/EP collectives tagged by their parallel
group rather than priced (the simulator in ``sim/training`` prices each on the link its group
is placed on and turns the lists into host-dispatch work). ``training_edge_ops`` gives the
embedding and the head + loss; ``training_microbatch_ops`` strings them into a whole
pipeline stage (``count`` = layers sharing an op) for FLOP and byte accounting.

Megatron-LM layout: ``T = micro_batch * seq_len / cp`` tokens per rank; column-parallel GEMMs
split N by ``tp``, row-parallel ones K. Without sequence parallelism each TP block ends in an
all-reduce of ``T h`` 16-bit activations (forward and backward: Megatron's f/g operators);
with it an all-gather before and a reduce-scatter after each block, and norms and residuals
run on ``T/tp`` tokens (Korthikanti et al. 2022).

* attention: norm, QKV projection ``(T x h) @ (h x n_qkv/t)`` (MLA: its low-rank chain as one
  GEMM with the same weight count), rotary, attention over ``a/t`` heads, output projection
  ``(T x a v/t) @ (a v/t x h)``, residual (+ dropout);
* MLP: norm, up (and gate) ``(T x h) @ (h x f/t)``, activation, down; MoE: router, top-k
  softmax, all-to-all dispatch over ``ep``, grouped expert GEMMs on ``T k`` routed tokens
  split over the ``E/ep`` local experts (balanced routing), all-to-all combine, shared expert;
* CP (ring attention): the K and V of all ``cp`` chunks (``cp_kv_ring``, an all-gather over
  the cp group) arrive while attention runs; causal attention is its load-balanced share,
  ``s/cp`` queries each seeing ``s/2`` keys on average (non-causal shape, same score count).
* ``attention="eager"`` (cp = 1 only) runs the unfused Megatron core instead of one fused
  kernel: batched ``Q K^T``, scale-mask-softmax, dropout, batched ``P V``.
* ``amp=True`` (``torch.autocast`` over fp32 parameters) adds the casts it issues: the bf16
  copy of every weight (and bias) before its GEMM (and of the fp32 input again before each
  further separate projection reading it, ``SHARED_INPUT``), fp32 norm/residual traffic, the head-merge
  copy of the attention output, and in backward the fp32 casts of weight gradients, bias
  gradient reductions, the copy back and the stacking of dQ, dK, dV.

Backward conventions: every GEMM ``Y = X W`` (m, n, k) yields ``<name>_dgrad`` (m, k, n) and
``<name>_wgrad`` (k, n, m), the same FLOPs each; the fused attention kernel yields ``attn_bwd``,
the same shape with ``backward=True`` (FlashAttention-2: 5 matmuls per (query, key) pair versus
2 forward, Dao 2023, so its FLOPs are 2.5x; priced from a profile's measured SDPA backward
rows where it has them, else by roofline); elementwise
kernels move ``ELEMENTWISE_BWD_BYTES_FACTOR`` = 2 times their forward bytes (read the output
gradient and the saved input, write the input gradient); collectives mirror (all-gather <->
reduce-scatter), and the CP ring runs twice (dK and dV travel back). Recompute ``full``
replays the layer's whole forward (collectives included) before its backward, ``selective``
only the attention core (the ``5as/h`` activation term of Korthikanti et al. 2022).

``kernels`` (an engine profile's ``calibration.engines.Kernels``, the serving flags' meaning)
splits what the software runs unfused; everything else keeps the one-kernel-per-operator
graph above, which is what the megatron and torch-eager profiles run (a ``fused`` placement
keeps that kernel). ``fused_qkv: false``: ``q``/``k``/``v`` GEMMs; ``fused_gate_up: false``:
``mlp_gate``/``mlp_up``; ``norm: separate`` with ``norm_kernels`` > 1 or ``norm_fp32``: the
norm as that many streaming kernels (fp32 values when upcast); ``rotary_kernels`` > 1 and
``activation_kernels`` > 1: that many streaming kernels; ``logits_fp32``: the fp32 upcast of
the logits; ``extra_kernels_backward``: that many further small kernels (over ``T`` values)
at the end of the layer's backward. Split kernels are named ``<op>.<i>`` and each has its own
backward kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from types import MappingProxyType
from typing import Literal

from fleetsim.calibration.engines import Kernels
from fleetsim.calibration.ops import AttentionOp, CollectiveOp, ElementwiseOp, GemmOp, Op
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.graph_common import collective, ew_op, layer_groups, resolve_stage
from fleetsim.workloads.models import ModelSpec
from fleetsim.workloads.parallel import ParallelConfig

Recompute = Literal["none", "selective", "full"]
Group = Literal["tp", "cp", "ep"]
ATTN_BWD_DIM_FACTOR = 2.5
ELEMENTWISE_BWD_BYTES_FACTOR = 2.0
TRAIN_DTYPES = ("bf16", "fp16", "fp8")
NORM_KERNELS = ("layernorm", "rmsnorm")
_BWD_COLLECTIVE = {"all_gather": "reduce_scatter", "reduce_scatter": "all_gather"}


@dataclass(frozen=True)
class TrainingLayerGraph:
    """One layer on one GPU for one micro-batch, every op ``count`` 1.

    ``forward``/``backward``/``recompute`` are in eager issue order; ``recompute`` holds the
    forward ops (the same objects) replayed before the backward. ``compute`` is the model's
    own GEMM/elementwise ops (no attention core, no autocast casts): its FLOPs plus
    ``attention``'s are the layer's forward FLOPs. ``groups`` maps each collective's name to
    its parallel group."""

    forward: tuple[Op, ...]
    backward: tuple[Op, ...]
    recompute: tuple[Op, ...]
    compute: tuple[Op, ...]
    attention: AttentionOp
    groups: Mapping[str, Group]


@dataclass(frozen=True)
class TrainingEdgeOps:
    """Embedding (first stage) and final norm + LM head + loss (last stage) of one GPU."""

    embedding_fwd: tuple[Op, ...]
    embedding_bwd: tuple[Op, ...]
    head_fwd: tuple[Op, ...]
    head_bwd: tuple[Op, ...]
    groups: Mapping[str, Group]


def training_act_dtype(dtype: str) -> str:
    """Activation dtype of a training recipe whose GEMMs take ``dtype`` (fp8 GEMMs keep
    bf16 activations)."""
    return "fp16" if dtype == "fp16" else "bf16"


class _Shapes:
    """Token counts and dtypes shared by a layer's builders."""

    def __init__(self, model: ModelSpec, micro_batch: int, seq_len: int, tp: int, cp: int, ep: int,
                 sequence_parallel: bool, dtype: str, amp: bool, dropout: bool,
                 kernels: Kernels | None = None) -> None:
        if dtype not in TRAIN_DTYPES:
            raise ConfigError(f"training dtype {dtype!r} not one of {', '.join(TRAIN_DTYPES)}")
        self.m, self.b, self.s, self.t, self.cp, self.ep = model, micro_batch, seq_len, tp, cp, ep
        self.sp = sequence_parallel and tp > 1
        self.T = micro_batch * seq_len // cp
        self.Tn = self.T // tp if sequence_parallel else self.T
        self.gemm_dtype = dtype
        self.act = training_act_dtype(dtype)
        self.kv_local = max(1, model.num_kv_heads // tp)
        self.amp, self.dropout = amp, dropout
        # bytes per element: 16-bit norm in/out; under autocast the residual stream is fp32
        # (fp32 norm in/out plus the cast of its output for the next GEMM: 8 + 6)
        self.norm_rw = 14.0 if amp else 4.0
        self.resid_rw = (10.0 if amp else 6.0) + (1.0 if dropout else 0.0)
        self.resid_kernel = "bias_dropout_add" if dropout else "residual_add"
        self.act_kernel = "silu_mul" if model.mlp_gated else "gelu"
        self.norm_kernel = "layernorm" if model.norm == "layernorm" else "rmsnorm"
        self.groups: dict[str, Group] = {}
        self.K = kernels

    def norm(self, name: str, elements: float) -> list[Op]:
        """A norm over ``elements`` values: one fused kernel, or the profile's separate
        ``norm_kernels`` streaming kernels (fp32 when ``norm_fp32``)."""
        K = self.K
        if K is None or K.norm != "separate" or (K.norm_kernels == 1 and not K.norm_fp32):
            return [self.ew(name, self.norm_kernel, elements, self.norm_rw, 5.0)]
        return self.pieces(name, elements, 1.0, 1.0, "fp32" if K.norm_fp32 else self.act, K.norm_kernels)

    def pieces(self, name: str, elements: float, reads: float, writes: float, dtype: str, k: int) -> list[Op]:
        """``k`` streaming kernels of one unfused operator, each over ``elements`` values."""
        return [ew_op(f"{name}.{i}", "add", max(1, int(elements)), reads, writes, dtype, 1) for i in range(k)]

    def rotary(self, elements: float) -> list[Op]:
        """Rotary embedding of q and k: one kernel, or ``rotary_kernels`` rotate-half pieces."""
        if self.K is None or self.K.rotary_kernels == 1:
            return [self.ew("rotary", "rotary", elements, 4.0, 3.0)]
        return self.pieces("rotary", -(-elements // 2), 2.0, 1.0, self.act, self.K.rotary_kernels)

    def activation(self, name: str, rows: float, width: int, gate: int, act_rw: float) -> list[Op]:
        """The MLP activation on ``rows x width`` outputs: one kernel, or ``activation_kernels``
        streaming kernels (silu, then mul)."""
        if self.K is None or self.K.activation_kernels == 1:
            return [self.ew(name, self.act_kernel, rows * width * gate, act_rw, 8.0)]
        return self.pieces(name, rows * width, 1.5, 1.0, self.act, self.K.activation_kernels)

    def up(self, prefix: str, rows: int, gate: int, f: int, batch: int = 1) -> list[Op]:
        """The up projection(s): gate and up as one GEMM, or two when ``fused_gate_up`` is off."""
        h = self.m.hidden_size
        if gate == 2 and self.K is not None and not self.K.fused_gate_up:
            return [self.gemm(f"{prefix}_gate", rows, f, h, batch), self.gemm(f"{prefix}_up", rows, f, h, batch)]
        return [self.gemm(f"{prefix}_up", rows, gate * f, h, batch)]

    def gemm(self, name: str, m: int, n: int, k: int, batch: int = 1) -> GemmOp:
        return GemmOp(name, max(1, m), max(1, n), max(1, k), self.gemm_dtype, batch)

    def ew(self, name: str, kernel: str, elements: float, rw_bytes: float, flops: float = 1.0) -> ElementwiseOp:
        e = max(1, int(elements))
        return ElementwiseOp(name, kernel, e, rw_bytes * e, flops * e, self.act)

    def coll(self, name: str, kind: str, nbytes: float, group: Group, size: int, count: int = 1) -> CollectiveOp:
        self.groups[name] = group
        return collective(name, kind, nbytes, size, count)

    def tp_enter(self, block: str) -> list[Op]:
        """All-gather of the sequence shards before a TP block under SP."""
        return [self.coll(f"{block}_sp_allgather", "all_gather", 2.0 * self.T * self.m.hidden_size, "tp", self.t)
                ] if self.sp else []

    def tp_exit(self, block: str) -> list[Op]:
        """Reduce-scatter (SP) or all-reduce of the block's partial sums; nothing at tp = 1."""
        nbytes = 2.0 * self.T * self.m.hidden_size
        if self.t == 1:
            return []
        if self.sp:
            return [self.coll(f"{block}_sp_reducescatter", "reduce_scatter", nbytes, "tp", self.t)]
        return [self.coll(f"{block}_tp_allreduce", "all_reduce", nbytes, "tp", self.t)]

    def attention(self, local: bool) -> AttentionOp:
        m, s, cp, b = self.m, self.s, self.cp, self.b
        window = m.sliding_window if (local and m.sliding_window) else None
        if cp == 1 and (window is None or window >= s):
            q, kv, causal = s, s, True
        else:
            q = s // cp
            kv_eff = s / 2 if window is None or window >= s else window - window * window / (2 * s)
            kv, causal = max(1, int(round(kv_eff))), False
        return AttentionOp("attention", (q,) * b, (kv,) * b, m.num_heads // self.t, self.kv_local,
                           m.head_dim, m.value_head_dim, causal, self.act, self.act)

    def eager_core(self, local: bool) -> list[Op]:
        """Unfused attention over ``b a/t`` heads: ``Q K^T``, the fused scale-mask-softmax
        (read and write 16-bit scores), dropout (read scores, write output and a 1-byte mask)
        and ``P V``."""
        m, s = self.m, self.s
        keys = min(s, m.sliding_window) if (local and m.sliding_window) else s
        heads = self.b * (m.num_heads // self.t)
        scores = float(heads) * s * keys
        ops: list[Op] = [self.gemm("attn_scores", s, keys, m.head_dim, heads),
                         self.ew("softmax", "softmax", scores, 4.0, 5.0)]
        if self.dropout:
            ops.append(self.ew("attn_dropout", "dropout", scores, 5.0, 1.0))
        ops.append(self.gemm("attn_values", s, m.value_head_dim, keys, heads))
        return ops


SHARED_INPUT = {"k": "q", "v": "k", "mlp_up": "mlp_gate", "expert_up": "expert_gate", "shared_up": "shared_gate"}
"""Separate projections that read the input of the GEMM named beside them (``fused_qkv`` or
``fused_gate_up`` off): under autocast each call casts the fp32 input to bf16 again (only
weights are cached), and in backward the input gradient is cast and accumulated again."""


def gemm_has_bias(model: ModelSpec, name: str) -> bool:
    """Whether the layer GEMM ``name`` (as ``training_layer_graph`` names it) has a bias."""
    return {"qkv": model.qkv_bias, "q": model.qkv_bias, "k": model.qkv_bias, "v": model.qkv_bias,
            "attn_out": model.o_bias, "mlp_up": model.mlp_bias, "mlp_gate": model.mlp_bias,
            "mlp_down": model.mlp_bias, "shared_up": model.mlp_bias, "shared_gate": model.mlp_bias,
            "shared_down": model.mlp_bias}.get(name, False)


def _layer_ops(sh: _Shapes, kind: str) -> list[Op]:
    """The layer's own forward ops and its TP/EP collectives in issue order, without the
    attention core (it runs right before ``attn_out``)."""
    m, t, T, Tn = sh.m, sh.t, sh.T, sh.Tn
    h = m.hidden_size
    pre: list[Op] = [*sh.norm("norm1", Tn * h), *sh.tp_enter("attn")]
    if m.is_mla:  # low-rank chain priced as one GEMM with the same weight count
        n_qkv = (m.attention_params() - m.num_heads * m.value_head_dim * h) // (h * t)
    else:
        n_qkv = (m.q_width + m.num_kv_heads * (m.head_dim + m.value_head_dim)) // t
    if m.is_mla or sh.K is None or sh.K.fused_qkv:
        pre.append(sh.gemm("qkv", T, n_qkv, h))
    else:
        kv = m.num_kv_heads // t
        pre += [sh.gemm("q", T, m.q_width // t, h), sh.gemm("k", T, kv * m.head_dim, h),
                sh.gemm("v", T, kv * m.value_head_dim, h)]
    if m.position_embedding == "rope":
        pre += sh.rotary(T * (m.num_heads // t + sh.kv_local) * m.head_dim)
    pre += [sh.gemm("attn_out", T, h, m.num_heads * m.value_head_dim // t), *sh.tp_exit("attn")]
    mlp: list[Op] = [sh.ew("residual1", sh.resid_kernel, Tn * h, sh.resid_rw),
                     *sh.norm("norm2", Tn * h), *sh.tp_enter("mlp")]
    gate = 2 if m.mlp_gated else 1
    act_rw = 2.0 * (gate + 1) / gate
    if kind == "moe":
        E, k, ep = m.num_experts, m.num_experts_per_tok, sh.ep
        local_e, routed = E // ep, T * k
        f = m.moe_intermediate_size // t
        mlp += [sh.gemm("router", T, E, h), sh.ew("topk", "softmax", T * E, 8.0, 5.0)]
        if ep > 1:
            mlp.append(sh.coll("ep_dispatch", "all_to_all", 2.0 * routed * h, "ep", ep))
        mlp += [*sh.up("expert", routed // local_e, gate, f, local_e),
                *sh.activation("expert_act", routed, f, gate, act_rw),
                sh.gemm("expert_down", routed // local_e, h, f, local_e)]
        if ep > 1:
            mlp.append(sh.coll("ep_combine", "all_to_all", 2.0 * routed * h, "ep", ep))
        if m.shared_ffn_size:
            fs = m.shared_ffn_size // t
            mlp += [*sh.up("shared", T, gate, fs), *sh.activation("shared_act", T, fs, gate, act_rw),
                    sh.gemm("shared_down", T, h, fs)]
    else:
        f = m.intermediate_size // t
        mlp += [*sh.up("mlp", T, gate, f), *sh.activation("mlp_act", T, f, gate, act_rw),
                sh.gemm("mlp_down", T, h, f)]
    mlp += [*sh.tp_exit("mlp"), sh.ew("residual2", sh.resid_kernel, Tn * h, sh.resid_rw)]
    return pre + mlp


def _backward_of(op: Op) -> list[Op]:
    """The backward ops of one forward op (module docstring)."""
    if isinstance(op, GemmOp):
        return [replace(op, name=f"{op.name}_dgrad", n=op.k, k=op.n, layout="nn"),
                replace(op, name=f"{op.name}_wgrad", m=op.k, n=op.n, k=op.m, layout="nt")]
    if isinstance(op, AttentionOp):
        return [replace(op, name="attn_bwd", backward=True)]
    if isinstance(op, ElementwiseOp):
        return [replace(op, name=f"{op.name}_bwd", bytes_moved=op.bytes_moved * ELEMENTWISE_BWD_BYTES_FACTOR)]
    if isinstance(op, CollectiveOp):
        return [replace(op, name=f"{op.name}_bwd", kind=_BWD_COLLECTIVE.get(op.kind, op.kind))]
    return [replace(op, name=f"{op.name}_bwd")]


def _check(micro_batch: int, seq_len: int, cp: int, recompute: str, attention: str) -> None:
    if micro_batch < 1 or seq_len < 1:
        raise ConfigError(f"micro_batch={micro_batch}, seq_len={seq_len}: both must be >= 1")
    if recompute not in ("none", "selective", "full"):
        raise ConfigError(f"recompute {recompute!r} not one of none, selective, full")
    if attention not in ("flash", "eager"):
        raise ConfigError(f"attention {attention!r} not one of flash, eager")
    if seq_len % cp:
        raise ConfigError(f"seq_len {seq_len} not divisible by cp={cp}")


@lru_cache(maxsize=256)
def training_layer_graph(model: ModelSpec, kind: str, local: bool, micro_batch: int, seq_len: int, *,
                         tp: int = 1, cp: int = 1, ep: int = 1, sequence_parallel: bool = False,
                         dtype: str = "bf16", amp: bool = False, dropout: bool = False,
                         attention: str = "flash", recompute: Recompute = "none",
                         kernels: Kernels | None = None) -> TrainingLayerGraph:
    """One layer of ``kind`` ("dense"/"moe", sliding-window when ``local``) on one GPU of a
    ``tp``/``cp``/``ep`` layout, for ``micro_batch`` sequences of ``seq_len`` tokens.
    ``attention="eager"`` runs the unfused core when ``cp`` is 1 (ring attention needs the
    fused kernel). ``kernels``: the engine profile's kernel sequence (module docstring; None:
    one kernel per operator)."""
    _check(micro_batch, seq_len, cp, recompute, attention)
    if kind not in ("dense", "moe"):
        raise ConfigError(f"layer kind {kind!r} not one of dense, moe")
    sh = _Shapes(model, micro_batch, seq_len, tp, cp, ep, sequence_parallel, dtype, amp, dropout, kernels)
    m, T = model, sh.T
    layer = _layer_ops(sh, kind)
    attn = sh.attention(local)
    core: list[Op] = sh.eager_core(local) if attention == "eager" and cp == 1 else [attn]
    core_bwd = [b for op in core for b in _backward_of(op)]
    ring: list[Op] = []
    ring_bwd: list[Op] = []
    if cp > 1:  # K and V of all chunks around the ring; dK and dV travel back (twice)
        kv_bytes = 2.0 * T * sh.kv_local * (m.head_dim + m.value_head_dim) * cp
        ring = [sh.coll("cp_kv_ring", "all_gather", kv_bytes, "cp", cp)]
        ring_bwd = [sh.coll("cp_kv_ring_bwd", "all_gather", kv_bytes, "cp", cp, count=2)]
    compute = [op for op in layer if not isinstance(op, CollectiveOp)]
    casts_f: dict[str, list[Op]] = {}
    grads_b: dict[str, list[Op]] = {}
    merge_f: list[Op] = []
    merge_b: list[Op] = []
    stack_b: list[Op] = []
    if amp:
        gemm_names = {op.name for op in compute if isinstance(op, GemmOp)}
        for op in compute:
            if not isinstance(op, GemmOp):
                continue
            w = op.n * op.k * op.batch
            casts_f[op.name] = [sh.ew(op.name + "_weight_cast", "residual_add", w, 6.0, 0.0)]
            grads_b[op.name] = [sh.ew(op.name + "_grad_cast", "residual_add", w, 6.0, 0.0)]
            if SHARED_INPUT.get(op.name) in gemm_names:  # autocast casts the fp32 input again
                cast = sh.ew(op.name + "_input_cast", "residual_add", op.m * op.k * op.batch, 6.0, 0.0)
                casts_f[op.name].append(cast)
                grads_b[op.name] += _backward_of(cast)
            if gemm_has_bias(m, op.name):
                casts_f[op.name].append(sh.ew(op.name + "_bias_cast", "residual_add", op.n, 6.0, 0.0))
                grads_b[op.name] = [sh.ew(op.name + "_bias_grad", "residual_add", T * op.n, 2.0, 1.0),
                                    *grads_b[op.name],
                                    sh.ew(op.name + "_bias_grad_cast", "residual_add", op.n, 6.0, 0.0)]
        heads_w = m.num_heads * m.value_head_dim // tp
        merge_f = [sh.ew("attn_merge_copy", "residual_add", T * heads_w, 4.0, 0.0)]
        merge_b = [sh.ew("attn_merge_copy_bwd", "residual_add", T * heads_w, 4.0, 0.0)]
        qkv_w = (m.q_width + m.num_kv_heads * (m.head_dim + m.value_head_dim)) // tp
        stack_b = [sh.ew("qkv_grad_stack", "residual_add", T * qkv_w, 4.0, 0.0)]
    fwd: list[Op] = []
    back_groups: list[list[Op]] = []
    for op in layer:
        if op.name == "attn_out":  # the attention core runs right before the output projection
            fwd += core + ring + merge_f
        fwd += casts_f.get(op.name, []) + [op]
        tail = merge_b + core_bwd + ring_bwd + stack_b if op.name == "attn_out" else []
        back_groups.append(_backward_of(op) + grads_b.get(op.name, []) + tail)
    bwd = [op for g in reversed(back_groups) for op in g]
    if kernels is not None and kernels.extra_kernels_backward is not None:
        bwd += sh.pieces("extra_backward", T, 1.0, 1.0, sh.act, round(kernels.extra_kernels_backward.value))
    for op in bwd:
        if isinstance(op, CollectiveOp) and op.name not in sh.groups:
            sh.groups[op.name] = sh.groups[op.name[: -len("_bwd")]]
    rec = fwd if recompute == "full" else core if recompute == "selective" else []
    return TrainingLayerGraph(tuple(fwd), tuple(bwd), tuple(rec), tuple(compute), attn,
                              MappingProxyType(dict(sh.groups)))


@lru_cache(maxsize=64)
def training_edge_ops(model: ModelSpec, micro_batch: int, seq_len: int, *, tp: int = 1, cp: int = 1,
                      sequence_parallel: bool = False, dtype: str = "bf16", amp: bool = False,
                      kernels: Kernels | None = None) -> TrainingEdgeOps:
    """Vocabulary-parallel embedding (gather; the partial sums reduced over TP) and the final
    norm, LM head ``(T x h) @ (h x V/t)``, fused softmax cross-entropy (bytes counted as the
    16-bit logits it reads, the calibration profiles' convention; under autocast plus the
    fp32 upcast of the logits, also with the profile's ``logits_fp32``) with the TP exchange
    of the head's input; the final norm as the profile's ``kernels`` run it."""
    sh = _Shapes(model, micro_batch, seq_len, tp, cp, 1, sequence_parallel, dtype, amp, False, kernels)
    T, h, V, t = sh.T, model.hidden_size, model.vocab_size, tp
    emb_f: list[Op] = [sh.ew("embedding", "embedding", T * h, 4.0, 0.0)]
    if t > 1:
        kind = "reduce_scatter" if sequence_parallel else "all_reduce"
        emb_f.append(sh.coll("embed_tp_reduce", kind, 2.0 * T * h, "tp", t))
    emb_b: list[Op] = [sh.ew("embedding_bwd", "embedding", T * h, 8.0, 1.0)]
    final_norm = sh.norm("final_norm", sh.Tn * h)
    head: list[Op] = [*final_norm, sh.gemm("lm_head", T, V // t, h),
                      sh.ew("cross_entropy", "cross_entropy", T * V // t, 2.0, 5.0)]
    if amp or (kernels is not None and kernels.logits_fp32):
        head.append(sh.ew("logits_upcast", "residual_add", T * V // t, 6.0, 0.0))
    head_b = [b for op in reversed(head) for b in _backward_of(op)]
    if t > 1:
        kind = "all_gather" if sequence_parallel else "all_reduce"
        head.insert(len(final_norm), sh.coll("lm_head_tp", kind, 2.0 * T * h, "tp", t))
        head_b.append(sh.coll("lm_head_tp_bwd", kind, 2.0 * T * h, "tp", t))
    return TrainingEdgeOps(tuple(emb_f), tuple(emb_b), tuple(head), tuple(head_b),
                           MappingProxyType(dict(sh.groups)))


def training_microbatch_ops(model: ModelSpec, parallel: ParallelConfig | None = None,
                            micro_batch: int = 1, seq_len: int = 2048, dtype: str = "bf16",
                            recompute: Recompute = "none", stage: int | None = None, *,
                            amp: bool = False, dropout: bool = False, attention: str = "flash",
                            kernels: Kernels | None = None) -> dict[str, list[Op]]:
    """``{"forward": [...], "backward": [...]}``: one GPU's operators for one micro-batch of
    ``micro_batch`` sequences of ``seq_len`` tokens on pipeline ``stage``, each op's
    ``count`` the layers running it. Recomputed ops lead the backward (``recompute.``
    prefix). A stage sends its output activations forward (``pp_send``, all but the last)
    and its input gradients back (``pp_send_grad``, all but the first). ``kernels``: the
    engine profile's kernel sequence (module docstring)."""
    par = parallel if parallel is not None else ParallelConfig()
    _check(micro_batch, seq_len, par.cp, recompute, attention)
    if par.sequence_parallel and (micro_batch * seq_len // par.cp) % par.tp:
        raise ConfigError(f"sequence_parallel: tokens {micro_batch * seq_len // par.cp} not divisible by tp={par.tp}")
    par.validate_for(model)
    layers, first, last = resolve_stage(par, model, stage)
    lay = dict(tp=par.tp, cp=par.cp, sequence_parallel=par.sequence_parallel, dtype=dtype, amp=amp,
               kernels=kernels)
    edges = training_edge_ops(model, micro_batch, seq_len, **lay)  # type: ignore[arg-type]
    fwd: list[Op] = list(edges.embedding_fwd) if first else []
    rec: list[Op] = []
    layer_bwd: list[Op] = []
    for kind, local, n in layer_groups(model, layers):
        g = training_layer_graph(model, kind, local, micro_batch, seq_len, ep=par.ep, dropout=dropout,
                                 attention=attention, recompute=recompute, **lay)  # type: ignore[arg-type]
        fwd += [replace(op, count=op.count * n) for op in g.forward]
        rec += [replace(op, name=f"recompute.{op.name}", count=op.count * n) for op in g.recompute]
        layer_bwd = [replace(op, count=op.count * n) for op in g.backward] + layer_bwd
    tokens_h_bytes = 2.0 * (micro_batch * seq_len // par.cp // (par.tp if par.sequence_parallel else 1)) * model.hidden_size
    if last:
        fwd += edges.head_fwd
    else:
        fwd.append(collective("pp_send", "send_recv", tokens_h_bytes, 2, 1))
    bwd = rec + (list(edges.head_bwd) if last else []) + layer_bwd + (list(edges.embedding_bwd) if first else [])
    if not first:
        bwd.append(collective("pp_send_grad", "send_recv", tokens_h_bytes, 2, 1))
    return {"forward": fwd, "backward": bwd}
