"""Public serving-plan API: ``plan_serving`` (what ``fleetsim plan`` prints)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.checks import positive, positive_int
from fleetsim.hardware.cluster import load_cluster
from fleetsim.hardware.errors import ConfigError, InfeasibleError
from fleetsim.hardware.specs import DTYPE_BYTES, ClusterSpec, GPUSpec
from fleetsim.planner.first_plan import (
    FirstPlan,
    Rejected,
    ReplicaTimer,
    ServingTargets,
    first_plan,
)
from fleetsim.sim.serving.config import EngineConfig
from fleetsim.workloads.memory import max_kv_tokens
from fleetsim.workloads.models import ModelSpec, check_context, load_model
from fleetsim.workloads.parallel import ParallelConfig, Seq


@dataclass
class ServingPlan:
    """A ranked plan with the inputs that produced it."""

    model: ModelSpec
    cluster: ClusterSpec
    first: FirstPlan
    lengths_from: str
    provenance: dict[str, dict[str, float]]
    """Per GPU type: share of the best row's step time priced from each cost source."""

    @property
    def rows(self) -> list:
        return self.first.rows

    @property
    def rejected(self) -> list[Rejected]:
        return self.first.rejected

    @property
    def best(self):  # type: ignore[no-untyped-def]
        return self.first.best

    def headline(self) -> str:
        t = self.first.targets
        parts = [
            f"Serving plan for {self.model.name} ({self.model.params_total() / 1e9:.1f}B params) "
            f"on {self.cluster.name} ({self.cluster.num_gpus} GPU{'' if self.cluster.num_gpus == 1 else 's'})",
            f"workload: {t.isl} prompt + {t.osl} output tokens per request ({self.lengths_from})",
        ]
        goals = []
        if t.rate_rps:
            goals.append(f"rate {t.rate_rps:g} req/s")
        if t.ttft_s:
            goals.append(f"TTFT <= {t.ttft_s * 1e3:g} ms")
        if t.tpot_s:
            goals.append(f"TPOT <= {t.tpot_s * 1e3:g} ms")
        parts.append("targets: " + (", ".join(goals) if goals else "none (max throughput)"))
        for gpu, share in self.provenance.items():
            shares = ", ".join(f"{k} {v:.0%}" for k, v in share.items() if v > 0)
            parts.append(f"operator costs on {gpu}: {shares}")
        return "\n".join(parts)

    def table(self) -> pd.DataFrame:
        """One row per feasible candidate, best first, in human units; ``meets_rate`` is
        ``-`` when no rate was asked for."""
        with_rate = bool(self.first.targets.rate_rps)
        recs = []
        for i, r in enumerate(self.first.rows, 1):
            recs.append(
                {
                    "rank": i,
                    "gpu": r.gpu,
                    "tp": r.tp,
                    "pp": r.pp,
                    "replicas": r.replicas,
                    "gpus": r.gpus_used,
                    "batch": r.batch,
                    "kv_tokens": r.kv_capacity_tokens,
                    "ttft_ms": round(r.ttft_s * 1e3, 1),
                    "tpot_ms": round(r.tpot_s * 1e3, 2),
                    "req_s": round(r.replica_rps * r.replicas, 2),
                    "out_tok_s": round(r.output_tok_s),
                    "usd_h": None if r.price_per_hour_usd is None else round(r.price_per_hour_usd, 2),
                    "usd_per_Mtok": None
                    if r.usd_per_million_output_tokens is None
                    else round(r.usd_per_million_output_tokens, 3),
                    "meets_rate": r.meets_rate if with_rate else "-",
                    "note": r.note,
                }
            )
        return pd.DataFrame.from_records(recs)


def _default_lengths(workload: str | None) -> tuple[int, int, str]:
    """Mean prompt and output lengths of a built-in workload (fitted to the Azure traces)."""
    from fleetsim.workloads.defaults import get_workload

    name = workload or "azure-conv"
    stream = get_workload(name).generate(np.random.default_rng(0), num_requests=20_000)
    isl = float(np.mean(stream.prompt_tokens))
    osl = float(np.mean(stream.output_tokens))
    return max(1, round(isl)), max(1, round(osl)), f"mean lengths of built-in workload {name!r}"


