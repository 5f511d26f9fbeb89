"""Engine profiles: what a piece of serving or training software does, as data.

A GPU spec says what the hardware can do; an ``EngineProfile`` says what the software runs
on it: which operators are separate kernels and which are fused (``kernels``), how the host
launches them (``launch``: eager dispatch, CUDA graphs and their capture sizes, compiled
regions, per-iteration scheduler time), how tensor-parallel collectives run
(``collectives``), what memory it keeps aside (``memory``) and, for training engines, how
gradients are reduced (``training``). Every number is a ``Fitted`` value that names its
source: a fit (the data file and rows it was fitted on, the rows it was tested on, the
date) or a documented default (the engine's docs or source file).

Profiles ship as YAML in ``calibration/engines/<role>/<name>.yaml`` (role ``serving`` or
``training``); ``get_engine`` resolves a name (with close matches when unknown), a YAML
path or an ``EngineProfile``. Errors are one line naming the file and the key.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from fleetsim.hardware.checks import validation_line
from fleetsim.hardware.errors import ConfigError, suggest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ENGINE_DIR = Path(__file__).resolve().parent / "engines"
"""Shipped engine profiles: ``engines/<role>/<name>.yaml``."""

Role = Literal["serving", "training"]
ROLES: tuple[Role, ...] = ("serving", "training")
SOURCE_PREFIXES = ("fit:", "spec:", "engine docs:", "default:")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Fitted(_Strict):
    """A number with its provenance. ``source`` starts with ``fit:`` (then ``fit_rows``,
    ``test_rows`` and ``date`` say which data fitted it and which checked it), ``spec:``,
    ``engine docs:`` (a URL or source file) or ``default:`` (a documented choice)."""

    value: float = Field(ge=0)
    source: str = Field(min_length=5)
    fit_rows: str | None = None
    test_rows: str | None = None
    date: str | None = None

    @model_validator(mode="after")
    def _provenance(self) -> Fitted:
        if not self.source.startswith(SOURCE_PREFIXES):
            raise ValueError(f"source must start with one of {', '.join(SOURCE_PREFIXES)}, got {self.source!r}")
        if self.source.startswith("fit:") and not (self.fit_rows and self.test_rows and self.date):
            raise ValueError("a fitted value needs fit_rows, test_rows and date")
        return self


Placement = Literal["separate", "fused"]


class Kernels(_Strict):
    """The per-layer kernel sequence. ``separate``: the operator is its own kernel(s)
    (``*_kernels`` of them, e.g. Hugging Face's fp32 RMSNorm: cast, pow, mean, add, rsqrt,
    mul, cast, mul); ``fused``: folded into a neighbour (a GEMM epilogue/prologue or the
    attention kernel), no launch of its own."""

    fused_qkv: bool = True
    """Q, K, V projections as one GEMM (else three)."""
    fused_gate_up: bool = True
    """Gated-MLP gate and up projections as one GEMM (else two)."""
    norm: Literal["separate", "fused_residual", "fused_gemm"] = "fused_residual"
    """``fused_residual``: one add+RMSNorm kernel (vLLM ``fused_add_rms_norm``); ``separate``:
    norm kernels plus a separate residual add; ``fused_gemm``: in the next GEMM's prologue
    (Transformer Engine LayerNormLinear), residual add fused into the previous epilogue."""
    norm_kernels: int = Field(1, ge=1, le=16)
    norm_fp32: bool = False
    """Norm computed on an fp32 upcast (its kernels move 4-byte values)."""
    rotary: Placement = "separate"
    rotary_kernels: int = Field(1, ge=1, le=32)
    """Kernels of the rotary embedding of q and k together (rotate-half: mul, neg, cat, mul, add each)."""
    activation: Placement = "separate"
    activation_kernels: int = Field(1, ge=1, le=8)
    """Kernels of the gated activation (1: fused silu*mul; 2: silu, then mul)."""
    bias: Placement = "fused"
    quantize: Placement = "fused"
    logits: Literal["all", "last"] = "last"
    """LM head on every position of a prefill or only on the sampled ones."""
    logits_fp32: bool = False
    """Logits upcast to fp32 before sampling/loss (an extra cast kernel over them)."""
    attention_backend: str = Field("flash", min_length=1)
    """Name of the attention kernel family (documentation; priced from the GPU profile)."""
    decode_kv_expand: bool = False
    """Decode repeats K/V to every query head before a prefill-style attention kernel
    (SDPA without GQA support): two KV-sized copies per layer, attention reads H heads."""
    kv_expand_bytes_per_sm_cycle: Fitted | None = None
    """Bytes (read + written) the ``decode_kv_expand`` copy moves per SM per clock cycle:
    ``repeat_kv`` reads a broadcast (stride-0) view, which PyTorch copies with its
    non-vectorized elementwise kernel, bound by the SMs' index arithmetic rather than by
    HBM; the copy takes the longer of its bytes / (this x the GPU's ``compute_units`` x
    ``max_clock_hz``) and a contiguous copy of the same bytes (None: a contiguous copy)."""
    extra_kernels_prefill: Fitted | None = None
    """Further small kernels per layer in a prefill (views that copy, masks, casts)."""
    extra_kernels_decode: Fitted | None = None
    """Further small kernels per layer in a decode step (cache update, position ids)."""
    extra_kernels_backward: Fitted | None = None
    """Further small kernels per layer in a training backward (autograd's per-input gradient
    kernels, casts and layout copies of eager PyTorch that the operator graph does not list)."""
    supports_moe: bool = True

    @model_validator(mode="after")
    def _kv_expand(self) -> Kernels:
        rate = self.kv_expand_bytes_per_sm_cycle
        if rate is not None and not self.decode_kv_expand:
            raise ValueError("kv_expand_bytes_per_sm_cycle prices the decode_kv_expand copy: set decode_kv_expand")
        if rate is not None and rate.value <= 0:
            raise ValueError(f"kv_expand_bytes_per_sm_cycle must be > 0, got {rate.value}")
        return self


class Launch(_Strict):
    """How work reaches the GPU. ``eager``: the host issues every kernel call
    (``host_dispatch_s`` each, or ``"profile"``: the GPU profile's measured PyTorch dispatch
    table) and the iteration is the host/device two-stage pipeline; ``graphs``: every
    iteration replays a CUDA graph (sum of kernel times); ``graphs_decode_only``: pure-decode
    batches of at most ``max_capture_batch`` sequences replay graphs, other iterations run
    eagerly; ``compiled``: eager launches of compiled regions (``region_host_s`` of host
    time each, one region per layer) with fused elementwise kernels. ``host_overlap``:
    eager iterations hide the host behind the device (the iteration takes the sum of eager
    kernel times)."""

    mode: Literal["eager", "graphs", "graphs_decode_only", "compiled"]
    host_dispatch_s: Literal["profile"] | Fitted = "profile"
    max_capture_batch: int | None = Field(None, ge=1)
    host_overlap: bool = False
    iteration_overhead_s: Fitted
    """Per-iteration CPU time (scheduler, sampler, detokenizer) the GPU waits on."""
    seq_overhead_s: Fitted | None = None
    """CPU time the GPU waits on per scheduled sequence per iteration (building its block
    table and sampling metadata, detokenizing its token); None: none."""
    region_host_s: Fitted | None = None

    @model_validator(mode="after")
    def _modes(self) -> Launch:
        if self.mode == "graphs_decode_only" and self.max_capture_batch is None:
            raise ValueError("mode 'graphs_decode_only' needs max_capture_batch")
        if self.mode in ("eager", "compiled") and self.max_capture_batch is not None:
            raise ValueError(f"mode {self.mode!r} captures no CUDA graphs: remove max_capture_batch")
        if self.mode == "compiled" and self.region_host_s is None:
            raise ValueError("mode 'compiled' needs region_host_s")
        return self

    @property
    def has_graphs(self) -> bool:
        return self.mode in ("graphs", "graphs_decode_only")

    def overhead_s(self, num_seqs: int) -> float:
        """Host seconds the GPU waits on in an iteration of ``num_seqs`` sequences."""
        per_seq = self.seq_overhead_s.value if self.seq_overhead_s is not None else 0.0
        return self.iteration_overhead_s.value + per_seq * max(int(num_seqs), 0)


class Collectives(_Strict):
    """TP all-reduce inside layers: ``nccl`` (ring, alpha-beta on the link) or
    ``custom_oneshot`` (each rank reads every peer's buffer once over NVLink: one latency,
    (n-1) x bytes) for messages up to ``oneshot_max_bytes``, NCCL above."""

    tp_allreduce: Literal["nccl", "custom_oneshot"] = "nccl"
    oneshot_max_bytes: Fitted | None = None
    overlapped: bool = False
    """Collectives run concurrently with compute (not on the iteration's critical path)."""

    @model_validator(mode="after")
    def _oneshot(self) -> Collectives:
        if self.tp_allreduce == "custom_oneshot" and self.oneshot_max_bytes is None:
            raise ValueError("tp_allreduce 'custom_oneshot' needs oneshot_max_bytes")
        return self


class Memory(_Strict):
    """Memory the engine keeps beside weights and KV cache."""

    activation_reserve_fraction: Fitted | None = None
    """Share of GPU memory held for activations/workspace (None: from the forward's peak)."""
    fragmentation_fraction: Fitted | None = None
    """Share of allocated memory lost to the caching allocator."""
    keeps_fp32_logits: bool = False
    """Training keeps an fp32 copy of the logits for the loss's backward."""
    optimizer_kernels: Literal["fused", "foreach", "per_tensor"] = "fused"


class Training(_Strict):
    """Gradient reduction of a data-parallel training step."""

    grad_bucket_bytes: Fitted | None = None
    overlap_grad_reduce: bool = True
    distributed_optimizer: bool = False
    comm_slowdown: Fitted | None = None
    """Compute slowdown while collectives share the SMs and HBM (None: none)."""
    execution: Literal["eager", "graphs"] = "eager"
    param_dtype: Literal["bf16", "fp32"] = "bf16"
    """Parameter dtype. ``bf16``: 16-bit weights with fp32 master copies (Megatron mixed
    precision, recipe ``precision="mixed"``); ``fp32``: fp32 parameters under
    ``torch.autocast`` (recipe ``precision="amp"``: a bf16 cast of every weight before its
    GEMM in each forward, fp32 norm and residual traffic, fp32 weight gradients)."""


class EngineProfile(_Strict):
    """One piece of serving or training software (see the module docstring)."""

    name: str = Field(min_length=1)
    role: Role
    description: str = ""
    version: str = ""
    """Engine version the profile describes."""
    kernels: Kernels = Field(default_factory=Kernels)
    launch: Launch
    collectives: Collectives = Field(default_factory=Collectives)
    memory: Memory = Field(default_factory=Memory)
    training: Training | None = None

    @model_validator(mode="after")
    def _role(self) -> EngineProfile:
        if self.role == "training" and self.training is None:
            raise ValueError("a training profile needs a 'training' section")
        if self.role == "serving" and self.training is not None:
            raise ValueError("a serving profile takes no 'training' section")
        return self

    def with_overhead(self, seconds: float) -> EngineProfile:
        """This profile with its per-iteration host time replaced by ``seconds`` whatever
        the batch (an engine knob; 0 for a pipeline stage that runs no scheduler)."""
        over = Fitted(value=seconds, source="default: set by the deployment's engine config")
        launch = self.launch.model_copy(update={"iteration_overhead_s": over, "seq_overhead_s": None})
        return self.model_copy(update={"launch": launch})

    def with_launch_mode(self, graphs: bool) -> EngineProfile:
        """This profile with every iteration captured (``graphs``) or eager, host dispatch
        and overlap unchanged (the ``graphs=`` override of ``estimate_forward``); the profile
        itself when it already launches that way."""
        if self.launch.mode == ("graphs" if graphs else "eager"):
            return self
        launch = self.launch.model_copy(update={"mode": "graphs" if graphs else "eager",
                                                "max_capture_batch": None})
        return self.model_copy(update={"launch": launch,
                                       "name": f"{self.name}[{'graphs' if graphs else 'eager'}]"})


def _fail(where: str, exc: ValidationError) -> ConfigError:
    return ConfigError(validation_line(exc, where))


def parse_engine(data: object, where: str) -> EngineProfile:
    """An ``EngineProfile`` from a mapping (``where`` names the source in errors)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: an engine profile must be a mapping of keys, got {type(data).__name__}")
    try:
        return EngineProfile(**data)
    except ValidationError as exc:
        raise _fail(where, exc) from None


def load_engine_file(path: str | Path) -> EngineProfile:
    """Read and validate one profile YAML (one-line errors naming the file and the key)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"engine profile file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{line} not valid YAML") from None
    return parse_engine(data, str(p))


