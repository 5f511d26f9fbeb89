"""Simulated capacity: the highest request rate one replica sustains within the SLO.

A rate is *sustained* when a fast-forward simulation of ``n`` requests of the workload (or
of one request-size bucket of it) arriving at that rate meets, at the SLO's percentile, the
TTFT and TPOT targets, at least ``goodput_share`` of the requests meet both, and the queue
does not grow (the simulator's ``overloaded`` flag; without a TTFT target also the
percentile queueing delay under ``max_queue_delay_s``). The search starts at the analytic
rate, grows or shrinks it geometrically until it brackets the change, then bisects. A
bucket's stream is the workload's stream thinned to the bucket (arrivals at
``rate / share`` keep a Poisson process Poisson at ``rate``). Everything runs in-process on
``sim.serving``; one seed makes every simulation of a search.

Disaggregated candidates (``Knobs.role``), both simulated as P/D deployments (the
simulator's ``role`` pools and KV transfer links). A *prefill* replica's capacity is the
rate at which one prefill replica keeps the TTFT target, fed the workload's prompts with two
output tokens each: the first comes from the prefill replica (the engine stops a
prefill-role sequence there, so its work does not depend on the output length), the second
from one decode replica that costs the run almost nothing. A *decode* replica's capacity:
``prefill_replicas`` prefill replicas of the same layout feed the one decode replica over
the pool's links, and the rate must keep the TPOT target (TPOT includes the wait for a decode
slot; the KV transfer is in TTFT, which the pair's link prices in ``planner.serving.disagg``). The prefill side is sized from the analytic bound to be no
bottleneck; if it still is, the run fails and the decode capacity errs low, never high.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from fleetsim.hardware.specs import ClusterSpec
from fleetsim.planner.serving.records import Bottleneck, Capacity, Knobs, Slo
from fleetsim.sim.serving.cluster import ServingSimulation
from fleetsim.sim.serving.config import (
    Deployment,
    EngineConfig,
    LoraConfig,
    PoolDeployment,
    VllmScheduler,
)
from fleetsim.sim.serving.feasibility import gpus_per_node
from fleetsim.sim.serving.results import RawTables, collect
from fleetsim.workloads.models import ModelSpec, over_context
from fleetsim.workloads.requests import COLUMNS, RequestStream
from fleetsim.workloads.workload import Workload


@dataclass(frozen=True)
class Bucket:
    """Requests whose prompt + output tokens lie in ``[low, high)``, ``share`` of all."""

    name: str
    low: float
    high: float
    share: float


@dataclass(frozen=True)
class Verdict:
    ok: bool
    limited_by: Bottleneck
    ttft_s: float | None
    tpot_s: float | None
    missed: str
    goodput_share: float
    raw: RawTables


def engine_config(k: Knobs, profile: str, dtype: str, kv_dtype: str, lora: LoraConfig | None = None) -> EngineConfig:
    """The engine knobs of a candidate (power cap only when one is chosen; ``lora``: the
    adapter slots when the workload carries LoRA adapters)."""
    fields: dict[str, object] = {
        "scheduler": VllmScheduler(max_num_seqs=k.max_num_seqs, max_num_batched_tokens=k.max_num_batched_tokens),
        "profile": profile, "dtype": dtype, "kv_dtype": kv_dtype, "lora": lora}
    if k.power_cap_w is not None:
        fields["power_cap_w"] = k.power_cap_w
    return EngineConfig(**fields)  # type: ignore[arg-type]


def stream(workload: Workload, model: ModelSpec, bucket: Bucket, rate_rps: float, n: int, seed: int,
           outputs: int | None = None) -> RequestStream:
    """``n`` requests of ``bucket`` arriving at ``rate_rps`` (within the model's context);
    ``outputs``: every request asks for that many output tokens instead of its own."""
    thin = bucket.share < 1.0
    draw = math.ceil(n / bucket.share * 1.3) + 20 if thin else n + 20
    reqs = workload.with_rate(rate_rps / bucket.share).generate(seed, num_requests=draw)
    total = reqs.prompt_tokens + reqs.output_tokens
    keep = ~over_context(model, total)
    if thin:
        keep &= (total >= bucket.low) & (total < bucket.high)
    out = reqs.select(keep).head(n)
    if outputs is None:
        return out
    cols = {c: out.column(c) for c in COLUMNS if c != "req_id"}
    cols["output_tokens"] = np.full(len(out), outputs, dtype=cols["output_tokens"].dtype)
    return RequestStream.from_columns(cols, req_id=out.req_id)


def verdict(raw: RawTables, slo: Slo) -> Verdict:
    """Whether a finished simulation meets ``slo`` (see the module docstring)."""
    req = raw.requests
    q = slo.percentile
    ttft_all = req["ttft_s"].to_numpy(dtype=float)
    ttft = float(np.percentile(np.where(np.isfinite(ttft_all), ttft_all, np.inf), q)) if len(req) else math.inf
    fin = req[req["finished"]]
    tp = fin["tpot_s"].dropna().to_numpy(dtype=float)
    tpot = float(np.percentile(tp, q)) if len(tp) else None
    qd = req["queue_delay_s"].to_numpy(dtype=float)
    qdel = float(np.percentile(np.where(np.isfinite(qd), qd, np.inf), q)) if len(req) else math.inf
    share = float(raw.summary["goodput_share"])
    ttft_v = ttft if math.isfinite(ttft) else None
    checks: list[tuple[bool, Bottleneck, str]] = []
    if slo.ttft_s is not None:
        checks.append((ttft <= slo.ttft_s, "ttft_slo", f"TTFT p{q:g} {ttft:.3g} s > {slo.ttft_s:g} s"))
    if slo.tpot_s is not None and tpot is not None:
        checks.append((tpot <= slo.tpot_s, "tpot_slo", f"TPOT p{q:g} {tpot:.3g} s > {slo.tpot_s:g} s"))
    checks.append((share >= slo.goodput_share, "goodput",
                   f"goodput share {share:.3f} < {slo.goodput_share:g}"))
    checks.append((not bool(raw.summary["overloaded"]), "queue", "the queue grows (overloaded)"))
    if slo.ttft_s is None:
        checks.append((qdel <= slo.max_queue_delay_s, "queue",
                       f"queueing delay p{q:g} {qdel:.3g} s > {slo.max_queue_delay_s:g} s"))
    for ok, cat, text in checks:
        if not ok:
            return Verdict(False, cat, ttft_v, tpot, text, share, raw)
    return Verdict(True, "compute", ttft_v, tpot, "", share, raw)


def simulate(model: ModelSpec, cluster: ClusterSpec, deployment: Deployment, reqs: RequestStream, slo: Slo,
             seed: int, timers: dict[tuple, Any] | None = None) -> Verdict:
    """One in-process simulation of ``deployment`` serving ``reqs``, judged against ``slo``;
    ``timers``: the step-timer cache shared by one search's simulations."""
    sim = ServingSimulation(model, cluster, deployment, reqs, seed=seed, timers=timers)
    sim.run()
    return verdict(collect(sim, slo.ttft_s, slo.tpot_s), slo)


PREFILL_OUTPUTS = 2
"""Output tokens a request asks for in a prefill candidate's run (see the module docstring)."""


@dataclass(frozen=True)
class CapacityJob:
    """Everything one candidate's capacity search needs (picklable for a process pool)."""

    model: ModelSpec
    cluster: ClusterSpec
    knobs: Knobs
    engine: EngineConfig
    workload: Workload
    buckets: tuple[Bucket, ...]
    slo: Slo
    start_rps: float
    seed: int
    requests: int
    steps: int
    prefill_replicas: int = 0
    """Prefill replicas feeding a decode candidate (``knobs.role == "decode"``)."""


def replica_power(raw: RawTables, role: str | None = None) -> tuple[float | None, float | None]:
    """(watts, J per output token) of the replicas with ``role`` (None or ``both``: every
    replica) over the run, from their own GPUs' busy and idle energy (the cluster's other GPUs
    idle whether or not the plan runs, so they are not its); a decode candidate's run counts
    only its decode replica (the prefill replicas feeding it are not its own), a prefill
    candidate's gives no J per output token (it makes one token a request); (None, None) when
    the simulator reports no energy."""
    s = raw.summary
    if "energy_j" not in raw.replicas.columns:
        return None, None
    dur = float(s["duration_s"])
    mine = raw.replicas if role in (None, "both") else raw.replicas[raw.replicas["role"] == role]
    e = float(mine["energy_j"].sum())
    watts = e / dur if dur > 0 else None
    if role == "prefill" or (role == "decode" and "both" in set(raw.replicas["role"])):
        return watts, None
    out = float(raw.requests["generated_tokens"].sum())
    return watts, (e / out if out > 0 else None)


def capacity(job: CapacityJob) -> tuple[Capacity, ...]:
    """The capacity of ``job.knobs`` for each bucket (see the module docstring)."""
    k = job.knobs
    one = PoolDeployment(pool=k.pool, tp=k.tp, pp=k.pp, ep=k.ep, replicas=1, engine=job.engine)
    if k.role != "both":
        feed = max(1, job.prefill_replicas) if k.role == "decode" else 1
        dep = Deployment(pools=(one.model_copy(update={"replicas": feed, "role": "prefill"}),
                                one.model_copy(update={"role": "decode"})))
        drop = "ttft_s" if k.role == "decode" else "tpot_s"
        job = replace(job, cluster=grow_pool(job.cluster, k.pool, feed + 1, k.gpus),
                      slo=job.slo.model_copy(update={drop: None}))
    else:
        dep = Deployment(pools=(one,))
    timers: dict[tuple, Any] = {}
    return tuple(_search(job, dep, b, timers) for b in job.buckets)


def grow_pool(cluster: ClusterSpec, pool: int, replicas: int, gpus_per_replica: int) -> ClusterSpec:
    """``cluster`` with pool ``pool`` grown (whole nodes) to hold ``replicas`` replicas of
    ``gpus_per_replica`` GPUs: a capacity simulation's setting, not the inventory."""
    p = cluster.pools[pool]
    per = gpus_per_node(p)
    need = math.ceil(replicas * gpus_per_replica / per)
    if need <= p.num_nodes:
        return cluster
    pools = list(cluster.pools)
    pools[pool] = p.model_copy(update={"num_nodes": need})
    return cluster.model_copy(update={"pools": tuple(pools)})


MIN_FED_SHARE = 0.8
"""A decode candidate's run counts only while its prefill feed delivers at least this share of
the offered rate: a decode replica starved by its feed meets any TPOT target at any offered
rate, and would otherwise be credited with the feed's queue as its capacity."""


def fed_share(raw: RawTables) -> float:
    """The rate requests reach the decode side (their first tokens, which wait for the KV
    transfer) over the rate they arrive, between the 10th and 90th request of each order."""
    req = raw.requests
    n = len(req)
    if n < 10:
        return 1.0
    arr = np.sort(req["arrival_s"].to_numpy(dtype=float))
    first = np.sort((req["arrival_s"] + req["ttft_s"]).to_numpy(dtype=float))
    i, j = n // 10, (9 * n) // 10
    if not math.isfinite(first[j]):
        return 0.0
    span_in, span_out = arr[j] - arr[i], first[j] - first[i]
    return 1.0 if span_out <= 0 else min(1.0, span_in / span_out)


def decode_occupancy(raw: RawTables, rate: float) -> float:
    """Little's law at the decode side: the offered rate times the mean time a finished
    request spends there (first token to last, its wait for a sequence slot included) is the
    mean number of requests the decode replica would hold in a long run. Above its
    ``max_num_seqs`` a queue stands on average: the replica is saturated however lenient the
    TPOT target. This holds for a run of fewer requests than slots, which decodes them all at
    once and would otherwise meet TPOT at any rate, and for one that spreads a queue's wait
    over every token and hides it from TPOT."""
    req = raw.requests
    fin = req[req["finished"]]
    if not len(fin):
        return math.inf
    stay = (fin["e2e_s"] - fin["ttft_s"]).to_numpy(dtype=float)
    return rate * float(np.mean(stay))


def _search(job: CapacityJob, dep: Deployment, bucket: Bucket, timers: dict[tuple, Any]) -> Capacity:
    runs = 0
    cache: dict[float, Verdict] = {}
    requests = job.requests

    def at(rate: float) -> Verdict:
        nonlocal runs
        if rate not in cache:
            runs += 1
            reqs = stream(job.workload, job.model, bucket, rate, requests, job.seed,
                          outputs=PREFILL_OUTPUTS if job.knobs.role == "prefill" else None)
            v = simulate(job.model, job.cluster, dep, reqs, job.slo, job.seed, timers)
            if job.knobs.role == "decode" and v.ok:
                got, held = fed_share(v.raw), decode_occupancy(v.raw, rate)
                if got < MIN_FED_SHARE:
                    v = replace(v, ok=False, limited_by="prefill_feed",
                                missed=f"the prefill replicas feeding it deliver {got:.0%} of the offered rate")
                elif held > job.knobs.max_num_seqs:
                    v = replace(v, ok=False, limited_by="max_num_seqs",
                                missed=f"it holds {held:.0f} requests on average, over its {job.knobs.max_num_seqs} "
                                       "sequence slots (a queue stands)")
            cache[rate] = v
        return cache[rate]

    r0 = max(job.start_rps * bucket.share, 1e-3)
    lo, hi = 0.0, math.inf
    first_fail: Verdict | None = None
    rate = r0
    for _ in range(4):  # bracket: grow from a pass, shrink from a failure
        v = at(rate)
        if v.ok:
            lo = rate
            if hi < math.inf:
                break
            rate *= 1.6
        else:
            hi, first_fail = rate, v
            if lo > 0:
                break
            rate /= 2.0
    if lo == 0.0:
        assert first_fail is not None
        low = cache[min(cache)]
        return Capacity(bucket=bucket.name, rps=0.0, simulations=runs, limited_by=low.limited_by,
                        ttft_s=low.ttft_s, tpot_s=low.tpot_s,
                        closest_miss=f"at {min(cache):.3g} req/s: {low.missed}")
    for _ in range(job.steps if hi < math.inf else 0):
        mid = 0.5 * (lo + hi)
        v = at(mid)
        if v.ok:
            lo = mid
        else:
            hi, first_fail = mid, v
    best = cache[lo]
    watts, jt = replica_power(best.raw, job.knobs.role)
    limit: Bottleneck = first_fail.limited_by if first_fail is not None else "compute"
    return Capacity(bucket=bucket.name, rps=lo, simulations=runs, limited_by=limit, ttft_s=best.ttft_s,
                    tpot_s=best.tpot_s, avg_power_w=watts, j_per_output_token=jt)
