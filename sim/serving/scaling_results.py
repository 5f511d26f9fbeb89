"""Tables of an autoscaled run: replicas and GPUs over time, GPU-hours and cost per deployment
entry, SLO attainment per interval, requests delayed by cold starts.

A replica is paid for while ``starting``, ``ready`` or ``draining`` (``sim.serving.scaler``);
its GPU-seconds are the length of those spells within the result's window ``[t0, t1]`` times
its GPUs, so an entry's GPU-hours are exactly the integral of its paid replicas over time times
GPUs per replica. Cost: GPU-hours times ``hardware.cluster.price_per_gpu_hour`` of the pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from fleetsim.hardware.cluster import price_per_gpu_hour
from fleetsim.sim.serving.scaler import Scaler

PAID = ("starting", "ready", "draining")


@dataclass
class ScalingTables:
    timeline: pd.DataFrame
    """One row per time any replica changed state: per entry the replicas in each state and
    the GPUs paid for from that time on."""
    entries: pd.DataFrame
    """Per deployment entry: GPU type, GPUs per replica, limits, cold start, GPU-hours, cost."""
    decisions: pd.DataFrame
    """Every autoscaler observation and the count it asked for."""
    slo: pd.DataFrame
    """Per interval of arrivals: requests, share meeting the SLO, mean paid replicas."""
    summary: dict[str, float | int]


def _spells(sc: Scaler, t0: float, t1: float) -> list[list[tuple[float, float]]]:
    """Paid spells ``[a, b)`` of each replica, clipped to ``[t0, t1]``."""
    out: list[list[tuple[float, float]]] = [[] for _ in sc.state]
    since: dict[int, float] = {}
    for t, r, st in sc.transitions:
        if st in PAID and r not in since:
            since[r] = t
        elif st not in PAID and r in since:
            out[r].append((since.pop(r), t))
    for r, a in since.items():
        out[r].append((a, max(t1, a)))
    return [[(max(a, t0), min(b, t1)) for a, b in sp if min(b, t1) > max(a, t0)] for sp in out]


def scaling_tables(sc: Scaler, req: pd.DataFrame, t0: float, t1: float, ttft_slo_s: float | None,
                   tpot_slo_s: float | None) -> ScalingTables:
    sim = sc.sim
    spells = _spells(sc, t0, t1)
    rows = []
    state = ["off"] * len(sc.state)
    trans = sorted(sc.transitions, key=lambda x: x[0])
    k = 0
    while k < len(trans):
        t = trans[k][0]
        while k < len(trans) and trans[k][0] == t:
            state[trans[k][1]] = trans[k][2]
            k += 1
        for i, mem in enumerate(sc.members):
            gpus = sim.replicas[mem[0]].plan.parallel.tp * sim.replicas[mem[0]].plan.parallel.pp
            c = {s: sum(1 for r in mem if state[r] == s) for s in ("starting", "ready", "draining")}
            rows.append({"time_s": t, "entry": i, **c, "paid": sum(c.values()),
                         "gpus": gpus * sum(c.values())})
    timeline = pd.DataFrame(rows)
    ent_rows = []
    span = max(t1 - t0, 1e-12)
    for i, mem in enumerate(sc.members):
        plan = sim.replicas[mem[0]].plan
        gpus = plan.parallel.tp * plan.parallel.pp
        rep_s = sum(b - a for r in mem for a, b in spells[r])
        price = price_per_gpu_hour(sim.cluster, plan.pool)
        gh = rep_s * gpus / 3600.0
        total, load, warm = sc.cold[i]
        ent_rows.append({"entry": i, "role": sc.role[i], "gpu": plan.gpu.name, "pool": plan.pool,
                         "gpus_per_replica": gpus, "min_replicas": sc.lo[i], "max_replicas": sc.hi[i],
                         "cold_start_s": total, "weight_load_s": load, "warmup_s": warm,
                         "cold_starts": sum(1 for _, r, s in sc.transitions if s == "starting" and r in mem),
                         "replica_hours": rep_s / 3600.0, "mean_replicas": rep_s / span, "gpu_hours": gh,
                         "price_per_gpu_hour_usd": math.nan if price is None else price,
                         "cost_usd": math.nan if price is None else gh * price})
    entries = pd.DataFrame(ent_rows)
    slo = _slo_table(sc, req, spells, t0, t1, ttft_slo_s, tpot_slo_s)
    delayed = req["req_id"].isin(sc.delayed).to_numpy()
    summ: dict[str, float | int] = {
        "gpu_hours": float(entries["gpu_hours"].sum()),
        "cost_usd": float(entries["cost_usd"].sum(min_count=len(entries))),
        "mean_replicas": float(entries["mean_replicas"].sum()),
        "peak_replicas": int(timeline.groupby("time_s")["paid"].sum().max()) if len(timeline) else 0,
        "cold_starts": int(entries["cold_starts"].sum()),
        "delayed_by_cold_start": int(delayed.sum()),
        "cold_start_delayed_ttft_mean_s": float(req.loc[delayed, "ttft_s"].mean()) if delayed.any() else math.nan,
    }
    dec = pd.DataFrame(sc.decisions)
    return ScalingTables(timeline, entries, dec, slo, summ)


def _slo_table(sc: Scaler, req: pd.DataFrame, spells: list[list[tuple[float, float]]], t0: float, t1: float,
               ttft_slo_s: float | None, tpot_slo_s: float | None) -> pd.DataFrame:
    dt = sc.cfg.interval_s
    n = max(1, math.ceil((t1 - t0) / dt))
    edges = t0 + dt * np.arange(n + 1)
    ok = req["finished"].to_numpy().copy()
    if ttft_slo_s is not None:
        ok &= req["ttft_s"].to_numpy() <= ttft_slo_s
    if tpot_slo_s is not None:
        ok &= np.nan_to_num(req["tpot_s"].to_numpy(), nan=0.0) <= tpot_slo_s
    b = np.clip(((req["arrival_s"].to_numpy() - t0) // dt).astype(np.int64), 0, n - 1)
    count = np.bincount(b, minlength=n)
    good = np.bincount(b, weights=ok.astype(float), minlength=n)
    delayed = np.bincount(b, weights=req["req_id"].isin(sc.delayed).to_numpy().astype(float), minlength=n)
    paid = np.zeros(n)
    for sp in spells:
        for a, c in sp:
            lo = edges[:-1]
            hi = np.minimum(edges[1:], t1)
            paid += np.clip(np.minimum(hi, c) - np.maximum(lo, a), 0, None)
    width = np.minimum(edges[1:], t1) - edges[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({"start_s": edges[:-1], "requests": count,
                             "slo_attainment": np.where(count > 0, good / np.maximum(count, 1), np.nan),
                             "delayed_by_cold_start": delayed.astype(np.int64),
                             "mean_paid_replicas": np.where(width > 0, paid / width, np.nan)})
