"""The fitted hf-transformers / torch-compile values re-derived from the H200 data equal the
catalog YAML, each names its fit and test rows, and the split keeps the held-out models out."""

from __future__ import annotations

import math

import pytest
from fleetsim.calibration.engines import Fitted, fitted_values, get_engine

from fleetsim.engine_fit import DATA_DIR, FIT_DATE, fitted_profiles, ground_truth
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
        assert f.date == FIT_DATE and f.fit_rows and f.test_rows
    assert {k for k, v in again.items() if v.source.startswith("fit:")} == set(fits)


def test_hf_fits_the_mechanisms_on_llama_only(refit):
    k, launch = refit["hf-transformers"].kernels, refit["hf-transformers"].launch
    assert isinstance(launch.host_dispatch_s, Fitted)
    # ~14.7 us per kernel from the (1, 128) prefill: 20.3 ms wall over 1376 kernels
    assert 10e-6 < launch.host_dispatch_s.value < 20e-6
    assert k.kv_expand_time_ratio is not None and 2.0 < k.kv_expand_time_ratio.value < 6.0
    for f in (launch.host_dispatch_s, k.kv_expand_time_ratio, k.extra_kernels_prefill, k.extra_kernels_decode):
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
