"""Iteration time of a serving engine: the op graph priced by the cost model, made fast.

One engine iteration runs the op graph of its batch on every pipeline stage in turn; its
time is what ``sim.iteration.price_iteration`` says for the engine profile (the kernel
sequence, CUDA-graph capture rule, host pipeline and per-iteration scheduler time are the
profile's; ``direct_time`` calls it). With vLLM's profile, pure-decode iterations of up to
``launch.max_capture_batch`` sequences replay CUDA graphs and the rest run eagerly with the
host overlapped, so the time is ``sum(op time * op.count)`` plus the scheduler time.

Pricing the graph every iteration is too slow for 10^6 requests, so ``StepTimer`` splits
the graph's operators, by name, into parts that each depend on one aggregate of the batch:

* token part (GEMMs, norms, rotary, KV write, TP/EP collectives, PP send): a function of the
  total new tokens ``T`` only - tabulated on every integer up to 512, then 16 points per
  octave, linearly interpolated;
* emit part (LM head, logits gather, sampling): a function of the sampled sequences ``S``;
* decode attention: the cost model prices an attention op from its totals (score pairs,
  query and KV tokens, batch), and for decodes score pairs = KV tokens, so it is a
  function of (decode sequences ``B``, total context ``C``) - tabulated per ``B`` on a log
  grid of ``C / B`` (64 points), interpolated;
* prefill attention: priced per iteration from one attention op (per stage and layer
  group) holding the iteration's prefill chunks - exact, and cheap because it is a single
  op.

Each part's table holds ``price_ops`` of that part's operators: their time and, on the same
grid, their board energy (each kernel at its occupancy power, ``calibration.power``, under the
timer's power limit). Energy adds over parts as time does; the per-iteration scheduler time is
drawn at the engine's gap power. Where the iteration is a
sum of kernel times (captured, or host overlapped) the parts add up exactly and the only
approximation is the interpolation between grid points. Under a host/device pipeline (an
eager engine without overlap) the parts do not add (a part boundary moves the stalls), so
those iterations are priced directly, memoised per batch shape (decodes at their mean
context); tests check both against direct pricing of the full graph. Sliding-window
decode attention uses the mean context per sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from math import ceil
from typing import Protocol

import numpy as np
from fleetsim.calibration.cost import IterationCostModel
from fleetsim.calibration.engines import EngineProfile, get_engine
from fleetsim.calibration.ops import AttentionOp, ElementwiseOp, GemmOp, Op
from fleetsim.calibration.power import PowerState, op_peaks, power_state
from fleetsim.hardware.specs import GPUSpec
from fleetsim.sim.iteration import (
    IterationCost,
    captures,
    check_engine,
    device_times,
    is_additive,
    price_iteration,
    price_ops,
)
from fleetsim.workloads.graph import serving_step_ops
from fleetsim.workloads.graph_serving import KV_EXPAND, kv_expand_op
from fleetsim.workloads.models import ModelSpec
from fleetsim.workloads.parallel import ParallelConfig, Seq

_EMIT_OPS = frozenset({"lm_head", "logits_gather", "sampling"})
_DECODE_ATTN_OPS = frozenset({"attn_decode", "q_absorb", "o_absorb", "kv_expand", "extra_decode"})
_PREFILL_ATTN_OPS = frozenset({"attn_prefill", "attn_prefill_window", "kv_b_proj", "extra_prefill"})
_ATTN_OPS = _DECODE_ATTN_OPS | _PREFILL_ATTN_OPS


def _part(name: str) -> str:
    """The operator an op belongs to: its name without the ``.i`` of an unfused piece
    (``extra_decode.3`` is one of the ``extra_decode`` kernels, however many a profile has)."""
    return name.split(".", 1)[0]


class StepTimer(Protocol):
    """What an engine needs: seconds per iteration, including scheduling overhead."""

    def decode_times(self, num_seqs: int, ctx_total: np.ndarray) -> np.ndarray:
        """Pure-decode iterations of ``num_seqs`` sequences whose KV lengths (including the
        new token) sum to each entry of ``ctx_total``."""
        ...

    def step_time(self, dec_n: int, dec_ctx: int, pre_q: Sequence[int], pre_kv: Sequence[int],
                  sampled: int, dec_q: int = 1) -> float:
        """A mixed iteration: ``dec_n`` decodes (``dec_q`` query tokens each, KV lengths
        summing to ``dec_ctx``) plus prefill chunks of ``pre_q`` tokens reaching KV lengths
        ``pre_kv``; ``sampled`` prefill chunks end their prompt and emit a token."""
        ...

    def decode_costs(self, num_seqs: int, ctx_total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, joules) of the pure-decode iterations of ``decode_times``; joules are the
        board energy of one GPU of the replica (each stage's, summed over stages)."""
        ...

    def step_cost(self, dec_n: int, dec_ctx: int, pre_q: Sequence[int], pre_kv: Sequence[int],
                  sampled: int, dec_q: int = 1) -> tuple[float, float]:
        """(seconds, joules) of the mixed iteration of ``step_time``."""
        ...


