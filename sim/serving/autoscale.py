"""Autoscaling of serving replicas: policies, limits, delays and cold starts.

Every ``interval_s`` the autoscaler observes each deployment entry (pool of replicas of one
layout) over the interval just ended - ``Observation`` - and asks the policy for a replica
count per entry; the count is clamped to ``[min_replicas, max_replicas]`` and acted on once the
wish has lasted ``scale_up_delay_s`` (more replicas) or ``scale_down_delay_s`` (fewer; the
stabilisation windows of Kubernetes' HorizontalPodAutoscaler). A replica scaled up goes through
a cold start (``cold_start_s``) during which it serves nothing but its GPUs are paid for; one
scaled down leaves the router at once and is paid for until its last request finishes.

Policies are small strategy classes with one method, ``targets(obs) -> counts`` (one per
entry), picked by ``kind``:

* ``utilization`` - ``ceil(ready * metric / target)``, the HPA rule, on the mean busy fraction
  of the ready replicas (``metric="busy"``) or their KV-cache occupancy (``"kv"``);
* ``queue``       - ``ceil(requests in the system / target_per_replica)``;
* ``slo``         - the percentile TTFT / TPOT of the interval (requests still waiting for a
  first token count with their age): above a target, ``ceil(current * worst / target)``;
  below ``scale_down_below`` of every target, one replica fewer;
* ``rate``        - ``ceil(arrival rate / (capacity_rps * target))`` with a replica's measured
  capacity (the closed-form requirement; with ``capacity_rps`` from the simulator this is the
  steady-state sizing rule);
* ``scheduled``   - a replica count per time of day (period ``period_s``);
* ``pd``          - HeteroScale-style coordinated scaling of a disaggregated deployment: the
  decode entry follows ``decode`` (any of the above), the prefill entries keep
  ``prefill_per_decode`` prefill replicas per decode replica (Li et al., "Taming the Chaos:
  Coordinated Autoscaling for Heterogeneous and Disaggregated LLM Inference", 2025: scale the
  two pools together at a fixed ratio, on a decode-side signal).

Cold start of a replica, from the model's size and the node's catalog bandwidths::

    cold_start_s = fixed_s + load_s + warmup_s
    load_s   = max(replica weight bytes / source bandwidth, weight bytes per GPU / host link)
    warmup_s = sum over captured batch sizes b of (warmup_runs + 1) * decode step time(b)

The source is the node's NVMe (``nvme_bw_bps``), host memory (the weights already in page
cache: only the host link limits) or the network (the node's NICs, ``nic_link`` times the
replica's GPUs' NICs). CUDA-graph warm-up follows vLLM, which captures one graph per batch
size of ``cudagraph_capture_sizes`` (1, 2, 4, then multiples of 8 up to the engine profile's
``max_capture_batch``), each after a warm-up run; an engine profile without graphs warms up
nothing. ``cold_start_s`` set explicitly replaces the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from fleetsim.hardware.errors import ConfigError
from fleetsim.sim.serving.config import _Strict
from pydantic import Field, model_validator


@dataclass(frozen=True)
class Observation:
    """What the autoscaler sees of one deployment entry over the interval just ended."""

    now_s: float
    interval_s: float
    role: str
    current: int
    """Replicas ready or starting (not draining): what the policy changes."""
    ready: int
    arrivals_rps: float
    """Requests routed to the entry per second over the interval (plus its share of those held
    while no replica was ready; a decode entry: requests handed over from prefill)."""
    busy: float
    """Mean busy fraction of the ready replicas over the interval (0 with none ready)."""
    kv_occupancy: float
    in_system: int
    """Requests waiting or running on the entry's replicas (plus its share of the held ones)."""
    ttft_s: float
    """The policy's percentile of TTFT over the interval (NaN with no sample)."""
    tpot_s: float


class _Policy(_Strict):
    def desired(self, obs: Observation) -> int:
        raise NotImplementedError

    def targets(self, obs: list[Observation]) -> list[int]:
        """Replica counts wanted per deployment entry."""
        return [self.desired(o) for o in obs]

    @property
    def percentile(self) -> float:
        return 90.0


