"""One serving iteration's time, priced as an engine profile says: the one owner of it.

``price_iteration`` builds the operator graph of a batch with the profile's kernel sequence
(``workloads.graph.serving_step_ops(kernels=...)``), prices each operator with the cost
model and combines the times as the profile launches them:

* captured (CUDA graph replay: ``launch.mode`` ``graphs``, or ``graphs_decode_only`` for a
  pure-decode batch of at most ``max_capture_batch`` sequences): the kernels replay back to
  back, the iteration is the sum of ``count x`` graph kernel time;
* eager with ``host_overlap`` (an engine whose CPU runs ahead of the GPU): the sum of eager
  kernel times;
* eager or compiled without overlap: the host issues each operator (its PyTorch calls'
  measured dispatch time, or the profile's seconds per kernel call; a compiled layer costs
  ``region_host_s`` for the whole layer) while the GPU runs kernels in order, the two-stage
  pipeline of ``eager_pipeline_s``;

plus the profile's per-iteration host time (a constant and a term per sequence). The serving simulator's step timer, its
surrogate tables, ``estimate_forward`` and the planner all call this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from fleetsim.calibration.cost import SOURCES, IterationCostModel, Source
from fleetsim.calibration.engines import EngineProfile
from fleetsim.calibration.launch import Dispatch, chain, from_kernels
from fleetsim.calibration.ops import CollectiveOp, ElementwiseOp, Op
from fleetsim.calibration.power import PowerState, op_peaks, power_state
from fleetsim.hardware.errors import ConfigError
from fleetsim.hardware.specs import GPUSpec
from fleetsim.workloads.graph import serving_step_ops
from fleetsim.workloads.graph_serving import KV_EXPAND
from fleetsim.workloads.models import ModelSpec
from fleetsim.workloads.parallel import ParallelConfig, Seq

__all__ = ["IterationCost", "captures", "check_engine", "device_times", "eager_pipeline_s",
           "is_additive", "price_iteration", "price_ops"]


@dataclass
class IterationCost:
    """Seconds of one iteration and where they go. ``device_s``: summed kernel time;
    ``host_s``: summed host dispatch time (0 when captured or overlapped); ``time_s``:
    the combined iteration including ``overhead_s`` (the profile's per-iteration CPU
    time); ``ops``: one row per operator; ``source_share``: share of device time priced
    from measured / interpolated / roofline numbers."""

    engine: str
    captured: bool
    time_s: float
    device_s: float
    host_s: float
    overhead_s: float
    ops: pd.DataFrame
    source_share: dict[str, float] = field(default_factory=dict)
    flops: float = 0.0
    energy_j: float = 0.0
    """Board energy of the iteration: each kernel's power x time plus the gaps between
    kernels (host dispatch, scheduler time) at the engine's gap power (``calibration.power``)."""
    power_cap_w: float | None = None

    @property
    def power_w(self) -> float:
        """Average board power over the iteration (W)."""
        return self.energy_j / self.time_s if self.time_s > 0 else 0.0


def captures(engine: EngineProfile, batch: Sequence[Seq]) -> bool:
    """Whether the engine replays ``batch`` from a CUDA graph."""
    mode = engine.launch.mode
    if mode == "graphs":
        return True
    if mode == "graphs_decode_only":
        cap = engine.launch.max_capture_batch
        return bool(batch) and all(s.is_decode for s in batch) and cap is not None and len(batch) <= cap
    return False


def is_additive(engine: EngineProfile, captured: bool) -> bool:
    """Whether the iteration is the plain sum of its kernel times (no host pipeline)."""
    return captured or engine.launch.host_overlap


def check_engine(engine: EngineProfile, model: ModelSpec) -> None:
    """A one-line ``ConfigError`` when ``engine`` cannot run ``model``."""
    if model.num_experts and not engine.kernels.supports_moe:
        raise ConfigError(f"engine {engine.name!r} does not support mixture-of-experts models "
                          f"({model.name} has {model.num_experts} experts; kernels.supports_moe is false)")