_SCALAR_OPS = 8
"""Up to this many operators, ``GraphStepTimer._kernels`` prices power in plain floats."""

_Table = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(grid, seconds, joules) of one surrogate part."""


def _grid(n_max: int, dense_upto: int = 512, per_octave: int = 16) -> np.ndarray:
    """Every integer up to ``dense_upto``, then ``per_octave`` log-spaced integers per
    doubling up to ``n_max``."""
    dense = np.arange(1, min(n_max, dense_upto) + 1, dtype=float)
    if n_max <= dense_upto:
        return dense
    octaves = np.log2(n_max / dense_upto)
    pts = dense_upto * 2.0 ** np.linspace(0, octaves, int(ceil(octaves * per_octave)) + 1)
    return np.unique(np.concatenate([dense, np.round(pts), [float(n_max)]]))


def _spread(total: int, n: int) -> tuple[int, ...]:
    """``n`` positive integers summing to ``total`` (as equal as possible)."""
    base, extra = divmod(int(total), n)
    return (base + 1,) * extra + (base,) * (n - extra)


class GraphStepTimer:
    """Surrogate iteration time and energy for one (model, GPU, parallel layout, dtypes,
    power limit); with ``stage`` set, of that pipeline stage only (else the sum over stages).
    ``power``: the GPU's power model and limit (default: uncapped); a cap slows kernels as
    ``price_ops`` says, in the time tables too."""

    def __init__(self, model: ModelSpec, gpu: GPUSpec, parallel: ParallelConfig,
                 cost_model: IterationCostModel, *, dtype: str = "bf16", kv_dtype: str | None = None,
                 sched_overhead_s: float | None = None, max_context: int | None = None,
                 stage: int | None = None, engine: EngineProfile | None = None,
                 power: PowerState | None = None) -> None:
        parallel.validate_for(model)
        prof = engine if engine is not None else get_engine("vllm")
        check_engine(prof, model)
        if sched_overhead_s is not None:
            prof = prof.with_overhead(float(sched_overhead_s))
        self.engine = prof
        self.model = model
        self.gpu = gpu
        self.parallel = parallel
        self.cost = cost_model
        self.dtype = dtype
        self.kv_dtype = kv_dtype
        self.power = power if power is not None else power_state(gpu)
        self.gap_w = self.power.gap_w()
        self.settle_w = self.power.settle_w  # the limiter holds an iteration's kernels to this on average
        self.overhead_s = prof.launch.iteration_overhead_s.value
        self.seq_overhead_s = prof.launch.overhead_s(1) - self.overhead_s
        self.max_context = int(max_context or model.max_position_embeddings)
        self.stages: tuple[int | None, ...] = (
            (None,) if parallel.pp == 1 else (stage,) if stage is not None else tuple(range(parallel.pp)))
        self._token: dict[bool, _Table] = {}
        self._emit: dict[bool, _Table] = {}
        self._dec: dict[tuple[int, bool], tuple[np.ndarray, np.ndarray]] = {}
        self._scalars: dict[tuple[str, int, bool], tuple[float, float]] = {}
        self._pre_memo: dict[tuple, tuple[float, float]] = {}
        self._graphs: dict[int, bool] = {}
        self._ctx_grid = np.unique(np.round(np.geomspace(1, self.max_context + 1, 64)))
        # Prefill attention templates: (stage ops with a placeholder batch).
        self._pre_templates = [op for st in self.stages for op in self._ops([Seq(16, 16)], st)
                               if _part(op.name) in _PREFILL_ATTN_OPS]
        big = self.max_context
        self._dec_templates: list[tuple[Op, int | None]] = []
        for st in self.stages:
            for op in self._ops([Seq(1, big)], st):
                if _part(op.name) in _DECODE_ATTN_OPS:
                    cap = None
                    if isinstance(op, AttentionOp) and op.kv_lens[0] < big + 1:
                        cap = op.kv_lens[0]
                    self._dec_templates.append((op, cap))

    # -- direct pricing (the oracle) ------------------------------------------------------
    def _ops(self, batch: Sequence[Seq], stage: int | None) -> list[Op]:
        return serving_step_ops(self.model, batch, self.parallel, self.dtype, self.kv_dtype,
                                stage=stage, kernels=self.engine.kernels)

    def _kernels(self, ops: Sequence[Op], t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, joules) of ``count`` instances of each operator tabled at ``t`` seconds,
        under the timer's power limit (``PowerState.kernels``, as ``price_ops`` applies it)."""
        if len(ops) <= _SCALAR_OPS and not self.power.capped:
            return self._kernels_scalar(ops, t)
        flops = np.fromiter((op.flops for op in ops), float, len(ops))
        moved = np.fromiter((op.bytes_moved for op in ops), float, len(ops))
        issue = np.fromiter((op.name == KV_EXPAND for op in ops), float, len(ops))
        slow, watts = self.power.kernels(self.gpu, flops, moved, op_peaks(ops, self.gpu), t, issue)
        counts = np.fromiter((op.count for op in ops), dtype=float, count=len(ops))
        sec = t * slow * counts
        return sec, sec * watts

    def _kernels_scalar(self, ops: Sequence[Op], t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``_kernels`` of a few operators under the default limit in plain floats (a prefill
        attention pricing per iteration): ``PowerState.kernels``' uncapped branch (demand before
        the iteration's limiter), checked
        equal to it in tests/test_serving_energy.py."""
        p = self.power.params
        bw = self.gpu.memory_bw_bps
        peaks = op_peaks(ops, self.gpu)
        sec, joules = [], []
        for op, ti, pk in zip(ops, t.tolist(), peaks.tolist(), strict=True):
            if ti > 0:
                uc = min(max(op.flops / ti / pk, 0.0), 1.0)
                um = min(max(op.bytes_moved / ti / bw, 0.0), 1.0)
            else:
                uc = um = 0.0
            s = ti * op.count
            sec.append(s)
            iw = (p.issue_w or 0.0) if op.name == KV_EXPAND else 0.0
            joules.append(s * (p.base_w + p.memory_w * um + p.compute_w * uc + iw))
        return np.array(sec), np.array(joules)

    def _price(self, ops: Sequence[Op], graphs: bool, cached: bool = True) -> tuple[float, float]:
        """(seconds, joules) of ``price_ops`` of a part of the graph, without the scheduler time."""
        if not ops:
            return 0.0, 0.0
        if is_additive(self.engine, graphs):
            t, _ = device_times(ops, self.gpu, self.cost, self.engine, graphs, cached=cached)
            sec, joules = self._kernels(ops, t)
            return float(sec.sum()), float(joules.sum())
        c = price_ops(ops, self.gpu, self.cost, self.engine, graphs, overhead=False, power=self.power)
        return c.time_s, c.energy_j

    def direct_cost(self, batch: Sequence[Seq], graphs: bool | None = None) -> IterationCost:
        """``price_iteration`` of ``batch`` on every stage (no surrogate) under the timer's
        power limit; ``graphs`` overrides the profile's CUDA-graph rule."""
        stage = self.stages[0] if len(self.stages) == 1 else None
        return price_iteration(self.model, self.gpu, batch, self.parallel, self.cost, self.engine,
                               stage=stage, dtype=self.dtype, kv_dtype=self.kv_dtype, captured=graphs,
                               power=self.power)

    def direct_time(self, batch: Sequence[Seq], graphs: bool | None = None) -> float:
        """Seconds of ``direct_cost``."""
        return self.direct_cost(batch, graphs).time_s

    def _points(self, per_point: list[list[Op]], graphs: bool) -> tuple[np.ndarray, np.ndarray]:
        """Part (seconds, joules) at every grid point: one batched cost-model call when the
        parts add."""
        if not is_additive(self.engine, graphs):
            te = np.array([self._price(ops, graphs) for ops in per_point]).reshape(-1, 2)
            return te[:, 0].copy(), te[:, 1].copy()
        flat = [op for ops in per_point for op in ops]
        if not flat:
            return np.zeros(len(per_point)), np.zeros(len(per_point))
        t, _ = device_times(flat, self.gpu, self.cost, self.engine, graphs)
        sec, joules = self._kernels(flat, t)
        seg = np.repeat(np.arange(len(per_point)), [len(o) for o in per_point])
        return (np.bincount(seg, weights=sec, minlength=len(per_point)),
                np.bincount(seg, weights=joules, minlength=len(per_point)))

    # -- tables -------------------------------------------------------------------------
    def _table(self, store: dict, key: object, n_max: int, ops_for) -> _Table:
        """Tabulate ``sum(op time * count)`` and ``sum(op energy * count)`` of ``ops_for(x)``
        on ``_grid`` up to ``n_max`` (grown by doubling), pricing every grid point in one
        batched cost-model call."""
        tab = store.get(key)
        if tab is None or tab[0][-1] < n_max:
            top = max(n_max, 1 if tab is None else int(tab[0][-1]) * 2)
            grid = _grid(top)
            per_point = [ops_for(int(x)) for x in grid]
            tab = (grid, *self._points(per_point, bool(key)))
            store[key] = tab
        return tab

    def _part_ops(self, batch: Sequence[Seq], names: frozenset[str], keep: bool) -> list[Op]:
        return [op for st in self.stages for op in self._ops(batch, st) if (_part(op.name) in names) == keep]

    def token_cost(self, tokens: np.ndarray | int, graphs: bool) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, joules) of the token part for ``tokens`` new tokens (no attention, no LM head)."""
        x = np.asarray(tokens, dtype=float)
        grid, t, e = self._table(self._token, graphs, int(x.max()), lambda n: self._part_ops(
            [Seq(n, 0, emits_token=False)], _ATTN_OPS | _EMIT_OPS, False))
        return np.interp(x, grid, t), np.interp(x, grid, e)

    def token_time(self, tokens: np.ndarray | int, graphs: bool) -> np.ndarray:
        """Seconds of ``token_cost``."""
        return self.token_cost(tokens, graphs)[0]

    def emit_cost(self, sampled: np.ndarray | int, graphs: bool) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, joules) of the LM head, logits gather and sampling for ``sampled`` sequences."""
        x = np.asarray(sampled, dtype=float)
        if float(x.max()) <= 0:
            return np.zeros_like(x), np.zeros_like(x)
        grid, t, e = self._table(self._emit, graphs, int(x.max()), lambda s: self._part_ops(
            [Seq(1, 0)] * s, _EMIT_OPS, True))
        return np.where(x > 0, np.interp(x, grid, t), 0.0), np.where(x > 0, np.interp(x, grid, e), 0.0)

    def emit_time(self, sampled: np.ndarray | int, graphs: bool) -> np.ndarray:
        """Seconds of ``emit_cost``."""
        return self.emit_cost(sampled, graphs)[0]

    def decode_attention_cost(self, num_seqs: int, ctx_total: np.ndarray, graphs: bool
                              ) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, joules) of decode attention of ``num_seqs`` sequences with ``ctx_total``
        KV tokens in all."""
        key = (num_seqs, graphs)
        tab = self._dec.get(key)
        if tab is None:
            grid = self._ctx_grid
            per_point = [self._decode_attn_ops(num_seqs, int(c)) for c in grid]
            t, e = self._points(per_point, graphs)
            # seconds + 1j * joules: one interpolation gives both (linear in each part)
            tab = self._dec[key] = (grid, t + 1j * e)
        v = np.interp(np.asarray(ctx_total, dtype=float) / num_seqs, tab[0], tab[1])
        return v.real, v.imag

    def decode_attention_time(self, num_seqs: int, ctx_total: np.ndarray, graphs: bool) -> np.ndarray:
        """Seconds of ``decode_attention_cost``."""
        return self.decode_attention_cost(num_seqs, ctx_total, graphs)[0]

    def _decode_attn_ops(self, num_seqs: int, kv_mean: int) -> list[Op]:
        """The graph's decode-attention ops for ``num_seqs`` sequences of ``kv_mean`` KV
        tokens each (from templates; a local layer caps each KV length at its window)."""
        out: list[Op] = []
        kvs = _spread(kv_mean * num_seqs, num_seqs)
        for t, cap in self._dec_templates:
            if isinstance(t, AttentionOp):
                kv = kvs if cap is None else tuple(min(k, cap) for k in kvs)
                out.append(replace(t, q_lens=(1,) * num_seqs, kv_lens=kv))
            elif isinstance(t, GemmOp):
                out.append(replace(t, m=num_seqs))
            elif isinstance(t, ElementwiseOp) and t.name == "kv_expand":
                kv_heads = self.parallel.kv_heads_per_rank(self.model)
                kv = kvs if cap is None else tuple(min(k, cap) for k in kvs)
                out.append(kv_expand_op(sum(kv), kv_heads, self.model.num_heads // self.parallel.tp,
                                        self.model.head_dim + self.model.value_head_dim, t.dtype, t.count))
            elif isinstance(t, ElementwiseOp) and t.name.startswith("extra_decode"):
                out.append(replace(t, elements=num_seqs, bytes_moved=t.bytes_moved / max(1, t.elements) * num_seqs))
            else:
                out.append(t)
        return out

    def prefill_attention_time(self, q: Sequence[int], kv: Sequence[int], graphs: bool = False) -> float:
        """Seconds of ``prefill_attention_cost``."""
        return self.prefill_attention_cost(q, kv, graphs)[0]

    def prefill_attention_cost(self, q: Sequence[int], kv: Sequence[int], graphs: bool = False
                               ) -> tuple[float, float]:
        """(seconds, joules) of attention of prefill chunks (``q[i]`` new tokens reaching KV
        length ``kv[i]``), priced from one op per stage and layer group."""
        if not q:
            return 0.0, 0.0
        qs, kvs = tuple(int(x) for x in q), tuple(int(x) for x in kv)
        key = (qs, kvs, graphs)
        hit = self._pre_memo.get(key)
        if hit is not None:
            return hit
        if len(self._pre_memo) > 100_000:
            self._pre_memo.clear()
        w = self.model.sliding_window
        ops: list[Op] = []
        for t in self._pre_templates:
            if isinstance(t, AttentionOp):
                if t.name == "attn_prefill_window" and w is not None:
                    pairs = [min(k, w) * qq for qq, k in zip(qs, kvs, strict=True)]
                    ops.append(replace(t, q_lens=qs, kv_lens=tuple(
                        max(1, ceil(p / qq)) for p, qq in zip(pairs, qs, strict=True))))
                else:
                    ops.append(replace(t, q_lens=qs, kv_lens=kvs))
            elif isinstance(t, GemmOp):
                ops.append(replace(t, m=sum(kvs)))
            elif isinstance(t, ElementwiseOp) and t.name.startswith("extra_prefill"):
                e = sum(qs)
                ops.append(replace(t, elements=e, bytes_moved=t.bytes_moved / max(1, t.elements) * e))
        # Uncached pricing: these ops rarely repeat, and the cost model's per-op cache would
        # grow with every distinct chunk mix.
        val = self._price(ops, graphs, cached=False)
        self._pre_memo[key] = val
        return val

    # -- the StepTimer protocol ---------------------------------------------------------
    def _scalar(self, kind: str, x: int, graphs: bool) -> tuple[float, float]:
        """Cached scalar token/emit part (seconds, joules; the tables are fixed once built)."""
        key = (kind, x, graphs)
        v = self._scalars.get(key)
        if v is None:
            f = self.token_cost if kind == "token" else self.emit_cost
            t, e = f(x, graphs)
            v = self._scalars[key] = (float(t), float(e))
        return v

    def _direct_memo(self, key: tuple, batch_for) -> tuple[float, float]:
        """Direct pricing, memoised: engines whose host pipeline does not add over parts."""
        hit = self._pre_memo.get(key)
        if hit is None:
            if len(self._pre_memo) > 100_000:
                self._pre_memo.clear()
            c = self.direct_cost(batch_for())
            hit = self._pre_memo[key] = (c.time_s, c.energy_j)
        return hit

    def _decode_graphs(self, num_seqs: int) -> bool:
        """Whether a pure-decode batch of ``num_seqs`` replays a CUDA graph (memoised)."""
        g = self._graphs.get(num_seqs)
        if g is None:
            g = self._graphs[num_seqs] = captures(self.engine, [Seq(1, 1)] * num_seqs)
        return g

    def decode_costs(self, num_seqs: int, ctx_total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        graphs = self._decode_graphs(num_seqs)
        if not is_additive(self.engine, graphs):
            pairs = np.array([self._direct_memo(("dec", num_seqs, int(c)), lambda c=c: [
                Seq(1, max(0, kv - 1)) for kv in _spread(int(c), num_seqs)])
                for c in np.asarray(ctx_total, dtype=float).ravel()]).reshape(-1, 2)
            shape = np.shape(ctx_total)
            return pairs[:, 0].reshape(shape), pairs[:, 1].reshape(shape)
        ctx = np.asarray(ctx_total, dtype=float)
        tt, te = self._scalar("token", num_seqs, graphs)
        et, ee = self._scalar("emit", num_seqs, graphs)
        at, ae = self.decode_attention_cost(num_seqs, ctx, graphs)
        over = self.overhead_s + self.seq_overhead_s * num_seqs
        kt = tt + et + at
        return kt + over, np.minimum(te + ee + ae, self.settle_w * kt) + over * self.gap_w

    def decode_times(self, num_seqs: int, ctx_total: np.ndarray) -> np.ndarray:
        return self.decode_costs(num_seqs, ctx_total)[0]

    def step_cost(self, dec_n: int, dec_ctx: int, pre_q: Sequence[int], pre_kv: Sequence[int],
                  sampled: int, dec_q: int = 1) -> tuple[float, float]:
        if not pre_q and dec_q == 1:
            t1, e1 = self.decode_costs(dec_n, np.array([dec_ctx]))
            return float(t1[0]), float(e1[0])
        tokens = dec_n * dec_q + int(sum(pre_q))
        g = self.engine.launch.mode == "graphs"  # mixed iterations are captured only by full-graph engines
        if not is_additive(self.engine, g):
            def batch() -> list[Seq]:
                dec = [Seq(dec_q, max(0, kv - dec_q)) for kv in _spread(dec_ctx, dec_n)] if dec_n else []
                return dec + [Seq(int(q), int(kv) - int(q), i < sampled)
                              for i, (q, kv) in enumerate(zip(pre_q, pre_kv, strict=True))]
            return self._direct_memo(("mix", dec_n, dec_ctx, tuple(pre_q), tuple(pre_kv), sampled, dec_q), batch)
        t, e = self._scalar("token", tokens, g)
        emit = sampled + dec_n * dec_q
        if emit:
            et, ee = self._scalar("emit", emit, g)
            t += et
            e += ee
        q = list(pre_q)
        kv = list(pre_kv)
        if dec_n and dec_q == 1:
            at, ae = self.decode_attention_cost(dec_n, np.array([dec_ctx]), g)
            t += float(at[0])
            e += float(ae[0])
        elif dec_n:
            q += [dec_q] * dec_n
            kv += list(_spread(dec_ctx, dec_n))
        pt, pe = self.prefill_attention_cost(q, kv, g)
        over = self.overhead_s + self.seq_overhead_s * (dec_n + len(pre_q))
        return t + pt + over, min(e + pe, self.settle_w * (t + pt)) + over * self.gap_w

    def step_time(self, dec_n: int, dec_ctx: int, pre_q: Sequence[int], pre_kv: Sequence[int],
                  sampled: int, dec_q: int = 1) -> float:
        return self.step_cost(dec_n, dec_ctx, pre_q, pre_kv, sampled, dec_q)[0]

    def max_decode_throughput(self, num_seqs: int, context: int) -> float:
        """Tokens/s of back-to-back decode iterations of ``num_seqs`` sequences at
        ``context`` tokens each: an upper bound for the engine's output rate there."""
        d = float(self.decode_times(num_seqs, np.array([float(num_seqs * context)]))[0])
        return num_seqs / d


