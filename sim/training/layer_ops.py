"""Prices the per-layer training operators of one GPU into seconds and dispatch work.

The operators themselves (shapes, issue order, which parallel group each collective runs
over) come from ``fleetsim.workloads.graph_training``: ``training_layer_graph`` per layer
kind and ``training_edge_ops`` for the embedding and the head. This module prices them with
the cost model, puts each TP/CP/EP collective on the link its group is placed on
(``placement.CollectivePricer``) and turns the lists into kernel entries for the
host-dispatch model (``dispatch``).

Pricing conventions of the simulator:

* the fused attention backward is priced from the profile's measured SDPA backward rows
  (``attention.csv`` phase ``backward``) when the cost model finds it there (measured or
  interpolated); otherwise it costs ``ATTENTION_BACKWARD_RATIO`` times the priced forward
  kernel (FlashAttention-2: five matmuls versus two, Dao 2023). Either way it launches
  ``dispatch.FLASH_BWD_KERNELS`` kernels;
* the CP ring transfer overlaps the attention kernel: only the part longer than it (forward,
  or the backward kernel for the returning dK and dV) is exposed;
* TP/EP collectives count as one kernel each, issued after the layer's compute kernels;
* recomputation: ``full`` re-runs the layer forward (collectives included) behind the
  checkpoint hooks, ``selective`` re-runs the attention core's kernels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fleetsim.calibration.engines import EngineProfile
from fleetsim.calibration.ops import AttentionOp, CollectiveOp, ElementwiseOp, GemmOp, Op
from fleetsim.hardware.specs import GPUSpec
from fleetsim.workloads.graph_training import (
    ATTN_BWD_DIM_FACTOR,
    NORM_KERNELS,
    TrainingEdgeOps,
    TrainingLayerGraph,
    gemm_has_bias,
    training_act_dtype,
    training_edge_ops,
    training_layer_graph,
)

from . import dispatch as dsp
from .job import TrainJob
from .placement import CollectivePricer

SPLIT_NORM_FIRST = ("norm1.0", "norm2.0")
"""First kernel of each layer norm a profile runs as separate kernels (``norm: separate``)."""
ATTENTION_BACKWARD_RATIO = ATTN_BWD_DIM_FACTOR
"""Backward / forward time of the attention kernel (5 vs 2 matmuls of FlashAttention-2)."""
Entry = tuple[float, float, float]
"""(kernels launched, extra host-only work in launch intervals, device seconds)."""


@dataclass
class _Priced:
    """Kernel entries of one op list: compute in issue order (the CP ring's exposed part
    included), the TP/EP collectives, the exposed ring seconds, each priced op's entry, and
    the forward attention kernel's seconds."""

    compute: list[Entry]
    comm: list[Entry]
    ring_s: float
    by_op: dict[int, Entry]
    attn_s: float


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


def norm_forward_kernels(engine: EngineProfile, amp: bool) -> int:
    """Kernels one forward norm launches: the profile's ``norm_kernels`` when it runs the norm
    as separate ops (Hugging Face's fp32 RMSNorm: casts included), else one fused kernel
    (Transformer Engine's LayerNormLinear and Apex/Inductor norms launch one), plus the cast
    of its fp32 output to the GEMM dtype under autocast."""
    k = engine.kernels
    if k.norm == "separate":
        return k.norm_kernels
    return 1 + (dsp.AMP_NORM_CASTS if amp else 0)


