"""Whole-forward-pass estimates: one serving iteration of a model on one GPU.

``estimate_forward`` prices one iteration through ``sim.iteration.price_iteration`` with an
engine profile (``calibration.engines``): the profile's operator graph, each operator priced
by a cost model, the times combined as the profile launches work. For the calibration
harness (``fleetsim-harness``, what ``graphs=`` selects):

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
from fleetsim.calibration.cost import CostModel, IterationCostModel
from fleetsim.calibration.engines import EngineProfile
from fleetsim.calibration.intervals import forward_class, interval_for
from fleetsim.calibration.measured import MeasuredCostModel
from fleetsim.hardware.checks import positive_int
from fleetsim.hardware.errors import ConfigError
from fleetsim.hardware.specs import DTYPE_BYTES, GPUSpec
from fleetsim.sim.iteration import IterationCost, eager_pipeline_s

HARNESS = "fleetsim-harness"
"""The engine profile of fleetsim's own calibration harness (``estimate_forward(graphs=...)``)."""

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
    engine: str = HARNESS
    device_s: float = 0.0
    host_s: float = 0.0
    overhead_s: float = 0.0
    time_s_p10: float = float("nan")
    time_s_p90: float = float("nan")
    """80% prediction interval of ``time_s`` (``calibration.intervals``); NaN from ``estimate_ops``."""
    energy_j: float = 0.0
    """Board energy of the iteration on one GPU (kernels at their occupancy power, gaps at the
    engine's gap power; ``calibration.power``)."""
    power_cap_w: float | None = None
    """The GPU power limit the estimate was made under (None: the default limit, the TDP)."""

    @property
    def power_w(self) -> float:
        """Average board power over the iteration (W)."""
        return self.energy_j / self.time_s if self.time_s > 0 else 0.0

    def summary(self) -> str:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in self.source_share.items() if v > 0)
        mode = "graphs" if self.graphs else "eager"
        band = (f" (80%: {self.time_s_p10 * 1e3:.3f}-{self.time_s_p90 * 1e3:.3f})"
                if np.isfinite(self.time_s_p10) else "")
        return (f"{self.model} on {self.gpu} (engine {self.engine}, tp={self.tp}, {mode}): "
                f"{self.time_s * 1e3:.3f} ms{band}, "
                f"{self.tflops:.1f} TFLOP/s, {self.power_w:.0f} W, {self.energy_j:.3g} J"
                f"{f' (cap {self.power_cap_w:g} W)' if self.power_cap_w else ''} [{shares}]")


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
                     graphs: bool | None = None, dtype: str = "bf16", cost_model: CostModel | None = None,
                     *, kv_dtype: str | None = None, profile_root: str | Path | None = None,
                     check_context: bool = True, engine: str | Path | EngineProfile | None = None,
                     power_cap_w: float | None = None) -> ForwardEstimate:
    """Estimate one serving iteration (forward pass) of ``model`` on ``gpu``.

    ``model``: catalog name, path or ``ModelSpec``; ``gpu``: catalog name or ``GPUSpec``;
    ``batch``: see ``resolve_batch``; ``tp``: tensor-parallel degree (the graph of one rank,
    with its collectives); ``engine``: the software (an engine profile name, YAML path or
    ``EngineProfile``) whose kernels and launch rules price the iteration; ``graphs``:
    force CUDA-graph replay (True) or eager launches (False) of that engine (None: the
    profile's own rule). Without ``engine``: ``fleetsim-harness``, the calibration harness's
    eager pipeline (or graph replay with ``graphs=True``), which ``fleetsim validate`` checks
    and the existing figures were made with; the serving simulator and planner default to
    ``vllm``.
    ``cost_model``: defaults to ``get_cost_model(gpu, profile_root)``. A sequence longer
    than the model's context is refused unless ``check_context=False`` (kernel-shape
    studies such as the validation benchmarks, which time shapes past the context).
    ``power_cap_w``: the GPU's power limit (W, between its minimum and its TDP; None: the
    TDP); the estimate reports ``energy_j`` and ``power_w`` under it.
    """
    from fleetsim.calibration.engines import get_engine
    from fleetsim.calibration.power import power_state
    from fleetsim.hardware.catalog import get_gpu
    from fleetsim.sim.iteration import price_iteration
    from fleetsim.workloads.models import ModelSpec, load_model
    from fleetsim.workloads.models import check_context as context_limit
    from fleetsim.workloads.parallel import ParallelConfig

    if not isinstance(gpu, GPUSpec | str):
        raise ConfigError(f"gpu must be a catalog name or a GPUSpec, got {type(gpu).__name__}")
    spec = get_gpu(gpu) if isinstance(gpu, str) else gpu
    mspec = model if isinstance(model, ModelSpec) else load_model(model)  # type: ignore[arg-type]
    tp = positive_int(tp, "tp")
    if graphs is not None and not isinstance(graphs, bool):
        raise ConfigError(f"graphs must be True or False, got {graphs!r}")
    for name, value in (("dtype", dtype), ("kv_dtype", kv_dtype)):
        if value is not None and value not in DTYPE_BYTES:
            raise ConfigError(f"{name} {value!r} is not one of {', '.join(DTYPE_BYTES)}")
    prof = get_engine(engine if engine is not None else HARNESS)
    if graphs is not None:
        prof = prof.with_launch_mode(graphs)
    seqs = resolve_batch(batch)
    if check_context:
        context_limit(mspec, max(s.kv_len for s in seqs), "batch sequence length (context + new tokens)")
    pstate = power_state(spec, power_cap_w)
    cm = cost_model if cost_model is not None else get_cost_model(spec, profile_root)
    it = price_iteration(mspec, spec, seqs, ParallelConfig(tp=tp), _iteration_model(cm), prof,
                         dtype=dtype, kv_dtype=kv_dtype, power=pstate)
    est = _estimate(it, mspec.name, spec.name, tp)
    est.time_s_p10, est.time_s_p90 = interval_for(
        est.time_s, spec.name, forward_class(any(s.new_tokens > 1 or not s.context for s in seqs), est.graphs),
        own_profile=isinstance(cm, MeasuredCostModel), roofline_share=est.source_share.get("roofline", 0.0))
    return est


