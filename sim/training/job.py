"""The training job: what is trained, on which cluster, with which parallelism and recipe.

``TrainJob`` is a strict pydantic model (unknown keys are errors). ``validate_job`` checks it
against the model and the cluster and raises one-line ``ConfigError``s that name the values:
degrees whose product is not the GPU count, ``tp`` not dividing the heads, ``pp * vpp`` not
dividing the layers (or a ``layer_split`` that does not add up), a micro-batch that does not
divide the batch, offload to a tier the cluster lacks.

Parallel dimensions: ``tp`` tensor (Megatron column/row split, optionally with sequence
parallelism), ``cp`` context (ring attention over the sequence), ``pp`` pipeline (``vpp``
virtual stages per GPU for the interleaved schedule), ``dp`` data (ZeRO stage 0-3 or FSDP),
``ep`` expert parallel, carved out of the data-parallel ranks (``ep`` divides ``dp``), as in
Megatron-Core. GPU count = tp * cp * pp * dp.
"""

from __future__ import annotations

from typing import Any, Literal

from fleetsim.calibration.engines import EngineProfile, get_engine
from fleetsim.hardware.errors import ConfigError
from fleetsim.hardware.specs import ClusterSpec
from fleetsim.workloads.models import ModelSpec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Schedule = Literal["gpipe", "1f1b", "interleaved"]
Recompute = Literal["none", "selective", "full"]
OffloadTier = Literal["cpu", "nvme"]
Dim = Literal["tp", "cp", "pp", "dp"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False)


class TrainParallel(_Strict):
    """Parallel degrees and their placement order (innermost first: consecutive ranks)."""

    tp: int = Field(1, ge=1)
    cp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    dp: int = Field(1, ge=1)
    ep: int = Field(1, ge=1)
    vpp: int = Field(1, ge=1, description="virtual pipeline stages (model chunks) per GPU")
    sequence_parallel: bool = False
    layer_split: tuple[int, ...] | None = None
    """Layers per pipeline stage (length pp); None splits evenly."""
    order: tuple[Dim, ...] = ("tp", "cp", "pp", "dp")
    """Placement order, innermost first: TP inside the scale-up domain, then CP, PP, DP."""

    @property
    def world_size(self) -> int:
        return self.tp * self.cp * self.pp * self.dp


class TrainRecipe(_Strict):
    """Numerics and memory recipe.

    ``precision="mixed"`` is Megatron-style mixed precision: 16-bit weights, fp32 master
    weights, fp32 gradient accumulation buffers (``grad_dtype``), fp32 Adam moments: 18 bytes
    per parameter unsharded. ``precision="amp"`` is ``torch.autocast`` over fp32 parameters:
    fp32 weights and gradients plus fp32 Adam moments, 16 bytes per parameter.
    ``dtype`` is the GEMM input type (``fp8`` prices GEMMs at FP8 peak, weights stay bf16).
    """

    dtype: Literal["bf16", "fp16", "fp8"] = "bf16"
    precision: Literal["mixed", "amp"] = "mixed"
    grad_dtype: Literal["fp32", "bf16"] = "fp32"
    attention: Literal["flash", "eager"] = "flash"
    """``eager`` materialises the s x s softmax (the 5as/h activation term of Korthikanti)."""
    dropout: bool = False
    """Dropout masks (1 byte/element) are stored for backward when on (GPT-2, Megatron GPT)."""


MAX_MICRO_BATCHES = 100_000
"""Most micro-batches per pipeline per step that a step simulation accepts. The simulated
schedule grows with the count (about 0.1 s per 10,000 on one core with pp = 1, more with
pp > 1); real jobs accumulate at most a few thousand."""


