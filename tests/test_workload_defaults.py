"""Built-in workloads reproduce the Azure 2023 traces they were fitted to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fleetsim.workloads.arrivals import GammaArrivals
from fleetsim.workloads.defaults import builtin_fit_info, get_workload, list_workloads
from fleetsim.workloads.tracefile import read_azure_csv

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "azure-llm-inference-2023"
FILES = {"azure-conv": "AzureLLMInferenceTrace_conv.csv", "azure-code": "AzureLLMInferenceTrace_code.csv"}
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"shared Azure trace not present at {DATA}"
)


@pytest.fixture(scope="module")
def generated() -> dict[str, object]:
    return {name: get_workload(name).generate(0, num_requests=200_000) for name in FILES}


@needs_data
@pytest.mark.parametrize("name", sorted(FILES))
def test_lengths_match_trace(name: str, generated: dict) -> None:
    trace = read_azure_csv(DATA / FILES[name])
    gen = generated[name]
    for col in ("prompt_tokens", "output_tokens"):
        want, got = trace.column(col), gen.column(col)
        assert got.mean() == pytest.approx(want.mean(), rel=0.02), (name, col, "mean")
        assert np.median(got) == pytest.approx(np.median(want), rel=0.02), (name, col, "median")
        assert np.quantile(got, 0.9) == pytest.approx(np.quantile(want, 0.9), rel=0.02), (name, col, "p90")


@needs_data
@pytest.mark.parametrize("name", sorted(FILES))
def test_arrival_rate_matches_trace(name: str, generated: dict) -> None:
    trace = read_azure_csv(DATA / FILES[name])
    w = get_workload(name)
    assert isinstance(w.arrivals, GammaArrivals)
    assert w.arrivals.rate_rps == pytest.approx(trace.rate_rps, rel=1e-3)
    # 200k Gamma gaps: the rate estimate's relative error is ~ cv / sqrt(n) < 0.5%.
    assert generated[name].rate_rps == pytest.approx(trace.rate_rps, rel=0.02)


@needs_data
def test_conversation_burstiness_matches_trace() -> None:
    # The conversation trace is close to a Gamma renewal process: its moment CV and the
    # generated one agree (the code trace's moment CV is dominated by idle minutes).
    trace = read_azure_csv(DATA / FILES["azure-conv"])
    gaps = np.diff(trace.arrival_s)
    gen = np.diff(get_workload("azure-conv").generate(1, num_requests=200_000).arrival_s)
    assert gen.std() / gen.mean() == pytest.approx(gaps.std() / gaps.mean(), rel=0.05)


@needs_data
@pytest.mark.parametrize("name", sorted(FILES))
def test_stored_trace_statistics_are_current(name: str) -> None:
    stored = builtin_fit_info(name)["trace"]
    fresh = read_azure_csv(DATA / FILES[name]).summary()
    for key, value in fresh.items():
        assert stored[key] == pytest.approx(value, abs=1e-3), key


def test_builtins_carry_provenance_and_are_deterministic() -> None:
    for name in list_workloads():
        info = builtin_fit_info(name)
        assert info["date"] and "Azure" in info["source"]
        w = get_workload(name)
        assert w.generate(5, num_requests=1000) == w.generate(5, num_requests=1000)
