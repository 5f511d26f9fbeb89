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
