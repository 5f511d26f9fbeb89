"""Training-plan search over one GPU pool: candidates, analytic pruning, bounded evaluation.

Stages, each a pure function over typed records:

1. ``candidates``: every layout of the pool's GPUs that divides: TP dividing the heads (and
   the FFN width) within one scale-up domain, CP dividing the sequence (only with at least
   ``CP_MIN_LOCAL_TOKENS`` tokens per rank), PP dividing the layers, DP the rest (dividing the
   global batch), EP dividing the experts and DP for mixture-of-experts models, micro-batches
   dividing ``global_batch / dp``, interleaving ``vpp`` dividing the layers per stage.
2. ``memory_variants``: per layout, the memory knobs (recomputation, ZeRO stage, offload)
   priced by the simulator's own memory model (``sim.training.memory.stage_memory``, the
   function ``simulate_step`` checks). Dominated settings are never evaluated: for each ZeRO
   stage only the least recomputation that fits (``none`` < ``selective`` < ``full`` in
   compute); ZeRO 2 and 3 only while ZeRO 1 still needs recomputation; offload only when
   nothing else fits the layout. What does not fit is a ``Rejection`` with its overshoot.
3. ``lower_bound``: a bound on the simulated step time from the per-layer prices the
   simulator uses (``sim.training.layer_ops.LayerCoster``): the stage with the most work
   runs ``m (F_s + B_s)`` after the first micro-batch's first chunk reached it and before its
   last gradient leaves for stage 0, ``sum_{r<s} (F_r + B_r) / v`` (1F1B and interleaved
   dependencies). It leaves out communication waits, host dispatch and the optimizer, so the
   simulator can only be slower.
4. ``search``: one heap of layouts (at ``layout_bound``, optimistic over their memory
   settings, memory not yet checked) and memory-feasible candidates (at their own bound);
   a layout is memory-checked only when it reaches the top of the heap, candidates are
   simulated (``evaluate``, given by the caller, run by a ``planner.executor``) in waves of at
   most ``top`` until the ``top`` best simulated scores are no worse than the next bound
   (branch and bound: the result is the simulator's optimum over the surviving candidates,
   not a heuristic pick among them).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

from fleetsim.calibration.power import power_state
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.cluster import node_host_power_w, price_per_gpu_hour
from fleetsim.hardware.errors import ConfigError, FleetsimError, InfeasibleError
from fleetsim.hardware.specs import GPUSpec
from fleetsim.sim.training.job import (
    OffloadTier,
    Recompute,
    TrainJob,
    TrainParallel,
    chunk_layers,
    validate_job,
)
from fleetsim.sim.training.layer_ops import LayerCoster
from fleetsim.sim.training.memory import (
    MemoryBreakdown,
    check_capacity,
    stage_memory,
    stage_params,
    state_bytes,
)
from fleetsim.sim.training.placement import CollectivePricer, scale_up_domain
from fleetsim.sim.training.schedule import interleaved, max_in_flight, one_f_one_b, stage_orders
from fleetsim.sim.training.step import comm_slowdown_of
from pydantic import BaseModel, ConfigDict

from .executor import Executor, LocalExecutor

Objective = Literal["throughput", "time", "cost", "energy"]
OBJECTIVES: tuple[str, ...] = ("throughput", "time", "cost", "energy")
RECOMPUTE_ORDER: tuple[Recompute, ...] = ("none", "selective", "full")
CP_MIN_LOCAL_TOKENS = 4096
"""Context parallelism is searched only while every rank keeps at least this many tokens:
below it the ring's KV transfers no longer hide behind the attention kernel (Megatron-LM
recommends CP for sequences of 8k tokens and more)."""
MAX_MICRO_BATCH = 16
"""Largest micro-batch searched (sequences)."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TrainCandidate(_Record):
    """One training layout of one pool's GPUs: parallel degrees, micro-batch, memory knobs."""

    pool: int = 0
    tp: int = 1
    cp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1
    vpp: int = 1
    micro_batch: int = 1
    sequence_parallel: bool = False
    recompute: Recompute = "none"
    zero: int = 0
    offload_optimizer: OffloadTier | None = None
    offload_params: OffloadTier | None = None
    layer_split: tuple[int, ...] | None = None

    @property
    def gpus(self) -> int:
        return self.tp * self.cp * self.pp * self.dp

    def parallel(self) -> TrainParallel:
        return TrainParallel(tp=self.tp, cp=self.cp, pp=self.pp, dp=self.dp, ep=self.ep, vpp=self.vpp,
                             sequence_parallel=self.sequence_parallel, layer_split=self.layer_split)

    def label(self) -> str:
        parts = [f"tp{self.tp}", f"pp{self.pp}", f"dp{self.dp}"]
        parts += [f"{k}{v}" for k, v in (("cp", self.cp), ("ep", self.ep), ("v", self.vpp)) if v > 1]
        parts += [f"mb{self.micro_batch}", f"rc={self.recompute}", f"zero{self.zero}"]
        if self.sequence_parallel:
            parts.append("sp")
        if self.offload_optimizer:
            parts.append(f"opt->{self.offload_optimizer}")
        if self.offload_params:
            parts.append(f"params->{self.offload_params}")
        if self.layer_split:
            parts.append("split=" + "/".join(map(str, self.layer_split)))
        return " ".join(parts)

    def sort_key(self) -> tuple:
        return (self.pool, self.tp, self.cp, self.pp, self.dp, self.ep, self.vpp, self.micro_batch,
                RECOMPUTE_ORDER.index(self.recompute), self.zero, self.offload_optimizer or "",
                self.offload_params or "", self.layer_split or ())