def eager_pipeline_s(device_s: Sequence[float], counts: Sequence[int], host_s: float | Sequence[float],
                     launches: Sequence[int] | None = None) -> float:
    """Iteration time of kernels issued by a host and run in order on the device.

    ``host_s``: host seconds per launch (a number; ``launches[j]`` launches issue operator
    j, default 1) or host seconds per operator (a sequence; then ``launches`` must be
    None). Consecutive operators with the same ``count`` > 1 form a block (one layer) that
    repeats ``count`` times, as the operator graphs list them. Operator j starts on the
    device at ``max(issued_j, end_{j-1})``. Returns the device end time of the last kernel,
    the host having started issuing at time 0 (the closed form of ``calibration.launch``).
    """
    n = len(device_s)
    if isinstance(host_s, (int, float)):
        nl = list(launches) if launches is not None else [1] * n
        per_op = [float(host_s) * k for k in nl]
    else:
        if launches is not None:
            raise ConfigError("eager_pipeline_s: give launches only with a per-launch host_s")
        per_op = [float(h) for h in host_s]
        if len(per_op) != n:
            raise ConfigError(f"eager_pipeline_s: {len(per_op)} host times for {n} operators")
    dev = np.asarray(device_s, dtype=float)
    host = np.asarray(per_op, dtype=float)
    parts: list[Dispatch] = []
    for j, k in _blocks(counts):
        parts.append(from_kernels(host[j:k + 1], dev[j:k + 1]).repeat(max(int(counts[j]), 0)))
    return chain(parts).end_s


def _blocks(counts: Sequence[int]) -> list[tuple[int, int]]:
    """(first, last) index of each run of equal ``count`` > 1 (a layer block), or single op."""
    out, j, n = [], 0, len(counts)
    while j < n:
        c, k = counts[j], j
        while k + 1 < n and counts[k + 1] == c and c > 1:
            k += 1
        out.append((j, k))
        j = k + 1
    return out


def kv_expand_bandwidth_bps(gpu: GPUSpec, bytes_per_sm_cycle: float) -> float:
    """Bytes per second of the ``decode_kv_expand`` strided copy on ``gpu``: the profile's
    bytes per SM per cycle x the GPU's SMs (``compute_units``) x its ``max_clock_hz`` (the
    copy is bound by the SMs' index arithmetic, not by HBM)."""
    sms, clock = getattr(gpu, "compute_units", None), getattr(gpu, "max_clock_hz", None)
    if not sms or not clock or sms <= 0 or clock <= 0:
        raise ConfigError(f"GPU {gpu.name!r}: the kv_expand copy is priced per SM per cycle and needs "
                          f"compute_units and max_clock_hz in its spec (got {sms!r}, {clock!r})")
    return float(bytes_per_sm_cycle) * float(sms) * float(clock)


