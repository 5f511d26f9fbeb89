"""The fitted hf-transformers / torch-compile values re-derived from the H200 data equal the
catalog YAML, each names its fit and test rows, and the split keeps the held-out models out."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fleetsim.calibration.engines import Fitted, fitted_values, get_engine

from fleetsim.engine_fit import (
    DATA_DIR,
    FIT_DATE,
    KV_EXPAND_FIT_DATE,
    fitted_profiles,
    ground_truth,
)
from fleetsim.validate_engines import h200_rows, summary

pytestmark = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"engine ground truth absent at {DATA_DIR}")


@pytest.fixture(scope="module")
def refit():
    return fitted_profiles()


@pytest.mark.parametrize("name", ["hf-transformers", "torch-compile"])
def test_every_fitted_value_rederives_from_the_data(refit, name):
    shipped = dict(fitted_values(get_engine(name)))
    again = dict(fitted_values(refit[name]))
    fits = {k: v for k, v in shipped.items() if v.source.startswith("fit:")}
    assert set(fits) >= {"launch.host_dispatch_s"}
    for key, f in fits.items():
        assert math.isclose(again[key].value, f.value, rel_tol=1e-6), (name, key, again[key].value, f.value)
        want = KV_EXPAND_FIT_DATE if key == "kernels.kv_expand_bytes_per_sm_cycle" else FIT_DATE
        assert f.date == want and f.fit_rows and f.test_rows
    assert {k for k, v in again.items() if v.source.startswith("fit:")} == set(fits)


def test_hf_fits_the_mechanisms_on_llama_only(refit):
    k, launch = refit["hf-transformers"].kernels, refit["hf-transformers"].launch
    assert isinstance(launch.host_dispatch_s, Fitted)
    # ~14.7 us per kernel from the (1, 128) prefill: 20.3 ms wall over 1376 kernels
    assert 10e-6 < launch.host_dispatch_s.value < 20e-6
    # the profiled copy moves 2.69 GB in 2.34 ms on the H200 (1.15 TB/s): 4.39 B per SM per cycle
    # over 132 SMs at 1.98 GHz
    rate = k.kv_expand_bytes_per_sm_cycle
    assert rate is not None and 4.2 < rate.value < 4.6
    assert "H200-SXM" in (rate.fit_rows or "") and "H100-SXM" not in (rate.fit_rows or "")
    assert "H100-SXM" in (rate.test_rows or "")
    for f in (launch.host_dispatch_s, rate, k.extra_kernels_prefill, k.extra_kernels_decode):
        assert f is not None and "llama" in (f.fit_rows or "") and "qwen" not in (f.fit_rows or "")
    gt = ground_truth()
    hf = gt[gt["engine"] == "hf-transformers"]
    assert set(hf.loc[hf["split"] == "fit", "model"]) == {"llama-3.1-8b"}
    assert set(hf.loc[hf["split"] == "test", "model"]) == {"qwen2.5-7b", "mixtral-8x7b"}
    comp = gt[gt["engine"] == "torch-compile"]
    assert (comp["split"] == "fit").sum() == 2 and (comp["split"] == "test").sum() == 2


def test_held_out_graph_decode_and_compiled_prefill_meet_the_target():
    s = summary(h200_rows()).set_index(["engine", "group", "split"])
    assert s.loc[("hf-transformers", "decode, CUDA graph", "test"), "mape"] <= 0.10
    assert s.loc[("torch-compile", "prefill, compiled", "test"), "mape"] <= 0.10
    # the fit moved the fitted rows from 23-50 % MAPE to under 10 %
    for group in ("prefill, all logits", "prefill, last logits", "decode, eager", "decode, CUDA graph"):
        assert s.loc[("hf-transformers", group, "fit"), "mape"] < 0.10


def test_cli_validate_engine_reports_fitted_and_held_out_apart(capsys):
    from fleetsim.cli import main

    assert main(["validate", "--engine", "torch-compile"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.lstrip().startswith("torch-compile")]
    assert [ln.split()[3] for ln in lines] == ["fit", "test"]
    assert "all targets met" in out


def test_cli_validate_engine_unknown_name_is_one_line(capsys):
    from fleetsim.cli import main

    assert main(["validate", "--engine", "hf-transfomers"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--engine" in err[0] and "hf-transformers" in err[0]
    assert main(["validate", "--published-serving"]) == 2
    assert "--engine" in capsys.readouterr().err


# Published-serving profiles: grid-fitted mechanism values, re-derived from the cached grid.

def _grid():
    import pandas as pd

    from fleetsim.engine_fit import serving_grid_path

    return pd.read_csv(serving_grid_path())


@pytest.mark.parametrize("name", ["vllm", "sglang", "trtllm"])
def test_serving_values_rederive_from_the_cached_grid(name):
    from fleetsim.engine_fit import (
        PUBLISHED_REL,
        SERVING_GRID,
        SERVING_PROFILES,
        choose_serving,
        fit_serving,
        serving_fit_rows,
    )

    grid = _grid()
    rows = serving_fit_rows(name)
    fit_lines = set(rows.loc[rows["split"] == "fit", "line"].astype(int))
    # the grid holds every fit row at every point, and no held-out row
    part = grid[grid["engine"] == name]
    n_points = math.prod(len(v) for v in SERVING_GRID[name].values())
    assert set(part["line"].astype(int)) == fit_lines and len(part) == n_points * len(fit_lines)
    best = choose_serving(name, grid)
    shipped = dict(fitted_values(get_engine(SERVING_PROFILES[name])))
    again = dict(fitted_values(fit_serving(name, grid)))
    for key, v in best.items():
        dotted = next((k for k in again if k.endswith(key)), None)
        if v == 0.0 and key == "oneshot_max_bytes":
            assert get_engine(SERVING_PROFILES[name]).collectives.tp_allreduce == "nccl"
            continue
        assert dotted is not None and dotted in shipped, (name, key)
        f = shipped[dotted]
        assert math.isclose(f.value, v, rel_tol=1e-9), (name, key, f.value, v)
        assert f.source.startswith("fit:") and f.date == FIT_DATE
        assert f.fit_rows == again[dotted].fit_rows and PUBLISHED_REL in (f.fit_rows or "")
        test_lines = {int(x) for x in (f.test_rows or "").rsplit(" ", 1)[-1].split(",")}
        assert test_lines.isdisjoint(fit_lines)


@pytest.mark.parametrize(("name", "point_index"), [("vllm", 0), ("vllm", -1), ("sglang", 1)])
def test_cached_grid_matches_a_fresh_simulation(name, point_index):
    from fleetsim.engine_fit import (
        SERVING_GRID,
        SERVING_PROFILES,
        _grid_points,
        serving_fit_rows,
        serving_trial,
    )
    from fleetsim.validate_engines import simulate_published

    grid = _grid()
    point = _grid_points(name)[point_index]
    rows = serving_fit_rows(name).query("split == 'fit'").set_index("line")
    # the cheapest fit row of this engine (an online row when there is one)
    line = int(rows["num_prompts"].idxmin())
    sel = grid[(grid["engine"] == name) & (grid["line"] == line)]
    for key in SERVING_GRID[name]:
        sel = sel[np.isclose(sel[key], point[key])]
    assert len(sel) == 1
    fresh = simulate_published(rows.loc[line], serving_trial(get_engine(SERVING_PROFILES[name]), point))
    assert math.isclose(float(sel["predicted"].iloc[0]), fresh, rel_tol=1e-4)


def test_custom_oneshot_allreduce_is_one_latency_plus_peer_reads():
    from fleetsim.hardware.catalog import get_gpu, get_link

    from fleetsim import estimate_forward
    from fleetsim.engine_fit import serving_trial

    prof = serving_trial(get_engine("vllm"), {"oneshot_max_bytes": 1048576.0})
    link = get_link(get_gpu("H100-SXM").scale_up_link)
    for batch, oneshot in ((16, True), (256, False)):
        ops = estimate_forward("llama-3.1-70b", "H100-SXM", (batch, 1, 1000), tp=8, engine=prof).ops
        nccl = estimate_forward("llama-3.1-70b", "H100-SXM", (batch, 1, 1000), tp=8, engine="vllm").ops
        ar, base = ops[ops["kind"] == "collective"].iloc[0], nccl[nccl["kind"] == "collective"].iloc[0]
        if oneshot:  # 16 x 8192 x 2 bytes = 256 KiB <= 1 MiB
            want = 7 * ar["bytes"] / (link.bandwidth_bps * link.efficiency) + link.latency_s
            assert math.isclose(ar["time_s"], want, rel_tol=1e-9) and ar["time_s"] < base["time_s"]
        else:  # 4 MiB: NCCL as before
            assert ar["time_s"] == base["time_s"]