class Rejection(_Record):
    """A candidate that cannot run, with the constraint it breaks."""

    candidate: TrainCandidate
    constraint: Literal["layout", "memory", "host_memory", "nvme"]
    reason: str
    overshoot_bytes: float = 0.0
    """Bytes per GPU above the HBM (``memory``) for the closest-miss report."""


class TrainEvaluation(_Record):
    """A simulated candidate: step time, throughput, memory, energy, time and cost to train."""

    candidate: TrainCandidate
    gpu: str
    gpus: int
    time_s: float
    mfu: float
    tokens_per_s: float
    peak_memory_bytes: float
    memory: dict[str, float]
    energy_j: float
    """Board energy of every GPU over one step (J)."""
    facility_j_per_token: float
    train_time_s: float | None = None
    train_cost_usd: float | None = None
    train_energy_j: float | None = None
    price_per_gpu_hour: float | None = None
    breakdown: dict[str, float] = {}
    bound_s: float = 0.0
    priced_by: str = "simulated"


@dataclass(frozen=True)
class Bound:
    """Lower bounds of one candidate's simulated step: seconds and GPU kernel joules."""

    time_s: float
    kernel_j: float


@dataclass
class SearchResult:
    """Best-first evaluations (the first ``top`` exactly ranked), rejections, counts."""

    plans: list[TrainEvaluation]
    rejected: list[Rejection]
    candidates: int
    simulated: int
    failed: list[Rejection] = field(default_factory=list)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def tp_options(job: TrainJob) -> list[int]:
    """TP degrees that divide heads, FFN width and GPUs, within one scale-up domain."""
    m, pool = job.model, job.cluster.pools[job.pool]
    dom = scale_up_domain(job)
    out = []
    for t in divisors(min(dom, pool.gpus)):
        if m.num_heads % t or m.intermediate_size % t or pool.gpus % t:
            continue
        if m.num_kv_heads % t and t % m.num_kv_heads:
            continue
        out.append(t)
    return out