class TrainJob(_Strict):
    """One training step's configuration (see module doc)."""

    model: ModelSpec
    cluster: ClusterSpec
    global_batch: int = Field(ge=1, description="sequences per optimizer step")
    seq_len: int = Field(ge=1)
    micro_batch: int = Field(1, ge=1)
    parallel: TrainParallel = TrainParallel()
    schedule: Schedule = "1f1b"
    recompute: Recompute = "none"
    zero: int = Field(0, ge=0, le=3)
    fsdp: bool = False
    """PyTorch FSDP (full shard): the ZeRO-3 data flow with per-layer prefetch."""
    recipe: TrainRecipe = TrainRecipe()
    offload_optimizer: OffloadTier | None = None
    offload_params: OffloadTier | None = None
    grad_bucket_bytes: float = Field(40e6 * 4, gt=0)
    """Gradient bucket size for the overlapped DP reduction (Megatron: 40M elements)."""
    overlap_grad_reduce: bool = True
    execution: Literal["eager", "graph"] = "eager"
    """``eager``: every kernel is issued by the host at its measured dispatch cost
    (``dispatch.py``), so small kernels can leave the GPU waiting; ``graph``: CUDA graphs or
    a compiled step (no per-kernel host work)."""
    pool: int = Field(0, ge=0, description="index of the cluster pool that runs the job")
    power_cap_w: float | None = Field(None, gt=0)
    """Board power limit of every GPU of the job (W); None: the GPU's TDP. Checked against the
    GPU's range by ``calibration.power.power_state``."""
    engine: EngineProfile = Field(default_factory=lambda: get_engine("megatron", "training"))
    """The training software (a ``role: training`` profile): its norm kernels, its compute
    slowdown under overlapped data-parallel communication. ``build_train_job`` also takes its
    execution, gradient buckets, overlap and distributed optimizer as the job's defaults."""

    @property
    def zero_stage(self) -> int:
        return 3 if self.fsdp else self.zero

    @property
    def grad_accum(self) -> int:
        """Micro-batches per pipeline per step: global_batch / (micro_batch * dp)."""
        return self.global_batch // (self.micro_batch * self.parallel.dp)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len


def make_job(**kwargs: Any) -> TrainJob:
    """Build a ``TrainJob``, turning pydantic errors into a one-line ``ConfigError``."""
    try:
        return TrainJob(**kwargs)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "job"
        raise ConfigError(f"training job field {loc!r}: {err['msg']} (got {err.get('input')!r})") from None


