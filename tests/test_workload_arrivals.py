"""Arrival processes against renewal-process theory (large n, fixed seed, SE-based bounds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.arrivals import (
    Arrivals,
    ClosedLoopClients,
    ConstantArrivals,
    GammaArrivals,
    PoissonArrivals,
    TraceArrivals,
)
from pydantic import TypeAdapter, ValidationError

N = 1_000_000


def gap_stats(times: np.ndarray) -> tuple[float, float]:
    gaps = np.diff(np.concatenate([[0.0], times]))
    return float(gaps.mean()), float(gaps.std() / gaps.mean())


def test_poisson_mean_gap_and_cv() -> None:
    t = PoissonArrivals(rate_rps=4.0).generate(np.random.default_rng(1), num_requests=N)
    mean, cv = gap_stats(t)
    # Exponential gaps: mean 1/rate with standard error (1/rate)/sqrt(N); CV 1.
    assert abs(mean - 0.25) < 5 * 0.25 / math.sqrt(N)
    assert cv == pytest.approx(1.0, abs=0.006)
    assert np.all(np.diff(t) >= 0)


@pytest.mark.parametrize("cv", [0.5, 2.0])
def test_gamma_mean_gap_and_cv(cv: float) -> None:
    t = GammaArrivals(rate_rps=10.0, cv=cv).generate(np.random.default_rng(2), num_requests=N)
    mean, got_cv = gap_stats(t)
    assert abs(mean - 0.1) < 5 * cv * 0.1 / math.sqrt(N)
    # Sample-SD relative standard error ~ sqrt((kurtosis - 1) / 4N), kurtosis = 3 + 6 cv^2.
    se = math.sqrt((2 + 6 * cv**2) / (4 * N))
    assert got_cv == pytest.approx(cv, rel=5 * se)


def test_gamma_cv_one_is_poisson() -> None:
    a = GammaArrivals(rate_rps=3.0, cv=1.0).generate(np.random.default_rng(5), num_requests=1000)
    b = PoissonArrivals(rate_rps=3.0).generate(np.random.default_rng(5), num_requests=1000)
    assert np.array_equal(a, b)


def test_poisson_count_in_window() -> None:
    rate, dur = 50.0, 2000.0
    t = PoissonArrivals(rate_rps=rate).generate(np.random.default_rng(3), duration_s=dur)
    # N(dur) ~ Poisson(rate * dur): within 5 standard deviations.
    assert abs(len(t) - rate * dur) < 5 * math.sqrt(rate * dur)
    assert t.max() < dur and t.min() >= 0


def test_constant_exact() -> None:
    a = ConstantArrivals(rate_rps=4.0)
    assert a.generate(np.random.default_rng(0), num_requests=3).tolist() == [0.0, 0.25, 0.5]
    assert len(a.generate(np.random.default_rng(0), duration_s=1.0)) == 4
    assert len(a.generate(np.random.default_rng(0), num_requests=10, duration_s=1.0)) == 4


def test_same_seed_same_times_and_bounds_required() -> None:
    g = GammaArrivals(rate_rps=2.0, cv=3.0)
    x = g.generate(np.random.default_rng(9), duration_s=500.0)
    y = g.generate(np.random.default_rng(9), duration_s=500.0)
    assert np.array_equal(x, y)
    with pytest.raises(ConfigError, match="num_requests or duration_s"):
        g.generate(np.random.default_rng(0))


def test_closed_loop_chains() -> None:
    c = ClosedLoopClients(num_clients=3, think_time_s=2.0)
    t, client, think = c.chains(np.random.default_rng(0), num_requests=7)
    # Fixed 2 s think at zero latency: 3 clients at 0, 2, 4 s ...; first of each chain thinks 0.
    assert t.tolist() == [0, 0, 0, 2, 2, 2, 4]
    assert client.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert think.tolist() == [0, 0, 0, 2, 2, 2, 2]
    assert c.is_closed_loop and not PoissonArrivals(rate_rps=1).is_closed_loop
    assert c.mean_rate_rps() == 1.5
    d = c.generate(np.random.default_rng(0), duration_s=10.0)
    assert len(d) == 15


def test_closed_loop_think_distribution() -> None:
    c = ClosedLoopClients(num_clients=1, think_time_s=3.0, think_cv=1.0)
    x = c.draw_think_s(np.random.default_rng(4), N)
    assert abs(x.mean() - 3.0) < 5 * 3.0 / math.sqrt(N)
    assert x.std() / x.mean() == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ConfigError, match="num_requests"):
        ClosedLoopClients(num_clients=2).generate(np.random.default_rng(0), duration_s=5)


def test_trace_arrivals_scale_and_tile(tmp_path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text("".join(f'{{"arrival_s": {t}, "prompt_tokens": 1, "output_tokens": 1}}\n' for t in (3, 4, 6)))
    a = TraceArrivals(path=p, time_scale=0.5)
    # Shifted to start at 0 then halved: 0, 0.5, 1.5; period = span + mean gap = 1.5 + 0.75.
    assert a.generate(np.random.default_rng(0), num_requests=5).tolist() == [0, 0.5, 1.5, 2.25, 2.75]
    assert a.generate(np.random.default_rng(0), duration_s=2.3).tolist() == [0, 0.5, 1.5, 2.25]


def test_discriminated_union_from_dict() -> None:
    ta = TypeAdapter(Arrivals)
    assert isinstance(ta.validate_python({"kind": "gamma", "rate_rps": 1, "cv": 2}), GammaArrivals)
    with pytest.raises(ValidationError):
        ta.validate_python({"kind": "poisson", "rate_rps": 1, "cv": 2})  # extra key
    with pytest.raises(ValidationError):
        ta.validate_python({"kind": "poisson", "rate_rps": -1})