def layouts(job: TrainJob) -> Iterator[TrainCandidate | Rejection]:
    """Every parallel layout and micro-batch of ``job``'s pool (memory knobs at their least)."""
    m = job.model
    gpus = job.cluster.pools[job.pool].gpus
    B, S = job.global_batch, job.seq_len
    cps = [c for c in divisors(S) if c == 1 or S // c >= CP_MIN_LOCAL_TOKENS]
    for tp in tp_options(job):
        for cp in cps:
            for pp in divisors(m.num_layers):
                inner = tp * cp * pp
                if gpus % inner:
                    continue
                dp = gpus // inner
                sp = tp > 1 and (S // cp) % tp == 0
                base = TrainCandidate(pool=job.pool, tp=tp, cp=cp, pp=pp, dp=dp, sequence_parallel=sp)
                if B % dp:
                    yield Rejection(candidate=base, constraint="layout",
                                    reason=f"dp={dp} does not divide global_batch={B}")
                    continue
                eps = [e for e in divisors(dp) if m.num_experts % e == 0] if m.is_moe else [1]
                for ep in eps:
                    for mb in divisors(B // dp):
                        if mb > MAX_MICRO_BATCH:
                            break
                        mbs = B // (dp * mb)
                        vpps = [1] + ([v for v in divisors(m.num_layers // pp) if v > 1]
                                      if pp > 1 and mbs % pp == 0 else [])
                        for v in vpps:
                            yield base.model_copy(update={"ep": ep, "micro_batch": mb, "vpp": v})


def job_for(base: TrainJob, c: TrainCandidate) -> TrainJob:
    """``base`` with the candidate's layout and knobs (checked by ``validate_job``)."""
    job = base.model_copy(update={
        "parallel": c.parallel(), "micro_batch": c.micro_batch, "recompute": c.recompute,
        "zero": c.zero, "fsdp": False, "schedule": "interleaved" if c.vpp > 1 else "1f1b",
        "offload_optimizer": c.offload_optimizer, "offload_params": c.offload_params, "pool": c.pool,
    })
    validate_job(job)
    return job


@cache
def in_flight(schedule: str, p: int, m: int, v: int, stage: int) -> int:
    """Chunk activations ``stage`` holds at most (``sim.training.schedule``'s op order)."""
    if schedule == "interleaved":
        return max_in_flight(interleaved(p, m, stage, v))
    if schedule == "1f1b":
        return max_in_flight(one_f_one_b(p, m, stage))
    return max_in_flight(stage_orders(schedule, p, m, v)[stage])


def peak_memory(job: TrainJob) -> MemoryBreakdown:
    """The fullest stage's memory. With an even split the first stage (most micro-batches in
    flight, embedding) or the last (LM head, logits) is the fullest; every stage otherwise."""
    par = job.parallel
    stages = range(par.pp) if par.layer_split is not None else sorted({0, par.pp - 1})
    return max((stage_memory(job, s, in_flight(job.schedule, par.pp, job.grad_accum, par.vpp, s))
                for s in stages), key=lambda mb: mb.total_bytes)


def fits(job: TrainJob, gpu: GPUSpec) -> Rejection | None:
    """None when the job fits HBM (and host memory / NVMe for offload), else the rejection."""
    mem = peak_memory(job)
    try:
        check_capacity(job, mem, gpu.memory_bytes)
    except InfeasibleError as exc:
        hbm = mem.total_bytes > gpu.memory_bytes
        constraint = "memory" if hbm else ("host_memory" if "host memory" in str(exc) else "nvme")
        return Rejection(candidate=candidate_of(job), constraint=constraint, reason=str(exc).removeprefix("infeasible: "),
                         overshoot_bytes=max(0.0, mem.total_bytes - gpu.memory_bytes))
    return None


def candidate_of(job: TrainJob) -> TrainCandidate:
    p = job.parallel
    return TrainCandidate(pool=job.pool, tp=p.tp, cp=p.cp, pp=p.pp, dp=p.dp, ep=p.ep, vpp=p.vpp,
                          micro_batch=job.micro_batch, sequence_parallel=p.sequence_parallel,
                          recompute=job.recompute, zero=job.zero_stage, offload_optimizer=job.offload_optimizer,
                          offload_params=job.offload_params, layer_split=p.layer_split)


def memory_variants(base: TrainJob, layout: TrainCandidate, gpu: GPUSpec
                    ) -> tuple[list[TrainCandidate], list[Rejection]]:
    """The memory settings of one layout worth evaluating (module doc, stage 2), and the
    closest rejection when none fits. Memory only falls with more recomputation, a higher
    ZeRO stage and offload, so the most saving setting is tried first: when even it does not
    fit, nothing less saving is tried."""
    kept: list[TrainCandidate] = []
    misses: list[Rejection] = []
    sharded = layout.dp * layout.cp > 1
    zeros = (0, 1, 2, 3) if sharded else (0,)

    seen: dict[TrainCandidate, Rejection | None] = {}

    def miss_of(c: TrainCandidate) -> Rejection | None:
        if c not in seen:
            seen[c] = fits(job_for(base, c), gpu)
            if seen[c] is not None:
                misses.append(seen[c])  # type: ignore[arg-type]
        return seen[c]

    def least_recompute(c: TrainCandidate) -> TrainCandidate | None:
        if not kept and miss_of(c.model_copy(update={"recompute": "full"})) is not None:
            return None
        for rc in RECOMPUTE_ORDER[:-1]:
            cc = c.model_copy(update={"recompute": rc})
            if miss_of(cc) is None:
                return cc
        return c.model_copy(update={"recompute": "full"})

    most = layout.model_copy(update={"zero": zeros[-1]})
    if least_recompute(most) is not None:
        for z in zeros:
            if z >= 2 and kept and kept[-1].recompute == "none":
                break
            got = least_recompute(layout.model_copy(update={"zero": z}))
            if got is not None:
                kept.append(got)
    else:
        offloads: list[dict] = [{"zero": z, "offload_optimizer": "cpu"} for z in zeros]
        if sharded:
            offloads.append({"zero": 3, "offload_optimizer": "cpu", "offload_params": "cpu"})
        if least_recompute(layout.model_copy(update=offloads[-1])) is not None:
            for upd in offloads:
                got = least_recompute(layout.model_copy(update=upd))
                if got is not None:
                    kept.append(got)
                    break
    closest = [] if kept else [min(misses, key=lambda r: (r.overshoot_bytes, r.candidate.sort_key()))]
    return kept, closest


class BoundCache:
    """Per-layer prices of the simulator's ``LayerCoster``, shared by candidates with the same
    layer-level settings (the layer cost does not depend on ZeRO, offload or interleaving)."""

    def __init__(self, gpu: GPUSpec, cost: object) -> None:
        self.gpu, self.cost = gpu, cost
        self._coster: dict[tuple, LayerCoster] = {}
        self._pricer: dict[tuple, CollectivePricer] = {}
        self._work: dict[tuple, list[tuple[float, float, float]]] = {}
        self._params: dict[tuple, float] = {}

    @staticmethod
    def _key(job: TrainJob) -> tuple:
        p = job.parallel
        return (job.pool, p.tp, p.cp, p.pp, p.dp, p.ep, p.sequence_parallel, job.micro_batch, job.recompute)

    def coster(self, job: TrainJob) -> LayerCoster:
        key = self._key(job)
        hit = self._coster.get(key)
        if hit is None:
            pricer = self._pricer[key] = CollectivePricer(job, self.gpu, self.cost)
            hit = self._coster[key] = LayerCoster(job, self.gpu, self.cost, pricer, 1.0,
                                                  power_state(self.gpu, job.power_cap_w))
        return hit

    def stage_work(self, job: TrainJob) -> list[tuple[float, float, float]]:
        """(forward s, backward s, kernel J) of one micro-batch through each stage's layers."""
        key = (self._key(job), job.parallel.vpp, job.parallel.layer_split)
        hit = self._work.get(key)
        if hit is None:
            hit = self._work[key] = self._stage_work(job)
        return hit

    def _stage_work(self, job: TrainJob) -> list[tuple[float, float, float]]:
        m, par = job.model, job.parallel
        lc = self.coster(job)
        out = []
        for s, chunks in enumerate(chunk_layers(job)):
            f = b = j = 0.0
            for rng in chunks:
                for i in rng:
                    lt = lc.layer(m.layer_kinds[i], m.is_local_layer(i))
                    f, b, j = f + lt.fwd_s, b + lt.bwd_s, j + lt.fwd_j + lt.bwd_j
            if s == 0:
                (ef, efj), (eb, ebj) = lc.embedding_priced()
                f, b, j = f + ef, b + eb, j + efj + ebj
            if s == par.pp - 1:
                (hf, hfj), (hb, hbj), _ = lc.head_priced()
                f, b, j = f + hf, b + hb, j + hfj + hbj
            out.append((f, b, j))
        return out

    def dp_comm_s(self, job: TrainJob, stage: int) -> float:
        """Seconds of data-parallel collectives a stage's communication stream must run per
        step: the gradient reduction once (ZeRO 0/1) or per micro-batch (ZeRO 2/3), and under
        ZeRO 3 one all-gather of the stage's weights per micro-batch (a lower bound: the
        simulator splits them into buckets and gathers for the backward too)."""
        par = job.parallel
        if par.dp * par.cp == 1:
            return 0.0
        pricer = self.pricer(job)
        sb = state_bytes(job)
        pkey = (par.tp, par.ep, par.pp, par.vpp, par.layer_split, stage)
        params = self._params.get(pkey)
        if params is None:
            params = self._params[pkey] = sum(stage_params(job, stage))
        z = job.zero_stage
        kind = "all_reduce" if z == 0 else "reduce_scatter"
        reduce_s = pricer.time(kind, params * sb.grads, "dpcp")
        if z < 2:
            return reduce_s
        gather_s = pricer.time("all_gather", params * sb.weights, "dpcp") if z == 3 else 0.0
        return job.grad_accum * (reduce_s + gather_s)

    def pricer(self, job: TrainJob) -> CollectivePricer:
        self.coster(job)
        return self._pricer[self._key(job)]

    def bound(self, job: TrainJob) -> Bound:
        """Lower bound of the simulated step (module doc, stage 3). Per stage ``s`` with
        compute ``W = m (F_s + B_s)``: the step is at least ``W`` plus the first chunk's
        trip to ``s`` and the last gradient's trip back, and at least ``W + K s' / (1 + s')``
        where ``K`` is its data-parallel communication (``dp_comm_s``) and ``s'`` the engine's
        compute slowdown under overlapped communication: compute and communication together
        cover at least that time whatever their overlap."""
        work = self.stage_work(job)
        m, v = job.grad_accum, job.parallel.vpp
        slow = comm_slowdown_of(job.engine)
        best = 0.0
        before = 0.0
        for s, (f, b, _) in enumerate(work):
            w = m * (f + b)
            best = max(best, w + before / v, w + self.dp_comm_s(job, s) * slow / (1.0 + slow))
            before += f + b
        per_stage = job.parallel.world_size // job.parallel.pp
        return Bound(best, per_stage * m * sum(j for _, _, j in work))


class Score:
    """An objective: ``score`` of an evaluation and ``bound`` of a candidate, both minimised
    (throughput and time to train rank by step time: the tokens per step are fixed)."""

    def __init__(self, objective: str, base: TrainJob) -> None:
        if objective not in OBJECTIVES:
            raise ConfigError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
        self.objective = objective
        self.base = base
        if objective == "cost":
            for i, pool in enumerate(base.cluster.pools):
                if price_per_gpu_hour(base.cluster, i) is None:
                    raise ConfigError(f"objective 'cost' needs a price: GPU {pool.node.gpu} of cluster "
                                      f"{base.cluster.name!r} has no catalog price per hour")

    def score(self, ev: TrainEvaluation) -> float:
        if self.objective == "cost":
            return ev.time_s * ev.gpus * float(ev.price_per_gpu_hour or 0.0) / 3600.0 / self._tokens
        if self.objective == "energy":
            return ev.facility_j_per_token
        return ev.time_s

    @property
    def _tokens(self) -> float:
        return float(self.base.tokens_per_step)

    def bound(self, job: TrainJob, b: Bound) -> float:
        if self.objective == "cost":
            price = price_per_gpu_hour(job.cluster, job.pool) or 0.0
            return b.time_s * job.parallel.world_size * price / 3600.0 / self._tokens
        if self.objective == "energy":
            pool = job.cluster.pools[job.pool]
            nodes = -(-job.parallel.world_size // pool.gpus_used_per_node)
            host_w = node_host_power_w(pool.node) * nodes
            return (b.kernel_j + host_w * b.time_s) * job.cluster.pue / self._tokens
        return b.time_s


def layout_bound(base: TrainJob, lay: TrainCandidate, bounds: BoundCache, score: Score) -> float:
    """A bound on the objective of every memory setting of layout ``lay`` (before its memory
    is checked): no recomputation (the least compute and kernel energy), the ZeRO stage with
    the least data-parallel communication, no offload (the bound leaves the optimizer out)."""
    sharded = lay.dp * lay.cp > 1
    best = float("inf")
    for z in (0, 1, 2, 3) if sharded else (0,):
        job = job_for(base, lay.model_copy(update={"recompute": "none", "zero": z}))
        best = min(best, score.bound(job, bounds.bound(job)))
    return best


def search(base: TrainJob, evaluate: Callable[[TrainJob, float], TrainEvaluation], objective: str = "throughput",
           top: int = 10, cost: object = None, executor: Executor | None = None) -> SearchResult:
    """Best ``top`` candidates of ``base``'s pool by ``objective`` (module doc).

    ``base``: a validated job giving model, cluster, pool, batch, sequence, recipe, engine and
    power cap; ``evaluate(job, bound_s)`` simulates one job (the public API passes the
    simulator; picklable for a process pool or Ray). ``cost``: the cost model (None: the GPU's
    default). ``executor``: where the simulations run (``planner.executor``; None: in this
    process). Candidates go out in waves of at most ``top``, in bound order: the first wave
    the ``top`` best bounds, each later one the next candidates whose bound is below the
    ``top``-th simulated score. The waves depend only on the scores, so the result, and which
    candidates were simulated, do not depend on the executor."""
    gpu = get_gpu(base.cluster.pools[base.pool].node.gpu)
    if cost is None:
        from fleetsim.calibration import get_cost_model

        cost = get_cost_model(gpu)
    score = Score(objective, base)
    rejected: list[Rejection] = []
    bounds = BoundCache(gpu, cost)
    # One heap of layouts (memory not yet checked, at their optimistic bound) and memory-
    # feasible candidates (at their own bound), ordered by (bound, sort key, kind).
    heap: list[tuple[float, tuple, int, TrainCandidate, TrainJob | None, float]] = []
    for lay in layouts(base):
        if isinstance(lay, Rejection):
            rejected.append(lay)
            continue
        try:
            lb = layout_bound(base, lay, bounds, score)
        except ConfigError as exc:
            rejected.append(Rejection(candidate=lay, constraint="layout", reason=str(exc)))
            continue
        heap.append((lb, lay.sort_key(), 0, lay, None, 0.0))
    heapq.heapify(heap)
    n = 0
    dead: dict[tuple, int] = {}
    done: list[tuple[float, tuple, TrainEvaluation]] = []
    failed: list[Rejection] = []
    run: Executor = executor if executor is not None else LocalExecutor(1)
    trial = Trial(evaluate)
    while heap:
        wave: list[tuple[tuple, TrainJob, float]] = []
        while heap and len(wave) < top:
            if len(done) >= top and done[top - 1][0] <= heap[0][0]:
                break
            _, key, kind, c, job, b = heapq.heappop(heap)
            if job is not None:
                wave.append((key, job, b))
                continue
            shape = (c.tp, c.cp, c.pp, c.dp, c.ep, c.vpp)
            if dead.get(shape, c.micro_batch + 1) <= c.micro_batch:
                continue  # a micro-batch no larger of this shape did not fit: activations only grow
            try:
                kept, misses = memory_variants(base, c, gpu)
            except ConfigError as exc:
                rejected.append(Rejection(candidate=c, constraint="layout", reason=str(exc)))
                continue
            rejected += misses
            if not kept:
                dead[shape] = min(dead.get(shape, c.micro_batch), c.micro_batch)
            for cc in kept:
                n += 1
                cj = job_for(base, cc)
                cb = bounds.bound(cj)
                heapq.heappush(heap, (score.bound(cj, cb), cc.sort_key(), 1, cc, cj, cb.time_s))
        if not wave:
            break
        outs = run.map(trial, [(job, b) for _, job, b in wave])
        for (key, job, _), out in zip(wave, outs, strict=True):
            if isinstance(out, str):
                failed.append(Rejection(candidate=candidate_of(job), constraint="layout", reason=out))
            else:
                done.append((score.score(out), key, out))
        done.sort(key=lambda t: (t[0], t[1]))
    return SearchResult(plans=[ev for _, _, ev in done[:top]], rejected=rejected, candidates=n,
                        simulated=len(done) + len(failed), failed=failed)


@dataclass(frozen=True)
class Trial:
    """``evaluate(job, bound_s)`` of one ``(job, bound_s)`` item, or the one-line reason it
    could not be simulated (a module-level callable, so process pools and Ray can pickle it)."""

    evaluate: Callable[[TrainJob, float], TrainEvaluation]

    def __call__(self, item: tuple[TrainJob, float]) -> TrainEvaluation | str:
        try:
            return self.evaluate(*item)
        except FleetsimError as exc:
            return str(exc)


def closest_miss(rejected: list[Rejection]) -> Rejection | None:
    """The memory rejection with the smallest overshoot (ties: the first layout)."""
    mem = [r for r in rejected if r.constraint == "memory"]
    if not mem:
        return None
    return min(mem, key=lambda r: (r.overshoot_bytes, r.candidate.sort_key()))
