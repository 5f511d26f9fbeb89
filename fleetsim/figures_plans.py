"""Figures of serving and training plans (``fleetsim.figures.plan_figures``).

Serving (``planner.serving.search.ServingPlans``): ``pareto`` draws the planner's
cost/latency/energy points (``ServingPlans.pareto``): the re-simulated plans ($/h against
p90 TTFT and p90 TPOT) and, when capacities were simulated, the candidates ($/h per
request/s of capacity against TTFT and TPOT at that capacity), coloured by energy per output
token, the points on the planner's frontier (no other point of their kind is no worse in
cost, TTFT, TPOT and energy and better in one) ringed, the SLO targets as dashed lines.
``gpu_mix``: the GPUs of each plan (best first, the chosen one on top) by pool: replicas
x TP x PP GPUs of each type and role.

Training (``training_plans.TrainPlan``): ``train_frontier`` draws the ranked plans' step
time against the cost per million trained tokens (at the GPU-hour price) and against MFU,
coloured by facility energy per token, the non-dominated plans ringed (shortest step and
lowest cost; shortest step and highest MFU); ``train_memory`` the memory per GPU of each
plan's fullest stage by part.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fleetsim.figures import empty_note, new_figure
from fleetsim.figures_training import GIB, MEMORY_PARTS
from fleetsim.hardware.errors import ConfigError
from fleetsim.planner.serving.select import pareto

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_PLANS = 12
"""Most plans in a GPU-mix or memory figure (best first)."""


def pareto_rows(res: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(plan rows, candidate rows) of ``res.pareto`` with latencies in ms."""
    rows = pd.DataFrame(list(res.pareto))
    if rows.empty:
        return rows, rows
    plans = rows[rows["kind"] == "plan"].copy()
    cands = rows[rows["kind"] == "candidate"].copy()
    for d, cols in ((plans, ("ttft_p90_s", "tpot_p90_s")), (cands, ("ttft_s", "tpot_s"))):
        for c in cols:
            if c in d:
                d[c.removesuffix("_s") + "_ms"] = pd.to_numeric(d[c], errors="coerce") * 1e3
    return plans.reset_index(drop=True), cands.reset_index(drop=True)


def _scatter(ax: Axes, d: pd.DataFrame, x: str, y: str, norm: Any, kind: str, ranks: dict[str, int]) -> Any:
    """Points of ``d`` coloured by energy per output token (grey where missing), frontier
    ones ringed, plans numbered by rank."""
    import matplotlib as mpl

    cmap = mpl.colormaps["viridis"].with_extremes(bad="0.6")
    col = "j_per_output_token"
    cvals = pd.to_numeric(d[col], errors="coerce").to_numpy(float) if col in d else np.full(len(d), np.nan)
    xs, ys = d[x].to_numpy(float), d[y].to_numpy(float)
    sc = ax.scatter(xs, ys, c=np.ma.masked_invalid(cvals), cmap=cmap, norm=norm, s=36, zorder=3,
                    plotnonfinite=True, gid=f"pareto:{kind}:{y}:all", label=f"{kind}s")
    front = d["on_frontier"].astype(bool).to_numpy()
    ax.scatter(xs[front], ys[front], s=140, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4,
               gid=f"pareto:{kind}:{y}:frontier", label="Pareto frontier")
    if ranks:
        for xi, yi, n in zip(xs, ys, d["name"], strict=True):
            if n in ranks:
                ax.annotate(f"#{ranks[n]}", (xi, yi), fontsize=7, xytext=(5, 5), textcoords="offset points")
    return sc


def _slo(ax: Axes, ys: np.ndarray, target_s: float | None, percentile: float) -> str:
    """The SLO target as a dashed line when it is within reach of the points' scale (else
    only named in the title, so the points keep the axis)."""
    if not target_s:
        return ""
    t = target_s * 1e3
    top = float(np.nanmax(ys)) if np.isfinite(ys).any() else t
    if t <= 2.0 * top:
        ax.axhline(t, color="red", linestyle="--", linewidth=1, label=f"SLO {t:.4g} ms (p{percentile:g})")
        return ""
    return f"; SLO {t:.4g} ms above"