class AffineStepTimer:
    """Analytic iteration time ``base + per_token * T + per_ctx * C + per_seq * S``
    (T new tokens, C KV tokens attended, S sequences sampled), the same for decode and
    mixed iterations, drawing a constant ``power_w`` per GPU while it runs. For queueing
    what-ifs and hand-checkable tests."""

    def __init__(self, base_s: float, per_token_s: float = 0.0, per_ctx_s: float = 0.0,
                 per_seq_s: float = 0.0, power_w: float = 0.0) -> None:
        self.power_w = power_w
        self.base_s = base_s
        self.per_token_s = per_token_s
        self.per_ctx_s = per_ctx_s
        self.per_seq_s = per_seq_s

    def decode_times(self, num_seqs: int, ctx_total: np.ndarray) -> np.ndarray:
        ctx = np.asarray(ctx_total, dtype=float)
        return (self.base_s + self.per_token_s * num_seqs + self.per_seq_s * num_seqs) + self.per_ctx_s * ctx

    def step_time(self, dec_n: int, dec_ctx: int, pre_q: Sequence[int], pre_kv: Sequence[int],
                  sampled: int, dec_q: int = 1) -> float:
        tokens = dec_n * dec_q + sum(pre_q)
        ctx = dec_ctx + sum(pre_kv)
        return (self.base_s + self.per_token_s * tokens + self.per_seq_s * (sampled + dec_n)
                + self.per_ctx_s * ctx)

    def decode_costs(self, num_seqs: int, ctx_total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = self.decode_times(num_seqs, ctx_total)
        return t, t * self.power_w

    def step_cost(self, dec_n: int, dec_ctx: int, pre_q: Sequence[int], pre_kv: Sequence[int],
                  sampled: int, dec_q: int = 1) -> tuple[float, float]:
        t = self.step_time(dec_n, dec_ctx, pre_q, pre_kv, sampled, dec_q)
        return t, t * self.power_w
