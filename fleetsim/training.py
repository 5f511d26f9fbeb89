"""Public training-step estimate: ``estimate_train_step`` and its result ``TrainEstimate``.

One call builds a ``TrainJob`` (model, cluster, parallelism, schedule, recomputation, ZeRO,
offload), checks that it lays out and fits, and simulates one optimizer step with the SimPy
engine of ``fleetsim.sim.training``. The result carries the step time, throughput, MFU/HFU,
bubble and exposed communication, the memory breakdown, the per-rank timeline and the
cost of training a given number of tokens.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from fleetsim.calibration.engines import EngineProfile, get_engine
from fleetsim.hardware import catalog
from fleetsim.hardware.checks import non_negative_int, positive, positive_int, validation_line
from fleetsim.hardware.cluster import energy_price, host_power_w, price_per_gpu_hour
from fleetsim.hardware.errors import ConfigError, suggest
from fleetsim.hardware.specs import ClusterSpec, GPUSpec
from fleetsim.sim.training.energy import StepEnergy
from fleetsim.sim.training.job import TrainJob, TrainParallel, TrainRecipe, make_job, validate_job
from fleetsim.sim.training.step import StepResult, simulate_step
from fleetsim.workloads.models import ModelSpec, check_context, load_model
from fleetsim.workloads.parallel import ParallelConfig, parse_parallel

_PAR_FIELDS = ("tp", "cp", "pp", "dp", "ep", "sequence_parallel", "layer_split")


def _cluster(cluster: str | ClusterSpec) -> ClusterSpec:
    if isinstance(cluster, ClusterSpec):
        return cluster
    from fleetsim.hardware.cluster import load_cluster

    return load_cluster(cluster)


def _parallel(parallel: Any, gpus: int, overrides: dict[str, Any]) -> TrainParallel:
    """A ``TrainParallel`` from a ``ParallelConfig``-like object, a dict, shorthand text
    (``"tp=8,pp=2"``, see ``workloads.parallel.parse_parallel``) or None, with keyword
    overrides; an unset ``dp`` fills the GPUs left by tp * cp * pp."""
    base: dict[str, Any] = {}
    if isinstance(parallel, TrainParallel):
        base = parallel.model_dump()
    elif isinstance(parallel, dict):
        base = dict(parallel)
    elif isinstance(parallel, str):
        base = parse_parallel(parallel, "parallel")
    elif isinstance(parallel, ParallelConfig):
        base = {k: getattr(parallel, k) for k in _PAR_FIELDS}
    elif parallel is not None:
        raise ConfigError(f"parallel must be a ParallelConfig, TrainParallel, dict or text such as "
                          f"'tp=8,pp=2', got {type(parallel).__name__}")
    for k, v in overrides.items():
        if v is not None:
            base[k] = v if k in ("sequence_parallel", "order") else positive_int(v, k)
    if "dp" not in base:
        inner = 1
        for k in ("tp", "cp", "pp"):
            inner *= positive_int(base.get(k, 1), f"parallel {k}")
        if gpus % inner:
            raise ConfigError(f"tp*cp*pp = {inner} does not divide the {gpus} GPUs of the cluster")
        base["dp"] = gpus // inner
    try:
        return TrainParallel(**base)
    except ValidationError as exc:
        raise ConfigError(validation_line(exc, "parallel")) from None


@dataclass
class TrainEstimate:
    """One simulated training step. Seconds, bytes, FLOP/s; see ``summary()``."""

    result: StepResult

    @property
    def job(self) -> TrainJob:
        return self.result.job

    @property
    def gpu(self) -> GPUSpec:
        return self.result.gpu

    @property
    def num_gpus(self) -> int:
        return self.job.parallel.world_size

    @property
    def time_s(self) -> float:
        return self.result.step_s

    @property
    def tokens_per_s(self) -> float:
        return self.job.tokens_per_step / self.time_s

    @property
    def time_interval_s(self) -> tuple[float, float]:
        """80% prediction interval of the step time (``calibration.intervals``): class
        ``train_step_host_bound`` when the GPU waits for dispatch >= 10% of the step, else
        ``train_step``; own profile when any operator was measured or interpolated."""
        from fleetsim.calibration.intervals import interval_for

        src = self.sources
        total = sum(src.values())
        host = max(s.host_bound_s for s in self.result.engine.stages) >= 0.1 * self.time_s
        return interval_for(self.time_s, self.gpu.name, "train_step_host_bound" if host else "train_step",
                            own_profile=src.get("measured", 0) + src.get("interpolated", 0) > 0,
                            roofline_share=src.get("roofline", 0) / total if total else 1.0)

    @property
    def time_s_p10(self) -> float:
        return self.time_interval_s[0]

    @property
    def time_s_p90(self) -> float:
        return self.time_interval_s[1]

    @property
    def model_flops_per_s_per_gpu(self) -> float:
        return self.result.model_flops / self.time_s / self.num_gpus

    @property
    def mfu(self) -> float:
        return self.result.mfu

    @property
    def hfu(self) -> float:
        return self.result.hfu

    @property
    def bubble_fraction(self) -> float:
        """Pipeline idle over busy time of the busiest stage ((p-1)/m for 1F1B, (p-1)/(v m)
        interleaved, on uniform stages); idle of lighter stages is ``stage_imbalance_s``."""
        return self.result.bubble_fraction

    @property
    def exposed_comm_s(self) -> float:
        """Communication on the critical path: TP/CP/EP collectives plus waits for DP/ZeRO."""
        return self.result.exposed_comm_s

    @property
    def peak_memory_bytes(self) -> float:
        """Allocated + fragmentation + CUDA context of the fullest stage's GPU."""
        return self.result.peak_memory.total_bytes

    @property
    def peak_allocated_bytes(self) -> float:
        return self.result.peak_memory.allocated_bytes

    @property
    def memory(self) -> pd.DataFrame:
        """Memory breakdown per pipeline stage (bytes)."""
        return pd.DataFrame([m.as_dict() for m in self.result.memory])

    @property
    def breakdown(self) -> dict[str, float]:
        r = self.result
        pm = r.peak_memory
        out = {
            "step_s": r.step_s,
            "compute_s": max(r.stage_compute_s),
            "bubble_fraction": r.bubble_fraction,
            "exposed_comm_s": r.exposed_comm_s,
            "tp_comm_s": r.tp_comm_s,
            "optimizer_s": r.optimizer_s,
            "contention_s": max(s.contention_s for s in r.engine.stages),
            "host_bound_s": max(s.host_bound_s for s in r.engine.stages),
            "stage_imbalance_s": max(r.stage_compute_s) - min(r.stage_compute_s),
            "grad_accum": float(self.job.grad_accum),
        }
        out.update({f"mem_{k}": v for k, v in pm.as_dict().items() if k != "stage"})
        return out

    @property
    def timeline(self) -> pd.DataFrame:
        """Events: stage (rank of the representative GPU), stream, name, start_s, end_s, ..."""
        cols = ["stage", "stream", "name", "start_s", "end_s", "micro_batch", "chunk"]
        return pd.DataFrame(self.result.engine.events, columns=cols)

    @property
    def sources(self) -> dict[str, int]:
        """Provenance of the operator costs (measured / interpolated / roofline counts)."""
        return dict(self.result.sources)

    @property
    def _energy(self) -> StepEnergy:
        e = self.result.energy
        assert e is not None
        return e

    @property
    def energy_j(self) -> float:
        """Board energy of every GPU of the job over one step (J): kernels at their occupancy
        power, bubbles and waits at gap power (``fleetsim.sim.training.energy``)."""
        return self._energy.energy_j

    @property
    def kernel_energy_j(self) -> float:
        return self._energy.kernel_j

    @property
    def gap_energy_j(self) -> float:
        """Board energy of the step's bubbles and waits on every GPU at gap power (J)."""
        return self._energy.gap_j

    @property
    def num_nodes(self) -> int:
        """Nodes the job occupies (its GPUs over the pool's GPUs used per node, rounded up)."""
        per = self.job.cluster.pools[self.job.pool].gpus_used_per_node
        return -(-self.num_gpus // per)

    @property
    def host_power_w(self) -> float:
        """Non-accelerator draw charged to the job's GPUs (W): their slice of the nodes' hosts."""
        return host_power_w(self.job.cluster.pools[self.job.pool].node, self.num_gpus)

    @property
    def energy_facility_j(self) -> float:
        """Facility energy of one step (J): GPU boards plus node hosts, times the cluster's PUE."""
        return (self.energy_j + self.host_power_w * self.time_s) * self.job.cluster.pue

    @property
    def avg_power_w(self) -> float:
        """Average board power per GPU over the step (W)."""
        return self.energy_j / self.time_s / self.num_gpus

    @property
    def j_per_token(self) -> float:
        """GPU board energy per trained token (J)."""
        return self.energy_j / self.job.tokens_per_step

    @property
    def facility_j_per_token(self) -> float:
        return self.energy_facility_j / self.job.tokens_per_step

    @property
    def power_cap_w(self) -> float | None:
        """The GPUs' power limit (W) when below the TDP, else None."""
        return self._energy.power_cap_w

    def energy_to_train_j(self, tokens: float) -> float:
        """Facility energy (J) to train ``tokens`` tokens at this step's energy per token."""
        if not tokens > 0:
            raise ConfigError(f"tokens must be > 0, got {tokens}")
        return self.facility_j_per_token * tokens

    def energy_cost_usd(self, tokens: float) -> float:
        """Electricity cost (USD) of ``energy_to_train_j(tokens)`` at the cluster's price per kWh."""
        return self.energy_to_train_j(tokens) / 3.6e6 * energy_price(self.job.cluster)

    def price_per_gpu_hour(self) -> float | None:
        return price_per_gpu_hour(self.job.cluster, self.job.pool)

    def train_cost(self, tokens: float) -> dict[str, float | None]:
        """Wall time, GPU-hours and cost (USD, None without a catalog price) for ``tokens``."""
        if tokens <= 0:
            raise ConfigError(f"tokens must be > 0, got {tokens}")
        steps = tokens / self.job.tokens_per_step
        time_s = steps * self.time_s
        gpu_h = time_s / 3600.0 * self.num_gpus
        price = self.price_per_gpu_hour()
        return {"steps": steps, "time_s": time_s, "gpu_hours": gpu_h,
                "cost_usd": None if price is None else gpu_h * price,
                "energy_j": self.energy_to_train_j(tokens), "energy_cost_usd": self.energy_cost_usd(tokens)}

    def summary(self, tokens: float | None = None) -> pd.DataFrame:
        """(metric, value, unit) rows for printing."""
        pm = self.result.peak_memory
        rows: list[tuple[str, Any, str]] = [
            ("engine", self.job.engine.name, ""),
            ("gpus", self.num_gpus, ""), ("gpu", self.gpu.name, ""),
            ("step time", self.time_s, "s"),
            ("step time p10", self.time_s_p10, "s"), ("step time p90", self.time_s_p90, "s"),
            ("tokens/s", self.tokens_per_s, "tok/s"),
            ("model FLOP/s per GPU", self.model_flops_per_s_per_gpu / 1e12, "TFLOP/s"),
            ("MFU", self.mfu, ""), ("HFU", self.hfu, ""),
            ("grad accumulation", self.job.grad_accum, "micro-batches"),
            ("bubble fraction", self.bubble_fraction, ""),
            ("exposed comm", self.exposed_comm_s, "s"),
            ("host-bound (GPU waits for dispatch)", max(s.host_bound_s for s in self.result.engine.stages), "s"),
            (f"peak memory (stage {pm.stage})", pm.total_bytes / 2**30, "GiB"),
            ("power cap", "none (TDP)" if self.power_cap_w is None else self.power_cap_w, "W"),
            ("energy per step (GPUs)", self.energy_j / 1e3, "kJ"),
            ("  in bubbles and waits (gap power)", self.gap_energy_j / 1e3, "kJ"),
            ("energy per step (facility)", self.energy_facility_j / 1e3, "kJ"),
            ("energy per token (GPUs)", self.j_per_token, "J/tok"),
            ("energy per token (facility)", self.facility_j_per_token, "J/tok"),
            ("avg power per GPU", self.avg_power_w, "W"),
        ]
        for k, v in pm.as_dict().items():
            if k.endswith("_bytes") and k not in ("total_bytes",) and v > 0:
                rows.append(("  " + k.removesuffix("_bytes"), v / 2**30, "GiB"))
        rows.append(("cost sources", ", ".join(f"{k}={v}" for k, v in sorted(self.sources.items())), ""))
        if tokens is not None:
            c = self.train_cost(tokens)
            rows += [("train tokens", tokens, ""), ("train time", float(c["time_s"] or 0.0) / 86400, "days"),
                     ("GPU-hours", c["gpu_hours"], "h"),
                     ("cost", "n/a (no catalog price)" if c["cost_usd"] is None else c["cost_usd"], "USD"),
                     ("train energy (facility)", float(c["energy_j"] or 0.0) / 3.6e9, "MWh"),
                     ("energy cost", c["energy_cost_usd"], "USD")]
        return pd.DataFrame(rows, columns=["metric", "value", "unit"])

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures (``fleetsim.figures.training_figures``): ``pipeline_timeline``
        (when the timeline was recorded), ``memory`` per stage and ``step_breakdown``."""
        from fleetsim.figures import training_figures

        return training_figures(self)

    def to_chrome_trace(self, path: str | Path) -> Path:
        """Write the per-stage timeline as a Chrome/Perfetto JSON trace."""
        from fleetsim.traces.chrome import write_chrome_trace

        spans = [
            {"process": f"stage {st}", "thread": stream, "name": name, "start_s": a, "dur_s": b - a,
             "args": {"micro_batch": mb, "chunk": ch}}
            for st, stream, name, a, b, mb, ch in self.result.engine.events
        ]
        meta = {"model": self.job.model.name, "cluster": self.job.cluster.name, "step_s": self.time_s}
        return write_chrome_trace(spans, path, metadata=meta)


DEFAULT_SEQ_LEN = 2048


def default_seq_len(model: ModelSpec) -> int:
    """Tokens per sequence when none is given: 2048, or the model's context if shorter."""
    return min(DEFAULT_SEQ_LEN, model.max_position_embeddings)


def resolve_schedule(schedule: str | None, vpp: int) -> str:
    """The pipeline schedule: ``interleaved`` when vpp > 1 and none is given, else ``1f1b``;
    vpp > 1 with an explicit non-interleaved schedule is an error naming both."""
    if schedule is None:
        return "interleaved" if vpp > 1 else "1f1b"
    if not isinstance(schedule, str):
        raise ConfigError(f"schedule must be a name (gpipe, 1f1b, interleaved), got {schedule!r}")
    if vpp > 1 and schedule != "interleaved":
        raise ConfigError(f"vpp = {vpp} needs schedule 'interleaved', got schedule {schedule!r}")
    return schedule


def build_train_job(
    model: str | dict | ModelSpec,
    cluster: str | ClusterSpec,
    parallel: Any = None,
    micro_batch: int = 1,
    global_batch: int | None = None,
    seq_len: int | None = None,
    *,
    recompute: str = "none",
    zero: int | None = None,
    fsdp: bool = False,
    schedule: str | None = None,
    dtype: str = "bf16",
    tp: int | None = None,
    pp: int | None = None,
    dp: int | None = None,
    cp: int | None = None,
    ep: int | None = None,
    vpp: int | None = None,
    sequence_parallel: bool | None = None,
    placement: tuple[str, ...] | None = None,
    offload_optimizer: str | None = None,
    offload_params: str | None = None,
    precision: str | None = None,
    grad_dtype: str = "fp32",
    attention: str = "flash",
    dropout: bool = False,
    overlap_grad_reduce: bool | None = None,
    grad_bucket_bytes: float | None = None,
    execution: str | None = None,
    pool: int = 0,
    engine: str | Path | EngineProfile = "megatron",
    power_cap_w: float | None = None,
) -> TrainJob:
    """The ``TrainJob`` that ``estimate_train_step`` would simulate, checked against the model
    and cluster (``ConfigError`` naming the values when it does not lay out).

    ``engine``: the training profile (name, YAML path or ``EngineProfile``). Options left at
    None take the profile's: ``execution`` (``graph`` for a compiled or CUDA-graph profile,
    else ``eager``), ``precision`` (``amp`` for a profile with ``training.param_dtype: fp32``,
    else ``mixed``), ``overlap_grad_reduce``, ``grad_bucket_bytes``, and ``zero`` (1, the
    optimizer state sharded over data-parallel ranks, when the profile runs a distributed
    optimizer and ``fsdp`` is off; else 0). ``power_cap_w``: board power limit of every GPU
    (W; None: the TDP), within the GPU's range (``calibration.power``)."""
    spec = load_model(model) if not isinstance(model, ModelSpec) else model
    cl = _cluster(cluster)
    pool = non_negative_int(pool, "pool")
    if not 0 <= pool < len(cl.pools):
        raise ConfigError(f"pool index {pool} but cluster {cl.name!r} has {len(cl.pools)} pool(s)")
    if global_batch is None:
        raise ConfigError("global_batch (sequences per step) is required")
    global_batch = positive_int(global_batch, "global_batch")
    micro_batch = positive_int(micro_batch, "micro_batch")
    seq_len = default_seq_len(spec) if seq_len is None else positive_int(seq_len, "seq_len")
    check_context(spec, seq_len, "seq_len")
    prof = get_engine(engine, "training")
    tr = prof.training
    assert tr is not None
    if execution is None:
        execution = "graph" if tr.execution == "graphs" or prof.launch.mode in ("graphs", "compiled") else "eager"
    if precision is None:
        precision = "amp" if tr.param_dtype == "fp32" else "mixed"
    if overlap_grad_reduce is None:
        overlap_grad_reduce = tr.overlap_grad_reduce
    if grad_bucket_bytes is None and tr.grad_bucket_bytes is not None:
        grad_bucket_bytes = tr.grad_bucket_bytes.value
    if zero is None:
        zero = 1 if tr.distributed_optimizer and fsdp is False else 0
    zero = non_negative_int(zero, "zero")
    if fsdp is True and zero not in (0, 3):
        raise ConfigError(f"fsdp shards parameters, gradients and optimizer state (ZeRO-3); zero={zero} "
                          "contradicts it (give zero=3 or leave zero out)")
    gpu_spec = catalog.get_gpu(cl.pools[pool].node.gpu)
    if power_cap_w is not None:
        from fleetsim.calibration.power import power_state

        if isinstance(power_cap_w, bool) or not isinstance(power_cap_w, (int, float)):
            raise ConfigError(f"power_cap_w must be a number of watts, got {power_cap_w!r}")
        power_cap_w = power_state(gpu_spec, power_cap_w).cap_w
    if dtype in ("bf16", "fp8") and dtype not in gpu_spec.peak_flops:
        raise ConfigError(f"dtype={dtype!r}: {gpu_spec.name} has no {dtype} arithmetic "
                          f"(it has {', '.join(sorted(gpu_spec.peak_flops))})")
    for name, flag in (("fsdp", fsdp), ("dropout", dropout), ("overlap_grad_reduce", overlap_grad_reduce)):
        if not isinstance(flag, bool):
            raise ConfigError(f"{name} must be True or False, got {flag!r}")
    if grad_bucket_bytes is not None:
        grad_bucket_bytes = positive(grad_bucket_bytes, "grad_bucket_bytes")
    par = _parallel(parallel, cl.pools[pool].gpus, {
        "tp": tp, "pp": pp, "dp": dp, "cp": cp, "ep": ep, "vpp": vpp,
        "sequence_parallel": sequence_parallel, "order": placement,
    })
    schedule = resolve_schedule(schedule, par.vpp)
    kwargs: dict[str, Any] = dict(
        model=spec, cluster=cl, global_batch=global_batch, seq_len=seq_len, micro_batch=micro_batch,
        parallel=par, schedule=schedule, recompute=recompute, zero=zero, fsdp=fsdp,
        recipe=_recipe(dtype, precision, grad_dtype, attention, dropout),
        offload_optimizer=offload_optimizer, offload_params=offload_params,
        overlap_grad_reduce=overlap_grad_reduce, execution=execution, pool=pool, engine=prof,
        power_cap_w=power_cap_w,
    )
    if grad_bucket_bytes is not None:
        kwargs["grad_bucket_bytes"] = grad_bucket_bytes
    job = make_job(**kwargs)
    validate_job(job)
    return job


def estimate_train_step(
    model: str | dict | ModelSpec,
    cluster: str | ClusterSpec,
    parallel: Any = None,
    micro_batch: int = 1,
    global_batch: int | None = None,
    seq_len: int | None = None,
    *,
    gpu: GPUSpec | None = None,
    cost_model: Any = None,
    record_timeline: bool = True,
    check_memory: bool = True,
    **options: Any,
) -> TrainEstimate:
    """Simulate one optimizer step of training ``model`` on ``cluster``.

    ``cluster`` is a shorthand such as ``"2xH200-SXM"``, a YAML path or a ``ClusterSpec``;
    ``parallel`` a ``ParallelConfig``, ``TrainParallel``, dict or None (the keyword degrees
    override it; ``dp`` defaults to the GPUs left over). ``global_batch`` is in sequences;
    gradient accumulation is ``global_batch / (micro_batch * dp)``. ``engine`` (an option,
    default ``megatron``): the training software's profile (``fleetsim specs engines``), whose
    norm kernels, launch mode, gradient buckets and overlap, distributed optimizer and
    compute slowdown under overlapped communication price the step. ``execution="eager"``
    bounds every kernel sequence by the host's dispatch cost (PyTorch eager, see
    ``fleetsim.sim.training.dispatch``); ``"graph"`` prices CUDA-graph/compiled execution
    with no per-kernel host work (None: the profile's). ``options`` are ``build_train_job``'s keywords (recompute,
    zero, fsdp, schedule, dtype, the parallel degrees, precision, attention, execution, ...)
    with its defaults. Raises ``ConfigError`` for layouts that do not divide and
    ``InfeasibleError`` (with the breakdown) when the step does not fit in memory.
    """
    known = inspect.signature(build_train_job).parameters
    for name in options:
        if name not in known:
            raise ConfigError(f"estimate_train_step: unknown option {name!r}{suggest(name, known)}")
    job = build_train_job(model, cluster, parallel, micro_batch, global_batch, seq_len, **options)
    return TrainEstimate(simulate_step(job, gpu, cost_model, record=record_timeline, check_memory=check_memory))


def _recipe(dtype: str, precision: str, grad_dtype: str, attention: str, dropout: bool) -> TrainRecipe:
    checks = (("dtype", dtype, ("bf16", "fp16", "fp8")), ("precision", precision, ("mixed", "amp")),
              ("grad_dtype", grad_dtype, ("fp32", "bf16")), ("attention", attention, ("flash", "eager")))
    for name, value, ok in checks:
        if value not in ok:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(ok)}")
    return TrainRecipe(dtype=dtype, precision=precision, grad_dtype=grad_dtype,  # type: ignore[arg-type]
                       attention=attention, dropout=dropout)  # type: ignore[arg-type]


__all__ = ["TrainEstimate", "build_train_job", "estimate_train_step"]