class UtilizationPolicy(_Policy):
    kind: Literal["utilization"] = "utilization"
    target: float = Field(0.7, gt=0, le=1)
    metric: Literal["busy", "kv"] = "busy"

    def desired(self, obs: Observation) -> int:
        if obs.ready == 0:
            return max(obs.current, 1 if obs.in_system else 0)
        m = obs.busy if self.metric == "busy" else obs.kv_occupancy
        return _ceil(obs.ready * m / self.target)


class QueuePolicy(_Policy):
    kind: Literal["queue"] = "queue"
    target_per_replica: float = Field(gt=0)

    def desired(self, obs: Observation) -> int:
        return _ceil(obs.in_system / self.target_per_replica)


class SloPolicy(_Policy):
    kind: Literal["slo"] = "slo"
    ttft_s: float | None = Field(None, gt=0)
    tpot_s: float | None = Field(None, gt=0)
    slo_percentile: float = Field(90.0, gt=0, lt=100)
    scale_down_below: float = Field(0.5, gt=0, lt=1)

    @model_validator(mode="after")
    def _some(self) -> SloPolicy:
        if self.ttft_s is None and self.tpot_s is None:
            raise ValueError("the slo policy needs ttft_s and/or tpot_s")
        return self

    @property
    def percentile(self) -> float:
        return self.slo_percentile

    def desired(self, obs: Observation) -> int:
        ratios = [v / t for v, t in ((obs.ttft_s, self.ttft_s), (obs.tpot_s, self.tpot_s))
                  if t is not None and math.isfinite(v)]
        if not ratios:
            return obs.current if obs.in_system or obs.arrivals_rps else max(obs.current - 1, 0)
        worst = max(ratios)
        if worst > 1.0:
            return max(_ceil(max(obs.current, 1) * worst), obs.current + 1)
        if worst < self.scale_down_below:
            return obs.current - 1
        return obs.current


class RatePolicy(_Policy):
    kind: Literal["rate"] = "rate"
    capacity_rps: float = Field(gt=0)
    """Requests per second one replica sustains within the SLO (e.g. ``planner`` capacity search)."""
    target: float = Field(1.0, gt=0, le=1)

    def desired(self, obs: Observation) -> int:
        return _ceil(obs.arrivals_rps / (self.capacity_rps * self.target))


class ScheduledPolicy(_Policy):
    kind: Literal["scheduled"] = "scheduled"
    times_s: tuple[float, ...] = Field(min_length=1)
    """Start of each step within the period, increasing, the first 0."""
    replicas: tuple[int, ...] = Field(min_length=1)
    period_s: float = Field(86400.0, gt=0)

    @model_validator(mode="after")
    def _steps(self) -> ScheduledPolicy:
        t = self.times_s
        if len(t) != len(self.replicas):
            raise ValueError(f"times_s has {len(t)} entries, replicas {len(self.replicas)}")
        if t[0] != 0 or any(b <= a for a, b in zip(t, t[1:], strict=False)) or t[-1] >= self.period_s:
            raise ValueError("times_s must start at 0, increase and stay below period_s")
        if min(self.replicas) < 0:
            raise ValueError("replicas must be >= 0")
        return self

    def at(self, now_s: float) -> int:
        i = int(np.searchsorted(self.times_s, now_s % self.period_s, side="right")) - 1
        return self.replicas[i]

    def desired(self, obs: Observation) -> int:
        return self.at(obs.now_s)


SinglePolicy = Annotated[UtilizationPolicy | QueuePolicy | SloPolicy | RatePolicy | ScheduledPolicy,
                         Field(discriminator="kind")]


class PdPolicy(_Policy):
    kind: Literal["pd"] = "pd"
    decode: SinglePolicy
    prefill_per_decode: float = Field(gt=0)

    @property
    def percentile(self) -> float:
        return self.decode.percentile

    def targets(self, obs: list[Observation]) -> list[int]:
        dec = [o for o in obs if o.role == "decode"]
        if not dec or len(dec) == len(obs):
            raise ConfigError("the pd policy needs a disaggregated deployment (prefill and decode entries)")
        d = [self.decode.desired(o) for o in dec]
        total = sum(d)
        n_pre = sum(1 for o in obs if o.role == "prefill")
        pre = _ceil(total * self.prefill_per_decode / n_pre)
        it = iter(d)
        return [next(it) if o.role == "decode" else pre for o in obs]