def stage_layers(job: TrainJob) -> list[int]:
    """Layers held by each pipeline stage (sums to the model's layers)."""
    par, n = job.parallel, job.model.num_layers
    if par.layer_split is not None:
        return list(par.layer_split)
    return [n // par.pp] * par.pp


def validate_job(job: TrainJob) -> None:
    """Raise ``ConfigError`` naming the values when the job cannot be laid out."""
    m, par = job.model, job.parallel
    if job.pool >= len(job.cluster.pools):
        raise ConfigError(f"pool index {job.pool} but cluster {job.cluster.name!r} has {len(job.cluster.pools)} pool(s)")
    gpus = job.cluster.pools[job.pool].gpus
    if par.world_size != gpus:
        raise ConfigError(
            f"tp*cp*pp*dp = {par.tp}*{par.cp}*{par.pp}*{par.dp} = {par.world_size} "
            f"!= {gpus} GPUs of cluster {job.cluster.name!r}"
        )
    if m.num_heads % par.tp:
        raise ConfigError(f"tp={par.tp} does not divide num_heads={m.num_heads} of {m.name!r}")
    if m.num_kv_heads % par.tp and par.tp % m.num_kv_heads:
        raise ConfigError(f"tp={par.tp} and num_kv_heads={m.num_kv_heads} of {m.name!r}: neither divides the other")
    if m.intermediate_size % par.tp:
        raise ConfigError(f"tp={par.tp} does not divide intermediate_size={m.intermediate_size} of {m.name!r}")
    if par.layer_split is not None:
        if len(par.layer_split) != par.pp or sum(par.layer_split) != m.num_layers or min(par.layer_split) < 1:
            raise ConfigError(
                f"layer_split {list(par.layer_split)} must have pp={par.pp} positive entries "
                f"summing to num_layers={m.num_layers}"
            )
        if par.vpp > 1 and any(x % par.vpp for x in par.layer_split):
            raise ConfigError(f"vpp={par.vpp} does not divide every stage of layer_split {list(par.layer_split)}")
    elif m.num_layers % (par.pp * par.vpp):
        raise ConfigError(f"pp*vpp = {par.pp}*{par.vpp} does not divide num_layers={m.num_layers} of {m.name!r}")
    if par.vpp > 1 and job.schedule != "interleaved":
        raise ConfigError(f"vpp={par.vpp} needs schedule 'interleaved', got {job.schedule!r}")
    if job.schedule == "interleaved" and par.pp == 1:
        raise ConfigError("schedule 'interleaved' needs pp > 1")
    if job.global_batch % (job.micro_batch * par.dp):
        raise ConfigError(
            f"micro_batch*dp = {job.micro_batch}*{par.dp} does not divide global_batch={job.global_batch}"
        )
    if job.grad_accum > MAX_MICRO_BATCHES:
        raise ConfigError(
            f"global_batch={job.global_batch} is {job.grad_accum} micro-batches per pipeline per step "
            f"(micro_batch*dp = {job.micro_batch}*{par.dp}); at most {MAX_MICRO_BATCHES} are simulated: "
            "raise micro_batch or dp"
        )
    if job.schedule == "interleaved" and job.grad_accum % par.pp:
        raise ConfigError(
            f"interleaved schedule needs micro-batches per step ({job.grad_accum}) divisible by pp={par.pp}"
        )
    if job.seq_len % par.cp:
        raise ConfigError(f"cp={par.cp} does not divide seq_len={job.seq_len}")
    if par.sequence_parallel and par.tp > 1 and (job.seq_len // par.cp) % par.tp:
        raise ConfigError(f"sequence parallel: tp={par.tp} does not divide seq_len/cp={job.seq_len // par.cp}")
    if par.ep > 1:
        if not m.is_moe:
            raise ConfigError(f"ep={par.ep} but model {m.name!r} has no experts")
        if par.dp % par.ep:
            raise ConfigError(f"ep={par.ep} must divide dp={par.dp} (experts are sharded over DP ranks)")
        if m.num_experts % par.ep:
            raise ConfigError(f"ep={par.ep} does not divide num_experts={m.num_experts} of {m.name!r}")
    if sorted(par.order) != sorted(("tp", "cp", "pp", "dp")):
        raise ConfigError(f"placement order {list(par.order)} must list tp, cp, pp, dp once each")
    node = job.cluster.pools[job.pool].node
    for what, tier in (("optimizer", job.offload_optimizer), ("params", job.offload_params)):
        if tier == "nvme" and node.nvme_bytes <= 0:
            raise ConfigError(f"offload of {what} to 'nvme' but node {node.name!r} has no NVMe (nvme_bytes=0)")
    if job.offload_params is not None and job.zero_stage < 3:
        raise ConfigError(f"offload_params={job.offload_params!r} needs zero=3 or fsdp, got zero={job.zero}")
    if job.engine.role != "training":
        raise ConfigError(f"engine {job.engine.name!r} is a {job.engine.role} profile; a training job needs "
                          "a role: training profile (fleetsim specs engines)")
    if m.is_moe and not job.engine.kernels.supports_moe:
        raise ConfigError(f"engine {job.engine.name!r} does not support mixture-of-experts models "
                          f"({m.name} has {m.num_experts} experts; kernels.supports_moe is false)")


def chunk_layers(job: TrainJob) -> list[list[range]]:
    """Global layer indices of each model chunk: ``[stage][k]`` for chunk ``k`` of a stage.

    Global chunk ``g = k * pp + stage`` (Megatron's interleaved assignment); the model's layers
    are laid out in order of ``g``. Without interleaving (``vpp = 1``) each stage has one chunk.
    """
    par = job.parallel
    p, v = par.pp, par.vpp
    per_stage = stage_layers(job)
    sizes = {k * p + s: per_stage[s] // v for s in range(p) for k in range(v)}
    out: list[list[range]] = [[range(0)] * v for _ in range(p)]
    start = 0
    for g in range(p * v):
        s, k = g % p, g // p
        out[s][k] = range(start, start + sizes[g])
        start += sizes[g]
    return out
