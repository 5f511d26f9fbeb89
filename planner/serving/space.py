"""Candidate generation and analytic pruning for the serving planner.

Stage 1 (:func:`generate`): per supply pool (a GPU type of the inventory or of the market),
every TP size of ``planner.first_plan.tp_candidates``, the smallest pipeline depth that fits
(plus ``extra_pp`` doublings), EP in {1, TP} for a mixture-of-experts model, and the
scheduler knobs of the :class:`SearchSpace`. Stage 2 (:func:`prune`): the layout and memory
fit come from ``sim.serving.feasibility.check_replica`` (inside the timer factory the caller
passes, the one the simulator's deployment builder also calls); the analytic steady state is
``planner.first_plan.size_replica`` on the engine profile's iteration prices. Uncapped step
times are a lower bound on capped ones, so pruning on them never drops a candidate that a
power cap would make feasible. Every dropped candidate is a :class:`Rejection` value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fleetsim.hardware.errors import FleetsimError, InfeasibleError
from fleetsim.hardware.specs import GPUSpec, PoolSpec
from fleetsim.planner.first_plan import (
    ReplicaTimer,
    ServingTargets,
    pipeline_depths,
    size_replica,
    tp_candidates,
)
from fleetsim.planner.serving.records import (
    Analytic,
    Bottleneck,
    Knobs,
    Rejection,
    SearchSpace,
    Slo,
)
from fleetsim.sim.serving.feasibility import gpus_per_node
from fleetsim.workloads.models import ModelSpec

TimerFactory = Callable[[PoolSpec, GPUSpec, int, int, int, int], ReplicaTimer]
"""(pool, gpu, tp, pp, ep, max_num_batched_tokens) -> the replica's step times, or
``InfeasibleError`` when the layout does not run (``feasibility.check_replica``)."""


@dataclass(frozen=True)
class Supply:
    """One pool GPUs can come from: its spec, $ per GPU-hour, GPUs available and the power
    terms of the budget (``count_idle``: the pool's GPUs draw idle power whether used or not,
    as in a fixed inventory; otherwise a replica brings its host share with it)."""

    index: int
    pool: PoolSpec
    gpu: GPUSpec
    price_per_gpu_hour: float
    available: int
    host_w_per_gpu: float
    pue: float
    count_idle: bool

    def replica_power_w(self, gpus: int, cap_w: float | None) -> float:
        """Facility watts a replica of ``gpus`` GPUs adds at most: its boards at their cap
        (the limiter holds the board at or below it), over idle for an inventory, plus the
        host share for a market, times the PUE."""
        cap = self.gpu.tdp_w if cap_w is None else cap_w
        per = cap - self.gpu.idle_power_w if self.count_idle else cap + self.host_w_per_gpu
        return self.pue * gpus * per


def caps_for(gpu: GPUSpec, fractions: tuple[float, ...]) -> list[float | None]:
    """The discrete caps of ``gpu`` (W): fractions of TDP clipped to its lowest settable cap;
    1.0 is ``None`` (uncapped)."""
    out: list[float | None] = []
    for f in sorted(set(fractions), reverse=True):
        cap = None if f >= 1.0 else max(gpu.min_power_cap_w, round(f * gpu.tdp_w))
        if cap not in out:
            out.append(cap)
    return out


def generate(model: ModelSpec, supplies: list[Supply], space: SearchSpace) -> Iterator[tuple[Supply, Knobs]]:
    """Every layout x scheduler knob per supply pool (uncapped; caps join at evaluation)."""
    moe = model.num_experts > 0
    for s in supplies:
        tps = tp_candidates(model.num_heads, model.num_kv_heads, gpus_per_node(s.pool))
        for tp in tps:
            for pp in pipeline_depths(s.pool.gpus, tp, model.num_layers):
                eps = sorted({1, tp}) if moe and tp > 1 and model.num_experts % tp == 0 else [1]
                for ep in eps:
                    for tok in space.max_num_batched_tokens:
                        for seqs in space.max_num_seqs:
                            yield s, Knobs(pool=s.index, gpu=s.gpu.name, tp=tp, pp=pp, ep=ep,
                                           max_num_seqs=seqs, max_num_batched_tokens=tok)


def _category(reason: str) -> Bottleneck:
    if "KV cache" in reason or "no room" in reason or "weights" in reason:
        return "memory"
    return "layout"


def prune(model: ModelSpec, supplies: list[Supply], space: SearchSpace, slo: Slo, isl: int, osl: int,
          make_timer: TimerFactory) -> tuple[list[tuple[Supply, Analytic]], list[Rejection]]:
    """Analytic evaluation of every generated candidate: the fits and their steady state,
    and the rejections. Per (pool, tp, ep, token budget) only the smallest fitting pipeline
    depth and ``extra_pp`` more are kept (deeper ones only add stages)."""
    kept: list[tuple[Supply, Analytic]] = []
    rejected: list[Rejection] = []
    timers: dict[tuple[int, int, int, int, int], ReplicaTimer | Rejection] = {}
    depth_used: dict[tuple[int, int, int, int], int] = {}
    for s, k in generate(model, supplies, space):
        lay = (s.index, k.tp, k.ep, k.max_num_batched_tokens)
        key = (*lay[:2], k.pp, *lay[2:])
        if key not in timers:
            fitted_at = depth_used.get(lay)
            if fitted_at is not None and k.pp > fitted_at * 2**space.extra_pp:
                continue
            try:
                timers[key] = make_timer(s.pool, s.gpu, k.tp, k.pp, k.ep, k.max_num_batched_tokens)
                depth_used.setdefault(lay, k.pp)
            except InfeasibleError as exc:
                timers[key] = Rejection(knobs=k, stage="memory", bottleneck=_category(exc.reason),
                                        reason=exc.reason)
            except FleetsimError as exc:
                timers[key] = Rejection(knobs=k, stage="layout", bottleneck="layout", reason=str(exc))
        t = timers[key]
        if isinstance(t, Rejection):
            if lay not in depth_used and k.max_num_seqs == space.max_num_seqs[0]:
                rejected.append(t)  # one line per layout, not per scheduler knob
            continue
        got = analytic(k, t, slo, isl, osl)
        (kept if isinstance(got, Analytic) else rejected).append((s, got) if isinstance(got, Analytic) else got)
    # layouts that fit only deeper: drop the shallower rejections of that layout
    rejected = [r for r in rejected if r.stage != "memory" or
                (r.knobs.pool, r.knobs.tp, r.knobs.ep, r.knobs.max_num_batched_tokens) not in depth_used]
    return kept, rejected


def analytic(k: Knobs, timer: ReplicaTimer, slo: Slo, isl: int, osl: int) -> Analytic | Rejection:
    """``size_replica`` for one candidate, with what limits its batch."""
    targets = ServingTargets(isl=isl, osl=osl, ttft_s=slo.ttft_s, tpot_s=slo.tpot_s, max_num_seqs=k.max_num_seqs)
    sized = size_replica(targets, timer)
    if isinstance(sized, str):
        cat: Bottleneck = ("kv_capacity" if sized.startswith("KV cache") else
                           "ttft_slo" if sized.startswith("prefill") else _one_seq(timer, slo, isl, osl))
        return Rejection(knobs=k, stage="analytic", bottleneck=cat, reason=sized, miss=_miss(timer, slo, isl, osl, cat))
    b, p, _, ttft, tpot, x = sized
    e = timer.engines
    per_engine = b // e
    b_kv = timer.kv_capacity_tokens // ((isl + osl) * e)
    limited: Bottleneck
    if per_engine >= b_kv and b_kv <= k.max_num_seqs:
        limited = "kv_capacity"
    elif per_engine >= k.max_num_seqs:
        limited = "max_num_seqs"
    else:
        nxt = timer.iteration_s(per_engine + 1, isl + osl // 2, round((per_engine + 1) * isl / osl))
        limited = "tpot_slo" if slo.tpot_s is not None and nxt > slo.tpot_s else "ttft_slo"
    return Analytic(knobs=k, batch=b, limited_by=limited, kv_tokens=timer.kv_capacity_tokens, prefill_s=p,
                    ttft_s=ttft, tpot_s=tpot, replica_rps=x, max_replicas=timer.max_replicas)


def _one_seq(timer: ReplicaTimer, slo: Slo, isl: int, osl: int) -> Bottleneck:
    tpot = timer.iteration_s(1, isl + osl // 2, round(isl / osl))
    return "tpot_slo" if slo.tpot_s is not None and tpot > slo.tpot_s else "ttft_slo"


def _miss(timer: ReplicaTimer, slo: Slo, isl: int, osl: int, cat: Bottleneck) -> float | None:
    """How far one sequence is from the target it misses, as observed / target (> 1)."""
    if cat == "ttft_slo" and slo.ttft_s is not None:
        one = timer.prefill_s(isl) + timer.iteration_s(1, isl + osl // 2, round(isl / osl))
        return one / slo.ttft_s
    if cat == "tpot_slo" and slo.tpot_s is not None:
        return timer.iteration_s(1, isl + osl // 2, round(isl / osl)) / slo.tpot_s
    if cat == "kv_capacity":
        return (isl + osl) * timer.engines / max(timer.kv_capacity_tokens, 1)
    return None


def rank_for_simulation(pairs: list[tuple[Supply, Analytic]], objective: str, top: int
                        ) -> list[tuple[Supply, Analytic]]:
    """The ``top`` candidates of each GPU pool by the objective per request/s the analytic
    bound gives ($/h, GPUs or W per request/s; requests/s per GPU for max goodput), plus the
    best of every TP degree not among them: the analytic bound is optimistic by different
    amounts for different layouts, so each degree's best option gets a simulated capacity."""
    def score(pair: tuple[Supply, Analytic]) -> tuple[float, str]:
        s, a = pair
        g = a.knobs.gpus
        per = {"min_cost": g * s.price_per_gpu_hour, "min_gpus": float(g),
               "min_energy": s.replica_power_w(g, None)}.get(objective, float(g))
        return per / a.replica_rps, a.knobs.id

    out: list[tuple[Supply, Analytic]] = []
    for idx in dict.fromkeys(s.index for s, _ in pairs):
        mine = sorted((p for p in pairs if p[0].index == idx), key=score)
        chosen = mine[:top]
        for tp in dict.fromkeys(a.knobs.tp for _, a in mine) if top else ():
            if all(a.knobs.tp != tp for _, a in chosen):
                chosen.append(next(p for p in mine if p[1].knobs.tp == tp))
        out += chosen
    return out


def bucket_edges(total_tokens: list[int] | None, n: int) -> list[float]:
    """Edges of ``n`` request-size buckets at quantiles of prompt+output tokens."""
    if n <= 1 or not total_tokens:
        return [0.0, math.inf]
    xs = sorted(total_tokens)
    inner = [float(xs[min(len(xs) - 1, (len(xs) * i) // n)]) for i in range(1, n)]
    return [0.0, *sorted(set(inner)), math.inf]
