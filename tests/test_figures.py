"""Figures outside the dashboard (``fleetsim.figures``): the data each figure draws checked
against the result it draws (empirical CDFs recomputed with numpy, SLO lines, queue counts
by brute force, rates that conserve tokens, pipeline bars equal to the simulated events,
memory and step-time bars that add up to the totals, Pareto points equal to the
non-dominated set found by brute force), valid PNG files, and the CLI's ``--out``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fleetsim.hardware.errors import ConfigError
from fleetsim.planner.serving.records import Slo
from fleetsim.planner.serving.search import ServingPlans
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle, StepPatch

from fleetsim.cli import main
from fleetsim.figures import active_count, binned_rate, cdf_points, plan_figures, save_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GIB = 2.0**30
MODEL, CLUSTER, WL = "llama-3.2-1b", "1xH100", "poisson:rate=40,isl=256,osl=48"
SLO = {"ttft_slo_s": 0.03, "tpot_slo_s": 0.006}


def by_gid(fig: Any, gid: str) -> Any:
    """The one artist of ``fig`` with ``gid``."""
    found = fig.findobj(lambda a: a.get_gid() == gid)
    assert len(found) == 1, (gid, len(found))
    return found[0]


def brute_front(points: np.ndarray) -> np.ndarray:
    """Rows no other row is <= in every column and < in one (all minimized; NaN skipped)."""
    n = len(points)
    out = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            a, b = points[j], points[i]
            ok = np.isfinite(a) & np.isfinite(b)
            if np.all(a[ok] <= b[ok]) and np.any(a[ok] < b[ok]):
                out[i] = False
    return out


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC, path


@pytest.fixture(scope="module")
def served() -> Any:
    from fleetsim.serving import simulate_serving

    return simulate_serving(MODEL, CLUSTER, WL, num_requests=240, slo=SLO, seed=1)


@pytest.fixture(scope="module")
def served_figs(served: Any) -> dict[str, Any]:
    return served.figures()


@pytest.fixture(scope="module")
def trained() -> Any:
    from fleetsim.training import estimate_train_step

    return estimate_train_step("llama-3.1-8b", "8xH100", None, global_batch=16, tp=2, pp=4)


# --- helpers ------------------------------------------------------------------------------


def test_cdf_points_are_the_empirical_cdf_with_ties_and_downsampling() -> None:
    rng = np.random.default_rng(3)
    v = rng.integers(0, 500, 10_000).astype(float)
    v[:7] = np.nan
    x, q = cdf_points(v, max_points=50)
    finite = v[np.isfinite(v)]
    assert len(x) <= 50 and x[0] == finite.min() and x[-1] == finite.max() and q[-1] == 1.0
    assert np.all(np.diff(x) > 0)
    np.testing.assert_array_equal(q, [np.mean(finite <= xi) for xi in x])
    assert cdf_points([np.nan])[0].size == 0


def test_binned_rate_by_hand_and_conserves_amount() -> None:
    # 10 tokens over [0, 2] s, 5 at the instant 1 s, 6 over [2.5, 4] s (half of it past 3 s)
    r = binned_rate([0.0, 1.0, 2.5], [2.0, 1.0, 4.0], [10.0, 5.0, 6.0], np.array([0.0, 1.0, 2.0, 3.0]))
    np.testing.assert_allclose(r, [5.0, 10.0, 2.0])
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 50, 400)
    b = a + rng.exponential(2.0, 400) * (rng.uniform(size=400) > 0.1)
    w = rng.integers(1, 100, 400).astype(float)
    edges = np.linspace(0.0, b.max(), 37)
    assert np.sum(binned_rate(a, b, w, edges) * np.diff(edges)) == pytest.approx(w.sum(), rel=1e-9)


def test_active_count_brute_force() -> None:
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 10, 300)
    b = a + rng.uniform(0, 3, 300)
    t = np.linspace(-1, 14, 101)
    np.testing.assert_array_equal(active_count(a, b, t), [np.sum((a <= ti) & (ti < b)) for ti in t])


# --- serving ------------------------------------------------------------------------------


def test_ttft_cdf_line_is_the_empirical_cdf_of_the_result(served: Any, served_figs: dict[str, Any]) -> None:
    line = by_gid(served_figs["latency_cdf"], "cdf:ttft_s")
    x_ms, q = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    ttft = served.requests["ttft_s"].to_numpy(dtype=float)
    ttft = ttft[np.isfinite(ttft)]
    assert len(x_ms) == min(len(np.unique(ttft)), 2000) and q[-1] == 1.0
    expected = [np.mean(ttft * 1e3 <= x) for x in x_ms]
    np.testing.assert_array_equal(q, expected)
    e2e = by_gid(served_figs["latency_cdf"], "cdf:e2e_s")
    assert np.asarray(e2e.get_xdata())[-1] == pytest.approx(served.requests["e2e_s"].max())


def test_slo_lines_at_the_targets(served: Any, served_figs: dict[str, Any]) -> None:
    for name in ("latency_cdf", "latency_hist"):
        fig = served_figs[name]
        slo_lines = [ln for ax in fig.axes for ln in ax.get_lines() if str(ln.get_label()).startswith("SLO")]
        xs = sorted(float(ln.get_xdata()[0]) for ln in slo_lines)
        assert xs == pytest.approx(sorted([SLO["ttft_slo_s"] * 1e3, SLO["tpot_slo_s"] * 1e3]))
    ttft = served.requests["ttft_s"].dropna().to_numpy()
    label = next(ln.get_label() for ln in served_figs["latency_cdf"].axes[0].get_lines()
                 if str(ln.get_label()).startswith("SLO"))
    assert f"({np.mean(ttft <= SLO['ttft_slo_s']):.1%} of these {len(ttft):,} within)" in label
    custom = served.figures(slo={"e2e_slo_s": 2.5})["latency_cdf"]
    lines = [ln for ax in custom.axes for ln in ax.get_lines() if str(ln.get_label()).startswith("SLO")]
    assert len(lines) == 1 and float(lines[0].get_xdata()[0]) == 2.5


@pytest.mark.parametrize("slo,needle", [({"ttft": 1.0}, "ttft"), ({"ttft_slo_s": -1.0}, "ttft_slo_s"),
                                        ({"tpot_slo_s": "x"}, "tpot_slo_s")])
def test_bad_slo_is_one_line(served: Any, slo: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        served.figures(slo=slo)


def test_queue_and_throughput_series(served: Any, served_figs: dict[str, Any]) -> None:
    fig = served_figs["timeseries"]
    req = served.requests
    arr = req["arrival_s"].to_numpy(float)
    admit = arr + req["queue_delay_s"].fillna(np.inf).to_numpy(float)
    keep = ~req["rejected"].to_numpy(bool)
    line: Line2D = by_gid(fig, "count:waiting")
    t = np.asarray(line.get_xdata())
    np.testing.assert_array_equal(line.get_ydata(), [np.sum(keep & (arr <= ti) & (ti < admit)) for ti in t])
    fin = arr + req["e2e_s"].fillna(np.inf).to_numpy(float)
    running: Line2D = by_gid(fig, "count:running")
    np.testing.assert_array_equal(running.get_ydata(), [np.sum(keep & (admit <= ti) & (ti < fin)) for ti in t])
    # tokens: every iteration run's tokens, spread over its span, are in the bars once
    tok: StepPatch = by_gid(fig, "rate:tokens")
    values, edges = tok.get_data()[:2]
    assert np.sum(values * np.diff(edges)) == pytest.approx(served.timeseries["tokens"].sum(), rel=1e-9)
    done: StepPatch = by_gid(fig, "rate:requests")
    values, edges = done.get_data()[:2]
    assert np.sum(values * np.diff(edges)) == pytest.approx(int(req["finished"].sum()))
    power = by_gid(fig, "power:0")
    np.testing.assert_allclose(power.get_ydata(), served.power["power_w"] / 1e3)


def test_pngs_are_written_valid_and_deterministic(served_figs: dict[str, Any], tmp_path: Path) -> None:
    paths = save_figures(served_figs, tmp_path / "a", dpi=40)
    assert [p.name for p in paths] == ["latency_cdf.png", "latency_hist.png", "timeseries.png"]
    for p in paths:
        assert_png(p)
    again = save_figures({"latency_hist": served_figs["latency_hist"]}, tmp_path / "b", dpi=40)
    assert paths[1].read_bytes() == again[0].read_bytes()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="file"):
        save_figures(served_figs, blocker)


def test_simulate_cli_out_writes_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    rc = main(["simulate", "--model", MODEL, "--cluster", CLUSTER, "--workload", WL, "--num-requests", "60",
               "--ttft-slo-s", "0.05", "--out", str(out)])
    assert rc == 0
    for name in ("latency_cdf", "latency_hist", "timeseries"):
        assert_png(out / f"{name}.png")
    assert (out / "summary.json").exists() and "timeseries.png" in capsys.readouterr().out


# --- training -----------------------------------------------------------------------------


def test_pipeline_bars_are_the_simulated_events(trained: Any) -> None:
    fig = trained.figures()["pipeline_timeline"]
    tl = trained.timeline
    bars = fig.findobj(lambda a: isinstance(a, PolyCollection) and str(a.get_gid()).startswith("bars:"))
    drawn = 0
    for coll in bars:
        _, stage, stream, name = str(coll.get_gid()).split(":")
        got = sorted((float(p.vertices[:, 0].min()), float(p.vertices[:, 0].max())) for p in coll.get_paths())
        ev = tl[(tl["stage"] == int(stage)) & (tl["stream"] == stream) & (tl["name"] == name)]
        want = sorted(zip(ev["start_s"] * 1e3, ev["end_s"] * 1e3, strict=True))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
        drawn += len(got)
    assert drawn == len(tl) > 0


def test_memory_bars_add_up_to_each_stage_total(trained: Any) -> None:
    fig = trained.figures()["memory"]
    rects = [r for r in fig.findobj(Rectangle) if str(r.get_gid()).startswith("memory:")]
    mem = trained.memory.set_index("stage")
    totals: dict[float, float] = {}
    for r in rects:
        totals[round(r.get_y(), 6)] = totals.get(round(r.get_y(), 6), 0.0) + r.get_width()
    got = [totals[k] for k in sorted(totals)]
    np.testing.assert_allclose(got, mem["total_bytes"].to_numpy() / GIB, rtol=1e-12)
    assert max(got) == pytest.approx(trained.peak_memory_bytes / GIB)


def _stacked(fig: Any, prefix: str) -> dict[str, list[float]]:
    """Widths of the stacked bars per part, top row first."""
    out: dict[str, list[float]] = {}
    for r in fig.findobj(Rectangle):
        gid = str(r.get_gid())
        if gid.startswith(prefix):
            out.setdefault(gid.removeprefix(prefix), []).append((r.get_y(), r.get_width()))  # type: ignore[arg-type]
    return {k: [w for _, w in sorted(v)] for k, v in out.items()}


def test_step_breakdown_adds_up_to_the_step_and_matches_events(trained: Any) -> None:
    parts = _stacked(trained.figures()["step_breakdown"], "step:")
    total = np.sum([v for v in parts.values()], axis=0)
    np.testing.assert_allclose(total, trained.time_s * 1e3, rtol=1e-9)
    tl = trained.timeline
    fwd = tl[tl["name"] == "forward"].assign(d=lambda d: d["end_s"] - d["start_s"]).groupby("stage")["d"].sum()
    np.testing.assert_allclose(parts["forward"], fwd.to_numpy() * 1e3, rtol=1e-9)
    opt = tl[tl["name"] == "optimizer"].assign(d=lambda d: d["end_s"] - d["start_s"]).groupby("stage")["d"].sum()
    np.testing.assert_allclose(parts["optimizer"], opt.to_numpy() * 1e3, rtol=1e-9)


def test_training_figures_without_a_timeline() -> None:
    from fleetsim.training import estimate_train_step

    est = estimate_train_step("gpt2-medium", "4xH100", None, global_batch=8, pp=2, record_timeline=False)
    figs = est.figures()
    assert sorted(figs) == ["memory", "step_breakdown"]
    parts = _stacked(figs["step_breakdown"], "step:")
    np.testing.assert_allclose(np.sum(list(parts.values()), axis=0), est.time_s * 1e3, rtol=1e-9)


def test_train_cli_out_writes_figures(tmp_path: Path) -> None:
    out = tmp_path / "train"
    assert main(["train", "--model", "gpt2-medium", "--cluster", "4xH100", "--pp", "2", "--global-batch", "8",
                 "--out", str(out)]) == 0
    for name in ("pipeline_timeline", "memory", "step_breakdown"):
        assert_png(out / f"{name}.png")


# --- plans --------------------------------------------------------------------------------


def _synthetic_plans(seed: int) -> ServingPlans:
    """A planner answer whose frontier rows are flagged by the planner's own ``pareto``."""
    from fleetsim.planner.serving.select import pareto

    rng = np.random.default_rng(seed)
    plans = [{"kind": "plan", "name": f"p{i}", "cost_per_hour": float(rng.integers(1, 12)),
              "ttft_p90_s": float(rng.uniform(0.05, 0.5)), "tpot_p90_s": float(rng.uniform(0.01, 0.05)),
              "j_per_output_token": float(rng.uniform(0.2, 1.0))} for i in range(25)]
    keys = ("cost_per_hour", "ttft_p90_s", "tpot_p90_s", "j_per_output_token")
    cands = [{"kind": "candidate", "name": f"c{i}", "bucket": "all", "usd_per_hour_per_rps": float(rng.uniform(0.1, 2)),
              "ttft_s": float(rng.uniform(0.05, 0.4)), "tpot_s": float(rng.uniform(0.01, 0.04)),
              "j_per_output_token": float(rng.uniform(0.2, 1.0))} for i in range(30)]
    ckeys = ("usd_per_hour_per_rps", "ttft_s", "tpot_s", "j_per_output_token")
    rows = [r | {"on_frontier": f} for r, f in zip(plans, pareto(plans, keys), strict=True)]  # type: ignore[arg-type]
    rows += [r | {"on_frontier": f} for r, f in zip(cands, pareto(cands, ckeys), strict=True)]  # type: ignore[arg-type]
    return ServingPlans(status="optimal", objective="min_cost", demand_rps=10.0, slo=Slo(ttft_s=0.3, tpot_s=0.04),
                        isl=256, osl=64, buckets=(("all", 1.0),), pareto=tuple(rows))


