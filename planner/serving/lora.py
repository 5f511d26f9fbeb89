"""Planning for an adapter population: GPU adapter slots, their memory and their hit rate.

When the workload carries LoRA adapters (a population ``adapters=N,...`` or a trace with
``adapter_id``), every replica serves them with ``S`` GPU adapter slots (vLLM ``max_loras``:
adapters resident and distinct adapters per batch) of rank ``max_lora_rank``, the smallest
rank vLLM accepts that holds the population's largest. The slot counts tried are the search
space's ``adapter_slots`` (choices above the population size collapse to it). For each the
whole serving search runs (``planner.serving.search.search`` with that ``LoraConfig``):

* memory: the slots come off the KV cache in the one feasibility owner
  (``sim.serving.feasibility.kv_blocks_for`` via ``lora_slot_bytes``), so a slot count that
  leaves no KV block is a ``memory`` rejection naming the slots and their GiB;
* compute: the analytic step times gain the LoRA kernels, ``n_proj x layers`` applications
  of ``calibration.lora`` (measured table or roofline) over the iteration's tokens, the
  expected distinct adapters of its sequences (capped at ``S``) and the population's
  largest rank, through ``sim.serving.lora.kernel_seconds``, the engine's own formula;
* capacity: the simulations run with the adapter population and the slots (hits, LRU
  evictions, host -> GPU loads that stall the iteration and count in TTFT);
* the check: the plan re-simulated at the demand, replicas routed by adapter affinity.

The chosen slot count: the plans of every slot count ranked as the search ranks plans (a
plan that misses its SLO on re-simulation last, then the objective, then $/h), ties to the
fewest slots: the smallest slot count that meets the SLO at the cheapest deployment.
``max_cpu_loras``: every adapter when they fit in ``HOST_MEMORY_SHARE`` of one GPU's share of
its node's host memory, else as many as fit (at least ``S``); the rest load from pageable
memory. xPyD plans are not made for LoRA workloads (``disaggregate`` must not be ``only``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from fleetsim.hardware.errors import ConfigError
from fleetsim.hardware.specs import ClusterSpec, GPUSpec
from fleetsim.planner.first_plan import ReplicaTimer
from fleetsim.planner.flags import VLLM_LORA_RANKS
from fleetsim.planner.serving.capacity import Bucket, engine_config, simulate, stream
from fleetsim.planner.serving.records import AdapterPlan, SearchSpace, Slo, SlotOption
from fleetsim.planner.serving.search import ServingPlans, plain_map, sample_lengths, search
from fleetsim.planner.serving.space import Supply, TimerFactory
from fleetsim.sim.serving.config import Deployment, LoraConfig, PoolDeployment
from fleetsim.workloads.lengths import max_tokens
from fleetsim.workloads.lora import adapter_bytes, adapter_params_per_rank, projection_shapes
from fleetsim.workloads.models import ModelSpec
from fleetsim.workloads.workload import Workload

HOST_MEMORY_SHARE = 0.5
"""Share of a GPU's share of its node's host memory the pinned adapter cache may take (the
rest: the engine process, KV swap space, pageable buffers). A policy, not a fit."""


@dataclass(frozen=True)
class AdapterNeed:
    """The adapter population a plan serves: its size, the largest rank any adapter can
    have and the probability that a request asks for each adapter (most popular first)."""

    adapters: int
    max_rank: int
    probabilities: tuple[float, ...]
    popularity: str


def adapter_need(workload: Workload, model: ModelSpec, n: int = 4000) -> AdapterNeed | None:
    """The adapter population of ``workload`` (None when no request carries an adapter): from
    its ``AdapterPopulation`` when it has one, else from a fixed-seed sample of its trace's
    ``adapter_id``/``lora_rank``. A rank above the model's hidden size is one line."""
    pop = workload.adapters
    sample = workload.generate(0, num_requests=n)
    ids = sample.column("adapter_id")
    ranks = sample.column("lora_rank")
    used = (ids >= 0) & (ranks > 0)
    if pop is None and not used.any():
        return None
    if pop is not None:
        bound = max_tokens(pop.rank)
        top = bound if bound is not None else int(pop.adapter_ranks(np.random.default_rng(0)).max())
        what = "uniform" if pop.popularity == "uniform" or pop.zipf_a == 0 else f"Zipf {pop.zipf_a:g}"
        need = AdapterNeed(pop.num_adapters, int(top), tuple(float(x) for x in pop.probabilities()), what)
    else:
        _, counts = np.unique(ids[used], return_counts=True)
        p = np.sort(counts)[::-1] / counts.sum()
        need = AdapterNeed(len(counts), int(ranks[used].max()), tuple(float(x) for x in p), "from the trace")
    if need.max_rank > model.hidden_size:
        raise ConfigError(f"workload {workload.name}: lora_rank up to {need.max_rank} exceeds {model.name}'s "
                          f"hidden size {model.hidden_size}")
    return need


