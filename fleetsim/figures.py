"""Figures of the API's results as matplotlib ``Figure`` objects, and PNG files of them.

The presentation layer of a report that needs no dashboard: ``serving_figures`` (latency
CDFs and histograms with SLO lines, throughput, queue, KV-cache occupancy and power over
time), ``training_figures`` (pipeline schedule, memory per stage, step-time breakdown per
stage), ``plan_figures`` (the cost/latency/energy Pareto frontier and the chosen plan's GPU
mix; for training plans step time against cost and MFU) and ``save_figures``.

Figures are drawn on matplotlib's Agg canvas (``FigureCanvasAgg``) without pyplot, so no
display is needed and a caller's pyplot backend is left alone; matplotlib is imported only
when a figure is made. Large runs are downsampled (``MAX_POINTS``): a CDF is drawn through
evenly spaced order statistics, counts over time at evenly spaced instants, rates and
means over time in equal-width bins; each keeps its exact value at the points drawn.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetsim.hardware.checks import make_out_dir
from fleetsim.hardware.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_POINTS = 2000
"""Most points one line of a figure draws (CDFs, counts over time)."""
TIME_BINS = 200
"""Most bins of a rate or mean over time."""
DPI = 110


def new_figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (7.0, 4.0)
               ) -> tuple[Figure, np.ndarray]:
    """A figure on an Agg canvas with an ``nrows x ncols`` array of axes (constrained layout)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def cdf_points(values: Any, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The empirical CDF of the finite ``values`` at no more than ``max_points`` points:
    ``x`` are evenly spaced order statistics (the smallest and largest always among them)
    and ``q[i]`` the share of values ``<= x[i]`` (exact at each ``x``, ties included)."""
    v = np.asarray(values, dtype=float)
    v = np.sort(v[np.isfinite(v)])
    n = len(v)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    idx = np.unique(np.linspace(0, n - 1, min(n, max(2, max_points))).round().astype(np.int64))
    x = np.unique(v[idx])
    q = np.searchsorted(v, x, side="right") / n
    return x, q


def time_edges(t0: float, t1: float, bins: int = TIME_BINS) -> np.ndarray:
    """``bins + 1`` equal-width bin edges over ``[t0, t1]`` (a 1 s span when ``t1 <= t0``)."""
    if not t1 > t0:
        t1 = t0 + 1.0
    return np.linspace(t0, t1, bins + 1)


def binned_rate(start_s: Any, end_s: Any, amount: Any, edges: np.ndarray) -> np.ndarray:
    """Rate (amount per second) in each bin of ``edges`` of quantities each spread evenly
    over its ``[start_s, end_s]`` (tokens of an iteration run over its duration); a zero-length
    interval puts its amount in the bin holding its start. The amount inside ``edges`` is
    conserved: ``sum(rate * widths)`` equals the amount of the intervals inside."""
    a = np.asarray(start_s, dtype=float)
    b = np.asarray(end_s, dtype=float)
    w = np.asarray(amount, dtype=float)
    dur = b - a
    spread = dur > 0
    # cumulative amount C(t) = sum_i w_i clip((t - a_i) / dur_i, 0, 1): a piecewise-linear
    # function whose slope changes by +w/dur at a_i and by -w/dur at b_i
    slope = w[spread] / dur[spread]
    knots = np.concatenate([a[spread], b[spread]])
    dslope = np.concatenate([slope, -slope])
    order = np.argsort(knots, kind="stable")
    knots, dslope = knots[order], dslope[order]
    s = np.cumsum(dslope)
    cum = np.concatenate([[0.0], np.cumsum(s[:-1] * np.diff(knots))]) if len(knots) else np.zeros(0)
    if len(knots):
        i = np.searchsorted(knots, edges, side="right") - 1
        inside = i >= 0
        c_edges = np.zeros(len(edges))
        j = i[inside]
        c_edges[inside] = cum[j] + s[j] * (edges[inside] - knots[j])
    else:
        c_edges = np.zeros(len(edges))
    per_bin = np.diff(c_edges)
    if (~spread).any():
        per_bin = per_bin + np.histogram(a[~spread], bins=edges, weights=w[~spread])[0]
    return np.asarray(per_bin / np.diff(edges))


def binned_mean(x: Any, y: Any, edges: np.ndarray) -> np.ndarray:
    """Mean of ``y`` over the points whose ``x`` falls in each bin (NaN for an empty bin)."""
    xv = np.asarray(x, dtype=float)
    yv = np.asarray(y, dtype=float)
    total = np.histogram(xv, bins=edges, weights=yv)[0]
    count = np.histogram(xv, bins=edges)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def active_count(start_s: Any, end_s: Any, t: Any) -> np.ndarray:
    """How many intervals ``[start_s, end_s)`` contain each instant of ``t``."""
    a = np.sort(np.asarray(start_s, dtype=float))
    b = np.sort(np.asarray(end_s, dtype=float))
    tv = np.asarray(t, dtype=float)
    return np.asarray(np.searchsorted(a, tv, side="right") - np.searchsorted(b, tv, side="right"))


def sample_times(t0: float, t1: float, max_points: int = MAX_POINTS) -> np.ndarray:
    """Evenly spaced instants over ``[t0, t1]`` (at most ``max_points``)."""
    if not t1 > t0:
        return np.array([t0])
    return np.linspace(t0, t1, max_points)


def empty_note(ax: Axes, text: str) -> None:
    """Mark an axes that has nothing to draw."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def save_figures(figs: Mapping[str, Figure], out_dir: str | Path, dpi: int = DPI) -> list[Path]:
    """Write each figure as ``<name>.png`` in ``out_dir`` (created if missing); returns the
    paths in the order given. The PNGs carry no software-version stamp, so the same figure
    gives the same bytes."""
    out = make_out_dir(out_dir)
    paths = []
    for name, fig in figs.items():
        path = out / f"{name}.png"
        try:
            fig.savefig(path, dpi=dpi, format="png", metadata={"Software": None})
        except OSError as exc:
            raise ConfigError(f"{path}: cannot write the figure ({exc.strerror or type(exc).__name__})") from None
        paths.append(path)
    return paths


def serving_figures(result: Any, slo: Mapping[str, float] | None = None) -> dict[str, Figure]:
    """Figures of a ``ServingResult``: ``latency_cdf``, ``latency_hist``, ``timeseries``.
    ``slo``: ``ttft_slo_s`` / ``tpot_slo_s`` / ``e2e_slo_s`` lines (default: the result's own targets)."""
    from fleetsim.figures_serving import serving_figures as make

    return make(result, slo)


def training_figures(estimate: Any) -> dict[str, Figure]:
    """Figures of a ``TrainEstimate``: ``pipeline_timeline`` (when its timeline was
    recorded), ``memory`` and ``step_breakdown``."""
    from fleetsim.figures_training import training_figures as make

    return make(estimate)


def plan_figures(plan: Any) -> dict[str, Figure]:
    """Figures of a plan: for serving (a ``ServingPlan`` or its ``.search``) ``pareto`` and
    ``gpu_mix``; for training (a ``TrainPlan``) ``train_frontier`` and ``train_memory``."""
    from fleetsim.figures_plans import plan_figures as make

    return make(plan)


__all__ = ["MAX_POINTS", "active_count", "binned_mean", "binned_rate", "cdf_points", "plan_figures",
           "save_figures", "serving_figures", "training_figures"]