class LayerCoster:
    """Builds and prices the operators of each layer kind once and caches the result."""

    def __init__(self, job: TrainJob, gpu: GPUSpec, cost: Any, pricer: CollectivePricer,
                 kernel_time_factor: float = 1.0) -> None:
        self.job, self.gpu, self.cost, self.pricer = job, gpu, cost, pricer
        self.kernel_time_factor = kernel_time_factor
        self.t = job.parallel.tp
        self.act_dtype = training_act_dtype(job.recipe.dtype)
        self.amp = job.recipe.precision == "amp"
        self._cache: dict[tuple[str, bool], LayerTimes] = {}
        self.sources: dict[str, int] = {}

    def _graph(self, kind: str, local: bool) -> TrainingLayerGraph:
        job, par, r = self.job, self.job.parallel, self.job.recipe
        return training_layer_graph(job.model, kind, local, job.micro_batch, job.seq_len, tp=par.tp, cp=par.cp,
                                    ep=par.ep, sequence_parallel=par.sequence_parallel, dtype=r.dtype,
                                    amp=self.amp, dropout=r.dropout, attention=r.attention,
                                    recompute=job.recompute, kernels=job.engine.kernels)

    def _edges(self) -> TrainingEdgeOps:
        job, par = self.job, self.job.parallel
        return training_edge_ops(job.model, job.micro_batch, job.seq_len, tp=par.tp, cp=par.cp,
                                 sequence_parallel=par.sequence_parallel, dtype=job.recipe.dtype, amp=self.amp,
                                 kernels=job.engine.kernels)

    def _ew(self, name: str, kernel: str, elements: float, rw_bytes: float, flops: float = 1.0) -> ElementwiseOp:
        e = max(1, int(elements))
        return ElementwiseOp(name, kernel, e, rw_bytes * e, flops * e, self.act_dtype)

    def streaming_s(self, name: str, elements: float, bytes_per_element: float) -> float:
        """Seconds of one streaming elementwise kernel (the profile's ``residual_add`` family)."""
        return self._price([self._ew(name, "residual_add", elements, bytes_per_element, 0.0)])[0]

    # -- pricing ----------------------------------------------------------------------------
    def _price(self, ops: list[Op]) -> list[float]:
        return self._price_with_sources(ops)[0]

    def _price_with_sources(self, ops: list[Op], tally: bool = True) -> tuple[list[float], list[str]]:
        if not ops:
            return [], []
        times, srcs = self.cost.op_times(ops, self.gpu)
        if tally:
            for s in srcs:
                self.sources[s] = self.sources.get(s, 0) + 1
        f = self.kernel_time_factor
        return [float(x) * op.count * f for x, op in zip(times, ops, strict=True)], list(srcs)

    def _attention_backward_s(self, op: AttentionOp, forward_s: float) -> float:
        """Seconds of the fused attention backward: the cost model's price of ``op`` (a
        ``backward=True`` attention) when it comes from measured backward kernels, else
        ``ATTENTION_BACKWARD_RATIO`` times the forward kernel's ``forward_s``."""
        times, srcs = self._price_with_sources([op], tally=False)
        if srcs[0] in ("measured", "interpolated"):
            self.sources[srcs[0]] = self.sources.get(srcs[0], 0) + 1
            return times[0]
        return ATTENTION_BACKWARD_RATIO * forward_s

    def _comm_s(self, op: CollectiveOp, groups: Mapping[str, str]) -> float:
        """Seconds of ``op`` on the link its parallel group is placed on, ``count`` times."""
        return op.count * self.pricer.time(op.kind, op.bytes, groups[op.name])

    def _entries(self, ops: tuple[Op, ...], groups: Mapping[str, str], attn_s: float, backward: bool,
                 norm_k: int) -> _Priced:
        """Price ``ops`` into kernel entries: each op one kernel (norms ``norm_k``; the fused
        attention backward ``FLASH_BWD_KERNELS`` at ``ATTENTION_BACKWARD_RATIO`` times the
        forward's ``attn_s``); the CP ring only where it outlasts the attention kernel it
        overlaps (no kernel: it runs on a side stream). The TP/EP collectives are issued after
        the layer's compute in the dispatch model."""
        priced = [op for op in ops if isinstance(op, GemmOp | ElementwiseOp)
                  or (isinstance(op, AttentionOp) and not backward)]
        times = iter(self._price(priced))
        out = _Priced([], [], 0.0, {}, attn_s)
        for op in ops:
            if isinstance(op, CollectiveOp):
                t = self._comm_s(op, groups)
                if groups[op.name] == "cp":
                    hidden = (ATTENTION_BACKWARD_RATIO if backward else 1.0) * out.attn_s
                    exposed = max(0.0, t - hidden)
                    out.compute.append((0.0, 0.0, exposed))
                    out.ring_s += exposed
                else:
                    out.comm.append((1.0, 0.0, t))
                continue
            if isinstance(op, AttentionOp) and backward:
                entry = (float(dsp.FLASH_BWD_KERNELS), 0.0, self._attention_backward_s(op, attn_s))
            else:
                is_norm = isinstance(op, ElementwiseOp) and op.kernel in NORM_KERNELS
                entry = (float(norm_k if is_norm else 1), 0.0, next(times))
                if isinstance(op, AttentionOp):
                    out.attn_s = entry[2]
            out.compute.append(entry)
            out.by_op[id(op)] = entry
        return out

    def layer(self, kind: str, local: bool) -> LayerTimes:
        """Times of one layer of ``kind`` ("dense"/"moe"), sliding-window when ``local``."""
        key = (kind, local)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        job, m = self.job, self.job.model
        g = self._graph(kind, local)
        amp = self.amp
        norm_f = norm_forward_kernels(job.engine, amp)
        norm_b = dsp.NORM_BWD_KERNELS + (dsp.AMP_NORM_CASTS if amp else 0)
        pf = self._entries(g.forward, g.groups, 0.0, False, norm_f)
        pb = self._entries(g.backward, g.groups, pf.attn_s, True, norm_b)
        fwd_e, bwd_e = pf.compute + pf.comm, pb.compute + pb.comm
        fwd = sum((e[2] for e in fwd_e), 0.0)
        flops_f = sum(op.flops for op in g.compute) + g.attention.flops
        rec_e: list[Entry] = []
        if job.recompute == "full":  # the whole forward again, behind checkpoint hooks
            rec_flops = flops_f
            rec_e = [(0.0, dsp.CHECKPOINT_BWD_HOST_RATIO, 0.0)] + fwd_e
            fwd_e = [(0.0, dsp.CHECKPOINT_FWD_HOST_RATIO, 0.0)] + fwd_e
        elif job.recompute == "selective":  # the attention core's kernels again
            rec_flops = g.attention.flops
            rec_e = [pf.by_op[id(op)] for op in g.recompute]
        else:
            rec_flops = 0.0
        rec = sum((e[2] for e in rec_e), 0.0)
        bwd = sum((e[2] for e in bwd_e), 0.0) + rec
        comm_f = sum(e[2] for e in pf.comm) + pf.ring_s
        comm_b = sum(e[2] for e in pb.comm) + pb.ring_s
        from .memory import layer_params_split

        d, e = layer_params_split(m, kind)  # type: ignore[arg-type]
        params = d / self.t + e / (self.t * job.parallel.ep)
        lt = LayerTimes(fwd, bwd, rec, comm_f, comm_b, flops_f, rec_flops, params,
                        fwd_kernels=Kernels.build(fwd_e), bwd_kernels=Kernels.build(rec_e + bwd_e),
                        param_tensors=self.param_tensors(g.compute))
        self._cache[key] = lt
        return lt

    def param_tensors(self, ops: Sequence[Op]) -> int:
        """Parameter tensors of one layer: a weight per GEMM, its bias when the model has
        one, and the norms' weight (and bias for LayerNorm), a norm split into separate
        kernels counted once (its first kernel)."""
        m = self.job.model
        n = 0
        for op in ops:
            if isinstance(op, GemmOp):
                n += 1 + int(gemm_has_bias(m, op.name))
            elif isinstance(op, ElementwiseOp) and (op.kernel in NORM_KERNELS or op.name in SPLIT_NORM_FIRST):
                n += 2 if m.norm == "layernorm" else 1
        return n

    def embedding(self) -> tuple[float, float]:
        """(forward, backward) seconds of the token embedding on the first stage."""
        g = self._edges()
        return self._edge_s(g.embedding_fwd, g.groups), self._edge_s(g.embedding_bwd, g.groups)

    def head(self) -> tuple[float, float, float]:
        """(forward, backward seconds, forward FLOPs) of final norm, LM head and loss."""
        g = self._edges()
        flops = sum(op.flops for op in g.head_fwd if not isinstance(op, CollectiveOp))
        return self._edge_s(g.head_fwd, g.groups), self._edge_s(g.head_bwd, g.groups), flops

    def _edge_s(self, ops: tuple[Op, ...], groups: Mapping[str, str]) -> float:
        """Seconds of the compute ops of ``ops`` plus their collectives."""
        comp = sum(self._price([op for op in ops if not isinstance(op, CollectiveOp)]))
        return comp + sum(self._comm_s(op, groups) for op in ops if isinstance(op, CollectiveOp))

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
