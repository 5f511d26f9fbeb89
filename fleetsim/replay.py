"""Compressed long-horizon replay: a week of autoscaled serving in seconds of CPU.

Full simulation prices every iteration; over a week most intervals are steady states that a
closed form describes. Per autoscaler interval ``dt`` the compressed path takes

* the arrivals of the interval (the same arrival process and seed as the full simulation, so
  the same counts the autoscaler would observe),
* a replica's capacity ``capacity_rps``: the highest rate one replica sustains within the SLO,
  measured by the simulator (``measure_capacity``: bisection on simulated rates),

and runs the same policy and ``Stabilizer`` as the simulator's scaler, with replicas ready
``cold_start_s`` after a scale-up. The fleet serves ``ready replica-seconds x capacity_rps``
requests per interval; what it cannot serve waits in a fluid backlog for the next interval.
Requests that arrive within capacity are counted as meeting the SLO (the definition of the
capacity), the rest - the excess and everything queued behind a backlog - as missing it.
GPU-hours integrate paid replicas (starting, ready) exactly as the simulator does; a replica
scaled down stops being paid at once (the simulator pays it until its last request leaves,
typically seconds).

Scope: policies that need only the arrival rate and the clock (``rate``, ``scheduled``); the
latency- and occupancy-driven ones (``slo``, ``utilization``, ``queue``) need full simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fleetsim.hardware.errors import ConfigError
from fleetsim.sim.serving.autoscale import (
    AutoscaleConfig,
    Observation,
    RatePolicy,
    ScheduledPolicy,
    Stabilizer,
)


@dataclass
class CompressedResult:
    intervals: pd.DataFrame
    """Per interval: start, arrivals, paid and ready replica-seconds, served, backlog, SLO share."""
    summary: dict[str, float]


def replay_compressed(arrival_s: np.ndarray, horizon_s: float, cfg: AutoscaleConfig, capacity_rps: float,
                      gpus_per_replica: int, price_per_gpu_hour: float | None = None,
                      initial_replicas: int | None = None) -> CompressedResult:
    """The fluid replay of one autoscaled pool (see the module docstring)."""
    if not isinstance(cfg.policy, RatePolicy | ScheduledPolicy):
        raise ConfigError(f"compressed replay supports the rate and scheduled policies; {cfg.policy.kind!r} "
                          "needs full simulation")
    if not (capacity_rps > 0 and math.isfinite(capacity_rps)):
        raise ConfigError(f"capacity_rps must be positive and finite, got {capacity_rps}")
    if cfg.cold_start_s is None:
        raise ConfigError("compressed replay needs cold_start_s (take it from a simulation's scaling.entries)")
    lo, hi = cfg.limits(1)
    lo_, hi_ = lo[0], hi[0]
    dt = cfg.interval_s
    n = max(1, math.ceil(horizon_s / dt))
    counts = np.bincount(np.clip((np.asarray(arrival_s) // dt).astype(np.int64), 0, n - 1), minlength=n)
    init = lo_ if initial_replicas is None else initial_replicas
    ready = min(max(init, lo_), hi_)
    starting: list[float] = []  # ready times of replicas in their cold start
    stab = Stabilizer(cfg)
    cs = cfg.cold_start_s
    backlog = 0.0
    rows = []
    prev_count = 0
    for i in range(n):
        t0, t1 = i * dt, min((i + 1) * dt, horizon_s)
        if i > 0:  # the tick at t0 observes the interval before
            obs = Observation(now_s=t0, interval_s=dt, role="both", current=ready + len(starting), ready=ready,
                              arrivals_rps=prev_count / dt, busy=math.nan, kv_occupancy=math.nan,
                              in_system=0, ttft_s=math.nan, tpot_s=math.nan)
            want = min(max(cfg.policy.targets([obs])[0], lo_), hi_)
            k = stab.change(t0, obs.current, want)
            if k > 0:
                starting += [t0 + cs] * k
            elif k < 0:
                drop = min(-k, len(starting))
                starting = starting[:len(starting) - drop]  # cancel the latest cold starts first
                ready -= -k - drop
        done = [s for s in starting if s <= t1]
        ready_s = ready * (t1 - t0) + sum(t1 - max(s, t0) for s in done)
        paid_s = ready * (t1 - t0) + sum(t1 - t0 for _ in starting)
        ready += len(done)
        starting = [s for s in starting if s > t1]
        arrivals = float(counts[i])
        cap = ready_s * capacity_rps
        served = min(backlog + arrivals, cap)
        ok = max(0.0, min(arrivals, cap - backlog))
        backlog = backlog + arrivals - served
        rows.append({"start_s": t0, "arrivals": arrivals, "paid_replica_s": paid_s, "ready_replica_s": ready_s,
                     "served": served, "backlog": backlog, "slo_ok": ok})
        prev_count = int(counts[i])
    df = pd.DataFrame(rows)
    gh = float(df["paid_replica_s"].sum()) * gpus_per_replica / 3600.0
    total = float(df["arrivals"].sum())
    summ = {"gpu_hours": gh, "mean_replicas": float(df["paid_replica_s"].sum()) / horizon_s,
            "slo_attainment": float(df["slo_ok"].sum()) / total if total else math.nan,
            "cost_usd": gh * price_per_gpu_hour if price_per_gpu_hour is not None else math.nan,
            "requests": total}
    return CompressedResult(df, summ)


def measure_capacity(model: Any, cluster: Any, deployment: Any, workload: Any, slo: dict[str, float],
                     *, num_requests: int = 600, seed: int = 0, steps: int = 6, start_rps: float = 4.0,
                     percentile: float = 90.0) -> float:
    """The highest Poisson rate (req/s) one replica of ``deployment`` (its first entry, one replica)
    sustains with the ``percentile`` TTFT/TPOT within ``slo`` and no growing queue: bracket
    geometrically from ``start_rps``, then bisect ``steps`` times. ``workload``: a built-in name or
    spec whose lengths are used."""
    from fleetsim.serving import Deployment, simulate_serving
    from fleetsim.workloads.defaults import get_workload

    wl = get_workload(workload)
    entry = deployment.pools[0].model_copy(update={"replicas": 1})
    dep = Deployment(pools=(entry,), router=deployment.router)

    def ok(rate: float) -> bool:
        res = simulate_serving(model, cluster, wl.with_rate(rate).generate(seed, num_requests=num_requests), dep,
                               seed=seed, slo=slo)
        r = res.requests
        if bool(res.summary["overloaded"]):
            return False
        for key, col in (("ttft_slo_s", "ttft_s"), ("tpot_slo_s", "tpot_s")):
            if key in slo and float(np.nanpercentile(r[col].to_numpy(dtype=float), percentile)) > slo[key]:
                return False
        return True

    lo, hi = 0.0, math.inf
    rate = start_rps
    for _ in range(12):
        if ok(rate):
            lo = rate
            if hi < math.inf:
                break
            rate *= 2.0
        else:
            hi = rate
            if lo > 0:
                break
            rate /= 2.0
    if lo == 0.0:
        raise ConfigError(f"one replica meets the SLO at no rate down to {rate:.3g} req/s")
    for _ in range(steps if hi < math.inf else 0):
        mid = 0.5 * (lo + hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


__all__ = ["CompressedResult", "measure_capacity", "replay_compressed"]
