"""Stragglers: slow GPUs and how synchronous training amplifies them.

In synchronous training every step waits for the slowest rank: a tensor/pipeline group waits
for its slowest member and the data-parallel gradient reduction waits for the slowest group,
so one step of an ``n``-GPU job takes the nominal time times the *maximum* of ``n`` per-GPU
slowdowns. Slowdowns come from a two-point spec (a share ``slow_fraction`` of GPUs is
``slowdown`` times slower) or from measured relative per-rank speeds (slowdown = 1 / speed),
drawn independently per GPU. The max of ``n`` draws has CDF F(x)^n, which gives its expected
value in closed form and a draw from one uniform number (inverse CDF at u^(1/n)).
"""

from __future__ import annotations

import numpy as np
from fleetsim.hardware.specs import Frozen
from pydantic import Field, model_validator


class StragglerSpec(Frozen):
    slow_fraction: float = Field(default=0.0, ge=0, le=1)
    slowdown: float = Field(default=1.0, ge=1)
    rank_speeds: tuple[float, ...] = ()
    """Measured per-rank speeds relative to nominal (1.0 nominal, 0.9 is 10% slower)."""

    @model_validator(mode="after")
    def _check(self) -> StragglerSpec:
        if any(not 0 < s <= 1.0 + 1e-12 for s in self.rank_speeds):
            raise ValueError("rank_speeds must lie in (0, 1] (relative to the nominal speed)")
        return self

    def support(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted slowdown values and their cumulative probabilities."""
        if self.rank_speeds:
            x = np.sort(1.0 / np.asarray(self.rank_speeds, dtype=float))
            return x, np.arange(1, len(x) + 1) / len(x)
        return np.array([1.0, self.slowdown]), np.array([1.0 - self.slow_fraction, 1.0])


def expected_max_slowdown(spec: StragglerSpec, n: int) -> float:
    """E[max of n iid slowdowns] = sum_i x_i (F_i^n - F_{i-1}^n)."""
    x, cdf = spec.support()
    prev = np.concatenate(([0.0], cdf[:-1]))
    return float(np.sum(x * (cdf**n - prev**n)))


def draw_max_slowdown(spec: StragglerSpec, n: int, rng: np.random.Generator) -> float:
    """One draw of the max of n iid slowdowns (inverse CDF of F^n)."""
    x, cdf = spec.support()
    v = rng.random() ** (1.0 / n)
    i = int(np.searchsorted(cdf, v, side="left"))
    return float(x[min(i, len(x) - 1)])
