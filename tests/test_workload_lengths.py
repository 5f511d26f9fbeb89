"""Length distributions against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fleetsim.workloads.lengths import (
    EmpiricalLength,
    FixedLength,
    LognormalLength,
    QuantileLength,
    TraceLength,
    UniformLength,
)
from pydantic import ValidationError

N = 400_000


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_fixed_and_uniform() -> None:
    assert FixedLength(tokens=7).sample(rng(), 3).tolist() == [7, 7, 7]
    x = UniformLength(low=10, high=20).sample(rng(), N)
    assert x.min() == 10 and x.max() == 20 and x.dtype == np.int64
    # Discrete uniform on 11 values: variance (11^2 - 1)/12 = 10.
    assert abs(x.mean() - 15) < 5 * math.sqrt(10 / N)
    with pytest.raises(ValidationError):
        UniformLength(low=5, high=4)


def test_lognormal_median_sigma_and_clip() -> None:
    d = LognormalLength(median=1000, sigma=0.8, min=1, max=10**9)
    x = d.sample(rng(1), N)
    assert np.median(x) == pytest.approx(1000, rel=0.01)
    assert np.log(x).std() == pytest.approx(0.8, rel=0.01)
    assert x.mean() == pytest.approx(d.mean(), rel=0.01)  # exp(mu + sigma^2/2)
    assert d.mean() == pytest.approx(1000 * math.exp(0.32))
    clipped = LognormalLength(mu=math.log(1000), sigma=2.0, min=100, max=2000).sample(rng(2), N)
    assert clipped.min() == 100 and clipped.max() == 2000
    with pytest.raises(ValidationError, match="exactly one"):
        LognormalLength(median=5, mu=1.0, sigma=1)


def test_quantile_table_reproduces_its_points() -> None:
    d = QuantileLength(probs=(0, 0.5, 0.9, 1), values=(0, 100, 500, 1000))
    x = d.sample(rng(3), N)
    assert np.median(x) == pytest.approx(100, abs=1)
    assert np.quantile(x, 0.9) == pytest.approx(500, abs=3)
    # Trapezoid mean: 0.5*50 + 0.4*300 + 0.1*750 = 220.
    assert d.mean() == pytest.approx(220)
    assert x.mean() == pytest.approx(220, rel=0.01)
    with pytest.raises(ValidationError):
        QuantileLength(probs=(0.1, 1), values=(1, 2))
    with pytest.raises(ValidationError):
        QuantileLength(probs=(0, 1), values=(5, 2))


def test_empirical_values_and_trace_column(tmp_path) -> None:
    d = EmpiricalLength(values=(1, 2, 3, 10))
    x = d.sample(rng(4), N)
    assert set(np.unique(x)) == {1, 2, 3, 10}
    assert x.mean() == pytest.approx(4.0, rel=0.01)
    p = tmp_path / "t.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,5,7\n1,6,8\n2,9,9\n")
    e = EmpiricalLength(path=p, column="ContextTokens")
    assert set(e.sample(rng(), 100).tolist()) == {5, 6, 9}
    assert TraceLength(path=p, column="output_tokens").sample(rng(), 5).tolist() == [7, 8, 9, 7, 8]
    with pytest.raises(ValidationError):
        EmpiricalLength(values=(1,), path=p, column="x")


def test_quantile_log_interpolation_is_geometric() -> None:
    d = QuantileLength(probs=(0, 1), values=(10, 1000), interpolation="log")
    # Q(u) = 10 * 100^u: median 100, mean (1000 - 10) / ln(100).
    assert float(d.quantile(0.5)) == pytest.approx(100.0)
    assert d.mean() == pytest.approx(990 / math.log(100))
    x = d.sample(rng(6), N)
    assert x.mean() == pytest.approx(990 / math.log(100), rel=0.01)
    with pytest.raises(ValidationError, match="log"):
        QuantileLength(probs=(0, 1), values=(0, 5), interpolation="log")
