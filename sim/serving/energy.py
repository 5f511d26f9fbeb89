"""Energy and power of a finished serving simulation: per replica, per pool, the cluster.

Over the result's window ``[t0, t1]`` (first arrival to the end of the simulation) every GPU
of the cluster draws either what its engine's iterations price (``Engine.busy_j``: kernels at
occupancy power, gaps and scheduler time at gap power) or, when its engine has no work, its
idle power ``idle_w`` (``calibration.power``). A GPU-second not spent in an iteration is an
idle GPU-second, so per replica::

    energy_j = busy_j + idle_w * (gpus * (t1 - t0) - busy_gpu_s)

and a pool adds its GPUs that host no replica at idle power. Each node's non-accelerator parts
draw ``node_host_power_w`` all the time; the facility energy is GPU plus host energy times
the cluster's PUE, priced at ``energy_price(cluster)`` per kWh.

Power over time is a step function: each logged iteration segment (one iteration, or a
fast-forwarded decode run) raises its pool's draw above idle by
``(energy_j - idle_w * gpu_s) / (end - start)`` while it lasts, so the step function integrates
to the energy exactly. Peak draw is the highest level of that step function (a decode run
counts at its mean power); the time over ``power_budget_w`` is measured on the facility draw.
``power_table`` bins the same function (exact bin averages).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from fleetsim.calibration.power import power_params
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.cluster import energy_price, node_host_power_w
from fleetsim.sim.serving.cluster import ServingSimulation

J_PER_KWH = 3.6e6
MAX_POWER_BINS = 5000
"""Most bins per pool in the power table (bins are 1 s, wider for longer runs)."""


@dataclass
class _Steps:
    """A piecewise-constant draw: ``level[i]`` W on ``[knots[i], knots[i + 1])`` (the last
    level lasts to the window's end)."""

    knots: np.ndarray
    level: np.ndarray

    def peak_w(self, t1: float) -> float:
        lengths = np.diff(np.append(self.knots, t1))
        live = self.level[lengths > 0]
        return float(live.max()) if len(live) else float(self.level[0])

    def seconds_above(self, limit_w: float, t1: float) -> float:
        lengths = np.diff(np.append(self.knots, t1))
        return float(lengths[self.level > limit_w].sum())

    def cumulative_j(self, t: np.ndarray) -> np.ndarray:
        """Energy drawn from the window start to each of ``t`` (J): exact, since the
        cumulative energy is linear between knots."""
        lengths = np.diff(self.knots)
        cum = np.concatenate([[0.0], np.cumsum(self.level[:-1] * lengths)])
        last = self.knots[-1]
        out = np.interp(np.minimum(t, last), self.knots, cum)
        return out + np.maximum(t - last, 0.0) * self.level[-1]


def _steps(base_w: float, start: np.ndarray, end: np.ndarray, delta: np.ndarray, t0: float) -> _Steps:
    times = np.concatenate([[t0], start, end])
    dw = np.concatenate([[0.0], delta, -delta])
    knots, inv = np.unique(times, return_inverse=True)
    level = base_w + np.cumsum(np.bincount(inv, weights=dw, minlength=len(knots)))
    return _Steps(knots, level)


@dataclass
class EnergyTables:
    """``replicas``: energy columns per replica; ``pools``: per cluster pool; ``power``: binned
    draw per pool over time; ``summary``: the summary keys."""

    replicas: pd.DataFrame
    pools: pd.DataFrame
    power: pd.DataFrame
    summary: dict[str, float | int | bool]


def account(sim: ServingSimulation, t0: float, t1: float) -> EnergyTables:
    """Energy of ``sim`` over ``[t0, t1]`` (see the module docstring)."""
    span = max(t1 - t0, 0.0)
    cl = sim.cluster
    idle = [power_params(get_gpu(p.node.gpu)).idle_w for p in cl.pools]
    rep_rows = []
    seg_parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in cl.pools]
    pool_busy_j = [0.0] * len(cl.pools)
    pool_busy_gpu_s = [0.0] * len(cl.pools)
    for r in sim.replicas:
        pi = r.plan.pool
        gpus = r.plan.parallel.tp * r.plan.parallel.pp
        busy_j = sum(e.busy_j for e in r.engines)
        busy_gpu_s = sum(e.busy_gpu_s for e in r.engines)
        idle_j = idle[pi] * (gpus * span - busy_gpu_s)
        total = busy_j + idle_j
        rep_rows.append({"replica": r.index, "energy_j": total, "busy_energy_j": busy_j, "idle_energy_j": idle_j,
                         "avg_power_w": total / span if span > 0 else math.nan,
                         "power_cap_w": r.plan.entry.engine.power_cap_w or r.plan.gpu.tdp_w})
        pool_busy_j[pi] += busy_j
        pool_busy_gpu_s[pi] += busy_gpu_s
        for e in r.engines:
            if not len(e.seg["start_s"]):
                continue
            s = np.frombuffer(e.seg["start_s"], dtype=float)
            en = np.frombuffer(e.seg["end_s"], dtype=float)
            dj = np.frombuffer(e.seg["energy_j"], dtype=float) - idle[pi] * np.frombuffer(e.seg["gpu_s"], dtype=float)
            dur = en - s
            keep = dur > 0
            seg_parts[pi].append((s[keep], en[keep], dj[keep] / dur[keep]))
    pool_rows = []
    steps: list[_Steps] = []
    pue = cl.pue
    for pi, p in enumerate(cl.pools):
        host_w = node_host_power_w(p.node) * p.num_nodes
        base = idle[pi] * p.gpus
        gpu_j = pool_busy_j[pi] + idle[pi] * (p.gpus * span - pool_busy_gpu_s[pi])
        parts = seg_parts[pi]
        cat = [np.concatenate([x[k] for x in parts]) if parts else np.zeros(0) for k in range(3)]
        st = _steps(base, cat[0], cat[1], cat[2], t0)
        steps.append(st)
        pool_rows.append({"pool": pi, "gpu": p.node.gpu, "gpus": p.gpus, "nodes": p.num_nodes,
                          "idle_w_per_gpu": idle[pi], "host_power_w": host_w, "energy_j": gpu_j,
                          "energy_facility_j": (gpu_j + host_w * span) * pue,
                          "avg_power_w": gpu_j / span if span > 0 else math.nan,
                          "peak_power_w": st.peak_w(t1)})
    pools = pd.DataFrame(pool_rows)
    host_w = float(pools["host_power_w"].sum())
    if len(steps) == 1:
        cluster = steps[0]
    else:
        all_parts = [x for parts in seg_parts for x in parts]
        cat = [np.concatenate([x[k] for x in all_parts]) if all_parts else np.zeros(0) for k in range(3)]
        gpu_base = float(sum(idle[pi] * p.gpus for pi, p in enumerate(cl.pools)))
        cluster = _steps(gpu_base, cat[0], cat[1], cat[2], t0)
    del seg_parts
    facility = _Steps(cluster.knots, (cluster.level + host_w) * pue)
    energy_j = float(pools["energy_j"].sum())
    facility_j = float(pools["energy_facility_j"].sum())
    summ: dict[str, float | int | bool] = {
        "energy_j": energy_j, "energy_facility_j": facility_j,
        "avg_power_w": energy_j / span if span > 0 else math.nan,
        "peak_power_w": cluster.peak_w(t1),
        "avg_facility_power_w": facility_j / span if span > 0 else math.nan,
        "peak_facility_power_w": facility.peak_w(t1),
        "energy_cost_usd": facility_j / J_PER_KWH * energy_price(cl),
        "pue": pue,
    }
    for row in pool_rows:
        summ[f"pool{row['pool']}_avg_power_w"] = row["avg_power_w"]
        summ[f"pool{row['pool']}_peak_power_w"] = row["peak_power_w"]
    budget = cl.power_budget_w
    summ["power_budget_w"] = math.nan if budget is None else float(budget)
    over = 0.0 if budget is None else facility.seconds_above(float(budget), t1)
    summ["power_budget_exceeded"] = over > 0
    summ["power_budget_exceeded_s"] = over
    return EnergyTables(pd.DataFrame(rep_rows), pools, power_table(steps, t0, t1), summ)


def power_table(steps: list[_Steps], t0: float, t1: float) -> pd.DataFrame:
    """Mean GPU draw per pool in bins of 1 s (wider when that gives more than
    ``MAX_POWER_BINS``), from the exact cumulative energy at the bin edges."""
    span = t1 - t0
    if span <= 0 or not steps:
        return pd.DataFrame({"start_s": [], "pool": [], "power_w": []})
    width = max(1.0, span / MAX_POWER_BINS)
    edges = np.append(t0 + width * np.arange(math.ceil(span / width)), t1)
    edges = edges[np.concatenate([[True], np.diff(edges) > 0])]
    frames = []
    for pi, st in enumerate(steps):
        cum = st.cumulative_j(edges)
        frames.append(pd.DataFrame({"start_s": edges[:-1], "pool": np.full(len(edges) - 1, pi, np.int32),
                                    "power_w": np.diff(cum) / np.diff(edges)}))
    return pd.concat(frames, ignore_index=True).sort_values(["start_s", "pool"], kind="stable",
                                                             ignore_index=True)
