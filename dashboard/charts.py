"""Vega-Lite charts of the API's result tables (latency CDFs and histograms with SLO lines,
quantities over time, the Pareto frontier, GPU mix, memory and pipeline timelines).

Each chart is a ``Chart``: the points to draw (a small DataFrame) and a plain Vega-Lite
spec, built once per result and drawn with ``st.vega_lite_chart`` (no Altair object to
build and validate on every rerun; ``tests/test_dashboard_parts.py`` validates the specs
against the Vega-Lite schema). Charts downsample (``MAX_POINTS``) so a 100k-request run
stays readable and fast: a CDF keeps evenly spaced quantiles, a time series the mean of
equal-width time bins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MAX_POINTS = 2000
"""Most points one chart layer sends to the browser."""


@dataclass(frozen=True)
class Chart:
    """Points and a Vega-Lite spec (without its data) for ``st.vega_lite_chart(data, spec)``."""

    data: pd.DataFrame
    spec: dict[str, Any]


def _q(field: str, title: str | None = None, **kw: Any) -> dict[str, Any]:
    return {"field": field, "type": "quantitative", **({"title": title} if title is not None else {}), **kw}


def _n(field: str, title: str | None = None, **kw: Any) -> dict[str, Any]:
    return {"field": field, "type": "nominal", **({"title": title} if title is not None else {}), **kw}


def _tip(field: str, kind: str = "quantitative", title: str | None = None, fmt: str | None = None
         ) -> dict[str, Any]:
    out: dict[str, Any] = {"field": field, "type": kind}
    if title is not None:
        out["title"] = title
    if fmt is not None:
        out["format"] = fmt
    return out


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


def _with_slo(mark: dict[str, Any], slo_s: float | None, scale: float, title: str, height: int) -> dict[str, Any]:
    """``mark`` (a layer spec) with the SLO as a red dashed vertical rule (its own data)."""
    spec: dict[str, Any] = {"title": title, "height": height}
    if not slo_s:
        return spec | mark
    rule = {"data": {"values": [{"v": slo_s * scale, "label": "SLO"}]},
            "mark": {"type": "rule", "color": "red", "strokeDash": [6, 3]},
            "encoding": {"x": _q("v"), "tooltip": [_tip("label", "nominal"), _tip("v")]}}
    return spec | {"layer": [mark, rule]}


def latency_cdf(values_s: np.ndarray, name: str, slo_s: float | None = None) -> Chart:
    """CDF of a latency in milliseconds with the SLO as a red dashed line."""
    d = cdf_points(values_s)
    d["value"] = d["value"] * 1e3
    line = {"mark": {"type": "line", "interpolate": "step-after"},
            "encoding": {"x": _q("value", f"{name} (ms)"),
                         "y": _q("q", "share of requests", scale={"domain": [0, 1]}),
                         "tooltip": [_tip("value", title=f"{name} (ms)", fmt=".4g"), _tip("q", fmt=".3f")]}}
    return Chart(d, _with_slo(line, slo_s, 1e3, f"{name} CDF", 260))


def latency_hist(values_s: np.ndarray, name: str, slo_s: float | None = None, bins: int = 50) -> Chart:
    """Histogram of a latency in milliseconds (binned here: at most ``bins`` bars) with the SLO line."""
    v = np.asarray(values_s, dtype=float)
    v = v[np.isfinite(v)] * 1e3
    if len(v) == 0:
        counts, edges = np.zeros(0), np.zeros(1)
    else:
        counts, edges = np.histogram(v, bins=bins)
    d = pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "requests": counts})
    bars = {"mark": {"type": "bar"},
            "encoding": {"x": _q("lo", f"{name} (ms)"), "x2": {"field": "hi"}, "y": _q("requests", "requests"),
                         "y2": {"datum": 0},  # bars from zero (with x2 alone Vega-Lite draws thin blocks)
                         "tooltip": [_tip("lo", fmt=".4g"), _tip("hi", fmt=".4g"), _tip("requests")]}}
    return Chart(d, _with_slo(bars, slo_s, 1e3, f"{name} histogram", 260))


def over_time(df: pd.DataFrame, x: str, y: str, title: str, y_title: str, color: str | None = None) -> Chart:
    """A quantity over simulated time, binned to ``MAX_POINTS`` per series."""
    if color is not None:
        parts = [bin_mean(g, x, [y], MAX_POINTS // max(1, df[color].nunique())).assign(**{color: str(k)})
                 for k, g in df.groupby(color)]
        d = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({x: [], y: [], color: []})
    else:
        d = bin_mean(df, x, [y])
    enc: dict[str, Any] = {"x": _q(x, "time (s)"), "y": _q(y, y_title),
                           "tooltip": [_tip(x, fmt=".4g"), _tip(y, fmt=".4g")]}
    if color is not None:
        enc["color"] = _n(color)
    return Chart(d, {"title": title, "height": 220, "mark": {"type": "line"}, "encoding": enc})


def pareto(points: pd.DataFrame, x: str, y: str, size: str | None, x_title: str, y_title: str) -> Chart:
    """Cost vs latency (point size: energy per token), frontier points highlighted;
    zoom and pan with the mouse."""
    enc: dict[str, Any] = {"x": _q(x, x_title), "y": _q(y, y_title), "color": _n("on_frontier", "on frontier"),
                           "tooltip": [_tip(c, "quantitative" if pd.api.types.is_numeric_dtype(points[c])
                                            else "nominal") for c in points.columns if c != "on_frontier"]}
    if size is not None and size in points and points[size].notna().any():
        enc["size"] = _q(size, "J/token")
    d = points.assign(on_frontier=points["on_frontier"].astype(str))
    return Chart(d, {"title": "Pareto frontier: cost vs latency vs energy", "height": 320,
                     "mark": {"type": "circle", "opacity": 0.8}, "encoding": enc,
                     "params": [{"name": "zoom", "select": "interval", "bind": "scales"}]})


def gpu_mix(gpus_by_type: dict[str, int]) -> Chart:
    d = pd.DataFrame({"gpu": list(gpus_by_type), "gpus": list(gpus_by_type.values())})
    return Chart(d, {"title": "GPU mix", "height": 40 + 30 * len(d), "mark": {"type": "bar"},
                     "encoding": {"x": _q("gpus", "GPUs"), "y": _n("gpu", None) | {"title": None},
                                  "color": _n("gpu"), "tooltip": [_tip("gpu", "nominal"), _tip("gpus")]}})


def stacked_bars(d: pd.DataFrame, cat: str, part: str, value: str, title: str, value_title: str) -> Chart:
    """Stacked horizontal bars (a memory breakdown per stage, a step-time breakdown)."""
    return Chart(d[[cat, part, value]].reset_index(drop=True), {
        "title": title, "height": 60 + 25 * d[cat].nunique(), "mark": {"type": "bar"},
        "encoding": {"y": _n(cat, cat), "x": _q(value, value_title, stack="zero"), "color": _n(part),
                     "tooltip": [_tip(cat, "nominal"), _tip(part, "nominal"), _tip(value, fmt=".4g")]}})


def timeline(events: pd.DataFrame, max_bars: int = MAX_POINTS) -> Chart:
    """A Gantt chart of (stage, stream, name, start_s, end_s) events, times in ms; the first
    ``max_bars`` events in time when there are more."""
    d = events.sort_values("start_s").head(max_bars)
    out = pd.DataFrame({"lane": ("stage " + d["stage"].astype(str) + " " + d["stream"].astype(str)).to_numpy(),
                        "name": d["name"].astype(str).to_numpy(), "micro_batch": d["micro_batch"].to_numpy(),
                        "start_ms": d["start_s"].to_numpy() * 1e3, "end_ms": d["end_s"].to_numpy() * 1e3})
    out["kind"] = out["name"].str.split(r"[ _]", regex=True).str[0]
    return Chart(out, {
        "title": "pipeline schedule (one step)", "height": 40 + 18 * out["lane"].nunique(), "mark": {"type": "bar"},
        "encoding": {"x": _q("start_ms", "time (ms)"), "x2": {"field": "end_ms"}, "y": _n("lane") | {"title": None},
                     "color": _n("kind"),
                     "tooltip": [_tip("lane", "nominal"), _tip("name", "nominal"), _tip("micro_batch", "nominal"),
                                 _tip("start_ms", fmt=".4g"), _tip("end_ms", fmt=".4g")]},
        "params": [{"name": "zoom", "select": "interval", "bind": "scales"}]})


def draw(container: Any, chart: Chart) -> None:
    """``chart`` in ``container`` (a Streamlit column, tab or ``st``), as wide as it is."""
    container.vega_lite_chart(chart.data, chart.spec, width="stretch")