def device_times(ops: Sequence[Op], gpu: GPUSpec, cost: IterationCostModel, engine: EngineProfile,
                 captured: bool, *, cached: bool = True) -> tuple[np.ndarray, list[Source]]:
    """Device seconds of one instance of each operator as the engine runs it: graph
    kernel times when captured, eager kernel times when the host overlaps, back-to-back
    stream times under a host pipeline; the ``decode_kv_expand`` copy at least its bytes over
    ``kv_expand_bandwidth_bps`` (an SM-bound strided copy); small TP all-reduces re-priced as
    one-shot when the profile uses a custom all-reduce."""
    if captured:
        t, src = cost.op_times(ops, gpu, graphs=True) if cached else cost.price(ops, gpu, graphs=True)
    elif engine.launch.host_overlap:
        t, src = cost.op_times(ops, gpu, graphs=False) if cached else cost.price(ops, gpu, graphs=False)
    else:
        t, src = cost.stream_times(ops, gpu)
    t = np.asarray(t, dtype=float)
    rate = engine.kernels.kv_expand_bytes_per_sm_cycle
    if rate is not None:
        idx = [i for i, op in enumerate(ops) if isinstance(op, ElementwiseOp) and op.name == KV_EXPAND]
        if idx:
            bps = kv_expand_bandwidth_bps(gpu, rate.value)
            t = t.copy()
            for i in idx:
                t[i] = max(t[i], ops[i].bytes_moved / bps)
    coll = engine.collectives
    if coll.tp_allreduce == "custom_oneshot" and coll.oneshot_max_bytes is not None:
        limit = coll.oneshot_max_bytes.value
        idx = [i for i, op in enumerate(ops) if isinstance(op, CollectiveOp) and op.kind == "all_reduce"
               and op.tier == "scale_up" and op.link is None and op.bytes_moved <= limit and op.group_size > 1]
        if idx:
            link = cost.link(gpu.scale_up_link)
            t = t.copy()
            for i in idx:
                op = ops[i]
                assert isinstance(op, CollectiveOp)
                t[i] = (op.group_size - 1) * op.bytes_moved / (link.bandwidth_bps * link.efficiency) + link.latency_s
    return t, list(src)


def _host_per_op(ops: Sequence[Op], gpu: GPUSpec, cost: IterationCostModel, engine: EngineProfile,
                 counts: Sequence[int], host_calls: Sequence[Sequence[str] | None] | None,
                 launches: Sequence[int] | None) -> list[float]:
    launch = engine.launch
    if isinstance(launch.host_dispatch_s, str):  # "profile": the GPU profile's dispatch table
        if host_calls is not None:
            host = cost.host_times(ops, gpu, host_calls)
        elif launches is not None:
            host = [cost.host_launch_s(gpu) * n for n in launches]
        else:
            host = cost.host_times(ops, gpu)
    else:
        per_call = launch.host_dispatch_s.value
        host = [per_call * n for n in (launches if launches is not None else [1] * len(ops))]
    if launch.mode == "compiled":
        assert launch.region_host_s is not None
        region = launch.region_host_s.value
        for j, k in _blocks(counts):
            if counts[j] > 1:  # a layer: one compiled region call
                for i in range(j, k + 1):
                    host[i] = region / (k + 1 - j)
    kernel = [not type(op).__name__.startswith(("Collective", "Memcpy")) for op in ops]
    return [float(h) if is_k else 0.0 for h, is_k in zip(host, kernel, strict=True)]


