"""Time-varying load: a request rate that changes over the day, the week and the months.

A ``LoadProfile`` is the offered request rate ``rate_rps(t)`` (t in seconds from the start,
which is Monday 00:00) as the product of

* a base shape - ``diurnal``: ``trough + (peak - trough) * (1 + cos(2 pi (h - peak_hour) / 24)) / 2``
  with ``h`` the hour of the day (the smooth day/night cycle of interactive LLM traffic, one
  maximum at ``peak_hour``), or ``piecewise``: one rate per ``interval_s`` (fitted to a trace's
  arrivals per interval by ``piecewise_from_arrivals``), repeated with its period;
* ``weekend_factor`` on Saturdays and Sundays (the weekly cycle);
* growth ``(1 + growth_per_month) ** (t / MONTH_S)`` (compound trend);
* ``bursts``: windows ``[start_s, start_s + duration_s)`` during which the rate is multiplied by
  ``factor`` (a launch, an outage elsewhere failing over).

Arrivals are a non-homogeneous Poisson process with that rate, drawn exactly by the time change
``t_k = Lambda^-1(E_k)`` of unit-rate Poisson epochs ``E_k`` through the cumulative rate
``Lambda``; the rate is held constant over steps of ``STEP_S`` (its value at the step's midpoint),
for which ``Lambda`` is piecewise linear and its inverse exact.

A ``TenantMix`` splits the arrivals among tenants with their own prompt and output length
distributions: each arrival independently belongs to tenant ``i`` with probability ``share_i``
(a thinned Poisson process stays Poisson, so each tenant sees ``share_i * rate_rps(t)``).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.lengths import LengthDist
from fleetsim.workloads.requests import RequestStream
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DAY_S = 86400.0
WEEK_S = 7 * DAY_S
MONTH_S = 365.25 / 12 * DAY_S
"""A mean calendar month (30.44 days), the unit of ``growth_per_month``."""
STEP_S = 1.0
"""Width of the steps over which the drawn rate is held constant."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def __init__(self, **data: object) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise ConfigError(f"{type(self).__name__}: {loc + ': ' if loc else ''}{err['msg']}") from None


class Burst(_Strict):
    """The rate times ``factor`` during ``[start_s, start_s + duration_s)``."""

    start_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    factor: float = Field(gt=0)