def _iteration_model(cm: object) -> IterationCostModel:
    if not isinstance(cm, IterationCostModel):
        raise ConfigError(f"cost_model {type(cm).__name__} lacks what iteration pricing uses "
                          "(op_times, price, stream_times, host_launch_s, host_times, sustained_ratios, link)")
    return cm


def _estimate(it: IterationCost, model: str, gpu: str, tp: int) -> ForwardEstimate:
    t = it.time_s
    return ForwardEstimate(model=model, gpu=gpu, tp=tp, graphs=it.captured, time_s=t, ops=it.ops,
                           source_share=it.source_share, tflops=it.flops / t / 1e12 if t > 0 else 0.0,
                           flops=it.flops, engine=it.engine, device_s=it.device_s, host_s=it.host_s,
                           overhead_s=it.overhead_s, energy_j=it.energy_j, power_cap_w=it.power_cap_w)


def estimate_ops(ops: Sequence, gpu: GPUSpec, *, graphs: bool, cost_model: CostModel,
                 model_name: str = "", tp: int = 1, launches: Sequence[int] | None = None,
                 host_calls: Sequence[Sequence[str] | None] | None = None, sustained: bool = False,
                 engine: str | Path | EngineProfile | None = None) -> ForwardEstimate:
    """Price an operator list as one iteration of ``engine`` (default ``fleetsim-harness``)
    forced to CUDA-graph replay (``graphs``) or eager launches (``sim.iteration.price_ops``).

    ``sustained``: multiply each kernel's burst time by the profile's measured
    sustained-load ratio (the table keeps ``burst_s`` and ``sustained_ratio``). Eager host
    time per operator: ``host_calls`` (PyTorch call names per operator, priced by the
    profile's host dispatch table), else ``launches`` x the eager launch interval, else the
    cost model's ``host_times`` for serving operators.
    """
    from fleetsim.calibration.engines import get_engine
    from fleetsim.sim.iteration import price_ops

    prof = get_engine(engine if engine is not None else HARNESS).with_launch_mode(graphs)
    it = price_ops(ops, gpu, _iteration_model(cost_model), prof, graphs, sustained=sustained,
                   host_calls=host_calls, launches=launches)
    return _estimate(it, model_name, gpu.name, tp)