def price_ops(ops: Sequence[Op], gpu: GPUSpec, cost: IterationCostModel, engine: EngineProfile,
              captured: bool, *, sustained: bool = False, overhead: bool = True,
              host_calls: Sequence[Sequence[str] | None] | None = None,
              launches: Sequence[int] | None = None, num_seqs: int = 0,
              power: PowerState | None = None) -> IterationCost:
    """Price an operator list as one iteration of ``engine`` (see the module docstring).
    ``sustained``: kernel times x the profile's sustained-load ratios; ``host_calls`` /
    ``launches``: PyTorch calls / launches per operator for eager host dispatch;
    ``overhead``: add the profile's per-iteration host time for ``num_seqs`` sequences;
    ``power``: the GPU's power model and limit (default: the uncapped model of ``gpu``); a cap
    below the TDP slows each kernel by its clock model's time factor."""
    burst, sources = device_times(ops, gpu, cost, engine, captured)
    ratio = np.asarray(cost.sustained_ratios(ops, gpu), dtype=float) if sustained else np.ones(len(ops))
    pstate = power if power is not None else power_state(gpu)
    flops = np.fromiter((op.flops for op in ops), float, len(ops))
    moved = np.fromiter((op.bytes_moved for op in ops), float, len(ops))
    issue = np.fromiter((op.name == KV_EXPAND for op in ops), float, len(ops))
    slow, watts = pstate.kernels(gpu, flops, moved, op_peaks(ops, gpu), burst * ratio, issue)
    ratio = ratio * slow
    dev = burst * ratio
    counts = [op.count for op in ops]
    df = pd.DataFrame({
        "name": [op.name for op in ops],
        "kind": [type(op).__name__.removesuffix("Op").lower() for op in ops],
        "count": counts,
        "flops": flops,
        "bytes": moved,
        "burst_s": burst,
        "sustained_ratio": ratio,
        "time_s": dev,
        "source": sources,
        "power_w": watts,  # before the iteration's limiter (PowerState.limited_j)
    })
    df["total_s"] = df["count"] * df["time_s"]
    df = df[["name", "kind", "count", "flops", "bytes", "burst_s", "sustained_ratio", "time_s",
             "total_s", "source", "power_w"]]
    busy = float(df["total_s"].sum())
    host_s = 0.0
    if is_additive(engine, captured):
        total = busy
    else:
        host = _host_per_op(ops, gpu, cost, engine, counts, host_calls, launches)
        host_s = float(np.dot(host, counts))
        total = eager_pipeline_s(list(dev), counts, host)
    over = engine.launch.overhead_s(num_seqs) if overhead else 0.0
    by_src = df.groupby("source")["total_s"].sum()
    share = {s: (float(by_src.get(s, 0.0)) / busy if busy > 0 else 0.0) for s in SOURCES}
    total_flops = float((df["count"] * df["flops"]).sum())
    energy = pstate.iteration_j(float((df["total_s"] * df["power_w"]).sum()), busy, total + over)
    return IterationCost(engine=engine.name, captured=captured, time_s=total + over, device_s=busy,
                         host_s=host_s, overhead_s=over, ops=df, source_share=share, flops=total_flops,
                         energy_j=energy, power_cap_w=pstate.cap_w if pstate.capped else None)


def iteration_ops(model: ModelSpec, batch: Sequence[Seq], parallel: ParallelConfig, engine: EngineProfile,
                  *, stage: int | None = None, stages: Sequence[int | None] | None = None,
                  dtype: str = "bf16", kv_dtype: str | None = None) -> list[Op]:
    """Operators of ``batch`` on ``stage`` (or on each of ``stages`` in turn)."""
    sts = stages if stages is not None else (stage,)
    return [op for st in sts for op in serving_step_ops(model, batch, parallel, dtype, kv_dtype, stage=st,
                                                        kernels=engine.kernels)]


def price_iteration(model: ModelSpec, gpu: GPUSpec, batch: Sequence[Seq], parallel: ParallelConfig,
                    cost_model: IterationCostModel, engine: EngineProfile, *, stage: int | None = None,
                    dtype: str = "bf16", kv_dtype: str | None = None, captured: bool | None = None,
                    sustained: bool = False, power: PowerState | None = None) -> IterationCost:
    """One iteration of ``batch`` on one replica of ``engine``: pipeline ``stage``, or with
    ``stage=None`` and ``parallel.pp > 1`` every stage in turn. ``captured`` overrides the
    profile's CUDA-graph rule (None: ``captures(engine, batch)``); ``power``: the GPU's power
    model and limit (default: uncapped)."""
    check_engine(engine, model)
    stages: tuple[int | None, ...] = (stage,) if stage is not None or parallel.pp == 1 else tuple(range(parallel.pp))
    ops = iteration_ops(model, batch, parallel, engine, stages=stages, dtype=dtype, kv_dtype=kv_dtype)
    cap = captures(engine, batch) if captured is None else captured
    if not ops:
        over = engine.launch.overhead_s(len(batch))
        pstate = power if power is not None else power_state(gpu)
        return IterationCost(engine.name, cap, over, 0.0, 0.0, over, pd.DataFrame(),
                             energy_j=over * pstate.gap_w(), power_cap_w=pstate.cap_w if pstate.capped else None)
    return price_ops(ops, gpu, cost_model, engine, cap, sustained=sustained, num_seqs=len(batch), power=power)