def serving_pareto(res: Any) -> Figure | None:
    import matplotlib as mpl

    plans, cands = pareto_rows(res)
    groups = []
    if len(plans):
        groups.append(("plan", plans, "cost_per_hour", "USD / h", ("ttft_p90_ms", "tpot_p90_ms"),
                       ("TTFT p90 (ms)", "TPOT p90 (ms)")))
    if len(cands):
        groups.append(("candidate", cands, "usd_per_hour_per_rps", "USD / h per request/s of capacity",
                       ("ttft_ms", "tpot_ms"), ("TTFT at capacity (ms)", "TPOT at capacity (ms)")))
    if not groups:
        return None
    fig, axes = new_figure(len(groups), 2, (12.0, 4.2 * len(groups)))
    ranks = {p.name: i for i, p in enumerate(res.plans, 1)}
    slo = res.slo
    for row, (kind, d, x, xlabel, ys, ylabels) in enumerate(groups):
        energy = pd.to_numeric(d.get("j_per_output_token", pd.Series(dtype=float)), errors="coerce").dropna()
        norm = mpl.colors.Normalize(float(energy.min()), float(energy.max())) if len(energy) else None
        sc = None
        for col, (y, ylabel, target) in enumerate(zip(ys, ylabels, (slo.ttft_s, slo.tpot_s), strict=True)):
            ax = axes[row, col]
            sc = _scatter(ax, d, x, y, norm, kind, ranks if kind == "plan" else {})
            yv = d[y].to_numpy(float)
            note = _slo(ax, yv, target, slo.percentile)
            top = max([float(np.nanmax(yv))] if np.isfinite(yv).any() else [1.0])
            if not note and target:
                top = max(top, target * 1e3)
            ax.set_ylim(0, 1.12 * top)
            ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{kind}s: cost vs {ylabel.split(' (')[0]}{note}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        if sc is not None and norm is not None:
            fig.colorbar(sc, ax=axes[row, :], label=f"J per output token ({kind}s)", shrink=0.9)
    demand = f"{res.demand_rps:g} req/s" if res.demand_rps else "max goodput"
    fig.suptitle(f"Pareto frontier: cost vs latency vs energy ({res.objective}, {demand}; #k: plan rank)",
                 fontsize=10)
    return fig


def pool_label(pc: Any) -> str:
    role = "" if pc.role == "both" else f" {pc.role}"
    cap = f" @{pc.power_cap_w:g}W" if pc.power_cap_w else ""
    return f"{pc.replicas}x tp{pc.tp} pp{pc.pp}{role}{cap}"


def gpu_mix(res: Any) -> Figure:
    plans = list(res.plans[:MAX_PLANS])
    fig, axes = new_figure(1, 1, (10.0, 1.6 + 0.5 * len(plans)))
    ax = axes[0, 0]
    gpus = sorted({pc.gpu for p in plans for pc in p.pools})
    color = {g: f"C{i % 10}" for i, g in enumerate(gpus)}
    labels = [("chosen: " if i == 0 else f"{i + 1}: ") + p.name for i, p in enumerate(plans)]
    seen: set[str] = set()
    for i, p in enumerate(plans):
        left = 0.0
        for j, pc in enumerate(sorted(p.pools, key=lambda q: (q.gpu, q.pool, q.role))):
            w = float(pc.replicas * pc.tp * pc.pp)
            bar = ax.barh(labels[i], w, left=left, color=color[pc.gpu], edgecolor="white",
                          label=None if pc.gpu in seen else pc.gpu, gid=f"mix:{i}:{pc.gpu}:{j}")
            seen.add(pc.gpu)
            ax.bar_label(bar, [pool_label(pc)], label_type="center", fontsize=6, color="white")
            left += w
        ax.text(left, i, f"  ${p.cost_per_hour:.2f}/h", va="center", fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="GPUs", title="GPU mix of the plans (best first): replicas x TP x PP per pool")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return fig


