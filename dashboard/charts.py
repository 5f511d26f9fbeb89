"""Altair charts of the API's result tables (latency CDFs and histograms with SLO lines,
quantities over time, the Pareto frontier, GPU mix, memory and pipeline timelines).

Charts downsample (``MAX_POINTS``) so a 100k-request run stays readable and fast: a CDF
keeps evenly spaced quantiles, a time series the mean of equal-width time bins."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

MAX_POINTS = 2000
"""Most points one chart layer sends to the browser."""


def cdf_points(values: np.ndarray, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """The empirical CDF of ``values`` (NaNs dropped) at most ``max_points`` points:
    ``value`` is the ``q``-quantile of the sorted sample (step points ``i / n``)."""
    v = np.sort(np.asarray(values, dtype=float)[np.isfinite(values)])
    n = len(v)
    if n == 0:
        return pd.DataFrame({"value": [], "q": []})
    idx = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int))
    return pd.DataFrame({"value": v[idx], "q": (idx + 1) / n})


def bin_mean(df: pd.DataFrame, x: str, ys: Sequence[str], max_points: int = MAX_POINTS) -> pd.DataFrame:
    """``df`` reduced to at most ``max_points`` rows: the mean of each ``ys`` column in
    equal-width bins of ``x`` (the bin's mean ``x``); unchanged when already short."""
    if len(df) <= max_points:
        return df[[x, *ys]].reset_index(drop=True)
    xs = df[x].to_numpy(dtype=float)
    edges = np.linspace(xs.min(), xs.max(), max_points + 1)
    b = np.clip(np.searchsorted(edges, xs, side="right") - 1, 0, max_points - 1)
    return df[[x, *ys]].groupby(b).mean().reset_index(drop=True)


def _slo_rule(slo_s: float | None, scale: float, axis: str) -> alt.Chart | None:
    if not slo_s:
        return None
    return alt.Chart(pd.DataFrame({"v": [slo_s * scale], "label": ["SLO"]})).mark_rule(
        color="red", strokeDash=[6, 3]).encode(**{axis: "v:Q"}, tooltip=["label:N", "v:Q"])


def latency_cdf(values_s: np.ndarray, name: str, slo_s: float | None = None) -> alt.TopLevelMixin:
    """CDF of a latency in milliseconds with the SLO as a red dashed line."""
    d = cdf_points(values_s)
    d["value"] = d["value"] * 1e3
    line = alt.Chart(d).mark_line(interpolate="step-after").encode(
        x=alt.X("value:Q", title=f"{name} (ms)"), y=alt.Y("q:Q", title="share of requests", scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("value:Q", title=f"{name} (ms)", format=".4g"), alt.Tooltip("q:Q", format=".3f")])
    rule = _slo_rule(slo_s, 1e3, "x")
    chart = line if rule is None else alt.layer(line, rule)
    return chart.properties(title=f"{name} CDF", height=260)


def latency_hist(values_s: np.ndarray, name: str, slo_s: float | None = None, bins: int = 50
                 ) -> alt.TopLevelMixin:
    """Histogram of a latency in milliseconds (binned here: at most ``bins`` bars) with the SLO line."""
    v = np.asarray(values_s, dtype=float)
    v = v[np.isfinite(v)] * 1e3
    if len(v) == 0:
        counts, edges = np.zeros(0), np.zeros(1)
    else:
        counts, edges = np.histogram(v, bins=bins)
    d = pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "requests": counts})
    bars = alt.Chart(d).mark_bar().encode(
        x=alt.X("lo:Q", title=f"{name} (ms)"), x2="hi:Q", y=alt.Y("requests:Q", title="requests"),
        tooltip=[alt.Tooltip("lo:Q", format=".4g"), alt.Tooltip("hi:Q", format=".4g"), "requests:Q"])
    rule = _slo_rule(slo_s, 1e3, "x")
    chart = bars if rule is None else alt.layer(bars, rule)
    return chart.properties(title=f"{name} histogram", height=260)


