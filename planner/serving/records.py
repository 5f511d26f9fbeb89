"""Typed records of the serving planner's stages: inputs (SLOs, market offers, search space),
candidates, rejections, evaluations (analytic and simulated) and plans.

Every record is a frozen pydantic model with strict keys; a bad value is one
:class:`ConfigError` line naming the field. Infeasibility is a value: a :class:`Rejection`
carries the stage, the bottleneck category and the reason, a :class:`ServingPlans` with
``status="infeasible"`` carries the binding constraint and the closest miss.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from fleetsim.hardware.errors import ConfigError
from fleetsim.planner.milp import _Record as StrictRecord
from pydantic import ConfigDict, Field, model_validator

Objective = Literal["min_cost", "min_gpus", "min_energy", "max_goodput"]
OBJECTIVES: tuple[str, ...] = ("min_cost", "min_gpus", "min_energy", "max_goodput")
Role = Literal["both", "prefill", "decode"]
Bottleneck = Literal["memory", "kv_capacity", "compute", "tpot_slo", "ttft_slo", "goodput",
                     "queue", "inventory", "power_budget", "layout", "max_num_seqs", "prefill_feed"]


class _Record(StrictRecord):
    """Frozen, no unknown keys, lists as tuples; a validation failure is one ConfigError line
    (``planner.milp``'s record base, without strict type coercion)."""

    model_config = ConfigDict(strict=False)


class Slo(_Record):
    """Latency targets at one percentile, and the share of requests that must meet both."""

    _what: ClassVar[str] = "slo"
    ttft_s: float | None = Field(None, gt=0)
    tpot_s: float | None = Field(None, gt=0)
    percentile: float = Field(90.0, gt=0, lt=100)
    goodput_share: float = Field(0.9, gt=0, le=1)
    max_queue_delay_s: float = Field(2.0, gt=0)
    """Without a TTFT target, a rate is sustained only while the p-percentile queueing delay
    stays under this (a queue that grows without bound is not a capacity)."""


class MarketOffer(_Record):
    """A GPU type for rent: its catalog name, $ per GPU-hour and how many GPUs are for rent."""

    _what: ClassVar[str] = "market offer"
    gpu: str = Field(min_length=1)
    price_per_gpu_hour: float = Field(ge=0)
    available: int = Field(ge=0)


class SearchSpace(_Record):
    """The knobs tried per GPU type besides TP/PP (from the layout rules) and EP (MoE)."""

    _what: ClassVar[str] = "search space"
    max_num_seqs: tuple[int, ...] = (64, 256)
    max_num_batched_tokens: tuple[int, ...] = (8192,)
    power_caps: tuple[float, ...] | None = None
    """Power caps as fractions of the GPU's TDP (clipped to its lowest settable cap), tried
    under a power budget or ``min_energy``; None: ``search.CAP_FRACTIONS``."""
    extra_pp: int = Field(0, ge=0)
    """Pipeline depths tried beyond the smallest that fits (each a doubling)."""
    sim_top: int = Field(2, ge=0)
    """Candidates per GPU type whose capacity is simulated (ranked analytically)."""
    sim_requests: int = Field(100, ge=10)
    """Requests per capacity simulation."""
    bisection_steps: int = Field(4, ge=0)
    adapter_slots: tuple[int, ...] = (1, 4, 8, 16, 32, 64)
    """GPU adapter slots tried when the workload carries LoRA adapters (vLLM ``max_loras``:
    adapters resident and per batch); choices above the population size collapse to it."""

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        for name in ("max_num_seqs", "max_num_batched_tokens", "adapter_slots"):
            vals = getattr(self, name)
            if not vals or any(v < 1 for v in vals):
                raise ConfigError(f"search space: {name} must be positive integers, got {vals!r}")
        if self.power_caps is not None and (not self.power_caps or any(not 0 < c <= 1 for c in self.power_caps)):
            raise ConfigError(f"search space: power_caps are fractions of TDP in (0, 1], got {self.power_caps!r}")
        return self


class Knobs(_Record):
    """One candidate replica: where it runs, its layout, scheduler knobs, cap and role."""

    _what: ClassVar[str] = "candidate"
    pool: int = Field(ge=0)
    gpu: str
    tp: int = Field(ge=1)
    pp: int = Field(ge=1)
    ep: int = Field(1, ge=1)
    max_num_seqs: int = Field(ge=1)
    max_num_batched_tokens: int = Field(ge=1)
    power_cap_w: float | None = Field(None, gt=0)
    role: Role = "both"

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def id(self) -> str:
        cap = "" if self.power_cap_w is None else f" cap{self.power_cap_w:g}W"
        ep = f" ep{self.ep}" if self.ep > 1 else ""
        role = "" if self.role == "both" else f" {self.role}"
        return (f"{self.gpu}#{self.pool} tp{self.tp} pp{self.pp}{ep} seqs{self.max_num_seqs} "
                f"tok{self.max_num_batched_tokens}{cap}{role}")


class Rejection(_Record):
    """A candidate pruned or failed, the stage that dropped it, why, and the measure of the
    miss (``miss``: how far from feasible, in the unit the reason names; None when not numeric)."""

    _what: ClassVar[str] = "rejection"
    knobs: Knobs
    stage: Literal["layout", "memory", "analytic", "simulated"]
    bottleneck: Bottleneck
    reason: str
    miss: float | None = None


class Analytic(_Record):
    """The analytic steady state of one replica (``planner.first_plan.size_replica``): the
    batch, what limits it, latencies and requests/s at that batch (an optimistic bound)."""

    _what: ClassVar[str] = "analytic evaluation"
    knobs: Knobs
    batch: int = Field(ge=1)
    limited_by: Bottleneck
    kv_tokens: int = Field(ge=0)
    prefill_s: float = Field(gt=0)
    ttft_s: float = Field(gt=0)
    tpot_s: float = Field(gt=0)
    replica_rps: float = Field(gt=0)
    max_replicas: int = Field(ge=1)


class Capacity(_Record):
    """The highest request rate one replica sustains within the SLO for one bucket, by
    bisection over simulations, and what failed at the first rate above it."""

    _what: ClassVar[str] = "capacity"
    bucket: str
    rps: float = Field(ge=0)
    simulations: int = Field(ge=0)
    limited_by: Bottleneck
    ttft_s: float | None = None
    """p-percentile TTFT at ``rps``."""
    tpot_s: float | None = None
    avg_power_w: float | None = None
    """Mean GPU power of the replica at ``rps`` when the simulator reports energy."""
    j_per_output_token: float | None = None
    closest_miss: str = ""
    """At the lowest rate tried when ``rps`` is 0: the observed value against its target."""


class Evaluation(_Record):
    """A candidate that survived pruning: analytic, then (for the top ones) simulated."""

    _what: ClassVar[str] = "evaluation"
    analytic: Analytic
    capacity: tuple[Capacity, ...] = ()
    price_per_hour: float = Field(ge=0)
    power_w: float = Field(gt=0)
    """Facility watts one replica adds at its cap (the power-budget unit)."""

    @property
    def knobs(self) -> Knobs:
        return self.analytic.knobs

    @property
    def simulated(self) -> bool:
        return bool(self.capacity)

    def capacity_rps(self) -> dict[str, float]:
        """Requests/s per bucket used by the selection (simulated when simulated)."""
        return {c.bucket: c.rps for c in self.capacity if c.rps > 0}


class PoolChoice(_Record):
    """One pool of a plan, as ``--json`` prints it."""

    _what: ClassVar[str] = "pool choice"
    gpu: str
    pool: int
    tp: int
    pp: int
    ep: int
    replicas: int = Field(ge=1)
    role: Role
    power_cap_w: float | None
    engine: str
    max_num_seqs: int
    max_num_batched_tokens: int
    engine_flags: str = ""
    """The server's flags after the model (``planner.serving.commands``)."""
    command: str = ""
    """The whole server command line, run once per replica."""
    engine_files: dict[str, str] = {}
    """Files the command reads (name -> text), e.g. TensorRT-LLM's extra options YAML."""
    power_cap_command: str | None = None
    """``nvidia-smi -i IDS -pl W`` per server when a power cap is chosen."""
    max_loras: int | None = None
    """LoRA: GPU adapter slots (adapters resident and per batch); None without adapters."""
    max_lora_rank: int | None = None
    max_cpu_loras: int | None = None
    """LoRA: adapters kept in pinned host memory."""

    def knobs(self) -> Knobs:
        """The candidate knobs this pool choice was made from."""
        return Knobs(pool=self.pool, gpu=self.gpu, tp=self.tp, pp=self.pp, ep=self.ep, max_num_seqs=self.max_num_seqs,
                     max_num_batched_tokens=self.max_num_batched_tokens, power_cap_w=self.power_cap_w,
                     role=self.role)


class PlanMetrics(_Record):
    """A plan's numbers from a simulation of the whole deployment at the demanded rate."""

    _what: ClassVar[str] = "plan metrics"
    seed: int
    rate_rps: float
    goodput_rps: float
    """The offered rate times the share of requests within both targets (requests/s)."""
    goodput_share: float
    ttft_p90_s: float | None
    ttft_p99_s: float | None
    tpot_p90_s: float | None
    tpot_p99_s: float | None
    output_tokens_per_s: float
    j_per_output_token: float | None = None
    avg_power_w: float | None = None
    meets_slo: bool
    missed: str = ""
    """What failed when ``meets_slo`` is false (observed against target)."""
    lora_hit_rate: float | None = None
    """LoRA: share of first admissions that found their adapter resident."""
    lora_load_stall_s: float | None = None
    """LoRA: seconds iterations waited on adapter loads, all replicas together."""
    lora_adapter_bytes_per_gpu: float | None = None
    kv_bytes_per_gpu: float | None = None


class PlanEntry(_Record):
    """One plan: its pools, the selection's prediction and the check by re-simulation."""

    _what: ClassVar[str] = "plan"
    name: str
    pools: tuple[PoolChoice, ...]
    objective: str
    objective_value: float
    predicted_goodput_rps: float
    cost_per_hour: float
    gpus: int
    gpus_by_type: dict[str, int]
    power_w: float
    binding: tuple[str, ...] = ()
    """Selection constraint families at their limit (availability, power budget)."""
    kv_link: str = ""
    """xPyD: the route and link the KV caches take from prefill to decode."""
    kv_transfer_s: float | None = None
    """xPyD: seconds one mean prompt's KV takes over that link when it is free."""
    checked: PlanMetrics | None = None

    @property
    def meets_slo(self) -> bool | None:
        return None if self.checked is None else self.checked.meets_slo

    @property
    def usd_per_million_tokens(self) -> float | None:
        if self.checked is None or self.checked.output_tokens_per_s <= 0:
            return None
        return self.cost_per_hour / (self.checked.output_tokens_per_s * 3600.0) * 1e6


class SlotOption(_Record):
    """The planner's answer for one adapter-slot count: its best plan's size and cost, the
    re-simulated hit rate and SLO verdict, or why no plan runs with that many slots."""

    _what: ClassVar[str] = "slot option"
    slots: int = Field(ge=1)
    status: str
    gpus: int | None = None
    cost_per_hour: float | None = None
    objective_value: float | None = None
    meets_slo: bool | None = None
    hit_rate: float | None = None
    reason: str = ""


class AdapterPlan(_Record):
    """LoRA settings of the chosen plan and the slot counts weighed against each other.

    ``slots``: GPU adapter slots (vLLM ``max_loras``) of rank ``max_lora_rank``, reserved off
    the KV cache (``adapter_bytes_per_gpu`` against ``kv_bytes_per_gpu``); ``max_cpu_loras``
    adapters in pinned host memory; ``hit_rate`` and ``load_stall_s`` from the whole plan
    re-simulated at the demand; ``hit_rate_by_slots``: one replica of the chosen layout at
    its share of the demand, per slot count."""

    _what: ClassVar[str] = "adapter plan"
    adapters: int = Field(ge=1)
    max_rank: int = Field(ge=1)
    popularity: str
    slots: int = Field(ge=1)
    max_lora_rank: int = Field(ge=1)
    max_cpu_loras: int = Field(ge=1)
    adapter_bytes_per_gpu: float = Field(ge=0)
    kv_bytes_per_gpu: float | None = None
    hit_rate: float | None = None
    load_stall_s: float | None = None
    hit_rate_by_slots: tuple[tuple[int, float], ...] = ()
    options: tuple[SlotOption, ...] = ()

    def describe(self) -> list[str]:
        """Lines of ``ServingPlans.explain`` for the adapters."""
        gib = 2.0**30
        kv = "" if self.kv_bytes_per_gpu is None else f" against {self.kv_bytes_per_gpu / gib:.1f} GiB KV"
        hit = "-" if self.hit_rate is None else f"{self.hit_rate:.3f}"
        stall = "" if self.load_stall_s is None else f", load stalls {self.load_stall_s:.3g} s"
        out = [f"  LoRA: {self.adapters} adapters ({self.popularity}, rank <= {self.max_rank}): "
               f"{self.slots} GPU adapter slots of rank {self.max_lora_rank}, {self.max_cpu_loras} in pinned "
               f"host memory; {self.adapter_bytes_per_gpu / gib:.2f} GiB per GPU for adapters{kv}; "
               f"hit rate {hit}{stall}"]
        if self.hit_rate_by_slots:
            out.append("  hit rate by slots (one replica at its share of the demand): "
                       + ", ".join(f"{s}: {h:.3f}" for s, h in self.hit_rate_by_slots))
        for o in self.options:
            if o.status == "optimal" and o.cost_per_hour is not None:
                verdict = "-" if o.meets_slo is None else ("meets" if o.meets_slo else "misses")
                hr = "" if o.hit_rate is None else f", hit rate {o.hit_rate:.3f}"
                out.append(f"    slots {o.slots}: {o.gpus} GPUs, ${o.cost_per_hour:.2f}/h, {verdict} the SLO{hr}")
            else:
                out.append(f"    slots {o.slots}: no plan ({o.reason})")
        return out
