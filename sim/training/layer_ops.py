"""Per-layer training operators of one GPU, built from ``ModelSpec`` and the parallel layout.

This module builds its own operator lists (rather than ``workloads.graph``) because the
training simulator needs them per layer and split into forward, backward and
recomputation, with the TP/CP/EP collectives kept apart so that they can be priced on the
link their group is placed on.

Shapes for ``T = micro_batch * seq_len / cp`` tokens on a GPU of a ``t``-way TP group
(Megatron column/row split; ``T/t`` tokens in the norms and dropouts with sequence
parallelism):

* attention: norm, QKV projection ``(T x h) @ (h x n_qkv/t)`` (MLA: its low-rank chain with
  the same weight count), rotary, attention over ``a/t`` heads, output projection
  ``(T x a v/t) @ (a v/t x h)``, residual + dropout;
* MLP: norm, up (and gate) ``(T x h) @ (h x f/t)``, activation, down; MoE: router, all-to-all
  dispatch over ``ep``, grouped expert GEMMs on ``T k`` routed tokens split over the
  ``E/ep`` local experts (balanced routing), all-to-all combine, shared expert;
* TP: one all-reduce of ``T h`` 16-bit activations after each block (with SP a
  reduce-scatter after and an all-gather before); the backward mirrors them;
* CP (ring attention): K and V of the other ``cp - 1`` chunks arrive while attention runs,
  so only the part of the ring transfer longer than the attention kernel is exposed.

Backward: every GEMM ``Y = X W`` becomes ``dX = dY W^T`` and ``dW = X^T dY``; attention costs
``ATTENTION_BACKWARD_RATIO`` times its forward (FlashAttention-2: five matmuls versus two,
Dao 2023); elementwise kernels move ``ELEMENTWISE_BACKWARD_RATIO`` times their forward bytes.
Recomputation: ``full`` re-runs the layer forward (collectives included) before its backward,
``selective`` re-runs the attention kernel (the ``5as/h`` part of Korthikanti et al. 2022).
Causal attention with ``cp > 1`` is priced as its load-balanced share: ``s/cp`` queries each
seeing ``s/2`` keys on average (non-causal shape with the same score count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fleetsim.calibration.ops import AttentionOp, ElementwiseOp, GemmOp, Op
from fleetsim.hardware.specs import GPUSpec

from . import dispatch as dsp
from .job import TrainJob
from .placement import CollectivePricer

ATTENTION_BACKWARD_RATIO = 2.5
"""Backward / forward time of the attention kernel (5 vs 2 matmuls of FlashAttention-2)."""
ELEMENTWISE_BACKWARD_RATIO = 2.0
"""Backward / forward bytes of memory-bound kernels (read output grad and saved input)."""


@dataclass
class LayerTimes:
    """Seconds of one layer for one micro-batch on one GPU, with collectives inside."""

    fwd_s: float
    bwd_s: float  # includes recomputation
    recompute_s: float
    comm_fwd_s: float  # TP/CP/EP collectives included in fwd_s
    comm_bwd_s: float  # included in bwd_s
    flops_fwd: float  # hardware FLOPs of the forward
    flops_recompute: float
    params_local: float  # parameters of this layer held by the GPU (unsharded by ZeRO)
    sources: dict[str, int] = field(default_factory=dict)
    fwd_kernels: Kernels | None = None  # the forward as (host launch intervals, device s) per kernel
    bwd_kernels: Kernels | None = None  # the backward, recomputation and its host hooks included
    param_tensors: int = 0  # parameter tensors of the layer (optimizer and DDP host work)


@dataclass
class Kernels:
    """Work in issue order, one entry per op: kernels launched, extra host-only work (hooks)
    in eager launch intervals, and device seconds (collectives count as kernels)."""

    kernels: np.ndarray
    hooks: np.ndarray
    device: np.ndarray

    @staticmethod
    def build(entries: list[tuple[float, float, float]]) -> Kernels:
        arr = np.asarray(entries, dtype=np.float64).reshape(-1, 3)
        return Kernels(arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy())

    def then(self, other: Kernels) -> Kernels:
        return Kernels(np.concatenate([self.kernels, other.kernels]),
                       np.concatenate([self.hooks, other.hooks]),
                       np.concatenate([self.device, other.device]))

    def host_intervals(self) -> np.ndarray:
        """Host cost per entry in eager launch intervals."""
        return self.kernels * dsp.OP_HOST_RATIO + self.hooks

    @property
    def count(self) -> int:
        return int(self.kernels.sum())


class LayerCoster:
    """Builds and prices the operators of each layer kind once and caches the result."""

    def __init__(self, job: TrainJob, gpu: GPUSpec, cost: Any, pricer: CollectivePricer,
                 kernel_time_factor: float = 1.0) -> None:
        self.job, self.gpu, self.cost, self.pricer = job, gpu, cost, pricer
        self.kernel_time_factor = kernel_time_factor
        m, par = job.model, job.parallel
        self.t = par.tp
        self.tokens = job.micro_batch * job.seq_len // par.cp
        self.norm_tokens = self.tokens // self.t if par.sequence_parallel else self.tokens
        self.gemm_dtype = job.recipe.dtype
        self.act_dtype = "fp16" if job.recipe.dtype == "fp16" else "bf16"
        self.kv_local = max(1, m.num_kv_heads // self.t)
        self.amp = job.recipe.precision == "amp"
        drop = 1.0 if job.recipe.dropout else 0.0
        # bytes per element: 16-bit norm in/out; under autocast the residual stream is fp32
        # (fp32 norm in/out plus the cast of its output for the next GEMM: 8 + 6)
        self.norm_rw = 14.0 if self.amp else 4.0
        self.resid_rw = (10.0 if self.amp else 6.0) + drop
        # kernel names as the calibration profiles spell them
        self.resid_kernel = "bias_dropout_add" if job.recipe.dropout else "residual_add"
        self.act_kernel = "silu_mul" if job.model.mlp_gated else "gelu"
        self._cache: dict[tuple[str, bool], LayerTimes] = {}
        self.sources: dict[str, int] = {}

    # -- operator builders ---------------------------------------------------------------
    def _gemm(self, name: str, m: int, n: int, k: int, batch: int = 1) -> GemmOp:
        return GemmOp(name, max(1, m), max(1, n), max(1, k), self.gemm_dtype, batch)

    def _ew(self, name: str, kernel: str, elements: float, rw_bytes: float, flops: float = 1.0) -> ElementwiseOp:
        e = max(1, int(elements))
        return ElementwiseOp(name, kernel, e, rw_bytes * e, flops * e, self.act_dtype)

    def _attention(self, local: bool) -> AttentionOp:
        m, job = self.job.model, self.job
        s, cp, b = job.seq_len, job.parallel.cp, job.micro_batch
        window = m.sliding_window if (local and m.sliding_window) else None
        if cp == 1 and (window is None or window >= s):
            q, kv, causal = s, s, True
        else:
            q = s // cp
            kv_eff = s / 2 if window is None or window >= s else window - window * window / (2 * s)
            kv, causal = max(1, int(round(kv_eff))), False
        return AttentionOp("attention", (q,) * b, (kv,) * b, m.num_heads // self.t,
                           self.kv_local, m.head_dim, m.value_head_dim, causal, self.act_dtype, self.act_dtype)

    def layer_ops(self, kind: str, local: bool) -> tuple[list[Op], AttentionOp, list[tuple[str, float, str]]]:
        """(forward GEMM/elementwise ops except attention, the attention op, collectives as
        (kind, bytes, group)) of one layer, one micro-batch."""
        m, t, T, Tn = self.job.model, self.t, self.tokens, self.norm_tokens
        h = m.hidden_size
        sp = self.job.parallel.sequence_parallel and t > 1
        norm = "layernorm" if m.norm == "layernorm" else "rmsnorm"
        ops: list[Op] = []
        coll: list[tuple[str, float, str]] = []
        act_bytes = 2.0 * T * h

        def block_comm() -> None:
            if t > 1:
                if sp:
                    coll.append(("all_gather", act_bytes, "tp"))
                    coll.append(("reduce_scatter", act_bytes, "tp"))
                else:
                    coll.append(("all_reduce", act_bytes, "tp"))

        # attention block
        ops.append(self._ew("norm1", norm, Tn * h, self.norm_rw, 5.0))
        if m.is_mla:  # low-rank chain priced as one GEMM with the same weight count
            n_qkv = (m.attention_params() - m.num_heads * m.value_head_dim * h) // (h * t)
        else:
            n_qkv = (m.q_width + m.num_kv_heads * (m.head_dim + m.value_head_dim)) // t
        ops.append(self._gemm("qkv", T, n_qkv, h))
        if m.position_embedding == "rope":
            ops.append(self._ew("rotary", "rotary", T * (m.num_heads // t + self.kv_local) * m.head_dim, 4.0, 3.0))
        ops.append(self._gemm("attn_out", T, h, m.num_heads * m.value_head_dim // t))
        ops.append(self._ew("residual1", self.resid_kernel, Tn * h, self.resid_rw))
        block_comm()
        # MLP block
        ops.append(self._ew("norm2", norm, Tn * h, self.norm_rw, 5.0))
        gate = 2 if m.mlp_gated else 1
        if kind == "moe":
            E, k = m.num_experts, m.num_experts_per_tok
            ep = self.job.parallel.ep
            local_e = E // ep
            routed = T * k
            ops.append(self._gemm("router", T, E, h))
            ops.append(self._ew("topk", "softmax", T * E, 8.0, 5.0))
            f = m.moe_intermediate_size // t
            ops.append(self._gemm("expert_up", routed // local_e, gate * f, h, local_e))
            ops.append(self._ew("expert_act", self.act_kernel, routed * f * gate, 2.0 * (gate + 1) / gate, 8.0))
            ops.append(self._gemm("expert_down", routed // local_e, h, f, local_e))
            if ep > 1:
                coll.append(("all_to_all", 2.0 * routed * h, "ep"))
                coll.append(("all_to_all", 2.0 * routed * h, "ep"))
            if m.shared_ffn_size:
                fs = m.shared_ffn_size // t
                ops.append(self._gemm("shared_up", T, gate * fs, h))
                ops.append(self._ew("shared_act", self.act_kernel, T * fs * gate, 2.0 * (gate + 1) / gate, 8.0))
                ops.append(self._gemm("shared_down", T, h, fs))
        else:
            f = m.intermediate_size // t
            ops.append(self._gemm("mlp_up", T, gate * f, h))
            ops.append(self._ew("mlp_act", self.act_kernel, T * f * gate, 2.0 * (gate + 1) / gate, 8.0))
            ops.append(self._gemm("mlp_down", T, h, f))
        ops.append(self._ew("residual2", self.resid_kernel, Tn * h, self.resid_rw))
        block_comm()
        return ops, self._attention(local), coll

    def eager_attention_ops(self, local: bool) -> list[Op]:
        """Unfused attention (Megatron before FlashAttention): batched ``Q K^T``, the fused
        scale-mask-softmax (read and write 16-bit scores), dropout (read scores, write the
        output and a 1-byte mask) and the batched ``P V``, over ``b a/t`` heads."""
        m, job = self.job.model, self.job
        s, b = job.seq_len, job.micro_batch
        keys = min(s, m.sliding_window) if (local and m.sliding_window) else s
        heads = b * (m.num_heads // self.t)
        scores = float(heads) * s * keys
        ops: list[Op] = [
            self._gemm("attn_scores", s, keys, m.head_dim, heads),
            self._ew("softmax", "softmax", scores, 4.0, 5.0),
        ]
        if job.recipe.dropout:
            ops.append(self._ew("attn_dropout", "dropout", scores, 5.0, 1.0))
        ops.append(self._gemm("attn_values", s, m.value_head_dim, keys, heads))
        return ops

    def eager_extras(self, ops: list[Op]) -> tuple[list[Op], list[Op]]:
        """Kernels eager PyTorch with ``torch.autocast`` adds per layer (``precision="amp"``),
        all streaming kernels priced as the profile's ``residual_add`` family: the bf16 cast
        of every fp32 weight in forward (read 4, write 2 bytes/element) and the fp32 cast of
        its gradient in backward (read 2, write 4); bias gradients (a reduction reading the
        16-bit output gradient); the head-merge copy of the attention output (transpose +
        reshape, read 2 write 2) and, in backward, its copy back and the stacking of dQ, dK,
        dV into the fused QKV gradient."""
        m, T, h = self.job.model, self.tokens, self.job.model.hidden_size
        biased = {"qkv": m.qkv_bias, "attn_out": m.o_bias, "mlp_up": m.mlp_bias, "mlp_down": m.mlp_bias}
        fwd: list[Op] = []
        bwd: list[Op] = []
        for op in ops:
            if not isinstance(op, GemmOp):
                continue
            w = op.n * op.k * op.batch
            fwd.append(self._ew(op.name + "_weight_cast", "residual_add", w, 6.0, 0.0))
            bwd.append(self._ew(op.name + "_grad_cast", "residual_add", w, 6.0, 0.0))
            if biased.get(op.name, False):
                fwd.append(self._ew(op.name + "_bias_cast", "residual_add", op.n, 6.0, 0.0))
                bwd.append(self._ew(op.name + "_bias_grad", "residual_add", T * op.n, 2.0, 1.0))
                bwd.append(self._ew(op.name + "_bias_grad_cast", "residual_add", op.n, 6.0, 0.0))
        heads_w = m.num_heads * m.value_head_dim // self.t
        fwd.append(self._ew("attn_merge_copy", "residual_add", T * heads_w, 4.0, 0.0))
        bwd.append(self._ew("attn_merge_copy_bwd", "residual_add", T * heads_w, 4.0, 0.0))
        qkv_w = (m.q_width + m.num_kv_heads * (m.head_dim + m.value_head_dim)) // self.t
        bwd.append(self._ew("qkv_grad_stack", "residual_add", T * qkv_w, 4.0, 0.0))
        del h
        return fwd, bwd

    def streaming_s(self, name: str, elements: float, bytes_per_element: float) -> float:
        """Seconds of one streaming elementwise kernel (the profile's ``residual_add`` family)."""
        return self._price([self._ew(name, "residual_add", elements, bytes_per_element, 0.0)])[0]

    # -- pricing ----------------------------------------------------------------------------
    def _price(self, ops: list[Op]) -> list[float]:
        if not ops:
            return []
        times, srcs = self.cost.op_times(ops, self.gpu)
        for s in srcs:
            self.sources[s] = self.sources.get(s, 0) + 1
        f = self.kernel_time_factor
        return [float(x) * op.count * f for x, op in zip(times, ops, strict=True)]

    def _backward_ops(self, ops: list[Op]) -> list[Op]:
        out: list[Op] = []
        for op in ops:
            if isinstance(op, GemmOp):
                out.append(GemmOp(op.name + "_dgrad", op.m, op.k, op.n, op.dtype, op.batch))
                out.append(GemmOp(op.name + "_wgrad", op.k, op.n, op.m, op.dtype, op.batch))
            elif isinstance(op, ElementwiseOp):
                out.append(ElementwiseOp(op.name + "_bwd", op.kernel, op.elements,
                                         op.bytes_moved * ELEMENTWISE_BACKWARD_RATIO, op.flops, op.dtype))
        return out

    def layer(self, kind: str, local: bool) -> LayerTimes:
        """Times of one layer of ``kind`` ("dense"/"moe"), sliding-window when ``local``."""
        key = (kind, local)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        job, m = self.job, self.job.model
        ops, attn, coll = self.layer_ops(kind, local)
        amp = self.amp
        norm_f = 1 + (dsp.AMP_NORM_CASTS if amp else 0)
        norm_b = dsp.NORM_BWD_KERNELS + (dsp.AMP_NORM_CASTS if amp else 0)

        t_f = self._price(ops)
        bops = self._backward_ops(ops)
        t_b = self._price(bops)
        fwd_k, bwd_k = sum(t_f), sum(t_b)
        x_f: dict[str, float] = {}
        x_b: dict[str, float] = {}
        if amp:
            extra_f, extra_b = self.eager_extras(ops)
            t_xf, t_xb = self._price(extra_f), self._price(extra_b)
            fwd_k += sum(t_xf)
            bwd_k += sum(t_xb)
            x_f = {op.name: t for op, t in zip(extra_f, t_xf, strict=True)}
            x_b = {op.name: t for op, t in zip(extra_b, t_xb, strict=True)}
        if job.recipe.attention == "eager" and job.parallel.cp == 1:
            core = self.eager_attention_ops(local)
            tc_f, tc_b = self._price(core), self._price(self._backward_ops(core))
            attn_f, attn_b = sum(tc_f), sum(tc_b)
            attn_fe: list[tuple[float, float, float]] = [(1.0, 0.0, t) for t in tc_f]
            attn_be: list[tuple[float, float, float]] = [(1.0, 0.0, t) for t in tc_b]
        else:
            attn_f = self._price([attn])[0]
            attn_b = ATTENTION_BACKWARD_RATIO * attn_f
            attn_fe = [(1.0, 0.0, attn_f)]
            attn_be = [(float(dsp.FLASH_BWD_KERNELS), 0.0, attn_b)]
        comm_each = [self.pricer.time(k, b, g) for k, b, g in coll]  # type: ignore[arg-type]
        comm = sum(comm_each)
        cp_ring = 0.0
        if job.parallel.cp > 1:  # K and V of the other chunks around the ring
            kv_bytes = 2.0 * self.tokens * self.kv_local * (m.head_dim + m.value_head_dim)
            cp_ring = self.pricer.time("all_gather", kv_bytes * job.parallel.cp, "cp")
        cp_fwd = max(0.0, cp_ring - attn_f)
        cp_bwd = max(0.0, 2 * cp_ring - ATTENTION_BACKWARD_RATIO * attn_f)  # dK, dV travel back
        fwd = fwd_k + attn_f + comm + cp_fwd
        fwd_e, bwd_e = self._issue_order(ops, t_f, t_b, x_f, x_b, attn_fe + [(0.0, 0.0, cp_fwd)],
                                         attn_be + [(0.0, 0.0, cp_bwd)], norm_f, norm_b)
        fwd_e += [(1.0, 0.0, c) for c in comm_each]
        bwd_e += [(1.0, 0.0, c) for c in comm_each]
        flops_f = sum(op.flops for op in ops) + attn.flops
        rec_e: list[tuple[float, float, float]] = []
        if job.recompute == "full":
            rec, rec_flops = fwd, flops_f
            fwd_e = [(0.0, dsp.CHECKPOINT_FWD_HOST_RATIO, 0.0)] + fwd_e
            rec_e = [(0.0, dsp.CHECKPOINT_BWD_HOST_RATIO, 0.0)] + [e for e in fwd_e[1:]]
        elif job.recompute == "selective":
            rec, rec_flops = attn_f, attn.flops
            rec_e = list(attn_fe)
        else:
            rec, rec_flops = 0.0, 0.0
        bwd = bwd_k + attn_b + comm + cp_bwd + rec
        from .memory import layer_params_split

        d, e = layer_params_split(m, kind)  # type: ignore[arg-type]
        params = d / self.t + e / (self.t * job.parallel.ep)
        lt = LayerTimes(fwd, bwd, rec, comm + cp_fwd, comm + cp_bwd, flops_f, rec_flops, params,
                        fwd_kernels=Kernels.build(fwd_e), bwd_kernels=Kernels.build(rec_e + bwd_e),
                        param_tensors=self.param_tensors(ops))
        self._cache[key] = lt
        return lt

    @staticmethod
    def _issue_order(ops: list[Op], t_f: list[float], t_b: list[float], x_f: dict[str, float],
                     x_b: dict[str, float], attn_fe: list[tuple[float, float, float]],
                     attn_be: list[tuple[float, float, float]], norm_f: int, norm_b: int
                     ) -> tuple[list[tuple[float, float, float]], list[tuple[float, float, float]]]:
        """Kernel entries (kernels, hook intervals, device s) of one layer in the order eager
        PyTorch issues them: in forward each GEMM after its weight/bias casts and the attention
        core (with its head-merge copy) before the output projection; in backward the reverse,
        each GEMM's dgrad and wgrad followed by its gradient casts and bias reductions."""
        fwd: list[tuple[float, float, float]] = []
        groups: list[list[tuple[float, float, float]]] = []
        j = 0
        for op, tf in zip(ops, t_f, strict=True):
            is_norm = isinstance(op, ElementwiseOp) and op.kernel in ("layernorm", "rmsnorm")
            nb = 2 if isinstance(op, GemmOp) else 1
            back: list[tuple[float, float, float]] = [(float(norm_b if is_norm else 1), 0.0, t) for t in t_b[j:j + nb]]
            j += nb
            pre: list[tuple[float, float, float]] = []
            if op.name == "attn_out":
                pre = attn_fe + ([(1.0, 0.0, x_f["attn_merge_copy"])] if "attn_merge_copy" in x_f else [])
                tail: list[tuple[float, float, float]] = [(1.0, 0.0, x_b["attn_merge_copy_bwd"])] if "attn_merge_copy_bwd" in x_b else []
                tail += attn_be + ([(1.0, 0.0, x_b["qkv_grad_stack"])] if "qkv_grad_stack" in x_b else [])
            else:
                tail = []
            casts = [(1.0, 0.0, x_f[op.name + sfx]) for sfx in ("_weight_cast", "_bias_cast") if op.name + sfx in x_f]
            grads = [(1.0, 0.0, x_b[op.name + sfx]) for sfx in ("_bias_grad", "_grad_cast", "_bias_grad_cast")
                     if op.name + sfx in x_b]
            fwd += pre + casts + [(float(norm_f if is_norm else 1), 0.0, tf)]
            groups.append(back + grads + tail)
        bwd = [e for g in reversed(groups) for e in g]
        if not any(op.name == "attn_out" for op in ops):  # no output projection: attention last
            fwd += attn_fe
            bwd = attn_be + bwd
        return fwd, bwd

    def param_tensors(self, ops: list[Op]) -> int:
        """Parameter tensors of one layer: a weight per GEMM, its bias when the model has
        one, and the norms' weight (and bias for LayerNorm)."""
        m = self.job.model
        biased = {"qkv": m.qkv_bias, "attn_out": m.o_bias, "mlp_up": m.mlp_bias, "mlp_down": m.mlp_bias,
                  "shared_up": m.mlp_bias, "shared_down": m.mlp_bias}
        n = 0
        for op in ops:
            if isinstance(op, GemmOp):
                n += 1 + int(biased.get(op.name, False))
            elif isinstance(op, ElementwiseOp) and op.kernel in ("layernorm", "rmsnorm"):
                n += 2 if op.kernel == "layernorm" else 1
        return n

    def embedding(self) -> tuple[float, float]:
        """(forward, backward) seconds of the token embedding on the first stage."""
        m, T, h = self.job.model, self.tokens, self.job.model.hidden_size
        fwd = self._price([self._ew("embedding", "embedding", T * h, 4.0, 0.0)])[0]
        bwd = self._price([self._ew("embedding_bwd", "embedding", T * h, 8.0, 1.0)])[0]
        if self.t > 1:  # vocab-parallel embedding: partial sums reduced over TP
            kind = "reduce_scatter" if self.job.parallel.sequence_parallel else "all_reduce"
            fwd += self.pricer.time(kind, 2.0 * T * h, "tp")  # type: ignore[arg-type]
        del m
        return fwd, bwd

    def head(self) -> tuple[float, float, float]:
        """(forward, backward seconds, forward FLOPs) of final norm, LM head and loss."""
        m, T, t = self.job.model, self.tokens, self.t
        h, V = m.hidden_size, m.vocab_size
        ops: list[Op] = [
            self._ew("final_norm", "layernorm" if m.norm == "layernorm" else "rmsnorm", self.norm_tokens * h,
                     self.norm_rw, 5.0),
            self._gemm("lm_head", T, V // t, h),
            # fused softmax cross-entropy; bytes counted as the 16-bit logits it reads, the
            # convention of the calibration profiles
            self._ew("cross_entropy", "cross_entropy", T * V // t, 2.0, 5.0),
        ]
        if self.amp:  # logits.float(): a streaming upcast of the logits (read 2, write 4)
            ops.append(self._ew("logits_upcast", "residual_add", T * V // t, 6.0, 0.0))
        fwd = sum(self._price(ops))
        bwd = sum(self._price(self._backward_ops(ops)))
        if t > 1:
            kind = "all_gather" if self.job.parallel.sequence_parallel else "all_reduce"
            c = self.pricer.time(kind, 2.0 * T * h, "tp")  # type: ignore[arg-type]
            fwd += c
            bwd += c
        return fwd, bwd, sum(op.flops for op in ops)

    def edge_kernels(self, first: bool, last: bool) -> tuple[Kernels, Kernels]:
        """(forward, backward) work of the embedding (``first``) and the head + loss
        (``last``) as kernel entries, counts from ``dispatch.EMBEDDING_KERNELS`` and
        ``dispatch.HEAD_KERNELS``."""
        fwd: list[tuple[float, float, float]] = []
        bwd: list[tuple[float, float, float]] = []
        if first:
            ef, eb = self.embedding()
            fwd.append((dsp.EMBEDDING_KERNELS[0], 0.0, ef))
            bwd.append((dsp.EMBEDDING_KERNELS[1], 0.0, eb))
        if last:
            hf, hb, _ = self.head()
            fwd.append((dsp.HEAD_KERNELS[0], 0.0, hf))
            bwd.insert(0, (dsp.HEAD_KERNELS[1], 0.0, hb))
        return Kernels.build(fwd), Kernels.build(bwd)