def slot_choices(need: AdapterNeed, space: SearchSpace) -> tuple[int, ...]:
    """The slot counts tried: the space's, those above the population size collapsed to it."""
    return tuple(sorted({min(s, need.adapters) for s in space.adapter_slots}))


def slot_rank(max_rank: int) -> int:
    """The rank a slot is sized for: the smallest of vLLM's ``max_lora_rank`` values that
    holds ``max_rank`` (``max_rank`` itself above vLLM's largest)."""
    return next((r for r in VLLM_LORA_RANKS if r >= max_rank), max_rank)


def cpu_adapters(need: AdapterNeed, model: ModelSpec, supplies: list[Supply], slots: int, dtype_bytes: float) -> int:
    """``max_cpu_loras``: every adapter when the population fits in ``HOST_MEMORY_SHARE`` of
    the smallest per-GPU host memory of the supply pools, else as many as fit, at least
    ``slots``; each adapter held whole at its slot rank."""
    per = adapter_bytes(model, slot_rank(need.max_rank), dtype_bytes)
    host = min(s.pool.node.host_memory_bytes / s.pool.node.gpus_per_node for s in supplies)
    fit = int(HOST_MEMORY_SHARE * host // per)
    return max(slots, min(need.adapters, fit))


def lora_config(need: AdapterNeed, slots: int, cpu: int) -> LoraConfig:
    """The engine's LoRA settings for ``slots`` slots (vLLM's memory: slots reserved up front)."""
    return LoraConfig(max_loras=slots, max_lora_rank=slot_rank(need.max_rank), max_cpu_loras=cpu, memory="slots")


def expected_distinct(probabilities: tuple[float, ...] | np.ndarray, draws: int) -> float:
    """Expected distinct adapters among ``draws`` independent requests: ``sum_i 1 - (1 - p_i)^draws``."""
    p = np.asarray(probabilities, dtype=float)
    return float(np.sum(1.0 - (1.0 - p) ** max(draws, 0)))


def priced(timer: ReplicaTimer, model: ModelSpec, gpu: GPUSpec, lora: LoraConfig, need: AdapterNeed,
           isl: int) -> ReplicaTimer:
    """``timer`` with the LoRA kernels added to every prefill and iteration (see the module
    docstring): ``n_proj x layers`` applications (every pipeline stage in turn, as the
    timer's iterations), tokens of the step, distinct adapters of its sequences in
    expectation (at most ``max_loras``), ranks padded to the population's largest."""
    from fleetsim.calibration.lora import kernel_model
    from fleetsim.sim.serving.lora import kernel_seconds

    kernel = kernel_model(gpu, lora.kernel)
    apps = adapter_params_per_rank(model)[1] * model.num_layers
    h = model.hidden_size
    proj = projection_shapes(model)

    def adapters(seqs: int) -> int:
        return max(1, min(lora.max_loras, math.ceil(expected_distinct(need.probabilities, seqs))))

    def prefill(n: int) -> float:
        return timer.prefill_s(n) + kernel_seconds(kernel, h, apps, n, 1, need.max_rank, proj)

    def iteration(b: int, c: int, k: int) -> float:
        seqs = b + math.ceil(k / max(1, isl))
        return timer.iteration_s(b, c, k) + kernel_seconds(kernel, h, apps, b + k, adapters(seqs), need.max_rank,
                                                           proj)

    return replace(timer, prefill_s=prefill, iteration_s=iteration)


def search_adapters(model: ModelSpec, cluster: ClusterSpec, supplies: list[Supply], workload: Workload,
                    demand_rps: float | None, slo: Slo, objective: str, engine: str, dtype: str, kv_dtype: str,
                    timer_for: Callable[[LoraConfig], TimerFactory], need: AdapterNeed, *,
                    space: SearchSpace | None = None, buckets: int = 1, power_budget_w: float | None = None,
                    simulate_capacity: bool = True, seed: int = 0,
                    evaluate_many: Callable[..., list[Any]] = plain_map, disaggregate: str = "auto") -> ServingPlans:
    """The serving search once per slot count, and the chosen one (see the module docstring).
    ``timer_for(lora)``: the timer factory of replicas with those slots (memory included)."""
    from fleetsim.calibration.ops import dtype_bytes

    if disaggregate == "only":
        raise ConfigError("disaggregate 'only': xPyD plans are not made for LoRA workloads "
                          "(give disaggregate='never' or 'auto')")
    t0 = time.perf_counter()
    space = space or SearchSpace()
    db = dtype_bytes(dtype)
    isl = sample_lengths(workload, model)[0]
    runs: dict[int, tuple[LoraConfig, ServingPlans]] = {}
    for s in slot_choices(need, space):
        cfg = lora_config(need, s, cpu_adapters(need, model, supplies, s, db))
        base = timer_for(cfg)

        def factory(pool: Any, gpu: Any, tp: int, pp: int, ep: int, tokens: int,
                    base: TimerFactory = base, cfg: LoraConfig = cfg) -> ReplicaTimer:
            return priced(base(pool, gpu, tp, pp, ep, tokens), model, gpu, cfg, need, isl)

        runs[s] = (cfg, search(model, cluster, supplies, workload, demand_rps, slo, objective, engine, dtype,
                               kv_dtype, factory, space=space, buckets=buckets, power_budget_w=power_budget_w,
                               simulate_capacity=simulate_capacity, seed=seed, check_plans=1,
                               evaluate_many=evaluate_many, disaggregate="never", lora=cfg))
    sims = sum(r.simulations for _, r in runs.values())
    sign = -1.0 if objective == "max_goodput" else 1.0
    options = tuple(_option(s, r) for s, (_, r) in runs.items())
    done = [s for s, (_, r) in runs.items() if r.best is not None]
    if not done:
        first = min(runs)
        res = runs[first][1]
        plan = AdapterPlan(adapters=need.adapters, max_rank=need.max_rank, popularity=need.popularity, slots=first,
                           max_lora_rank=runs[first][0].max_lora_rank, max_cpu_loras=runs[first][0].max_cpu_loras or first,
                           adapter_bytes_per_gpu=0.0, options=options)
        return res.model_copy(update={"adapters": plan, "simulations": sims, "seconds": time.perf_counter() - t0})

    def rank(s: int) -> tuple[bool, float, float, int]:
        b = runs[s][1].best
        assert b is not None
        return (b.meets_slo is False, sign * b.objective_value, b.cost_per_hour, s)

    chosen = min(done, key=rank)
    cfg, res = runs[chosen]
    best = res.best
    assert best is not None
    curve = hit_rate_curve(model, cluster, best.pools[0], engine, dtype, kv_dtype, workload,
                           _replica_rate(best, demand_rps), [o.slots for o in options if o.status == "optimal"],
                           need, supplies, seed, space.sim_requests) if simulate_capacity else ()
    sims += len(curve)
    c = best.checked
    plan = AdapterPlan(adapters=need.adapters, max_rank=need.max_rank, popularity=need.popularity, slots=chosen,
                       max_lora_rank=cfg.max_lora_rank, max_cpu_loras=cfg.max_cpu_loras or chosen,
                       adapter_bytes_per_gpu=_slot_bytes(model, best.pools[0], cfg, dtype),
                       kv_bytes_per_gpu=None if c is None else c.kv_bytes_per_gpu,
                       hit_rate=None if c is None else c.lora_hit_rate,
                       load_stall_s=None if c is None else c.lora_load_stall_s,
                       hit_rate_by_slots=curve, options=options)
    return res.model_copy(update={"adapters": plan, "simulations": sims, "seconds": time.perf_counter() - t0})


def _option(slots: int, res: ServingPlans) -> SlotOption:
    b = res.best
    if b is None:
        reason = res.reason + (f"; closest miss: {res.closest_miss}" if res.closest_miss else "")
        return SlotOption(slots=slots, status=res.status, reason=reason)
    c = b.checked
    return SlotOption(slots=slots, status="optimal", gpus=b.gpus, cost_per_hour=b.cost_per_hour,
                      objective_value=b.objective_value, meets_slo=b.meets_slo,
                      hit_rate=None if c is None else c.lora_hit_rate)


def _slot_bytes(model: ModelSpec, pc: Any, cfg: LoraConfig, dtype: str) -> float:
    """GPU bytes per GPU the slots reserve (``feasibility.lora_slot_bytes``)."""
    from fleetsim.sim.serving.config import EngineConfig
    from fleetsim.sim.serving.feasibility import lora_slot_bytes
    from fleetsim.workloads.parallel import ParallelConfig

    return lora_slot_bytes(model, ParallelConfig(tp=pc.tp, pp=pc.pp, ep=pc.ep), EngineConfig(dtype=dtype, lora=cfg))


def _replica_rate(best: Any, demand_rps: float | None) -> float:
    """Requests/s one replica of the plan's first pool serves at the demand (or at the
    predicted goodput without one)."""
    rate = demand_rps if demand_rps is not None else best.predicted_goodput_rps
    return rate / max(1, sum(pc.replicas for pc in best.pools))


def hit_rate_curve(model: ModelSpec, cluster: ClusterSpec, pc: Any, engine: str, dtype: str, kv_dtype: str,
                   workload: Workload, rate_rps: float, slots: list[int], need: AdapterNeed,
                   supplies: list[Supply], seed: int, requests: int, per_batch: int | None = None
                   ) -> tuple[tuple[int, float], ...]:
    """Adapter hit rate of one replica of ``pc``'s layout serving ``rate_rps`` of the workload,
    per slot count (the same requests for every count: common random numbers).

    As vLLM runs them, ``S`` slots are also the most distinct adapters per batch, so a small
    ``S`` also regroups the queue by adapter (requests of a resident adapter go first), which
    raises the hit rate while requests wait: the curve need not rise with ``S``.
    ``per_batch``: hold the batch limit there and vary only the GPU-resident slots (slot
    counts below it are skipped); then more slots never lower the hit rate."""
    from fleetsim.calibration.ops import dtype_bytes

    n = max(4 * requests, 400)
    reqs = stream(workload, model, Bucket("all", 0.0, math.inf, 1.0), rate_rps, n, seed)
    k = pc.knobs()  # a LoRA plan's pools are co-located (role "both")
    out = []
    timers: dict[tuple, Any] = {}
    for s in slots:
        if per_batch is not None and s < per_batch:
            continue
        cfg = lora_config(need, s, cpu_adapters(need, model, supplies, s, dtype_bytes(dtype)))
        if per_batch is not None:
            cfg = cfg.model_copy(update={"max_loras": per_batch, "gpu_slots": s})
        dep = Deployment(pools=(PoolDeployment(pool=pc.pool, tp=pc.tp, pp=pc.pp, ep=pc.ep, replicas=1,
                                               engine=engine_config(k, engine, dtype, kv_dtype, cfg)),))
        v = simulate(model, cluster, dep, reqs, Slo(), seed, timers)
        hit = v.raw.summary.get("lora_hit_rate")
        if isinstance(hit, float | int) and math.isfinite(hit):
            out.append((s, float(hit)))
    return tuple(out)


__all__ = ["HOST_MEMORY_SHARE", "AdapterNeed", "adapter_need", "cpu_adapters", "expected_distinct",
           "hit_rate_curve", "lora_config", "priced", "search_adapters", "slot_choices", "slot_rank"]