def make_replica_timer(
    model: ModelSpec, gpu: GPUSpec, tp: int, pp: int, dtype: str, kv_dtype: str | None, isl_hint: int
) -> ReplicaTimer:
    """Step times of one TP x PP replica priced through the operator cost model.

    With ``pp`` stages an engine's iteration passes every stage in turn, so it takes the
    whole model's time at this TP (the stage-to-stage activation sends, a few hundred KB,
    are left out); the KV capacity is that of the tightest stage."""
    from fleetsim.estimate import estimate_forward, get_cost_model

    parallel = ParallelConfig(tp=tp, pp=pp)
    parallel.validate(model)
    kv_tokens = max_kv_tokens(model, gpu.memory_bytes, parallel, dtype=dtype, kv_dtype=kv_dtype)
    cost = get_cost_model(gpu)

    # The engine's per-iteration CPU scheduling cost, the same default the simulator uses.
    overhead_s = EngineConfig().engine_profile.launch.iteration_overhead_s.value

    @cache
    def prefill(n: int) -> float:
        est = estimate_forward(model, gpu, [Seq(n, 0)], tp=tp, graphs=False, dtype=dtype, cost_model=cost)
        return est.time_s + overhead_s

    @cache
    def iteration(b: int, c: int, k: int) -> float:
        batch = [Seq(1, c)] * b + prompt_chunks(k)
        graphs = k == 0  # engines replay CUDA graphs only for pure-decode iterations
        est = estimate_forward(model, gpu, batch, tp=tp, graphs=graphs, dtype=dtype, cost_model=cost)
        return est.time_s + overhead_s

    def prompt_chunks(k: int) -> list[Seq]:
        """``k`` prompt tokens as whole prompts of the mean prompt length plus one partial one."""
        isl = max(1, isl_hint)
        full, rem = divmod(k, isl)
        return [Seq(isl, 0)] * full + ([Seq(rem, 0)] if rem else [])

    return ReplicaTimer(prefill, iteration, kv_tokens, engines=pp)


def plan_serving(
    model: str | ModelSpec,
    cluster: str | ClusterSpec,
    *,
    isl: int | None = None,
    osl: int | None = None,
    workload: str | None = None,
    rate_rps: float | None = None,
    ttft_s: float | None = None,
    tpot_s: float | None = None,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
) -> ServingPlan:
    """Rank feasible TP x replica deployments of ``model`` on ``cluster``.

    Lengths not given come from the mean prompt/output lengths of ``workload`` (default the
    built-in ``azure-conv``, fitted to the Azure 2023 conversation trace).
    """
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    cl = cluster if isinstance(cluster, ClusterSpec) else load_cluster(cluster)
    isl = None if isl is None else positive_int(isl, "isl")
    osl = None if osl is None else positive_int(osl, "osl")
    rate_rps = None if rate_rps is None else positive(rate_rps, "rate_rps")
    ttft_s = None if ttft_s is None else positive(ttft_s, "ttft_s")
    tpot_s = None if tpot_s is None else positive(tpot_s, "tpot_s")
    if workload is not None and not isinstance(workload, str):
        raise ConfigError(f"workload must be a name or spec string, got {type(workload).__name__}")
    lengths_from = "given"
    if isl is None or osl is None:
        d_isl, d_osl, lengths_from = _default_lengths(workload)
        isl = d_isl if isl is None else isl
        osl = d_osl if osl is None else osl
    elif workload is not None:
        raise ConfigError("give either --workload or both --isl and --osl, not both")
    targets = ServingTargets(isl=isl, osl=osl, rate_rps=rate_rps, ttft_s=ttft_s, tpot_s=tpot_s)
    for name, value in (("dtype", dtype), ("kv_dtype", kv_dtype)):
        if value is not None and value not in DTYPE_BYTES:
            raise ConfigError(f"{name} {value!r} is not one of {', '.join(DTYPE_BYTES)}")
    check_context(spec, isl + osl, "isl + osl")
    gpus = {p.node.gpu: get_gpu(p.node.gpu) for p in cl.pools}
    fp = first_plan(
        cl,
        gpus,
        spec.num_heads,
        spec.num_kv_heads,
        targets,
        lambda gpu, tp, pp: make_replica_timer(spec, gpu, tp, pp, dtype, kv_dtype, targets.isl),
        spec.num_layers,
    )
    if not fp.rows:
        reasons = "; ".join(f"{r.gpu} TP={r.tp} PP={r.pp}: {r.reason}" for r in fp.rejected)
        raise InfeasibleError(f"no deployment of {spec.name} runs on {cl.name}: {reasons}")
    if not math.isfinite(sum(r.output_tok_s for r in fp.rows)):
        raise ConfigError("plan produced a non-finite throughput")
    return ServingPlan(spec, cl, fp, lengths_from, _provenance(spec, fp, dtype))


def _provenance(spec: ModelSpec, fp: FirstPlan, dtype: str) -> dict[str, dict[str, float]]:
    """Where the costs of each GPU type's best row come from (prefill and decode step)."""
    from fleetsim.estimate import estimate_forward

    out: dict[str, dict[str, float]] = {}
    t = fp.targets
    for row in fp.rows:
        if row.gpu in out:
            continue
        pre = estimate_forward(spec, row.gpu, [Seq(t.isl, 0)], tp=row.tp, dtype=dtype)
        dec = estimate_forward(spec, row.gpu, [Seq(1, t.isl + t.osl // 2)] * (row.batch // row.pp), tp=row.tp, dtype=dtype)
        total = pre.time_s + dec.time_s
        out[row.gpu] = {
            k: (pre.source_share.get(k, 0.0) * pre.time_s + dec.source_share.get(k, 0.0) * dec.time_s) / total
            for k in ("measured", "interpolated", "roofline")
        }
    return out