def train_points(plan: Any) -> pd.DataFrame:
    """One row per ranked training plan: step time, cost per million tokens (NaN without a
    price), MFU, facility J per token and the two frontier flags."""
    recs = []
    for i, e in enumerate(plan.plans, 1):
        ev = e.evaluation
        price = ev.price_per_gpu_hour
        usd = math.nan if price is None or ev.tokens_per_s <= 0 else ev.gpus * price / 3600.0 / ev.tokens_per_s * 1e6
        recs.append({"rank": i, "name": f"{i}: {ev.gpu} {e.candidate.label()}", "time_s": ev.time_s,
                     "usd_per_mtok": usd, "mfu": ev.mfu, "neg_mfu": -ev.mfu,
                     "facility_j_per_token": ev.facility_j_per_token})
    d = pd.DataFrame(recs)
    if d.empty:
        return d
    pts = d.to_dict("records")
    cost_pts = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in pts]
    d["front_cost"] = pareto(cost_pts, ("time_s", "usd_per_mtok")) if d["usd_per_mtok"].notna().all() else False
    d["front_mfu"] = pareto(pts, ("time_s", "neg_mfu"))
    return d


def train_frontier(plan: Any) -> Figure:
    import matplotlib as mpl

    d = train_points(plan)
    fig, axes = new_figure(1, 2, (12.0, 4.4))
    cvals = d["facility_j_per_token"].to_numpy(float)
    norm = mpl.colors.Normalize(float(np.nanmin(cvals)), float(np.nanmax(cvals))) if len(d) else None
    sc = None
    for ax, y, front, ylabel in ((axes[0, 0], "usd_per_mtok", "front_cost", "USD per million tokens"),
                                 (axes[0, 1], "mfu", "front_mfu", "MFU")):
        if y == "usd_per_mtok" and not d["usd_per_mtok"].notna().any():
            empty_note(ax, "no GPU-hour price in the catalog or cluster")
            ax.set(title="step time vs cost")
            continue
        xs, ys = d["time_s"].to_numpy(float), d[y].to_numpy(float)
        sc = ax.scatter(xs, ys, c=cvals, cmap="viridis", norm=norm, s=36, zorder=3, gid=f"train:{y}:all",
                        label="plans")
        f = d[front].to_numpy(bool)
        ax.scatter(xs[f], ys[f], s=140, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4,
                   gid=f"train:{y}:frontier", label="Pareto frontier")
        for xi, yi, r in zip(xs, ys, d["rank"], strict=True):
            ax.annotate(str(r), (xi, yi), fontsize=6, xytext=(4, 4), textcoords="offset points")
        ax.set(xlabel="step time (s)", ylabel=ylabel, title=f"step time vs {ylabel}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if sc is not None:
        fig.colorbar(sc, ax=axes, label="facility J per token", shrink=0.8)
    fig.suptitle(f"Training plans for {plan.model.name} on {plan.cluster.name} (objective {plan.objective}; "
                 f"numbers: rank)", fontsize=10)
    return fig


def train_memory(plan: Any) -> Figure:
    entries = list(plan.plans[:MAX_PLANS])
    fig, axes = new_figure(1, 1, (10.0, 1.6 + 0.45 * len(entries)))
    ax = axes[0, 0]
    labels = [f"{i}: {e.candidate.label()}" for i, e in enumerate(entries, 1)]
    parts = [p for p in MEMORY_PARTS if any(e.memory.get(f"{p}_bytes", 0.0) > 0 for e in entries)]
    left = np.zeros(len(entries))
    for i, p in enumerate(parts):
        w = np.array([e.memory.get(f"{p}_bytes", 0.0) for e in entries]) / GIB
        ax.barh(labels, w, left=left, color=f"C{i % 10}", label=p, gid=f"train_memory:{p}")
        left += w
    ax.invert_yaxis()
    ax.set(xlabel="GiB per GPU (fullest stage)", title="memory per GPU of each plan (best first)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="x", alpha=0.3)
    return fig


def plan_figures(plan: Any) -> dict[str, Figure]:
    from fleetsim.planner.serving.search import ServingPlans
    from fleetsim.planning import ServingPlan
    from fleetsim.training_plans import TrainPlan

    if isinstance(plan, TrainPlan):
        return {"train_frontier": train_frontier(plan), "train_memory": train_memory(plan)} if plan.plans else {}
    if isinstance(plan, ServingPlan):
        plan = plan.search
    if not isinstance(plan, ServingPlans):
        raise ConfigError(f"plan_figures takes a ServingPlan, ServingPlans or TrainPlan, got {type(plan).__name__}")
    out: dict[str, Figure] = {}
    fig = serving_pareto(plan)
    if fig is not None:
        out["pareto"] = fig
    if plan.plans:
        out["gpu_mix"] = gpu_mix(plan)
    return out
