"""Time-varying load profiles: rates against their closed forms, arrivals against the integral."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.lengths import FixedLength
from fleetsim.workloads.profile import (
    DAY_S,
    MONTH_S,
    Burst,
    DiurnalProfile,
    PiecewiseProfile,
    Tenant,
    TenantMix,
    parse_profile,
    piecewise_from_arrivals,
    profiled_stream,
)
from fleetsim.workloads.tracefile import read_azure_csv

from fleetsim.capacity import load_profile, profile_requests

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "azure-llm-inference-2023"


def test_diurnal_closed_form() -> None:
    p = DiurnalProfile(peak_rps=20, trough_rps=4, peak_hour=14)
    assert p.rate_rps(14 * 3600.0) == pytest.approx(20)
    assert p.rate_rps(2 * 3600.0) == pytest.approx(4)
    assert p.rate_rps(8 * 3600.0) == pytest.approx(12)  # quarter period: the midpoint
    assert p.mean_rps(0, DAY_S) == pytest.approx(12, rel=1e-6)


def test_weekend_growth_and_bursts_multiply() -> None:
    p = DiurnalProfile(peak_rps=10, trough_rps=10, weekend_factor=0.5, growth_per_month=0.1,
                       bursts=(Burst(start_s=100, duration_s=50, factor=3),))
    assert p.rate_rps(120.0) == pytest.approx(30 * 1.1 ** (120 / MONTH_S))
    assert p.rate_rps(5 * DAY_S + 1) == pytest.approx(5 * 1.1 ** ((5 * DAY_S + 1) / MONTH_S))
    assert p.rate_rps(MONTH_S) == pytest.approx(10 * 1.1 * (0.5 if (MONTH_S // DAY_S) % 7 >= 5 else 1))


def test_arrivals_match_the_integral_and_are_deterministic() -> None:
    p = DiurnalProfile(peak_rps=3, trough_rps=0.5)
    a = p.arrivals(np.random.default_rng(1), DAY_S)
    b = p.arrivals(np.random.default_rng(1), DAY_S)
    assert np.array_equal(a, b)
    expect = p.mean_rps(0, DAY_S) * DAY_S
    assert abs(len(a) - expect) < 4 * expect**0.5
    # per 6-hour quarter: counts follow the quarter's integral (Poisson, 4 sigma)
    for q in range(4):
        lo, hi = q * DAY_S / 4, (q + 1) * DAY_S / 4
        n = ((a >= lo) & (a < hi)).sum()
        m = p.mean_rps(lo, hi) * (hi - lo)
        assert abs(n - m) < 4 * m**0.5
    assert np.all(np.diff(a) >= 0)


def test_tenant_mix_shares_and_lengths() -> None:
    mix = TenantMix(tenants=(Tenant(name="chat", share=0.75, prompt=FixedLength(tokens=100), output=FixedLength(tokens=10)),
                             Tenant(name="code", share=0.25, prompt=FixedLength(tokens=2000), output=FixedLength(tokens=50))))
    s, t = profiled_stream(parse_profile("constant:rate=5"), mix, 3, 2000.0)
    assert abs((t == 1).mean() - 0.25) < 0.03
    assert set(s.prompt_tokens[t == 0]) == {100} and set(s.output_tokens[t == 1]) == {50}


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared Azure trace not present at {DATA}")
def test_piecewise_fit_to_the_azure_trace() -> None:
    """Fitted per-minute rates reproduce the trace's per-minute counts (the MLE of a
    piecewise-constant Poisson rate), and so its total over the fitted whole minutes."""
    t = read_azure_csv(DATA / "AzureLLMInferenceTrace_conv.csv").column("arrival_s")
    p = piecewise_from_arrivals(t, 60.0)
    t0 = t - t.min()
    n = len(p.rates_rps)
    assert sum(p.rates_rps) * 60 == pytest.approx(((t0 < n * 60)).sum())
    assert p.rate_rps(60.0 * 7 + 1) == pytest.approx(((t0 >= 420) & (t0 < 480)).sum() / 60)


def test_bad_profiles_name_the_input() -> None:
    with pytest.raises(ConfigError, match="trough_rps"):
        DiurnalProfile(peak_rps=1, trough_rps=-1)
    with pytest.raises(ConfigError, match="peak_rps"):
        DiurnalProfile(peak_rps=float("inf"), trough_rps=1)
    with pytest.raises(ConfigError, match="rates_rps"):
        PiecewiseProfile(interval_s=60, rates_rps=(1.0, -2.0))
    with pytest.raises(ConfigError, match="peak"):
        parse_profile("diurnal:peak=nan,trough=1")
    with pytest.raises(ConfigError, match="bad parameter"):
        parse_profile("diurnal:peek=3")
    with pytest.raises(ConfigError, match="exceeds"):
        parse_profile("diurnal:peak=3,trough=5")
    with pytest.raises(ConfigError, match="duration_s"):
        profile_requests("poisson:rate=1", "constant:rate=1", 0, None, None)
    with pytest.raises(ConfigError, match="load profile"):
        load_profile({"kind": "constant", "rate": -1})
