"""Figures of a serving simulation (``fleetsim.figures.serving_figures``).

``latency_cdf``: the empirical CDFs of TTFT, TPOT and end-to-end latency over the requests
that have the value (finished ones; TPOT needs two output tokens), each per-request ITL
p99 beside TPOT, with the SLO as a red dashed line and the share within it.
``latency_hist``: the same three as histograms. ``timeseries``: tokens processed and
requests completed per second, requests waiting and running, KV-cache occupancy and, when
the run has power figures, the GPU draw per cluster pool, over simulated time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetsim.figures import (
    TIME_BINS,
    active_count,
    binned_mean,
    binned_rate,
    cdf_points,
    empty_note,
    new_figure,
    sample_times,
    time_edges,
)
from fleetsim.hardware.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LATENCIES = (("ttft_s", "TTFT", "ttft_slo_s", 1e3, "ms"), ("tpot_s", "TPOT", "tpot_slo_s", 1e3, "ms"),
             ("e2e_s", "E2E latency", "e2e_slo_s", 1.0, "s"))
"""(request column, name, SLO key, scale to the axis unit, unit)."""
SLO_KEYS = tuple(x[2] for x in LATENCIES)
MAX_REPLICA_LINES = 8
"""Above this many replicas, KV occupancy is drawn as the mean and max over replicas."""
HIST_BINS = 60
MIN_RATE_BINS = 20


def slo_targets(result: Any, slo: Mapping[str, float] | None) -> dict[str, float]:
    """The SLO lines to draw: ``slo`` when given (keys ``ttft_slo_s``, ``tpot_slo_s``,
    ``e2e_slo_s``; seconds), else the targets the result was simulated with."""
    if slo is None:
        got = {k: result.summary.get(k) for k in SLO_KEYS}
    else:
        if not isinstance(slo, Mapping):
            raise ConfigError(f"slo must be a dict of {', '.join(SLO_KEYS)} (seconds), got {type(slo).__name__}")
        for k in slo:
            if k not in SLO_KEYS:
                raise ConfigError(f"slo: unknown key {k!r} (known: {', '.join(SLO_KEYS)})")
        got = dict(slo)
    out = {}
    for k, v in got.items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0 or not math.isfinite(v):
            raise ConfigError(f"slo {k} must be a positive number of seconds, got {v!r}")
        out[k] = float(v)
    return out


def _slo_line(ax: Axes, values: np.ndarray, slo_s: float | None, scale: float, unit: str) -> None:
    if slo_s is None:
        return
    v = values[np.isfinite(values)]
    share = float(np.mean(v <= slo_s)) if len(v) else math.nan
    ax.axvline(slo_s * scale, color="red", linestyle="--", linewidth=1.2,
               label=f"SLO {slo_s * scale:.4g} {unit} ({share:.1%} of these {len(v):,} within)")


def latency_cdf(result: Any, slo: dict[str, float]) -> Figure:
    req = result.requests
    fig, axes = new_figure(1, 3, (13.0, 3.8))
    for ax, (col, name, key, scale, unit) in zip(axes[0], LATENCIES, strict=True):
        vals = req[col].to_numpy(dtype=float)
        x, q = cdf_points(vals)
        if len(x) == 0:
            empty_note(ax, f"no request has a {name}")
        ax.step(x * scale, q, where="post", label=f"{name} ({len(vals[np.isfinite(vals)]):,} requests)",
                color="C0", gid=f"cdf:{col}")
        if col == "tpot_s" and "itl_p99_s" in req:
            xi, qi = cdf_points(req["itl_p99_s"].to_numpy(dtype=float))
            ax.step(xi * scale, qi, where="post", label="ITL p99 per request", color="C1", gid="cdf:itl_p99_s")
        _slo_line(ax, vals, slo.get(key), scale, unit)
        ax.set(xlabel=f"{name} ({unit})", ylabel="share of requests", ylim=(0, 1.02), title=f"{name} CDF")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(_title(result), fontsize=9)
    return fig


def latency_hist(result: Any, slo: dict[str, float]) -> Figure:
    req = result.requests
    fig, axes = new_figure(1, 3, (13.0, 3.6))
    for ax, (col, name, key, scale, unit) in zip(axes[0], LATENCIES, strict=True):
        vals = req[col].to_numpy(dtype=float)
        v = vals[np.isfinite(vals)] * scale
        if len(v):
            counts, edges = np.histogram(v, bins=HIST_BINS)
            ax.stairs(counts, edges, fill=True, alpha=0.7, color="C0", label=name)
        else:
            empty_note(ax, f"no request has a {name}")
        _slo_line(ax, vals, slo.get(key), scale, unit)
        ax.set(xlabel=f"{name} ({unit})", ylabel="requests", title=f"{name} histogram")
        ax.grid(alpha=0.3)
        if slo.get(key) is not None:
            ax.legend(fontsize=7)
    fig.suptitle(_title(result), fontsize=9)
    return fig


def _span(result: Any) -> tuple[float, float]:
    req, ts = result.requests, result.timeseries
    arr = req["arrival_s"].to_numpy(dtype=float)
    t0 = float(np.nanmin(arr)) if len(arr) else 0.0
    ends = [float(np.nanmax(arr)) if len(arr) else t0]
    if len(ts):
        ends.append(float(ts["end_s"].max()))
    fin = (req["arrival_s"] + req["e2e_s"]).to_numpy(dtype=float)
    if np.isfinite(fin).any():
        ends.append(float(np.nanmax(fin)))
    return t0, max(ends)


def rate_bins(span_s: float) -> int:
    """Bins of the rates over time: about one per second of simulated time, at least
    ``MIN_RATE_BINS`` and at most ``TIME_BINS``."""
    if not span_s > 0:
        return MIN_RATE_BINS
    return int(min(TIME_BINS, max(MIN_RATE_BINS, math.ceil(span_s))))


def queue_intervals(result: Any, t_end: float) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(waiting, running) intervals of the requests: waiting from arrival to admission
    (to ``t_end`` when never admitted; rejected requests never wait), running from admission
    to finish (to ``t_end`` when unfinished)."""
    req = result.requests
    arr = req["arrival_s"].to_numpy(dtype=float)
    qd = req["queue_delay_s"].to_numpy(dtype=float)
    e2e = req["e2e_s"].to_numpy(dtype=float)
    rejected = req["rejected"].to_numpy(dtype=bool) if "rejected" in req else np.zeros(len(req), bool)
    admitted = np.isfinite(qd)
    wait_end = np.where(admitted, arr + np.nan_to_num(qd), t_end)
    keep = ~rejected
    run_start = (arr + qd)[admitted & keep]
    run_end = np.where(np.isfinite(e2e), arr + np.nan_to_num(e2e), t_end)[admitted & keep]
    return (arr[keep], wait_end[keep]), (run_start, run_end)


