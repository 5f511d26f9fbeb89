"""Serving deployment configuration: strict, nested pydantic models.

A ``Deployment`` says how a model is served on a cluster: per pool (GPU type) the
parallel layout of one replica, how many replicas, the engine knobs (scheduler, KV cache,
preemption, prefix caching, speculative decoding) and the replica's role (``both``, or
``prefill``/``decode`` for prefill/decode disaggregation); plus the router and the
admission queue limit. Unknown keys are errors. Scheduler variants are a discriminated
union on ``kind`` so YAML/JSON picks one by name.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fleetsim.calibration.engines import EngineProfile
from fleetsim.hardware.checks import validation_line
from fleetsim.hardware.errors import ConfigError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def __init__(self, **data: object) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            err = e.errors()[0]
            if err["type"] == "extra_forbidden":
                loc = ".".join(str(x) for x in err["loc"])
                known = ", ".join(type(self).model_fields)
                raise ConfigError(f"{type(self).__name__}: unknown key {loc!r} (known: {known})") from None
            raise ConfigError(validation_line(e, type(self).__name__)) from None


class VllmScheduler(_Strict):
    """Continuous batching, vLLM-v1 style: every iteration first serves running requests
    (decodes, unfinished prefill chunks), then admits waiting requests FCFS while the token
    budget ``max_num_batched_tokens``, ``max_num_seqs`` and free KV blocks allow. With
    ``chunked_prefill`` a prompt larger than the remaining budget is split over iterations;
    without it a prompt must fit the budget whole (prompts longer than the budget are
    rejected at admission)."""

    kind: Literal["vllm"] = "vllm"
    max_num_seqs: int = Field(256, ge=1)
    max_num_batched_tokens: int = Field(8192, ge=1)
    chunked_prefill: bool = True


class StaticScheduler(_Strict):
    """Request-level (static) batching baseline: when the engine is empty, admit up to
    ``max_num_seqs`` waiting requests FCFS (KV reserved for prompt + output, so nothing is
    ever preempted), prefill them together, decode until *all* finish, then admit again."""

    kind: Literal["static"] = "static"
    max_num_seqs: int = Field(32, ge=1)


SchedulerConfig = Annotated[VllmScheduler | StaticScheduler, Field(discriminator="kind")]


class SpecDecode(_Strict):
    """Speculative decoding: a proposer drafts ``k`` tokens per sequence, the target model
    verifies them in one step with ``k + 1`` query tokens. Each draft token is accepted with
    probability ``acceptance_rate`` independently until the first rejection, so the tokens
    emitted per step follow a geometric law truncated at ``k + 1`` with mean
    ``(1 - a^(k+1)) / (1 - a)``. ``method="draft"`` runs ``k`` decode steps of
    ``draft_model`` (same TP as the target); ``"ngram"`` proposes by prompt lookup at no GPU
    cost."""

    method: Literal["draft", "ngram"] = "ngram"
    draft_model: str | None = None
    num_speculative_tokens: int = Field(4, ge=1, le=64)
    acceptance_rate: float = Field(0.7, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> SpecDecode:
        if self.method == "draft" and not self.draft_model:
            raise ValueError("method='draft' needs draft_model")
        if self.method == "ngram" and self.draft_model:
            raise ValueError("method='ngram' takes no draft_model")
        return self


class LoraConfig(_Strict):
    """Multi-tenant LoRA serving (vLLM's ``--enable-lora`` knobs; S-LoRA's unified pool).

    ``max_loras`` distinct adapters may run in one batch (vLLM's ``max_loras``); a waiting
    request whose adapter would exceed it is skipped for this iteration, as vLLM does.
    Adapter memory: ``slots`` reserves ``gpu_slots`` (default ``max_loras``) slots sized for
    ``max_lora_rank`` off the KV cache, as vLLM does; ``unified`` keeps adapters in KV blocks
    of the same paged pool, each taking the blocks its own rank needs (S-LoRA). Adapters
    not in use are evicted least-recently-used. A load copies the adapter from host memory
    over the host link and delays the iteration that first uses it (vLLM activates adapters
    before the forward pass); adapters in the pinned host cache (``max_cpu_loras``, None:
    all) load at the pinned rate, the rest at the pageable rate. LoRA kernels: ``kernel``
    (measured tables where the GPU's profile has ``lora.csv``, else the roofline)."""

    max_loras: int = Field(4, ge=1)
    gpu_slots: int | None = Field(None, ge=1)
    max_cpu_loras: int | None = Field(None, ge=1)
    max_lora_rank: int = Field(64, ge=1)
    memory: Literal["slots", "unified"] = "slots"
    kernel: Literal["sgmv_grouped_mm", "sgmv_loop", "bgmv_gather", "roofline"] = "sgmv_grouped_mm"

    @model_validator(mode="after")
    def _check(self) -> LoraConfig:
        if self.gpu_slots is not None and self.max_loras > self.gpu_slots:
            raise ValueError(f"max_loras {self.max_loras} > gpu_slots {self.gpu_slots}: more adapters per "
                             "batch than adapter slots")
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.slots:
            raise ValueError(f"max_cpu_loras {self.max_cpu_loras} < {self.slots} GPU adapter slots "
                             "(vLLM needs max_cpu_loras >= max_loras)")
        return self

    @property
    def slots(self) -> int:
        """GPU adapter slots (``slots`` memory)."""
        return self.gpu_slots if self.gpu_slots is not None else self.max_loras


class EngineConfig(_Strict):
    """Knobs of one serving engine (one replica)."""

    scheduler: SchedulerConfig = Field(default_factory=VllmScheduler)
    block_size: int = Field(16, ge=1, le=1024)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    activation_reserve_bytes: float | None = Field(None, ge=0)
    """GPU memory kept for activations/workspace per GPU; None: the peak activation of a
    ``max_num_batched_tokens`` forward pass from ``workloads.memory`` (else 1 GiB)."""
    preemption_mode: Literal["recompute", "swap"] = "recompute"
    swap_space_bytes: float = Field(4 * 2**30, ge=0)
    """Host memory per GPU for swapped-out KV blocks (vLLM's ``swap_space``)."""
    enable_prefix_caching: bool = False
    spec_decode: SpecDecode | None = None
    dtype: str = "bf16"
    kv_dtype: str = "bf16"
    profile: str = "vllm"
    """Engine profile (``fleetsim specs engines``) or a profile YAML path: the kernels, CUDA-graph
    rule and per-iteration scheduler time the step timer prices."""
    sched_overhead_s: float | None = Field(None, ge=0)
    """CPU time per engine iteration (scheduling, input preparation, detokenisation) that
    the GPU waits on; None: the profile's ``launch.iteration_overhead_s`` (vLLM: 2 ms)."""
    lora: LoraConfig | None = None
    """Serve LoRA adapters (None: requests' adapters are an error)."""
    fast_forward: bool = True
    """Advance runs of identical pure-decode iterations in closed form (same results)."""
    power_cap_w: float | None = Field(None, gt=0)
    """Board power limit of the pool's GPUs (W), within the GPU's ``[min_power_cap_w, tdp_w]``
    (checked when the replicas are placed); None: the TDP. Kernels whose demand exceeds it run
    at a lower SM clock (``calibration.power_cap``), slower and at lower power."""

    @model_validator(mode="after")
    def _static_has_no_prefix_cache(self) -> EngineConfig:
        if self.enable_prefix_caching and self.scheduler.kind == "static":
            raise ValueError("enable_prefix_caching needs the vllm scheduler; static batching keeps no prefix cache")
        if self.lora is not None and self.scheduler.kind == "static":
            raise ValueError("lora needs the vllm scheduler")
        return self


    @model_validator(mode="after")
    def _profile(self) -> EngineConfig:
        from fleetsim.calibration.engines import get_engine

        get_engine(self.profile)  # unknown names: one line with close matches
        return self

    @property
    def engine_profile(self) -> EngineProfile:
        """The resolved serving profile, with this config's scheduler time when set."""
        from fleetsim.calibration.engines import get_engine

        prof = get_engine(self.profile)
        return prof if self.sched_overhead_s is None else prof.with_overhead(self.sched_overhead_s)


class PoolDeployment(_Strict):
    """Replicas of one layout on one pool of the cluster."""

    gpu: str | None = None
    """Catalog GPU name of the cluster pool to use; None: the first pool."""
    pool: int | None = Field(None, ge=0)
    """Index of the cluster pool (overrides ``gpu`` when pools share a GPU type)."""
    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    ep: int = Field(1, ge=1)
    replicas: int | None = Field(None, ge=1)
    """None: as many as the pool's GPUs allow (left after earlier entries on that pool)."""
    role: Literal["both", "prefill", "decode"] = "both"
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp


RouterName = Literal["round_robin", "least_outstanding_tokens", "prefix_aware", "adapter_affinity"]


class Deployment(_Strict):
    """How the model is served: replica groups, router, admission limit, time cap."""

    pools: tuple[PoolDeployment, ...] = Field(min_length=1)
    router: RouterName = "least_outstanding_tokens"
    queue_limit: int | None = Field(None, ge=0)
    """Most requests waiting (not yet running) per replica; an arrival routed to a replica
    at the limit is rejected. None: unlimited."""
    max_sim_time_s: float | None = Field(None, gt=0)
    """Stop simulating at this time; requests not finished are reported unfinished.
    None: last arrival + 24 h."""

    @model_validator(mode="after")
    def _check(self) -> Deployment:
        roles = {p.role for p in self.pools}
        if ("prefill" in roles) != ("decode" in roles):
            raise ValueError("disaggregation needs both a 'prefill' and a 'decode' pool entry")
        if "both" in roles and len(roles) > 1:
            raise ValueError("do not mix role 'both' with 'prefill'/'decode' entries")
        return self

    @property
    def disaggregated(self) -> bool:
        return any(p.role == "prefill" for p in self.pools)
