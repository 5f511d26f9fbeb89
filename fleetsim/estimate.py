"""Whole-forward-pass estimates: one serving iteration of a model on one GPU.

``estimate_forward`` builds the operator graph of one iteration (``serving_step_ops``),
prices every operator with a cost model and combines the times:

* under CUDA graphs (``graphs=True``) the kernels replay back to back, so the iteration
  takes the sum of ``count x`` device time;
* in eager mode the host issues each operator's PyTorch calls (their measured dispatch
  times, or one eager launch interval per kernel without a host-dispatch table) while the
  GPU executes kernels in order, so the iteration is a two-stage pipeline (host, device):
  kernel j starts at ``max(issued_j, end_{j-1})``. Long GEMMs let the host run ahead; runs
  of short kernels are launch-bound. This is the per-step overhead that a plain roofline
  misses (it under-predicts small-batch eager steps).

Kernels are priced at their profiled burst times. ``sustained=True`` multiplies each by the
profile's measured sustained-load ratio (``calibration.sustain``: one kernel class run for 10
s at the power cap); it is off by default because the measured forward passes do not run
at that clock: with it, graph-decode MAPE rose from 4.4% to 5.1% (H100) and 6.1% to 7.2%
(H200), eager prefill moved from 6.3% to 6.8% (H100) and 11.4% to 11.7% (H200) against
``calibration/validation/*/forward.csv`` (2026-11-22 profiles). With ``tp > 1`` the graph is that of one tensor-parallel rank and includes its
all-reduces, priced by the link model. The result keeps the per-operator table so that a
user can see where the time goes and how much of it comes from measurements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fleetsim.calibration import get_cost_model
from fleetsim.calibration.cost import SOURCES, CostModel
from fleetsim.calibration.intervals import forward_class, interval_for
from fleetsim.calibration.launch import Dispatch, chain, from_kernels
from fleetsim.calibration.measured import MeasuredCostModel
from fleetsim.hardware.checks import positive_int
from fleetsim.hardware.errors import ConfigError
from fleetsim.hardware.specs import DTYPE_BYTES, GPUSpec

__all__ = ["ForwardEstimate", "eager_pipeline_s", "estimate_forward", "estimate_ops", "get_cost_model",
           "resolve_batch"]


@dataclass
class ForwardEstimate:
    """Time of one forward iteration and its breakdown.

    ``ops``: one row per operator (name, kind, count, flops, bytes, burst_s = profiled
    (burst) device time per instance, sustained_ratio = measured slowdown under continuous
    load, time_s = burst_s x sustained_ratio, total_s = count x time_s, source); in eager
    mode ``time_s`` of the estimate also includes host dispatch stalls, so it can exceed the
    sum of ``total_s``. ``source_share``: share of ``time_s`` priced from
    measured / interpolated / roofline numbers. ``tflops``: achieved TFLOP/s (model FLOPs of
    the iteration over its time).
    """

    model: str
    gpu: str
    tp: int
    graphs: bool
    time_s: float
    ops: pd.DataFrame
    source_share: dict[str, float] = field(default_factory=dict)
    tflops: float = 0.0
    flops: float = 0.0
    time_s_p10: float = float("nan")
    time_s_p90: float = float("nan")
    """80% prediction interval of ``time_s`` (``calibration.intervals``); NaN from ``estimate_ops``."""

    def summary(self) -> str:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in self.source_share.items() if v > 0)
        mode = "graphs" if self.graphs else "eager"
        band = (f" (80%: {self.time_s_p10 * 1e3:.3f}-{self.time_s_p90 * 1e3:.3f})"
                if np.isfinite(self.time_s_p10) else "")
        return (f"{self.model} on {self.gpu} (tp={self.tp}, {mode}): {self.time_s * 1e3:.3f} ms{band}, "
                f"{self.tflops:.1f} TFLOP/s [{shares}]")


def resolve_batch(batch: object) -> list:
    """A batch as a list of ``Seq``.

    Accepted: a list of ``Seq``; an int N (shorthand for one prefill of N prompt tokens on an
    empty cache, the time-to-first-token case); a ``(batch_size, prompt_len)`` tuple (that
    many prefills); a ``(batch_size, 1, context)`` tuple (that many decodes of one token on
    ``context`` cached tokens).
    """
    from fleetsim.workloads.parallel import Seq

    if isinstance(batch, bool):
        raise ConfigError(f"batch must be a list of Seq, an int or a tuple, got {batch!r}")
    if isinstance(batch, int):
        if batch < 1:
            raise ConfigError(f"batch shorthand must be a positive token count, got {batch}")
        return [Seq(batch)]
    if isinstance(batch, tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in batch):
        if len(batch) == 2 and batch[0] >= 1:
            return [Seq(batch[1])] * batch[0]
        if len(batch) == 3 and batch[0] >= 1:
            return [Seq(batch[1], batch[2])] * batch[0]
        raise ConfigError(f"batch tuple must be (batch_size, prompt_len) or (batch_size, new, context), got {batch!r}")
    if isinstance(batch, Sequence) and batch and all(isinstance(s, Seq) for s in batch):
        for i, s in enumerate(batch):
            positive_int(s.new_tokens, f"batch[{i}].new_tokens")
            if s.context:
                positive_int(s.context, f"batch[{i}].context")
        return list(batch)
    raise ConfigError(f"batch must be a non-empty list of Seq, an int or a tuple, got {batch!r}")


def _kind(op: object) -> str:
    return type(op).__name__.removesuffix("Op").lower()


def estimate_forward(model: object, gpu: GPUSpec | str, batch: object, tp: int = 1,
                     graphs: bool = False, dtype: str = "bf16", cost_model: CostModel | None = None,
                     *, kv_dtype: str | None = None, profile_root: str | Path | None = None,
                     check_context: bool = True) -> ForwardEstimate:
    """Estimate one serving iteration (forward pass) of ``model`` on ``gpu``.

    ``model``: catalog name, path or ``ModelSpec``; ``gpu``: catalog name or ``GPUSpec``;
    ``batch``: see ``resolve_batch``; ``tp``: tensor-parallel degree (the graph of one rank,
    with its collectives); ``graphs``: CUDA-graph replay instead of eager launches;
    ``cost_model``: defaults to ``get_cost_model(gpu, profile_root)``. A sequence longer
    than the model's context is refused unless ``check_context=False`` (kernel-shape
    studies such as the validation benchmarks, which time shapes past the context).
    """
    from fleetsim.hardware.catalog import get_gpu
    from fleetsim.workloads.graph import serving_step_ops
    from fleetsim.workloads.models import ModelSpec, load_model
    from fleetsim.workloads.models import check_context as context_limit
    from fleetsim.workloads.parallel import ParallelConfig

    if not isinstance(gpu, GPUSpec | str):
        raise ConfigError(f"gpu must be a catalog name or a GPUSpec, got {type(gpu).__name__}")
    spec = get_gpu(gpu) if isinstance(gpu, str) else gpu
    mspec = model if isinstance(model, ModelSpec) else load_model(model)  # type: ignore[arg-type]
    tp = positive_int(tp, "tp")
    if not isinstance(graphs, bool):
        raise ConfigError(f"graphs must be True or False, got {graphs!r}")
    for name, value in (("dtype", dtype), ("kv_dtype", kv_dtype)):
        if value is not None and value not in DTYPE_BYTES:
            raise ConfigError(f"{name} {value!r} is not one of {', '.join(DTYPE_BYTES)}")
    seqs = resolve_batch(batch)
    if check_context:
        context_limit(mspec, max(s.kv_len for s in seqs), "batch sequence length (context + new tokens)")
    ops = serving_step_ops(mspec, seqs, ParallelConfig(tp=tp), dtype, kv_dtype)
    cm = cost_model if cost_model is not None else get_cost_model(spec, profile_root)
    est = estimate_ops(ops, spec, graphs=graphs, cost_model=cm, model_name=mspec.name, tp=tp)
    est.time_s_p10, est.time_s_p90 = interval_for(
        est.time_s, spec.name, forward_class(any(s.new_tokens > 1 or not s.context for s in seqs), graphs),
        own_profile=isinstance(cm, MeasuredCostModel), roofline_share=est.source_share.get("roofline", 0.0))
    return est


def eager_pipeline_s(device_s: Sequence[float], counts: Sequence[int], host_s: float | Sequence[float],
                     launches: Sequence[int] | None = None) -> float:
    """Iteration time of kernels issued by a host and run in order on the device.

    ``host_s``: host seconds per launch (a number; ``launches[j]`` launches issue operator
    j, default 1) or host seconds per operator (a sequence, e.g. the measured dispatch time
    of its PyTorch calls; then ``launches`` must be None). Consecutive operators with the
    same ``count`` > 1 form a block (one layer) that repeats ``count`` times, as the
    operator graphs list them. Operator j starts on the device at
    ``max(issued_j, end_{j-1})``. Returns the device end time of the last kernel, the host
    having started issuing at time 0 (the closed form of ``calibration.launch``, one block
    summarised and repeated at a time).
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
    j = 0
    while j < n:
        c = counts[j]
        k = j
        while k + 1 < n and counts[k + 1] == c and c > 1:
            k += 1
        parts.append(from_kernels(host[j:k + 1], dev[j:k + 1]).repeat(max(int(c), 0)))
        j = k + 1
    return chain(parts).end_s


