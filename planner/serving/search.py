"""The serving planner, stage by stage: generate -> prune -> evaluate -> select -> check.

:func:`search` takes resolved specs (the public API resolves names at the edge) and returns
:class:`ServingPlans`: the plans best first, every evaluation and rejection, the Pareto
frontier and, when nothing works, the binding constraint and the closest miss. The plans
are re-simulated as whole deployments with another seed (``seed + 1``); a plan that misses
its SLO there carries ``meets_slo = False`` and ranks below every plan that meets it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, ClassVar, TypeVar

import numpy as np
from fleetsim.hardware.errors import ConfigError, FleetsimError
from fleetsim.hardware.specs import ClusterSpec
from fleetsim.planner.serving import disagg as disagg_stage
from fleetsim.planner.serving.capacity import (
    Bucket,
    CapacityJob,
    capacity,
    engine_config,
    replica_power,
    simulate,
    stream,
)
from fleetsim.planner.serving.commands import with_commands
from fleetsim.planner.serving.records import (
    AdapterPlan,
    Capacity,
    Evaluation,
    Knobs,
    PlanEntry,
    PlanMetrics,
    Rejection,
    SearchSpace,
    Slo,
    _Record,
)
from fleetsim.planner.serving.select import entry, pareto, solve_mix
from fleetsim.planner.serving.space import (
    Supply,
    TimerFactory,
    bucket_edges,
    caps_for,
    prune,
    rank_for_simulation,
)
from fleetsim.sim.serving.config import Deployment, LoraConfig, PoolDeployment
from fleetsim.workloads.models import ModelSpec, over_context
from fleetsim.workloads.workload import Workload
from pydantic import Field

T = TypeVar("T")
R = TypeVar("R")


def plain_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """The default executor: evaluate in this process, in order."""
    return [fn(x) for x in items]


class ServingPlans(_Record):
    """The planner's answer: ``plans`` best first (or ``status="infeasible"`` with ``reason``
    naming the binding constraint and ``closest_miss``), and the search behind it."""

    _what: ClassVar[str] = "serving plans"
    status: str
    objective: str
    demand_rps: float | None
    slo: Slo
    isl: int
    osl: int
    buckets: tuple[tuple[str, float], ...]
    plans: tuple[PlanEntry, ...] = ()
    evaluations: tuple[Evaluation, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    reason: str = ""
    binding: str = ""
    closest_miss: str = ""
    pareto: tuple[dict[str, Any], ...] = ()
    simulations: int = 0
    seconds: float = Field(0.0, ge=0)
    adapters: AdapterPlan | None = None
    """LoRA: the adapter slots chosen and weighed (``planner.serving.lora``); None without adapters."""

    @property
    def best(self) -> PlanEntry | None:
        return self.plans[0] if self.plans else None

    def to_json(self) -> dict[str, Any]:
        """``--json``: the plans best first with their pools and metrics, and the frontier."""
        def plan(p: PlanEntry) -> dict[str, Any]:
            c = p.checked
            return {"name": p.name, "meets_slo": p.meets_slo,
                    "pools": [x.model_dump(exclude={"pool"}) | {"pool_index": x.pool} for x in p.pools],
                    "metrics": {"objective": p.objective, "objective_value": p.objective_value,
                                "predicted_goodput_rps": p.predicted_goodput_rps,
                                "cost_per_hour": p.cost_per_hour, "gpus": p.gpus,
                                "gpus_by_type": p.gpus_by_type, "power_w": p.power_w,
                                "usd_per_million_tokens": p.usd_per_million_tokens,
                                **(c.model_dump() if c is not None else {})},
                    "binding": list(p.binding), "kv_link": p.kv_link, "kv_transfer_s": p.kv_transfer_s}
        return {"status": self.status, "objective": self.objective, "demand_rps": self.demand_rps,
                "slo": self.slo.model_dump(), "plans": [plan(p) for p in self.plans],
                "reason": self.reason, "binding": self.binding, "closest_miss": self.closest_miss,
                "pareto": list(self.pareto), "simulations": self.simulations,
                "adapters": None if self.adapters is None else self.adapters.model_dump()}

    def explain(self) -> str:
        """Why the best plan is what it is: per pool what limits a replica's capacity, and
        which selection constraint binds; or, when infeasible, the binding constraint."""
        if self.best is None:
            return f"No plan (infeasible): {self.reason}" + (f"\nclosest miss: {self.closest_miss}" if self.closest_miss else "")
        p = self.best
        lines = [f"Best plan {p.name!r}: {p.gpus} GPUs ({', '.join(f'{n} {g}' for g, n in p.gpus_by_type.items())}), "
                 f"${p.cost_per_hour:.2f}/h, objective {p.objective} = {p.objective_value:.4g}"]
        by_id = {e.knobs.id: e for e in self.evaluations}
        for pc in p.pools:
            k = pc.knobs()
            e = by_id.get(k.id)
            if e is None:
                continue
            a = e.analytic
            unit = partial(_rate, per={"prefill": (self.isl, "prompt tok/s"),
                                       "decode": (self.osl, "output tok/s")}.get(k.role))
            caps = ", ".join(f"{c.bucket} {unit(c.rps)} (limited by {_words(c.limited_by)})"
                             for c in e.capacity if c.simulations)
            lines.append(f"  {pc.replicas} x {k.id}: analytic batch {a.batch} limited by {_words(a.limited_by)} "
                         f"({a.kv_tokens} KV tokens), {unit(a.replica_rps)} analytic"
                         + (f"; simulated capacity {caps}" if caps else " (not simulated)"))
            if pc.command:
                lines.append(f"    {pc.command}")
            elif pc.engine_flags:
                lines.append(f"    {pc.engine_flags}")
            for name, text in pc.engine_files.items():
                lines.append(f"    {name}:")
                lines += [f"      {row}" for row in text.rstrip().splitlines()]
            if pc.power_cap_command:
                lines.append(f"    {pc.power_cap_command}")
        if p.kv_link:
            lines.append(f"  KV transfer prefill -> decode over {p.kv_link}: {p.kv_transfer_s * 1e3:.3g} ms a mean "
                         f"prompt (in TTFT)" if p.kv_transfer_s is not None else f"  KV transfer over {p.kv_link}")
        if p.binding:
            lines.append("  binding: " + ", ".join(_words(b) for b in p.binding))
        else:
            lines.append("  binding: none of inventory and power budget; the demand sets the size")
        limits = [c.limited_by for pc in p.pools for e in [by_id.get(pc.knobs().id)] if e for c in e.capacity]
        main = max(set(limits), key=limits.count) if limits else None
        if any(b.startswith("inventory") for b in p.binding):
            head = "inventory"
        elif "power_budget" in p.binding:
            head = "power budget"
        else:
            head = _words(main) if main else "analytic bound"
        lines.insert(1, f"bottleneck: {head}")
        if p.checked is not None:
            c = p.checked
            verdict = "meets" if c.meets_slo else f"MISSES ({c.missed})"
            energy = "" if c.j_per_output_token is None else f"; {c.j_per_output_token:.3g} J/output token"
            power = "" if c.avg_power_w is None else f", {c.avg_power_w / 1e3:.3g} kW GPU power"
            lines.append(f"  re-simulated with seed {c.seed} at {c.rate_rps:.3g} req/s: {verdict} the SLO; "
                         f"goodput {c.goodput_rps:.3g} req/s (share {c.goodput_share:.3f}){energy}{power}")
        if self.adapters is not None:
            lines += self.adapters.describe()
        return "\n".join(lines)


def _rate(rps: float, per: tuple[int, str] | None) -> str:
    """A capacity in requests/s, or for a prefill/decode replica in tokens/s of its role."""
    return f"{rps:.3g} req/s" if per is None else f"{rps * per[0]:.4g} {per[1]}"



_WORDS = {"kv_capacity": "memory/KV capacity", "memory": "memory", "compute": "compute",
          "tpot_slo": "TPOT SLO", "ttft_slo": "TTFT SLO", "goodput": "goodput share",
          "queue": "queueing (compute saturated)", "max_num_seqs": "max_num_seqs", "layout": "layout",
          "power_budget": "power budget", "inventory": "inventory",
          "kv_transfer": "KV transfer link bandwidth", "prefill_feed": "its prefill feed"}


def _words(key: str) -> str:
    if key.startswith("inventory["):
        return f"inventory of {key[10:-1]}"
    return _WORDS.get(key, key)


def sample_lengths(workload: Workload, model: ModelSpec, n: int = 4000) -> tuple[int, int, np.ndarray]:
    """Mean prompt and output tokens and prompt+output per request of a fixed-seed sample."""
    reqs = workload.generate(0, num_requests=n)
    total = reqs.prompt_tokens + reqs.output_tokens
    keep = ~over_context(model, total)
    pr, out = reqs.prompt_tokens[keep], reqs.output_tokens[keep]
    return max(1, round(float(np.mean(pr)))), max(1, round(float(np.mean(out)))), total[keep]


def make_buckets(total: np.ndarray, n: int) -> tuple[Bucket, ...]:
    edges = bucket_edges([int(x) for x in total], n)
    out = []
    for lo, hi in zip(edges, edges[1:], strict=False):
        share = float(np.mean((total >= lo) & (total < hi))) if len(total) else 1.0
        if share > 0:
            name = "all" if len(edges) == 2 else f"{lo:g}-{hi:g} tok"
            out.append(Bucket(name, lo, hi, share))
    return tuple(out)


DISAGGREGATE: tuple[str, ...] = ("auto", "never", "only")

CAP_FRACTIONS: tuple[float, ...] = (1.0, 0.8, 0.6)
"""Power caps (fractions of TDP) tried under a budget or ``min_energy`` when the search space
names none: uncapped, and two caps in the range where LLM inference loses little throughput
for the power it saves (Patel et al., POLCA, arXiv:2308.12908)."""


def search(model: ModelSpec, cluster: ClusterSpec, supplies: list[Supply], workload: Workload,
           demand_rps: float | None, slo: Slo, objective: str, engine: str, dtype: str, kv_dtype: str,
           make_timer: TimerFactory, *, space: SearchSpace | None = None, buckets: int = 1,
           power_budget_w: float | None = None, simulate_capacity: bool = True, seed: int = 0,
           check_plans: int = 3, evaluate_many: Callable[..., list[Any]] = plain_map,
           disaggregate: str = "auto", lora: LoraConfig | None = None) -> ServingPlans:
    """Plan serving ``model`` (see the module docstring). ``power_budget_w``: facility watts the
    chosen replicas may add (the caller takes the inventory's idle draw off first).
    ``disaggregate``: ``auto`` ranks co-located and xPyD plans together (xPyD needs a demand:
    its program covers token rates), ``never`` only co-located, ``only`` only xPyD.
    ``evaluate_many(fn, items)``: where the capacity simulations run (``planner.executor``).
    ``lora``: every replica's adapter slots (``planner.serving.lora`` loops over them)."""
    if disaggregate not in DISAGGREGATE:
        raise ConfigError(f"disaggregate {disaggregate!r} is not one of {', '.join(DISAGGREGATE)}")
    if disaggregate == "only" and (demand_rps is None or objective == "max_goodput"):
        raise ConfigError("disaggregate 'only' needs a request rate and a min_* objective "
                          "(xPyD plans cover a demand's token rates)")
    t0 = time.perf_counter()
    space = space or SearchSpace()
    isl, osl, total = sample_lengths(workload, model)
    bks = make_buckets(total, buckets)
    base = dict(status="optimal", objective=objective, demand_rps=demand_rps, slo=slo, isl=isl, osl=osl,
                buckets=tuple((b.name, b.share) for b in bks))
    kept, rejected = prune(model, supplies, space, slo, isl, osl, make_timer)
    by_index = {s.index: s for s in supplies}
    colocated = disaggregate != "only"
    disagg = disaggregate != "never" and demand_rps is not None and objective != "max_goodput"
    roles: list[disagg_stage.RoleCandidate] = []
    if disagg:
        roles, role_rejected = disagg_stage.candidates(_layouts(kept, make_timer), slo, isl, osl)
        rejected += role_rejected
    whole = (Bucket("all", 0.0, math.inf, 1.0),)
    evals: list[Evaluation] = []
    role_evals: list[Evaluation] = []
    sims = 0
    capped = power_budget_w is not None or objective == "min_energy"
    if simulate_capacity:
        survivors = rank_for_simulation(kept, objective, space.sim_top) if colocated else []
        ranked = disagg_stage.rank(roles, objective, space.sim_top)
        prefill_rate = {_layout_key(c.analytic.knobs): c.tokens_per_s for c in roles if c.analytic.knobs.role == "prefill"}
        jobs = []
        todo = [(s, a, bks, 0) for s, a in survivors] + [
            (c.supply, c.analytic, whole,
             disagg_stage.feed_replicas(c, prefill_rate.get(_layout_key(c.analytic.knobs)), isl, osl)
             if c.analytic.knobs.role == "decode" else 0) for c in ranked]
        for s, a, bb, feed in todo:
            for cap in caps_for(s.gpu, space.power_caps or CAP_FRACTIONS) if capped else [None]:
                k = a.knobs.model_copy(update={"power_cap_w": cap})
                jobs.append((s, a.model_copy(update={"knobs": k}), CapacityJob(
                    model=model, cluster=cluster, knobs=k, engine=engine_config(k, engine, dtype, kv_dtype, lora),
                    workload=workload, buckets=bb, slo=slo, start_rps=a.replica_rps, seed=seed,
                    requests=space.sim_requests, steps=space.bisection_steps, prefill_replicas=feed)))
        results = evaluate_many(capacity, [j for *_, j in jobs])
        for (s, a, _), caps_found in zip(jobs, results, strict=True):
            sims += sum(c.simulations for c in caps_found)
            ev = _evaluation(s, a, caps_found)
            (evals if a.knobs.role == "both" else role_evals).append(ev)
            if not ev.capacity_rps():
                worst = min(caps_found, key=lambda c: c.rps)
                rejected.append(Rejection(knobs=a.knobs, stage="simulated", bottleneck=worst.limited_by,
                                          reason=worst.closest_miss or "no rate meets the SLO"))
    else:
        for s, a in kept if colocated else []:
            cap = Capacity(bucket="all", rps=a.replica_rps, simulations=0, limited_by=a.limited_by,
                           ttft_s=a.ttft_s, tpot_s=a.tpot_s)
            evals.append(_evaluation(s, a, tuple(cap.model_copy(update={"bucket": b.name}) for b in bks)))
        for c in roles:
            a = c.analytic
            role_evals.append(_evaluation(c.supply, a, (Capacity(bucket="all", rps=a.replica_rps, simulations=0,
                                                                 limited_by=a.limited_by, ttft_s=a.ttft_s,
                                                                 tpot_s=a.tpot_s),)))
    everything = tuple(evals + role_evals)
    if not any(e.capacity_rps() for e in everything):
        return ServingPlans(**base | {"status": "infeasible", "evaluations": everything, "rejected": tuple(rejected),
                                      "simulations": sims, "seconds": time.perf_counter() - t0,
                                      **_nothing_works(rejected)})
    availability: dict[str, int] = {}
    for s in supplies:
        availability[s.gpu.name] = availability.get(s.gpu.name, 0) + s.available
    measured = objective == "min_energy" and power_budget_w is None
    entries: list[PlanEntry] = []
    solved_by: dict[str, str | None] = {}  # mix entries by name: the GPU type they were restricted to
    loads: dict[str, float] = {}
    failed: dict[str, str] = {}
    if any(e.capacity_rps() for e in evals):
        loads = _loads(bks, demand_rps, evals, availability, objective)
        mix = solve_mix(evals, loads, objective, availability, power_budget_w, measured)
        assert mix is not None
        if mix.status == "optimal":
            entries.append(entry("optimal mix", mix, evals, engine, availability, power_budget_w))
            solved_by["optimal mix"] = None
            gpu_types = list(dict.fromkeys(e.knobs.gpu for e in evals if e.capacity_rps()))
            for g in gpu_types if len(gpu_types) > 1 else []:
                alt = solve_mix(evals, loads, objective, availability, power_budget_w, measured, only_gpu=g)
                if alt is not None and alt.status == "optimal" and alt.replicas != mix.replicas:
                    entries.append(entry(f"only {g}", alt, evals, engine, availability, power_budget_w))
                    solved_by[f"only {g}"] = g
        else:
            failed = {"status": mix.status, "reason": mix.reason, "binding": ", ".join(m.family for m in mix.misses),
                      "closest_miss": "; ".join(f"{m.family} short by {m.slack:.4g}" for m in mix.misses)}
    if disagg and demand_rps is not None:
        links = disagg_stage.Links(cluster=cluster, model=model, kv_dtype=kv_dtype, ttft_s=slo.ttft_s)
        dplan = disagg_stage.solve(role_evals, isl, osl, demand_rps, objective, availability, power_budget_w, measured,
                                   links)
        if dplan is not None and dplan.status == "optimal":
            entries.append(disagg_stage.entry(dplan, role_evals, engine, demand_rps, availability, power_budget_w,
                                              links, isl))
        elif dplan is not None and not failed:
            failed = {"status": dplan.status, "reason": dplan.reason,
                      "binding": ", ".join(m.family for m in dplan.misses),
                      "closest_miss": "; ".join(f"{m.family} short by {m.slack:.4g}" for m in dplan.misses)}
    if not entries:
        if not failed:
            failed = {"status": "infeasible", **_nothing_works(rejected)}
        return ServingPlans(**base | failed | {"evaluations": everything, "rejected": tuple(rejected),
                                               "simulations": sims, "seconds": time.perf_counter() - t0})
    sign = -1.0 if objective == "max_goodput" else 1.0
    # ties on the objective: cheaper, then fewer GPUs, then less power, then the name
    entries.sort(key=lambda p: (sign * p.objective_value, p.cost_per_hour, p.gpus, p.power_w, p.name))
    def commands(p: PlanEntry) -> PlanEntry:
        return p.model_copy(update={"pools": tuple(with_commands(_with_lora(pc, lora), model.name, dtype, kv_dtype)
                                                   for pc in p.pools)})

    def check(p: PlanEntry, rate: float) -> PlanMetrics:
        nonlocal sims
        sims += 1
        return check_plan(model, cluster, p, by_index, workload, rate, slo, engine, dtype, kv_dtype, seed + 1,
                          space.sim_requests, lora)

    checked = []
    for i, p in enumerate(entries):
        p = commands(p)
        if i < check_plans:
            rate = demand_rps if demand_rps is not None else p.predicted_goodput_rps
            p = p.model_copy(update={"checked": check(p, rate)})
            if not p.meets_slo and demand_rps is None:
                p = _back_off(p, check)
            elif not p.meets_slo and p.name in solved_by:
                p = _derate(p, evals, solved_by[p.name], partial(
                    _mix_entry, p.name, loads=loads, objective=objective, availability=availability,
                    budget_w=power_budget_w, measured=measured, engine=engine), commands, check, rate)
        checked.append(p)
    checked.sort(key=lambda p: (p.meets_slo is False, sign * p.objective_value, p.cost_per_hour, p.gpus, p.power_w,
                                p.name))
    return ServingPlans(**base | {"plans": tuple(checked), "evaluations": everything, "rejected": tuple(rejected),
                                  "pareto": tuple(_frontier(checked, evals)), "simulations": sims,
                                  "seconds": time.perf_counter() - t0})


BACK_OFF = (0.85, 0.7, 0.55)
"""Rates (shares of the predicted goodput) at which a ``max_goodput`` plan that missed its
SLO on re-simulation is checked again, highest first; the first that meets it is reported."""

DERATE = (0.85, 0.7)
"""Capacity shares every candidate is re-solved with, in turn, when a demand-sized plan missed
its SLO on re-simulation: capacities come from short simulations judged at the edge of a noisy
criterion, so they err alike for all candidates (a sibling of the failed one would take its
place if only the failed one were scaled)."""


def _back_off(p: PlanEntry, check: Callable[[PlanEntry, float], PlanMetrics]) -> PlanEntry:
    """A ``max_goodput`` plan checked at lower rates until one meets the SLO: its goodput is
    then the verified rate's, never the prediction's; the miss is kept when none does."""
    for share in BACK_OFF:
        m = check(p, p.predicted_goodput_rps * share)
        if m.meets_slo:
            return p.model_copy(update={"checked": m, "objective_value": m.goodput_rps})
    return p


def _mix_entry(name: str, evals: list[Evaluation], only_gpu: str | None, *, loads: dict[str, float],
               objective: str, availability: dict[str, int], budget_w: float | None, measured: bool,
               engine: str) -> PlanEntry | None:
    mix = solve_mix(evals, loads, objective, availability, budget_w, measured, only_gpu=only_gpu)
    if mix is None or mix.status != "optimal":
        return None
    return entry(name, mix, evals, engine, availability, budget_w)


def _derate(p: PlanEntry, evals: list[Evaluation], only_gpu: str | None,
            solve: Callable[[list[Evaluation], str | None], PlanEntry | None],
            commands: Callable[[PlanEntry], PlanEntry], check: Callable[[PlanEntry, float], PlanMetrics],
            rate: float) -> PlanEntry:
    """A demand-sized plan that missed its SLO re-solved with every candidate's capacity scaled
    by each ``DERATE`` share in turn (more replicas), until a re-simulation meets the SLO; the
    original miss is kept when none does."""
    for share in DERATE:
        scaled = [e.model_copy(update={"capacity": tuple(c.model_copy(update={"rps": c.rps * share})
                                                         for c in e.capacity)}) for e in evals]
        q = solve(scaled, only_gpu)
        if q is None:
            return p
        q = commands(q)
        q = q.model_copy(update={"checked": check(q, rate)})
        if q.meets_slo:
            return q
    return p



def _with_lora(pc: Any, lora: LoraConfig | None) -> Any:
    if lora is None:
        return pc
    return pc.model_copy(update={"max_loras": lora.max_loras, "max_lora_rank": lora.max_lora_rank,
                                 "max_cpu_loras": lora.max_cpu_loras})


def _layout_key(k: Knobs) -> tuple[int, int, int, int, int, float | None]:
    return (k.pool, k.tp, k.pp, k.ep, k.max_num_batched_tokens, k.power_cap_w)


def _layouts(kept: list[tuple[Supply, Any]], make_timer: TimerFactory) -> list[tuple[Supply, Knobs, Any]]:
    """Each co-located survivor's knobs with its replica timer (one timer per layout)."""
    timers: dict[tuple[int, int, int, int, int, float | None], Any] = {}
    out = []
    for s, a in kept:
        k = a.knobs
        key = _layout_key(k)
        if key not in timers:
            timers[key] = make_timer(s.pool, s.gpu, k.tp, k.pp, k.ep, k.max_num_batched_tokens)
        out.append((s, k, timers[key]))
    return out


def _evaluation(s: Supply, a: Any, caps: tuple[Capacity, ...]) -> Evaluation:
    k = a.knobs
    return Evaluation(analytic=a, capacity=caps, price_per_hour=s.price_per_gpu_hour * k.gpus,
                      power_w=s.replica_power_w(k.gpus, k.power_cap_w))


def _loads(bks: tuple[Bucket, ...], demand: float | None, evals: list[Evaluation], availability: dict[str, int],
           objective: str) -> dict[str, float]:
    """Requests/s per bucket: the demand split by bucket share, or for ``max_goodput``
    without a demand an offered load no inventory can serve (every GPU at its best
    candidate's capacity), so the program fills the inventory."""
    if demand is not None:
        return {b.name: demand * b.share for b in bks}
    best = {g: max((max(e.capacity_rps().values()) / e.knobs.gpus for e in evals
                    if e.knobs.gpu == g and e.capacity_rps()), default=0.0) for g in availability}
    offered = 1.5 * sum(best[g] * n for g, n in availability.items()) or 1.0
    return {b.name: offered * b.share for b in bks}


def _nothing_works(rejected: list[Rejection]) -> dict[str, str]:
    """The binding constraint of an empty candidate set: the most common bottleneck of the
    rejections, and the rejection nearest to feasible (smallest miss ratio)."""
    if not rejected:
        return {"reason": "no candidate layout", "binding": "layout"}
    cats = [r.bottleneck for r in rejected]
    top = max(sorted(set(cats)), key=cats.count)
    numeric = [r for r in rejected if r.miss is not None]
    near = min(numeric, key=lambda r: r.miss or math.inf) if numeric else rejected[0]
    return {"reason": f"no candidate meets the constraints; most are limited by {_words(top)}",
            "binding": top, "closest_miss": f"{near.knobs.id}: {near.reason}"}


def check_plan(model: ModelSpec, cluster: ClusterSpec, p: PlanEntry, supplies: dict[int, Supply],
               workload: Workload, rate: float, slo: Slo, engine: str, dtype: str, kv_dtype: str, seed: int,
               base_requests: int, lora: LoraConfig | None = None) -> PlanMetrics:
    """Simulate the whole plan at ``rate`` with ``seed`` and judge it against ``slo``; with
    ``lora`` every replica has those adapter slots and several replicas route by adapter
    affinity."""

    pools = []
    for pc in p.pools:
        k = pc.knobs()
        pools.append(PoolDeployment(pool=pc.pool, tp=pc.tp, pp=pc.pp, ep=pc.ep, replicas=pc.replicas,
                                    role=pc.role, engine=engine_config(k, engine, dtype, kv_dtype, lora)))
    replicas = sum(pc.replicas for pc in p.pools)
    router = "adapter_affinity" if lora is not None and replicas > 1 else "least_outstanding_tokens"
    n = min(3000, max(base_requests, 40 * replicas))
    reqs = stream(workload, model, Bucket("all", 0.0, math.inf, 1.0), rate, n, seed)
    try:
        v = simulate(model, cluster, Deployment(pools=tuple(pools), router=router), reqs, slo, seed)
    except FleetsimError as exc:
        return PlanMetrics(seed=seed, rate_rps=rate, goodput_rps=0.0, goodput_share=0.0, ttft_p90_s=None,
                           ttft_p99_s=None, tpot_p90_s=None, tpot_p99_s=None, output_tokens_per_s=0.0,
                           meets_slo=False, missed=f"the deployment does not run: {exc}")
    s = v.raw.summary

    def num(key: str) -> float | None:
        x = s.get(key)
        return float(x) if isinstance(x, float | int) and math.isfinite(x) else None

    watts, jpt = replica_power(v.raw)
    return PlanMetrics(seed=seed, rate_rps=rate, goodput_rps=rate * v.goodput_share,
                       goodput_share=v.goodput_share, ttft_p90_s=num("ttft_p90_s"), ttft_p99_s=num("ttft_p99_s"),
                       tpot_p90_s=num("tpot_p90_s"), tpot_p99_s=num("tpot_p99_s"),
                       output_tokens_per_s=float(s["output_tokens_per_s"]),
                       j_per_output_token=jpt, avg_power_w=watts, meets_slo=v.ok, missed=v.missed,
                       lora_hit_rate=num("lora_hit_rate"), lora_load_stall_s=num("lora_load_stall_s"),
                       lora_adapter_bytes_per_gpu=num("lora_adapter_bytes_per_gpu"),
                       kv_bytes_per_gpu=num("kv_bytes_per_gpu"))


def _frontier(plans: list[PlanEntry], evals: list[Evaluation]) -> list[dict[str, Any]]:
    """Cost vs latency vs energy as data: every checked plan and every simulated candidate
    (per request/s of capacity), flagged when no other point of its kind dominates it."""
    rows: list[dict[str, Any]] = []
    pts = [{"kind": "plan", "name": p.name, "cost_per_hour": p.cost_per_hour,
            "ttft_p90_s": p.checked.ttft_p90_s, "tpot_p90_s": p.checked.tpot_p90_s,
            "j_per_output_token": p.checked.j_per_output_token}
           for p in plans if p.checked is not None and p.checked.meets_slo]
    keys = ("cost_per_hour", "ttft_p90_s", "tpot_p90_s", "j_per_output_token")
    rows += [r | {"on_frontier": f} for r, f in zip(pts, pareto(pts, keys), strict=True)]  # type: ignore[arg-type]
    cands = []
    for e in evals:
        for c in e.capacity:
            if c.rps > 0 and e.simulated and c.simulations and e.knobs.role == "both":
                cands.append({"kind": "candidate", "name": e.knobs.id, "bucket": c.bucket,
                              "usd_per_hour_per_rps": e.price_per_hour / c.rps, "ttft_s": c.ttft_s,
                              "tpot_s": c.tpot_s, "j_per_output_token": c.j_per_output_token})
    ck = ("usd_per_hour_per_rps", "ttft_s", "tpot_s", "j_per_output_token")
    rows += [r | {"on_frontier": f} for r, f in zip(cands, pareto(cands, ck), strict=True)]  # type: ignore[arg-type]
    return rows


__all__ = ["ServingPlans", "check_plan", "plain_map", "search"]
