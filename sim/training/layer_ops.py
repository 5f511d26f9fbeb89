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
  checkpoint hooks, ``selective`` re-runs the attention core's kernels;
* energy: every priced kernel (collectives included, the exposed part of the CP ring at the
  ring's power) draws the board power the occupancy model gives its achieved FLOP/s and
  bytes/s (``calibration.power.PowerState.kernels``); under a power cap below the TDP its time
  grows by that model's time factor. Uncapped, times are exactly the cost model's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fleetsim.calibration.engines import EngineProfile
from fleetsim.calibration.ops import AttentionOp, CollectiveOp, ElementwiseOp, GemmOp, Op
from fleetsim.calibration.power import PowerState, op_peaks, power_state
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
PricedEntry = tuple[float, float, float, float]
"""An ``Entry`` and the board energy (J) of its device seconds."""


def _kernels(entries: Sequence[PricedEntry]) -> Kernels:
    return Kernels.build([e[:3] for e in entries])


def _joules(entries: Sequence[PricedEntry]) -> float:
    return sum((e[3] for e in entries), 0.0)


@dataclass
class _Priced:
    """Kernel entries of one op list: compute in issue order (the CP ring's exposed part
    included), the TP/EP collectives, the exposed ring seconds, each priced op's entry, and
    the forward attention kernel's seconds."""

    compute: list[PricedEntry]
    comm: list[PricedEntry]
    ring_s: float
    by_op: dict[int, PricedEntry]
    attn_s: float
    attn_tabled_s: float = 0.0  # the forward attention kernel's seconds at the default limit


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
    fwd_j: float = 0.0  # board energy of the forward's kernels (J)
    bwd_j: float = 0.0  # of the backward's, recomputation included
    recompute_j: float = 0.0


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
                 kernel_time_factor: float = 1.0, power: PowerState | None = None) -> None:
        self.job, self.gpu, self.cost, self.pricer = job, gpu, cost, pricer
        self.kernel_time_factor = kernel_time_factor
        self.power = power if power is not None else power_state(gpu, job.power_cap_w)
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
        return self.streaming(name, elements, bytes_per_element)[0]

    def streaming(self, name: str, elements: float, bytes_per_element: float) -> tuple[float, float]:
        """(seconds, joules) of one streaming elementwise kernel."""
        t, j = self.price_kernels([self._ew(name, "residual_add", elements, bytes_per_element, 0.0)], tally=True)
        return t[0], j[0]

    # -- pricing ----------------------------------------------------------------------------
    def _power(self, ops: Sequence[Op], tabled_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(time factor, board power W) of one instance of each op tabled at ``tabled_s``."""
        flops = np.fromiter((float(op.flops) for op in ops), float, len(ops))
        moved = np.fromiter((float(op.bytes_moved) for op in ops), float, len(ops))
        return self.power.kernels(self.gpu, flops, moved, op_peaks(ops, self.gpu), tabled_s)

    def price_kernels(self, ops: Sequence[Op], tally: bool = False) -> tuple[list[float], list[float]]:
        """(seconds, joules) of each op run ``count`` times, under the coster's power limit."""
        t, _, j, _ = self._price_energy(ops, tally)
        return t, j

    def _price_with_sources(self, ops: list[Op], tally: bool = True) -> tuple[list[float], list[str]]:
        t, srcs, _, _ = self._price_energy(ops, tally)
        return t, srcs

    def _price_energy(self, ops: Sequence[Op], tally: bool
                      ) -> tuple[list[float], list[str], list[float], list[float]]:
        """Seconds, cost sources, joules and seconds at the default limit of each op run
        ``count`` times: the cost model's time x ``kernel_time_factor`` x the power cap's time
        factor (exactly 1 uncapped)."""
        if not ops:
            return [], [], [], []
        times, srcs = self.cost.op_times(ops, self.gpu)
        if tally:
            for s in srcs:
                self.sources[s] = self.sources.get(s, 0) + 1
        f = self.kernel_time_factor
        inst = np.asarray(times, float) * f
        slow, watts = self._power(ops, inst)
        tabled = [float(x) * op.count * f for x, op in zip(times, ops, strict=True)]
        secs = [t * float(k) for t, k in zip(tabled, slow, strict=True)]
        joules = [t * float(w) for t, w in zip(secs, watts, strict=True)]
        # The limiter holds the group's average (one layer pass: milliseconds) to the settle power.
        demand_j, busy_s = sum(joules), sum(secs)
        held = self.power.limited_j(demand_j, busy_s)
        if held < demand_j:
            joules = [j * held / demand_j for j in joules]
        return secs, list(srcs), joules, tabled

    def _attention_backward(self, op: AttentionOp, forward_tabled_s: float) -> tuple[float, float]:
        """(seconds, joules) of the fused attention backward: the cost model's price of ``op``
        (a ``backward=True`` attention) when it comes from measured backward kernels, else
        ``ATTENTION_BACKWARD_RATIO`` times the forward kernel's ``forward_tabled_s`` (its time
        at the default limit), slowed by the cap's time factor for the backward's own work."""
        times, srcs, joules, _ = self._price_energy([op], tally=False)
        if srcs[0] in ("measured", "interpolated"):
            self.sources[srcs[0]] = self.sources.get(srcs[0], 0) + 1
            return times[0], joules[0]
        tabled = ATTENTION_BACKWARD_RATIO * forward_tabled_s
        slow, watts = self._power([op], np.array([tabled / max(op.count, 1)]))
        t = tabled * float(slow[0])
        return t, t * float(watts[0])

    def _comm_s(self, op: CollectiveOp, groups: Mapping[str, str]) -> float:
        """Seconds of ``op`` on the link its parallel group is placed on, ``count`` times."""
        return self._comm(op, groups)[0]

    def _comm(self, op: CollectiveOp, groups: Mapping[str, str]) -> tuple[float, float, float]:
        """(seconds, joules, board W) of ``op`` run ``count`` times on its group's link, the
        collective kernel's power from the bytes it moves."""
        tabled = op.count * self.pricer.time(op.kind, op.bytes, groups[op.name])
        slow, watts = self._power([op], np.array([tabled / max(op.count, 1)]))
        t = tabled * float(slow[0])
        return t, t * float(watts[0]), float(watts[0])

    def _entries(self, ops: tuple[Op, ...], groups: Mapping[str, str], attn: tuple[float, float], backward: bool,
                 norm_k: int) -> _Priced:
        """Price ``ops`` into kernel entries with their joules: each op one kernel (norms
        ``norm_k``; the fused attention backward ``FLASH_BWD_KERNELS`` at
        ``ATTENTION_BACKWARD_RATIO`` times the forward's, ``attn`` = its (seconds, seconds at
        the default limit)); the CP ring only where it outlasts the attention kernel it
        overlaps (no kernel: it runs on a side stream; the exposed part at the ring's power).
        The TP/EP collectives are issued after the layer's compute in the dispatch model."""
        priced = [op for op in ops if isinstance(op, GemmOp | ElementwiseOp)
                  or (isinstance(op, AttentionOp) and not backward)]
        secs, _, joules, tabled = self._price_energy(priced, tally=True)
        times = iter(zip(secs, joules, tabled, strict=True))
        out = _Priced([], [], 0.0, {}, attn[0], attn[1])
        for op in ops:
            if isinstance(op, CollectiveOp):
                t, j, w = self._comm(op, groups)
                if groups[op.name] == "cp":
                    hidden = (ATTENTION_BACKWARD_RATIO if backward else 1.0) * out.attn_s
                    exposed = max(0.0, t - hidden)
                    out.compute.append((0.0, 0.0, exposed, exposed * w))
                    out.ring_s += exposed
                else:
                    out.comm.append((1.0, 0.0, t, j))
                continue
            entry: PricedEntry
            if isinstance(op, AttentionOp) and backward:
                entry = (float(dsp.FLASH_BWD_KERNELS), 0.0, *self._attention_backward(op, out.attn_tabled_s))
            else:
                is_norm = isinstance(op, ElementwiseOp) and op.kernel in NORM_KERNELS
                t, j, tab = next(times)
                entry = (float(norm_k if is_norm else 1), 0.0, t, j)
                if isinstance(op, AttentionOp):
                    out.attn_s, out.attn_tabled_s = t, tab
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
        pf = self._entries(g.forward, g.groups, (0.0, 0.0), False, norm_f)
        pb = self._entries(g.backward, g.groups, (pf.attn_s, pf.attn_tabled_s), True, norm_b)
        fwd_e, bwd_e = pf.compute + pf.comm, pb.compute + pb.comm
        fwd = sum((e[2] for e in fwd_e), 0.0)
        flops_f = sum(op.flops for op in g.compute) + g.attention.flops
        rec_e: list[PricedEntry] = []
        if job.recompute == "full":  # the whole forward again, behind checkpoint hooks
            rec_flops = flops_f
            rec_e = [(0.0, dsp.CHECKPOINT_BWD_HOST_RATIO, 0.0, 0.0)] + fwd_e
            fwd_e = [(0.0, dsp.CHECKPOINT_FWD_HOST_RATIO, 0.0, 0.0)] + fwd_e
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
        rec_j = _joules(rec_e)
        lt = LayerTimes(fwd, bwd, rec, comm_f, comm_b, flops_f, rec_flops, params,
                        fwd_kernels=_kernels(fwd_e), bwd_kernels=_kernels(rec_e + bwd_e),
                        param_tensors=self.param_tensors(g.compute), fwd_j=_joules(fwd_e),
                        bwd_j=_joules(bwd_e) + rec_j, recompute_j=rec_j)
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
        (f, _), (b, _) = self.embedding_priced()
        return f, b

    def embedding_priced(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(seconds, joules) of the embedding's forward and of its backward."""
        g = self._edges()
        return self._edge(g.embedding_fwd, g.groups), self._edge(g.embedding_bwd, g.groups)

    def head(self) -> tuple[float, float, float]:
        """(forward, backward seconds, forward FLOPs) of final norm, LM head and loss."""
        (f, _), (b, _), flops = self.head_priced()
        return f, b, flops

    def head_priced(self) -> tuple[tuple[float, float], tuple[float, float], float]:
        """(seconds, joules) of the head's forward and of its backward, and its forward FLOPs."""
        g = self._edges()
        flops = sum(op.flops for op in g.head_fwd if not isinstance(op, CollectiveOp))
        return self._edge(g.head_fwd, g.groups), self._edge(g.head_bwd, g.groups), flops

    def _edge(self, ops: tuple[Op, ...], groups: Mapping[str, str]) -> tuple[float, float]:
        """(seconds, joules) of the compute ops of ``ops`` plus their collectives."""
        secs, joules = self.price_kernels([op for op in ops if not isinstance(op, CollectiveOp)], tally=True)
        comm = [self._comm(op, groups) for op in ops if isinstance(op, CollectiveOp)]
        return sum(secs) + sum(c[0] for c in comm), sum(joules) + sum(c[1] for c in comm)

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