def over_time(df: pd.DataFrame, x: str, y: str, title: str, y_title: str, color: str | None = None
              ) -> alt.Chart:
    """A quantity over simulated time, binned to ``MAX_POINTS`` per series."""
    if color is not None:
        parts = [bin_mean(g, x, [y], MAX_POINTS // max(1, df[color].nunique())).assign(**{color: str(k)})
                 for k, g in df.groupby(color)]
        d = pd.concat(parts) if parts else pd.DataFrame({x: [], y: [], color: []})
    else:
        d = bin_mean(df, x, [y])
    enc = {"x": alt.X(f"{x}:Q", title="time (s)"), "y": alt.Y(f"{y}:Q", title=y_title),
           "tooltip": [alt.Tooltip(f"{x}:Q", format=".4g"), alt.Tooltip(f"{y}:Q", format=".4g")]}
    if color is not None:
        enc["color"] = alt.Color(f"{color}:N")
    return alt.Chart(d).mark_line().encode(**enc).properties(title=title, height=220)


def pareto(points: pd.DataFrame, x: str, y: str, size: str | None, x_title: str, y_title: str) -> alt.Chart:
    """Cost vs latency (point size: energy per token), frontier points highlighted;
    zoom and pan with the mouse."""
    enc = {"x": alt.X(f"{x}:Q", title=x_title), "y": alt.Y(f"{y}:Q", title=y_title),
           "color": alt.Color("on_frontier:N", title="on frontier"),
           "tooltip": [c for c in points.columns if c != "on_frontier"]}
    if size is not None and size in points and points[size].notna().any():
        enc["size"] = alt.Size(f"{size}:Q", title="J/token")
    return alt.Chart(points).mark_circle(opacity=0.8).encode(**enc).properties(
        title="Pareto frontier: cost vs latency vs energy", height=320).interactive()


def gpu_mix(gpus_by_type: dict[str, int]) -> alt.Chart:
    d = pd.DataFrame({"gpu": list(gpus_by_type), "gpus": list(gpus_by_type.values())})
    return alt.Chart(d).mark_bar().encode(x=alt.X("gpus:Q", title="GPUs"), y=alt.Y("gpu:N", title=None),
                                          color="gpu:N", tooltip=["gpu", "gpus"]).properties(
        title="GPU mix", height=40 + 30 * len(d))


def stacked_bars(d: pd.DataFrame, cat: str, part: str, value: str, title: str, value_title: str) -> alt.Chart:
    """Stacked horizontal bars (a memory breakdown per stage, a step-time breakdown)."""
    return alt.Chart(d).mark_bar().encode(
        y=alt.Y(f"{cat}:N", title=cat), x=alt.X(f"{value}:Q", title=value_title, stack="zero"),
        color=alt.Color(f"{part}:N"), tooltip=[cat, part, alt.Tooltip(f"{value}:Q", format=".4g")],
    ).properties(title=title, height=60 + 25 * d[cat].nunique())


def timeline(events: pd.DataFrame, max_bars: int = MAX_POINTS) -> alt.Chart:
    """A Gantt chart of (stage, stream, name, start_s, end_s) events, times in ms; the first
    ``max_bars`` events in time when there are more."""
    d = events.sort_values("start_s").head(max_bars).copy()
    d["lane"] = "stage " + d["stage"].astype(str) + " " + d["stream"].astype(str)
    d["start_ms"] = d["start_s"] * 1e3
    d["end_ms"] = d["end_s"] * 1e3
    kind = d["name"].astype(str).str.split(r"[ _]", regex=True).str[0]
    d["kind"] = kind
    return alt.Chart(d).mark_bar().encode(
        x=alt.X("start_ms:Q", title="time (ms)"), x2="end_ms:Q", y=alt.Y("lane:N", title=None),
        color=alt.Color("kind:N"), tooltip=["lane", "name", "micro_batch", alt.Tooltip("start_ms:Q", format=".4g"),
                                             alt.Tooltip("end_ms:Q", format=".4g")],
    ).properties(title="pipeline schedule (one step)", height=40 + 18 * d["lane"].nunique()).interactive()