@pytest.mark.parametrize("seed", [0, 1])
def test_pareto_marks_exactly_the_non_dominated_points(seed: int) -> None:
    res = _synthetic_plans(seed)
    fig = plan_figures(res)["pareto"]
    rows = pd.DataFrame(list(res.pareto))
    for kind, x, ys, keys in (("plan", "cost_per_hour", ("ttft_p90_ms", "tpot_p90_ms"),
                               ["cost_per_hour", "ttft_p90_s", "tpot_p90_s", "j_per_output_token"]),
                              ("candidate", "usd_per_hour_per_rps", ("ttft_ms", "tpot_ms"),
                               ["usd_per_hour_per_rps", "ttft_s", "tpot_s", "j_per_output_token"])):
        d = rows[rows["kind"] == kind]
        front = brute_front(d[keys].to_numpy(float))
        assert 0 < front.sum() < len(d)
        for y, ycol in zip(ys, keys[1:3], strict=True):
            allp: PathCollection = by_gid(fig, f"pareto:{kind}:{y}:all")
            ring: PathCollection = by_gid(fig, f"pareto:{kind}:{y}:frontier")
            want = np.column_stack([d[x].to_numpy(float), d[ycol].to_numpy(float) * 1e3])
            np.testing.assert_allclose(allp.get_offsets(), want)
            np.testing.assert_allclose(ring.get_offsets(), want[front])
            np.testing.assert_allclose(allp.get_array(), d["j_per_output_token"].to_numpy(float))
    slo = [ln for ax in fig.axes for ln in ax.get_lines() if str(ln.get_label()).startswith("SLO")]
    assert sorted(float(ln.get_ydata()[0]) for ln in slo) == pytest.approx([40.0, 40.0, 300.0, 300.0])
    assert "gpu_mix" not in plan_figures(res)