def timeseries(result: Any) -> Figure:
    ts, req = result.timeseries, result.requests
    has_power = len(result.power) > 0
    fig, axes = new_figure(2, 2, (12.0, 6.6))
    t0, t1 = _span(result)
    edges = time_edges(t0, t1, rate_bins(t1 - t0))
    mid = 0.5 * (edges[:-1] + edges[1:])
    # throughput
    ax = axes[0, 0]
    tok = binned_rate(ts["start_s"], ts["end_s"], ts["tokens"], edges) if len(ts) else np.zeros(len(mid))
    ax.stairs(tok, edges, color="C0", label="tokens processed / s (prompt + output)", gid="rate:tokens")
    ax.set(xlabel="time (s)", ylabel="tokens / s", title="throughput")
    fin = (req["arrival_s"] + req["e2e_s"]).to_numpy(dtype=float)
    fin = fin[np.isfinite(fin)]
    done = np.histogram(fin, bins=edges)[0] / np.diff(edges)
    ax2 = ax.twinx()
    ax2.stairs(done, edges, color="C2", label="requests completed / s", gid="rate:requests")
    ax2.set_ylabel("requests / s")
    _legend(ax, ax2)
    # queue
    ax = axes[0, 1]
    (wa, wb), (ra, rb) = queue_intervals(result, t1)
    t = sample_times(t0, t1)
    ax.plot(t, active_count(wa, wb, t), color="C3", label="waiting (queued)", gid="count:waiting")
    ax.plot(t, active_count(ra, rb, t), color="C0", label="running", gid="count:running")
    ax.set(xlabel="time (s)", ylabel="requests", title="queue length")
    ax.legend(fontsize=7)
    # KV-cache occupancy
    ax = axes[1, 0]
    if len(ts):
        _kv(ax, ts, edges, mid)
    else:
        empty_note(ax, "no iterations")
    ax.set(xlabel="time (s)", ylabel="share of KV blocks", title="KV-cache occupancy")
    ax.set_ylim(bottom=0)
    # power
    ax = axes[1, 1]
    if has_power:
        pw = result.power
        for pool, g in pw.groupby("pool", sort=True):
            x, y = g["start_s"].to_numpy(float), g["power_w"].to_numpy(float)
            if len(g) > TIME_BINS:
                y = binned_mean(x, y, edges)
                x = mid
            ax.plot(x, y / 1e3, label=f"pool {pool}", gid=f"power:{pool}")
        ax.set(xlabel="time (s)", ylabel="kW", title="GPU power per pool")
        ax.legend(fontsize=7)
    else:
        empty_note(ax, "no power figures")
        ax.set(title="GPU power per pool")
    for a in axes.flat:
        a.grid(alpha=0.3)
    fig.suptitle(_title(result), fontsize=9)
    return fig


def _kv(ax: Axes, ts: Any, edges: np.ndarray, mid: np.ndarray) -> None:
    """KV occupancy per replica (binned means, carried over bins without an iteration);
    the mean and max over replicas when there are many."""
    per = {}
    for rep, g in ts.groupby("replica", sort=True):
        m = binned_mean(g["end_s"], g["kv_occupancy"], edges)
        per[rep] = _carry(m)
    if len(per) <= MAX_REPLICA_LINES:
        for rep, m in per.items():
            ax.plot(mid, m, label=f"replica {rep}", linewidth=1, gid=f"kv:{rep}")
    else:
        mat = np.vstack(list(per.values()))
        with np.errstate(all="ignore"):
            ax.plot(mid, np.nanmean(mat, axis=0), label=f"mean of {len(per)} replicas", gid="kv:mean")
            ax.plot(mid, np.nanmax(mat, axis=0), label="max over replicas", gid="kv:max")
    ax.legend(fontsize=7, ncol=2)


def _carry(m: np.ndarray) -> np.ndarray:
    """Each NaN replaced by the last value before it (NaN before the first)."""
    idx = np.where(np.isfinite(m), np.arange(len(m)), -1)
    idx = np.maximum.accumulate(idx)
    out = np.where(idx >= 0, m[np.maximum(idx, 0)], np.nan)
    return np.asarray(out)


def _legend(ax: Axes, ax2: Axes) -> None:
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")


def _title(result: Any) -> str:
    s = result.summary
    return (f"{result.model.name} on {result.cluster.name}: {s['num_requests']:,} requests, "
            f"{s['finished']:,} finished")


def serving_figures(result: Any, slo: Mapping[str, float] | None = None) -> dict[str, Figure]:
    targets = slo_targets(result, slo)
    return {"latency_cdf": latency_cdf(result, targets), "latency_hist": latency_hist(result, targets),
            "timeseries": timeseries(result)}