@lru_cache(maxsize=1)
def _catalog() -> dict[tuple[str, str], Path]:
    out: dict[tuple[str, str], Path] = {}
    for role in ROLES:
        for path in sorted((ENGINE_DIR / role).glob("*.yaml")):
            out[(role, path.stem)] = path
    return out


def engine_names(role: Role = "serving") -> list[str]:
    """Names of the shipped profiles of ``role``."""
    return [name for (r, name) in _catalog() if r == role]


@lru_cache(maxsize=64)
def _shipped(role: str, name: str) -> EngineProfile:
    prof = load_engine_file(_catalog()[(role, name)])
    if prof.name != name or prof.role != role:
        raise ConfigError(f"{_catalog()[(role, name)]}: name/role {prof.name!r}/{prof.role!r} "
                          f"do not match the file's place {role}/{name}")
    return prof


def get_engine(engine: str | Path | EngineProfile, role: Role = "serving") -> EngineProfile:
    """An engine profile: a shipped name of ``role`` (case-insensitive), a YAML path or an
    ``EngineProfile`` (returned as is, after checking its role)."""
    if isinstance(engine, EngineProfile):
        prof = engine
    elif isinstance(engine, str | Path):
        text = str(engine).strip()
        key = text.lower()
        if (role, key) in _catalog():
            return _shipped(role, key)
        if text.endswith((".yaml", ".yml")) or "/" in text or isinstance(engine, Path):
            prof = load_engine_file(text)
        else:
            names = engine_names(role)
            raise ConfigError(f"unknown {role} engine {text!r}{suggest(text, names)} "
                              f"(known: {', '.join(names)}; or a profile YAML path)")
    else:
        raise ConfigError(f"engine must be a name, a YAML path or an EngineProfile, got {type(engine).__name__}")
    if prof.role != role:
        raise ConfigError(f"engine {prof.name!r} is a {prof.role} profile, a {role} one is needed here")
    return prof


def fitted_values(profile: EngineProfile) -> list[tuple[str, Fitted]]:
    """(dotted key, value) of every number in ``profile``, for listings and provenance checks."""
    out: list[tuple[str, Fitted]] = []

    def walk(obj: BaseModel, prefix: str) -> None:
        for key in type(obj).model_fields:
            v = getattr(obj, key)
            if isinstance(v, Fitted):
                out.append((prefix + key, v))
            elif isinstance(v, BaseModel):
                walk(v, prefix + key + ".")

    walk(profile, "")
    return out