@pytest.fixture(scope="module")
def serving_plan() -> Any:
    from fleetsim.planning import plan_serving

    return plan_serving(MODEL, None, market="H100:3.0:4,A100-80GB:1.8:4", rate_rps=30, ttft_s=0.5, tpot_s=0.05,
                        isl=256, osl=64, simulate=False)


def test_plan_cli_out_writes_plans_and_figures(serving_plan: Any, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import fleetsim.planning

    monkeypatch.setattr(fleetsim.planning, "plan_serving", lambda *a, **k: serving_plan)
    out = tmp_path / "plan"
    assert main(["plan", "--model", MODEL, "--cluster", "1xH100", "--rate", "30", "--out", str(out)]) == 0
    for name in ("pareto", "gpu_mix"):
        assert_png(out / f"{name}.png")
    res = serving_plan.search
    got = json.loads((out / "plans.json").read_text())
    assert [p["name"] for p in got["plans"]] == [p.name for p in res.plans]
    table = pd.read_csv(out / "plans.csv")
    assert table["plan"].tolist() == [p.name for p in res.plans]
    front = pd.read_csv(out / "pareto.csv")
    plans = front[front["kind"] == "plan"]
    keys = ["cost_per_hour", "ttft_p90_s", "tpot_p90_s", "j_per_output_token"]
    assert plans["on_frontier"].astype(bool).tolist() == brute_front(plans[keys].to_numpy(float)).tolist()


def test_gpu_mix_bars_are_each_plans_gpus(serving_plan: Any) -> None:
    res = serving_plan.search
    fig = serving_plan.figures()["gpu_mix"]
    drawn: dict[int, dict[str, float]] = {}
    for r in fig.findobj(lambda a: str(a.get_gid()).startswith("mix:")):
        _, i, gpu, _ = str(r.get_gid()).split(":")
        drawn.setdefault(int(i), {})
        drawn[int(i)][gpu] = drawn[int(i)].get(gpu, 0.0) + r.get_width()
    assert drawn == {i: {g: float(n) for g, n in p.gpus_by_type.items()} for i, p in enumerate(res.plans)}


def test_training_plan_frontier_and_memory(tmp_path: Path) -> None:
    from fleetsim.training_plans import plan_training

    plan = plan_training("gpt2-medium", "8xH100-SXM", global_batch=16, seq_len=1024, top=6, tokens=1e9)
    figs = plan.figures()
    evs = [e.evaluation for e in plan.plans]
    time_s = np.array([e.time_s for e in evs])
    usd = np.array([e.gpus * e.price_per_gpu_hour * (e.time_s / 3600.0) / (16 * 1024) * 1e6 for e in evs])
    mfu = np.array([e.mfu for e in evs])
    for y, pts in (("usd_per_mtok", np.column_stack([time_s, usd])), ("mfu", np.column_stack([time_s, -mfu]))):
        allp = by_gid(figs["train_frontier"], f"train:{y}:all")
        ring = by_gid(figs["train_frontier"], f"train:{y}:frontier")
        want = np.column_stack([time_s, usd if y == "usd_per_mtok" else mfu])
        np.testing.assert_allclose(allp.get_offsets(), want, rtol=1e-9)
        np.testing.assert_allclose(ring.get_offsets(), want[brute_front(pts)], rtol=1e-9)
    parts = _stacked(figs["train_memory"], "train_memory:")
    np.testing.assert_allclose(np.sum(list(parts.values()), axis=0),
                               [e.peak_memory_bytes / GIB for e in evs], rtol=1e-12)
    out = tmp_path / "tplan"
    assert main(["plan", "--training", "--model", "gpt2-medium", "--cluster", "8xH100-SXM", "--global-batch", "16",
                 "--seq-len", "1024", "--top", "3", "--out", str(out)]) == 0
    for name in ("train_frontier", "train_memory"):
        assert_png(out / f"{name}.png")
    assert len(json.loads((out / "plans.json").read_text())["plans"]) == 3


def test_plan_figures_rejects_other_objects() -> None:
    with pytest.raises(ConfigError, match="ServingPlan"):
        plan_figures("not a plan")