Policy = Annotated[UtilizationPolicy | QueuePolicy | SloPolicy | RatePolicy | ScheduledPolicy | PdPolicy,
                   Field(discriminator="kind")]


def _ceil(x: float) -> int:
    """``ceil`` that forgives float noise (2.0000000001 -> 2)."""
    return max(0, math.ceil(x - 1e-9))


class ColdStart(_Strict):
    """How a replica's cold start is priced (see the module docstring)."""

    source: Literal["nvme", "host", "network"] = "nvme"
    fixed_s: float = Field(0.0, ge=0)
    """Process / container start before weights load (an assumption of the study)."""
    warmup_runs: int = Field(1, ge=0)
    graph_warmup: bool = True


class AutoscaleConfig(_Strict):
    """Autoscaling of a deployment: policy, limits per entry, interval, delays, cold start."""

    policy: Policy
    min_replicas: int | tuple[int, ...] = 1
    max_replicas: int | tuple[int, ...]
    initial_replicas: int | tuple[int, ...] | None = None
    """Replicas ready at t = 0 (None: the deployment entry's ``replicas``, else the minimum)."""
    interval_s: float = Field(30.0, gt=0)
    scale_up_delay_s: float = Field(0.0, ge=0)
    scale_down_delay_s: float = Field(300.0, ge=0)
    cold_start: ColdStart = Field(default_factory=ColdStart)
    cold_start_s: float | None = Field(None, ge=0)
    """A fixed cold start (seconds) instead of the modelled one."""

    @model_validator(mode="after")
    def _limits(self) -> AutoscaleConfig:
        for name in ("min_replicas", "max_replicas", "initial_replicas"):
            v = getattr(self, name)
            for x in (v if isinstance(v, tuple) else (v,)):
                if x is not None and x < 0:
                    raise ValueError(f"{name} must be >= 0, got {x}")
        return self

    def per_entry(self, n: int, name: str) -> list[int]:
        v = getattr(self, name)
        if isinstance(v, tuple):
            if len(v) != n:
                raise ConfigError(f"autoscale {name}: {len(v)} values for {n} deployment entries")
            return list(v)
        return [v] * n

    def limits(self, n: int) -> tuple[list[int], list[int]]:
        lo, hi = self.per_entry(n, "min_replicas"), self.per_entry(n, "max_replicas")
        for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
            if a > b:
                raise ConfigError(f"autoscale: min_replicas {a} above max_replicas {b} (entry {i})")
            if b < 1:
                raise ConfigError(f"autoscale: max_replicas of entry {i} must be >= 1")
        return lo, hi


class Stabilizer:
    """When a wish to change the replica count is acted on: after it has lasted the scale-up
    (scale-down) delay, in the same direction, at consecutive observations. One per entry;
    the simulator's scaler and the compressed replay both use it."""

    def __init__(self, cfg: AutoscaleConfig) -> None:
        self.up_s = cfg.scale_up_delay_s
        self.down_s = cfg.scale_down_delay_s
        self.since: tuple[int, float] | None = None

    def change(self, now_s: float, current: int, wanted: int) -> int:
        """Replicas to add (positive) or remove (negative) now."""
        if wanted == current:
            self.since = None
            return 0
        sign = 1 if wanted > current else -1
        if self.since is None or self.since[0] != sign:
            self.since = (sign, now_s)
        delay = self.up_s if sign > 0 else self.down_s
        if now_s - self.since[1] + 1e-9 < delay:
            return 0
        self.since = None
        return wanted - current


def capture_sizes(max_capture_batch: int) -> list[int]:
    """vLLM's default CUDA-graph batch sizes up to ``max_capture_batch``: 1, 2, 4, 8, 16, ..."""
    sizes = [b for b in (1, 2, 4) if b <= max_capture_batch]
    sizes += list(range(8, max_capture_batch + 1, 8))
    return sizes


__all__ = ["AutoscaleConfig", "ColdStart", "Observation", "PdPolicy", "Policy", "QueuePolicy", "RatePolicy",
           "ScheduledPolicy", "SloPolicy", "Stabilizer", "UtilizationPolicy", "capture_sizes"]