class _Profile(_Strict):
    weekend_factor: float = Field(1.0, gt=0)
    growth_per_month: float = Field(0.0, gt=-1.0)
    bursts: tuple[Burst, ...] = ()

    def base_rps(self, t: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def rate_rps(self, t: np.ndarray | float) -> np.ndarray:
        """Offered request rate at times ``t`` (seconds from Monday 00:00)."""
        t = np.asarray(t, dtype=float)
        if np.any(t < 0) or not np.all(np.isfinite(t)):
            raise ConfigError("load profile: times must be finite and >= 0")
        r = self.base_rps(t)
        if self.weekend_factor != 1.0:
            r = r * np.where((t // DAY_S) % 7 >= 5, self.weekend_factor, 1.0)
        if self.growth_per_month:
            r = r * (1.0 + self.growth_per_month) ** (t / MONTH_S)
        for b in self.bursts:
            r = r * np.where((t >= b.start_s) & (t < b.start_s + b.duration_s), b.factor, 1.0)
        return r

    def mean_rps(self, start_s: float, end_s: float) -> float:
        """Mean rate over ``[start_s, end_s)`` (the step-held rate the arrivals are drawn from)."""
        if not end_s > start_s:
            raise ConfigError(f"load profile: window end {end_s} must exceed start {start_s}")
        grid, lam = self.cumulative(end_s)
        a, b = np.interp([start_s, end_s], grid, lam)
        return float(b - a) / (end_s - start_s)

    def cumulative(self, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Knots and the cumulative expected arrivals ``Lambda`` at them over ``[0, duration_s]``."""
        if not (duration_s > 0 and math.isfinite(duration_s)):
            raise ConfigError(f"load profile: duration_s must be positive and finite, got {duration_s}")
        n = math.ceil(duration_s / STEP_S)
        grid = np.minimum(np.arange(n + 1) * STEP_S, duration_s)
        mid = 0.5 * (grid[:-1] + grid[1:])
        lam = np.concatenate([[0.0], np.cumsum(self.rate_rps(mid) * np.diff(grid))])
        return grid, lam

    def arrivals(self, rng: np.random.Generator, duration_s: float) -> np.ndarray:
        """Sorted arrival times in ``[0, duration_s)`` of the non-homogeneous Poisson process."""
        grid, lam = self.cumulative(duration_s)
        total = float(lam[-1])
        n = int(rng.poisson(total))
        epochs = np.sort(rng.uniform(0.0, total, n))  # given the count, epochs are uniform on [0, total)
        t = np.interp(epochs, lam, grid)
        return t[t < duration_s]


class DiurnalProfile(_Profile):
    """Cosine day/night cycle between ``trough_rps`` and ``peak_rps`` (maximum at ``peak_hour``)."""

    kind: Literal["diurnal"] = "diurnal"
    peak_rps: float = Field(gt=0)
    trough_rps: float = Field(ge=0)
    peak_hour: float = Field(14.0, ge=0, lt=24)

    @model_validator(mode="after")
    def _order(self) -> DiurnalProfile:
        if self.trough_rps > self.peak_rps:
            raise ValueError(f"trough_rps {self.trough_rps:g} exceeds peak_rps {self.peak_rps:g}")
        return self

    def base_rps(self, t: np.ndarray) -> np.ndarray:
        h = (t % DAY_S) / 3600.0
        return self.trough_rps + (self.peak_rps - self.trough_rps) * 0.5 * (1 + np.cos(2 * np.pi * (h - self.peak_hour) / 24))


class ConstantProfile(_Profile):
    """The same rate at all times (the steady-state reference)."""

    kind: Literal["constant"] = "constant"
    rate: float = Field(gt=0)

    def base_rps(self, t: np.ndarray) -> np.ndarray:
        return np.full(t.shape, self.rate)


class PiecewiseProfile(_Profile):
    """``rates_rps[i]`` during interval ``i`` of width ``interval_s``, repeated end to end."""

    kind: Literal["piecewise"] = "piecewise"
    interval_s: float = Field(gt=0)
    rates_rps: tuple[float, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _rates(self) -> PiecewiseProfile:
        for i, r in enumerate(self.rates_rps):
            if not r >= 0:
                raise ValueError(f"rates_rps[{i}] = {r} must be >= 0")
        return self

    def base_rps(self, t: np.ndarray) -> np.ndarray:
        idx = (t // self.interval_s).astype(np.int64) % len(self.rates_rps)
        return np.asarray(self.rates_rps)[idx]


LoadProfile = Annotated[DiurnalProfile | ConstantProfile | PiecewiseProfile, Field(discriminator="kind")]


def piecewise_from_arrivals(arrival_s: np.ndarray, interval_s: float, **extra: object) -> PiecewiseProfile:
    """The profile whose rate in each ``interval_s`` is the trace's arrivals in it divided by
    ``interval_s`` (the maximum-likelihood rate of a Poisson process constant per interval);
    the trace is shifted to start at 0 and its last partial interval dropped."""
    t = np.asarray(arrival_s, dtype=float)
    if len(t) < 2:
        raise ConfigError("piecewise_from_arrivals: need at least two arrivals")
    if not (interval_s > 0 and math.isfinite(interval_s)):
        raise ConfigError(f"piecewise_from_arrivals: interval_s must be positive, got {interval_s}")
    t = np.sort(t) - float(np.min(t))
    n = int(t[-1] // interval_s)
    if n < 1:
        raise ConfigError(f"piecewise_from_arrivals: the trace spans {t[-1]:.4g} s, less than one interval of {interval_s:g} s")
    counts = np.bincount((t[t < n * interval_s] // interval_s).astype(np.int64), minlength=n)
    return PiecewiseProfile(interval_s=interval_s, rates_rps=tuple((counts / interval_s).tolist()), **extra)  # type: ignore[arg-type]


class Tenant(_Strict):
    """One tenant's share of the arrivals and its prompt/output length distributions."""

    name: str
    share: float = Field(gt=0, le=1)
    prompt: LengthDist
    output: LengthDist


class TenantMix(_Strict):
    """Tenants whose shares sum to one."""

    tenants: tuple[Tenant, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _shares(self) -> TenantMix:
        s = sum(t.share for t in self.tenants)
        if abs(s - 1.0) > 1e-9:
            raise ValueError(f"tenant shares sum to {s:g}, not 1")
        return self


def profiled_stream(profile: _Profile, lengths: TenantMix, seed: int | np.random.SeedSequence,
                    duration_s: float) -> tuple[RequestStream, np.ndarray]:
    """Requests over ``[0, duration_s)`` with ``profile``'s rate, each of one tenant; returns
    the stream and each request's tenant index. Arrivals, tenant choice and the lengths of
    each tenant draw from separate child generators of ``seed``."""
    n_t = len(lengths.tenants)
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    r_arr, r_mix, *r_len = [np.random.default_rng(s) for s in ss.spawn(2 + 2 * n_t)]
    t = profile.arrivals(r_arr, duration_s)
    m = len(t)
    shares = np.array([x.share for x in lengths.tenants])
    tenant = (np.searchsorted(np.cumsum(shares), r_mix.uniform(0, 1, m), side="right").clip(0, n_t - 1)
              if n_t > 1 else np.zeros(m, np.int64))
    prompt = np.zeros(m, np.int64)
    output = np.zeros(m, np.int64)
    for i, ten in enumerate(lengths.tenants):
        mask = tenant == i
        k = int(mask.sum())
        prompt[mask] = ten.prompt.sample(r_len[2 * i], k)
        output[mask] = ten.output.sample(r_len[2 * i + 1], k)
    return RequestStream(arrival_s=t, prompt_tokens=prompt, output_tokens=output), tenant.astype(np.int64)


def parse_profile(text: str) -> DiurnalProfile | ConstantProfile:
    """``diurnal:peak=20,trough=5[,peak_hour=14,weekend=0.6,growth=0.1]`` or ``constant:rate=8``
    (rates in requests per second, growth per month) -> a profile; errors name the input."""
    head, _, rest = text.partition(":")
    head = head.strip().lower()
    keys = {"diurnal": {"peak": "peak_rps", "trough": "trough_rps", "peak_hour": "peak_hour",
                        "weekend": "weekend_factor", "growth": "growth_per_month"},
            "constant": {"rate": "rate", "weekend": "weekend_factor", "growth": "growth_per_month"}}
    if head not in keys:
        raise ConfigError(f"load profile {text!r}: expected diurnal:peak=..,trough=.. or constant:rate=..")
    fields: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        k, eq, v = part.partition("=")
        if not eq or k.strip() not in keys[head]:
            raise ConfigError(f"load profile {text!r}: bad parameter {part!r} (known: {', '.join(keys[head])})")
        try:
            val = float(v)
        except ValueError:
            raise ConfigError(f"load profile {text!r}: {k.strip()} must be a number, got {v!r}") from None
        if not math.isfinite(val):
            raise ConfigError(f"load profile {text!r}: {k.strip()} must be finite, got {v!r}")
        fields[keys[head][k.strip()]] = val
    if head == "diurnal":
        return DiurnalProfile(**fields)  # type: ignore[arg-type]
    return ConstantProfile(**fields)  # type: ignore[arg-type]


__all__ = ["DAY_S", "MONTH_S", "WEEK_S", "Burst", "ConstantProfile", "DiurnalProfile", "LoadProfile",
           "PiecewiseProfile", "Tenant", "TenantMix", "parse_profile", "piecewise_from_arrivals",
           "profiled_stream"]
