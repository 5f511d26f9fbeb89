"""Arrival processes: when requests reach the serving system.

A discriminated union on ``kind`` (pydantic), so a YAML/JSON scenario names the process:

* ``poisson``  - exponential inter-arrival gaps (memoryless, CV = 1).
* ``gamma``    - Gamma-distributed gaps with mean ``1/rate_rps`` and coefficient of
  variation ``cv`` (shape ``k = 1/cv^2``); ``cv > 1`` is burstier than Poisson, ``cv < 1``
  smoother, ``cv = 1`` *is* Poisson. This is the renewal model fitted to production
  traces (the Azure LLM trace has CV well above 1).
* ``constant`` - evenly spaced arrivals, ``i / rate_rps`` after the first.
* ``closed``   - ``num_clients`` clients, each issuing its next request ``think_time_s``
  after its previous one completes; the arrival times depend on the simulated latency,
  so ``generate`` returns the zero-latency schedule and ``chains`` the client of each
  request and its think time (see docs/workloads.md, "closed-loop contract").
* ``trace``    - arrival times replayed from a trace file, times multiplied by ``time_scale``.

Every ``generate(rng, num_requests=None, duration_s=None)`` returns sorted arrival times
in seconds from 0, exactly ``num_requests`` of them, or all arrivals in ``[0, duration_s)``.
All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.tracefile import load_trace_cached
from pydantic import BaseModel, ConfigDict, Field


class _Arrivals(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @property
    def is_closed_loop(self) -> bool:
        return False

    def mean_rate_rps(self) -> float:
        """Long-run offered request rate (closed loop: an upper bound at zero latency)."""
        raise NotImplementedError


def _check_bounds(num_requests: int | None, duration_s: float | None, what: str) -> None:
    if num_requests is None and duration_s is None:
        raise ConfigError(f"{what}: give num_requests or duration_s")
    if num_requests is not None and num_requests < 0:
        raise ConfigError(f"{what}: num_requests must be >= 0, got {num_requests}")
    if duration_s is not None and not (duration_s >= 0 and math.isfinite(duration_s)):
        raise ConfigError(f"{what}: duration_s must be finite and >= 0, got {duration_s}")


def _renewal(
    draw_gaps: object,
    rate_rps: float,
    cv: float,
    num_requests: int | None,
    duration_s: float | None,
) -> np.ndarray:
    """Cumulative sums of i.i.d. gaps, cut at ``num_requests`` and/or ``duration_s``.

    ``draw_gaps(n)`` returns ``n`` gaps. For a duration the count needed is unknown, so
    gaps are drawn in chunks sized to cover the window with ~6 sigma to spare.
    """
    assert callable(draw_gaps)
    if num_requests is not None:
        times = np.cumsum(draw_gaps(num_requests))
        if duration_s is not None:
            times = times[times < duration_s]
        return times
    assert duration_s is not None
    expected = rate_rps * duration_s
    chunks: list[np.ndarray] = []
    t = 0.0
    while t < duration_s:
        remaining = rate_rps * (duration_s - t)
        n = int(remaining + 6.0 * max(cv, 1.0) * math.sqrt(remaining + 1.0) + 16)
        if n > 50 * expected + 1e7:  # pragma: no cover - guards against runaway loops
            raise ConfigError("arrival generation did not converge")
        times = t + np.cumsum(draw_gaps(n))
        chunks.append(times)
        t = float(times[-1])
    if not chunks:
        return np.zeros(0)
    out = np.concatenate(chunks)
    return out[out < duration_s]


def _positive_rate(rate_rps: float, what: str) -> None:
    if not (rate_rps > 0 and math.isfinite(rate_rps)):
        raise ConfigError(f"{what}: rate_rps must be positive and finite, got {rate_rps}")


class PoissonArrivals(_Arrivals):
    """Poisson process: exponential gaps with mean ``1/rate_rps``."""

    kind: Literal["poisson"] = "poisson"
    rate_rps: float = Field(gt=0)

    def mean_rate_rps(self) -> float:
        return self.rate_rps

    def generate(
        self, rng: np.random.Generator, num_requests: int | None = None, duration_s: float | None = None
    ) -> np.ndarray:
        _check_bounds(num_requests, duration_s, "poisson arrivals")
        _positive_rate(self.rate_rps, "poisson arrivals")
        scale = 1.0 / self.rate_rps
        return _renewal(lambda n: rng.exponential(scale, n), self.rate_rps, 1.0, num_requests, duration_s)


class GammaArrivals(_Arrivals):
    """Gamma renewal process: gaps ~ Gamma(k = 1/cv^2, theta = cv^2 / rate_rps).

    Mean gap ``1/rate_rps``, gap standard deviation ``cv/rate_rps``. With ``cv = 1`` the
    gaps are exponential and this is the Poisson process (same draws as ``poisson``).
    """

    kind: Literal["gamma"] = "gamma"
    rate_rps: float = Field(gt=0)
    cv: float = Field(gt=0)

    def mean_rate_rps(self) -> float:
        return self.rate_rps

    def generate(
        self, rng: np.random.Generator, num_requests: int | None = None, duration_s: float | None = None
    ) -> np.ndarray:
        _check_bounds(num_requests, duration_s, "gamma arrivals")
        _positive_rate(self.rate_rps, "gamma arrivals")
        if self.cv == 1.0:  # exponential gaps: the Poisson process, with the same draws
            return PoissonArrivals(rate_rps=self.rate_rps).generate(rng, num_requests, duration_s)
        shape = 1.0 / self.cv**2
        theta = self.cv**2 / self.rate_rps
        return _renewal(lambda n: rng.gamma(shape, theta, n), self.rate_rps, self.cv, num_requests, duration_s)


class ConstantArrivals(_Arrivals):
    """Deterministic arrivals every ``1/rate_rps`` seconds, the first at t = 0."""

    kind: Literal["constant"] = "constant"
    rate_rps: float = Field(gt=0)

    def mean_rate_rps(self) -> float:
        return self.rate_rps

    def generate(
        self, rng: np.random.Generator, num_requests: int | None = None, duration_s: float | None = None
    ) -> np.ndarray:
        _check_bounds(num_requests, duration_s, "constant arrivals")
        n = num_requests
        if duration_s is not None:
            n_window = int(math.ceil(duration_s * self.rate_rps))
            n = n_window if n is None else min(n, n_window)
        assert n is not None
        times = np.arange(n, dtype=np.float64) / self.rate_rps
        return times[times < duration_s] if duration_s is not None else times


class ClosedLoopClients(_Arrivals):
    """``num_clients`` clients, each with one request in flight at a time.

    A client issues its first request at a start time drawn uniformly from
    ``[0, ramp_s)`` (all at 0 when ``ramp_s == 0``); after each completion it thinks for a
    time with mean ``think_time_s`` and coefficient of variation ``think_cv`` (0: fixed,
    1: exponential, else Gamma) and issues the next. Offered load therefore adapts to
    latency, as with a benchmark harness running N concurrent users.
    """

    kind: Literal["closed"] = "closed"
    num_clients: int = Field(gt=0)
    think_time_s: float = Field(default=0.0, ge=0)
    think_cv: float = Field(default=0.0, ge=0)
    ramp_s: float = Field(default=0.0, ge=0)

    @property
    def is_closed_loop(self) -> bool:
        return True

    def mean_rate_rps(self) -> float:
        return self.num_clients / self.think_time_s if self.think_time_s > 0 else math.inf

    def draw_think_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` think times in seconds (what a client waits after a completion)."""
        if self.think_time_s == 0 or self.think_cv == 0:
            return np.full(n, self.think_time_s)
        shape = 1.0 / self.think_cv**2
        return rng.gamma(shape, self.think_time_s / shape, n)

    def chains(
        self, rng: np.random.Generator, num_requests: int | None = None, duration_s: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(arrival_s, client_id, think_s)`` for the zero-latency schedule, sorted by time.

        Client ``c`` gets the chain ``start_c, start_c + think_1, ...``; ``think_s`` of a
        chain's first request is 0. Rows from all clients are merged by time (ties by
        client), and the first ``num_requests`` (or those before ``duration_s``) kept.
        """
        _check_bounds(num_requests, duration_s, "closed-loop clients")
        c = self.num_clients
        if num_requests is not None:
            per_client = -(-num_requests // c) if num_requests else 0
        else:
            assert duration_s is not None
            if self.think_time_s == 0:
                raise ConfigError(
                    "closed-loop clients with think_time_s=0 need num_requests: their "
                    "zero-latency schedule puts every request at t=0"
                )
            per_client = int(duration_s / self.think_time_s * (1 + 8 * max(self.think_cv, 0.1))) + 8
        if per_client == 0:
            return np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0)
        starts = rng.uniform(0.0, self.ramp_s, c) if self.ramp_s > 0 else np.zeros(c)
        think = self.draw_think_s(rng, c * per_client).reshape(c, per_client)
        think[:, 0] = 0.0
        arrival = starts[:, None] + np.cumsum(think, axis=1)
        client = np.repeat(np.arange(c, dtype=np.int64), per_client)
        # Order by time, then by position within the client chain, then by client, so a
        # client's requests always appear in chain order even when think times are zero.
        position = np.tile(np.arange(per_client, dtype=np.int64), c)
        flat_t, flat_think = arrival.ravel(), think.ravel()
        order = np.lexsort((client, position, flat_t))
        flat_t, client, flat_think = flat_t[order], client[order], flat_think[order]
        if duration_s is not None:
            keep = flat_t < duration_s
            flat_t, client, flat_think = flat_t[keep], client[keep], flat_think[keep]
        if num_requests is not None:
            flat_t, client, flat_think = flat_t[:num_requests], client[:num_requests], flat_think[:num_requests]
        return flat_t, client, flat_think

    def generate(
        self, rng: np.random.Generator, num_requests: int | None = None, duration_s: float | None = None
    ) -> np.ndarray:
        """Zero-latency issue times (a lower bound; the simulator adds real latency)."""
        return self.chains(rng, num_requests, duration_s)[0]


class TraceArrivals(_Arrivals):
    """Arrival times of a trace file (Azure CSV or fleetsim JSONL), times ``time_scale``.

    ``time_scale = 0.5`` replays twice as fast (double the rate). Asking for more
    requests than the trace holds repeats it, each copy shifted by the trace's span plus
    one mean gap, so the long-run rate is kept.
    """

    kind: Literal["trace"] = "trace"
    path: Path
    time_scale: float = Field(default=1.0, gt=0)

    def _times(self) -> np.ndarray:
        return load_trace_cached(self.path).column("arrival_s") * self.time_scale

    def num_trace_requests(self) -> int:
        """Requests in one pass over the trace (its natural length when replayed once)."""
        return len(self._times())

    def mean_rate_rps(self) -> float:
        t = self._times()
        return (len(t) - 1) / float(t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else math.nan

    def generate(
        self, rng: np.random.Generator, num_requests: int | None = None, duration_s: float | None = None
    ) -> np.ndarray:
        _check_bounds(num_requests, duration_s, f"trace arrivals {self.path}")
        times = self._times()
        base = times - times[0] if len(times) else times
        return tile_trace(base, num_requests, duration_s, str(self.path))


def tile_trace(
    base: np.ndarray, num_requests: int | None, duration_s: float | None, what: str
) -> np.ndarray:
    """Repeat sorted times ``base`` (starting at 0) end to end to cover the request."""
    n_base = len(base)
    if n_base == 0:
        raise ConfigError(f"trace {what} has no requests")
    period = float(base[-1]) + (float(base[-1]) / (n_base - 1) if n_base > 1 else 1.0)
    if num_requests is not None:
        copies = -(-num_requests // n_base) if num_requests else 0
    else:
        assert duration_s is not None
        copies = int(duration_s // period) + 1
    times = (base[None, :] + period * np.arange(copies)[:, None]).ravel()
    if num_requests is not None:
        times = times[:num_requests]
    if duration_s is not None:
        times = times[times < duration_s]
    return times


Arrivals = Annotated[
    PoissonArrivals | GammaArrivals | ConstantArrivals | ClosedLoopClients | TraceArrivals,
    Field(discriminator="kind"),
]