def estimate_ops(ops: Sequence, gpu: GPUSpec, *, graphs: bool, cost_model: CostModel,
                 model_name: str = "", tp: int = 1, launches: Sequence[int] | None = None,
                 host_calls: Sequence[Sequence[str] | None] | None = None, sustained: bool = False
                 ) -> ForwardEstimate:
    """Price an operator list as one iteration (see the module docstring for the modes).

    ``sustained``: multiply each kernel's burst time by the profile's measured
    sustained-load ratio (``cost_model.sustained_ratios``; the table keeps ``burst_s`` and
    ``sustained_ratio``). Eager host time per operator: ``host_calls`` (PyTorch call names
    per operator, priced by the profile's host dispatch table), else ``launches`` x the
    eager launch interval, else the cost model's ``host_times`` for serving operators.
    """
    cm = cost_model
    if hasattr(cm, "op_times"):
        if graphs or not hasattr(cm, "stream_times"):
            burst, sources = cm.op_times(ops, gpu, graphs=True)  # type: ignore[attr-defined]
        else:  # eager: kernels run as stream launches, no CUDA-graph saving
            burst, sources = cm.stream_times(ops, gpu)  # type: ignore[attr-defined]
        burst = np.asarray(burst, dtype=float)
        times = None if graphs else np.asarray(cm.op_times(ops, gpu, graphs=False)[0], dtype=float)  # type: ignore[attr-defined]
    else:
        costs = [cm.op_time(op, gpu, graphs=True) for op in ops]
        burst, sources = np.array([c.time_s for c in costs]), [c.source for c in costs]
        times = None if graphs else np.array([cm.op_time(op, gpu, graphs=False).time_s for op in ops])
    ratio = (np.asarray(cm.sustained_ratios(ops, gpu), dtype=float)  # type: ignore[attr-defined]
             if sustained and hasattr(cm, "sustained_ratios") else np.ones(len(ops)))
    dev = burst * ratio
    kinds = [_kind(op) for op in ops]
    df = pd.DataFrame({
        "name": [op.name for op in ops],
        "kind": kinds,
        "count": [op.count for op in ops],
        "flops": [float(op.flops) for op in ops],
        "bytes": [float(op.bytes_moved) for op in ops],
        "burst_s": burst,
        "sustained_ratio": ratio,
        "time_s": dev,
        "source": sources,
    })
    df["total_s"] = df["count"] * df["time_s"]
    df = df[["name", "kind", "count", "flops", "bytes", "burst_s", "sustained_ratio", "time_s",
             "total_s", "source"]]
    counts = list(df["count"])
    if graphs:
        total = float(df["total_s"].sum())
    elif hasattr(cm, "host_launch_s"):
        is_kernel = [k not in ("collective", "memcpy") for k in kinds]
        if host_calls is not None:
            host = cm.host_times(ops, gpu, host_calls)  # type: ignore[attr-defined]
        elif launches is not None:
            host = [cm.host_launch_s(gpu) * n for n in launches]  # type: ignore[attr-defined]
        elif hasattr(cm, "host_times"):
            host = cm.host_times(ops, gpu)  # type: ignore[attr-defined]
        else:
            host = [cm.host_launch_s(gpu)] * len(ops)  # type: ignore[attr-defined]
        host = [h if k else 0.0 for h, k in zip(host, is_kernel, strict=True)]
        total = eager_pipeline_s(list(dev), counts, host)
    else:
        assert times is not None  # eager mode
        total = float((df["count"] * pd.Series(times * ratio)).sum())
    flops = float((df["count"] * df["flops"]).sum())
    by_src = df.groupby("source")["total_s"].sum()
    busy = float(df["total_s"].sum())
    share = {s: (float(by_src.get(s, 0.0)) / busy if busy > 0 else 0.0) for s in SOURCES}
    return ForwardEstimate(model=model_name, gpu=gpu.name, tp=tp, graphs=graphs, time_s=total,
                           ops=df, source_share=share, tflops=flops / total / 1e12 if total > 0 else 0.0,
                           flops=flops)
