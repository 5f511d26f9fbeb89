"""The dashboard renders headless and shows the API's numbers (Streamlit AppTest)."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

from fleetsim.cli.dashboard import app_path  # noqa: E402


def test_dashboard_plan_tab_shows_api_plan() -> None:
    import fleetsim

    at = AppTest.from_file(str(app_path()), default_timeout=120)
    at.run()
    at.text_input(key="plan_cluster").set_value("2xH100")
    at.selectbox(key="plan_model").set_value("llama-3.1-8b")
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    shown = at.dataframe[0].value
    plan = fleetsim.plan_serving("llama-3.1-8b", "2xH100", isl=1024, osl=256)
    assert list(shown["out_tok_s"]) == list(plan.table()["out_tok_s"])


def test_dashboard_reports_bad_cluster_as_error() -> None:
    at = AppTest.from_file(str(app_path()), default_timeout=120)
    at.run()
    at.text_input(key="plan_cluster").set_value("8xNOPE")
    at.run()
    assert not at.exception
    assert any("NOPE" in e.value for e in at.error)


def test_dashboard_simulate_tab_shows_api_summary() -> None:
    import fleetsim

    at = AppTest.from_file(str(app_path()), default_timeout=300)
    at.run()
    at.selectbox(key="sim_model").set_value("llama-3.1-8b")
    at.text_input(key="sim_cluster").set_value("1xH100")
    at.number_input(key="sim_n").set_value(200)
    at.button(key="sim_go").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    res = fleetsim.simulate_serving("llama-3.1-8b", "1xH100", "azure-conv", seed=0, num_requests=200)
    frames = [d.value for d in at.dataframe]
    summary = next(f for f in frames if "metric" in f.columns)
    shown = dict(zip(summary["metric"], summary["value"], strict=True))
    assert shown["ttft_p50_s"] == str(res.summary["ttft_p50_s"])


def test_dashboard_train_tab_shows_api_estimate() -> None:
    import fleetsim

    at = AppTest.from_file(str(app_path()), default_timeout=300)
    at.run()
    assert not at.exception, at.exception
    est = fleetsim.estimate_train_step(
        "gpt3-175b",
        "64xA100-80GB",
        fleetsim.ParallelConfig(tp=8, pp=8, dp=1, sequence_parallel=True),
        micro_batch=1,
        global_batch=64,
        seq_len=2048,
        recompute="selective",
    )
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Step time"] == f"{est.time_s:.2f} s"
    assert metrics["MFU"] == f"{est.mfu * 100:.1f} %"
