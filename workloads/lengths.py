"""Token-length distributions for prompts and outputs.

A discriminated union on ``kind``; every variant has ``sample(rng, n) -> int64 array``
and ``mean()`` (the exact mean of what ``sample`` draws, where it has a closed form).

* ``fixed``     - always ``tokens``.
* ``uniform``   - integers uniform on ``[low, high]`` inclusive.
* ``lognormal`` - ``round(exp(N(ln median, sigma^2)))`` clipped to ``[min, max]``.
  Parameterised by the median (``= e^mu``) rather than ``mu`` because the median is the
  number people quote; give ``mu`` instead if you have it. The unclipped mean is
  ``median * exp(sigma^2 / 2)``.
* ``empirical`` - resample observed lengths: ``values`` inline, or ``path`` + ``column``
  of a trace file (Azure CSV column name or fleetsim field name).
* ``quantiles`` - inverse-CDF sampling from a quantile table (``probs`` from 0 to 1,
  non-decreasing ``values``), linear between table points. This is how the built-in
  defaults store fitted trace distributions: ~50 numbers, no trace rows.
* ``trace``     - the column of a trace in row order (replay; pairs row-by-row with
  ``TraceArrivals`` of the same file). Repeats the trace when more rows are asked for.
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.tracefile import MAX_TOKENS, load_trace_cached, trace_column
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Length(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def _n(self, n: int) -> int:
        if n < 0:
            raise ConfigError(f"{self.kind}: sample size must be >= 0, got {n}")  # type: ignore[attr-defined]
        return int(n)


class FixedLength(_Length):
    kind: Literal["fixed"] = "fixed"
    tokens: int = Field(ge=0, le=MAX_TOKENS)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(self._n(n), self.tokens, dtype=np.int64)

    def mean(self) -> float:
        return float(self.tokens)


class UniformLength(_Length):
    kind: Literal["uniform"] = "uniform"
    low: int = Field(ge=0, le=MAX_TOKENS)
    high: int = Field(ge=0, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _order(self) -> UniformLength:
        if self.high < self.low:
            raise ValueError(f"uniform length: high ({self.high}) < low ({self.low})")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.low, self.high + 1, self._n(n), dtype=np.int64)

    def mean(self) -> float:
        return (self.low + self.high) / 2.0


class LognormalLength(_Length):
    """``round(exp(mu + sigma * Z))`` clipped to ``[min, max]``; ``median = exp(mu)``."""

    kind: Literal["lognormal"] = "lognormal"
    median: float | None = Field(default=None, gt=0)
    mu: float | None = None
    sigma: float = Field(ge=0)
    min: int = Field(default=1, ge=0, le=MAX_TOKENS)
    max: int = Field(default=1_000_000, ge=1, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _one_location(self) -> LognormalLength:
        if (self.median is None) == (self.mu is None):
            raise ValueError("lognormal length: give exactly one of median or mu")
        if self.max < self.min:
            raise ValueError(f"lognormal length: max ({self.max}) < min ({self.min})")
        return self

    @property
    def mu_log(self) -> float:
        return math.log(self.median) if self.median is not None else float(self.mu)  # type: ignore[arg-type]

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        x = rng.lognormal(self.mu_log, self.sigma, self._n(n))
        return np.clip(np.rint(x), self.min, self.max).astype(np.int64)

    def mean(self) -> float:
        """Mean of the unclipped, unrounded lognormal, ``exp(mu + sigma^2/2)``."""
        return math.exp(self.mu_log + self.sigma**2 / 2)


class EmpiricalLength(_Length):
    """Uniform resampling (with replacement) of observed lengths."""

    kind: Literal["empirical"] = "empirical"
    values: tuple[int, ...] | None = None
    path: Path | None = None
    column: str | None = None

    @model_validator(mode="after")
    def _source(self) -> EmpiricalLength:
        if (self.values is None) == (self.path is None):
            raise ValueError("empirical length: give exactly one of values or path (+ column)")
        if self.path is not None and self.column is None:
            raise ValueError("empirical length: path needs a column (e.g. prompt_tokens)")
        if self.values is not None and (len(self.values) == 0 or min(self.values) < 0
                                        or max(self.values) > MAX_TOKENS):
            raise ValueError(f"empirical length: values must be non-empty and in [0, {MAX_TOKENS:g}]")
        return self

    @cached_property
    def _array(self) -> np.ndarray:
        if self.values is not None:
            return np.asarray(self.values, dtype=np.int64)
        assert self.path is not None and self.column is not None
        return trace_column(load_trace_cached(self.path), self.column, str(self.path))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self._array[rng.integers(0, len(self._array), self._n(n))]

    def mean(self) -> float:
        return float(self._array.mean())


class QuantileLength(_Length):
    """Inverse-CDF sampling: ``value = Q(U)`` rounded, ``U ~ U(0, 1)``, from a quantile table.

    ``Q`` interpolates between table points linearly, or - ``interpolation="log"`` -
    linearly in log(value), i.e. geometrically. Token-length distributions are
    right-skewed with convex quantile functions, so linear interpolation overstates the
    mean in the tail; geometric interpolation follows such tails far more closely. With
    ``probs`` = 0 ... 1 and ``values`` the sample quantiles this reproduces the observed
    distribution to the table's resolution, exactly at every table point.
    """

    kind: Literal["quantiles"] = "quantiles"
    probs: tuple[float, ...]
    values: tuple[float, ...]
    interpolation: Literal["linear", "log"] = "linear"

    @model_validator(mode="after")
    def _table(self) -> QuantileLength:
        p, v = np.asarray(self.probs), np.asarray(self.values)
        if len(p) < 2 or len(p) != len(v):
            raise ValueError("quantile length: probs and values need equal length >= 2")
        if p[0] != 0.0 or p[-1] != 1.0 or np.any(np.diff(p) <= 0):
            raise ValueError("quantile length: probs must rise strictly from 0 to 1")
        if np.any(np.diff(v) < 0) or v[0] < 0 or not v[-1] <= MAX_TOKENS:
            raise ValueError(f"quantile length: values must be in [0, {MAX_TOKENS:g}] and non-decreasing")
        if self.interpolation == "log" and v[0] <= 0:
            raise ValueError("quantile length: log interpolation needs values > 0")
        return self

    def quantile(self, q: float | np.ndarray) -> np.ndarray:
        """``Q(q)`` before rounding."""
        p, v = np.asarray(self.probs), np.asarray(self.values, dtype=np.float64)
        if self.interpolation == "log":
            return np.asarray(np.exp(np.interp(q, p, np.log(v))))
        return np.asarray(np.interp(q, p, v))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.rint(self.quantile(rng.random(self._n(n)))).astype(np.int64)

    def mean(self) -> float:
        """Exact mean of the interpolated inverse CDF (before rounding)."""
        p, v = np.asarray(self.probs), np.asarray(self.values, dtype=np.float64)
        a, b, dp = v[:-1], v[1:], np.diff(p)
        if self.interpolation == "linear":
            return float(np.sum(dp * (a + b) / 2))
        # Mean of a * (b/a)^t over t in [0, 1] is (b - a) / ln(b / a) (a when b == a).
        ratio = np.log(b / a)
        flat = np.abs(ratio) < 1e-12
        seg = np.where(flat, a, (b - a) / np.where(flat, 1.0, ratio))
        return float(np.sum(dp * seg))


class TraceLength(_Length):
    """The ``column`` of a trace in row order, repeated when more rows are needed."""

    kind: Literal["trace"] = "trace"
    path: Path
    column: str

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        col = trace_column(load_trace_cached(self.path), self.column, str(self.path))
        n = self._n(n)
        if len(col) == 0:
            raise ConfigError(f"trace {self.path} has no requests")
        return np.resize(col, n) if n else col[:0]

    def mean(self) -> float:
        return float(trace_column(load_trace_cached(self.path), self.column, str(self.path)).mean())


LengthDist = Annotated[
    FixedLength | UniformLength | LognormalLength | EmpiricalLength | QuantileLength | TraceLength,
    Field(discriminator="kind"),
]


def max_tokens(dist: object) -> int | None:
    """The largest length ``dist`` can draw where that is known (fixed, uniform, lognormal's
    clip, an empirical list, a quantile table's top); None for a file-backed distribution."""
    if isinstance(dist, FixedLength):
        return dist.tokens
    if isinstance(dist, UniformLength):
        return dist.high
    if isinstance(dist, LognormalLength):
        return dist.max
    if isinstance(dist, EmpiricalLength) and dist.values is not None:
        return max(dist.values)
    if isinstance(dist, QuantileLength):
        return math.ceil(dist.values[-1])
    return None


def min_tokens(dist: object) -> int | None:
    """The smallest length ``dist`` can draw where that is known without data (fixed,
    uniform, lognormal); None for data-driven distributions."""
    if isinstance(dist, FixedLength):
        return dist.tokens
    if isinstance(dist, UniformLength):
        return dist.low
    if isinstance(dist, LognormalLength):
        return dist.min
    return None
