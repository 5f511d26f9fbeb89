"""Public serving-plan API: ``plan_serving`` (what ``fleetsim plan`` prints)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fleetsim.calibration import MeasuredCostModel, get_cost_model
from fleetsim.calibration.engines import EngineProfile, get_engine
from fleetsim.calibration.intervals import forward_class, load_table
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.checks import positive, positive_int
from fleetsim.hardware.cluster import load_cluster
from fleetsim.hardware.errors import ConfigError, InfeasibleError
from fleetsim.hardware.specs import DTYPE_BYTES, ClusterSpec, GPUSpec, PoolSpec
from fleetsim.planner.first_plan import (
    FirstPlan,
    Rejected,
    ReplicaTimer,
    ServingTargets,
    first_plan,
)
from fleetsim.sim.iteration import IterationCost, captures, check_engine, price_iteration
from fleetsim.sim.serving.config import EngineConfig
from fleetsim.sim.serving.feasibility import check_replica
from fleetsim.workloads.graph_common import act_dtype
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
    """Per GPU type: share of the best row's device time priced from each cost source."""
    engine: str = "vllm"
    """The serving engine profile that priced the plan."""
    run_search: Callable[[], Any] | None = field(default=None, repr=False)

    @cached_property
    def search(self) -> Any:
        """The full serving planner's answer (``planner.serving.search.ServingPlans``): run on
        first access with the arguments ``plan_serving`` was given."""
        if self.run_search is None:
            raise ConfigError("this plan was built without the serving search")
        return self.run_search()

    @property
    def plans(self) -> tuple:
        """The planner's plans, best first (``PlanEntry`` records)."""
        return self.search.plans

    @property
    def rows(self) -> list:
        return self.first.rows

    @property
    def rejected(self) -> list[Rejected]:
        return self.first.rejected

    @property
    def best(self):  # type: ignore[no-untyped-def]
        return self.first.best

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures of the full planner's answer (``fleetsim.figures.plan_figures``;
        runs ``search`` if not yet run): ``pareto`` (cost vs latency vs energy) and ``gpu_mix``."""
        from fleetsim.figures import plan_figures

        return plan_figures(self.search)

    def headline(self) -> str:
        t = self.first.targets
        parts = [
            f"Serving plan for {self.model.name} ({self.model.params_total() / 1e9:.1f}B params) "
            f"on {self.cluster.name} ({self.cluster.num_gpus} GPU{'' if self.cluster.num_gpus == 1 else 's'})",
            f"engine profile: {self.engine}",
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
        ``-`` when no rate was asked for. ``*_p10`` / ``*_p90``: the 80% prediction interval
        of the column before them (``calibration.intervals``; throughput from ``1 / TPOT``)."""
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
                    "ttft_ms_p10": round(r.ttft_s_p10 * 1e3, 1),
                    "ttft_ms_p90": round(r.ttft_s_p90 * 1e3, 1),
                    "tpot_ms": round(r.tpot_s * 1e3, 2),
                    "tpot_ms_p10": round(r.tpot_s_p10 * 1e3, 2),
                    "tpot_ms_p90": round(r.tpot_s_p90 * 1e3, 2),
                    "req_s": round(r.replica_rps * r.replicas, 2),
                    "out_tok_s": round(r.output_tok_s),
                    "out_tok_s_p10": round(r.output_tok_s_p10),
                    "out_tok_s_p90": round(r.output_tok_s_p90),
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


def make_replica_timer(model: ModelSpec, pool: PoolSpec, gpu: GPUSpec, tp: int, pp: int,
                       eng: EngineConfig, isl_hint: int, ep: int = 1) -> ReplicaTimer:
    """Step times of one TP x PP replica, each iteration priced by
    ``sim.iteration.price_iteration`` with the engine profile (its kernels, its CUDA-graph
    rule, its scheduler time), as the simulator prices it.

    With ``pp`` stages an engine's iteration passes every stage in turn, so it takes the
    sum of the stages' times; the layout and its KV capacity come from
    ``sim.serving.feasibility.check_replica`` (``InfeasibleError`` when it does not run)."""
    parallel = ParallelConfig(tp=tp, pp=pp, ep=ep)
    fit = check_replica(model, pool, gpu, parallel, eng)
    cost = get_cost_model(gpu)
    prof = eng.engine_profile
    own = isinstance(cost, MeasuredCostModel)
    table = load_table()

    def price(batch: list[Seq]) -> IterationCost:
        return price_iteration(model, gpu, batch, parallel, cost, prof, dtype=eng.dtype, kv_dtype=eng.kv_dtype)

    @cache
    def prefill_it(n: int) -> IterationCost:
        return price([Seq(n, 0)])

    @cache
    def iteration_it(b: int, c: int, k: int) -> IterationCost:
        return price([Seq(1, c)] * b + prompt_chunks(k))

    def prompt_chunks(k: int) -> list[Seq]:
        """``k`` prompt tokens as whole prompts of the mean prompt length plus one partial one."""
        isl = max(1, isl_hint)
        full, rem = divmod(k, isl)
        return [Seq(isl, 0)] * full + ([Seq(rem, 0)] if rem else [])

    def prefill_band(n: int) -> tuple[float, float]:
        it = prefill_it(n)
        return table.log_bounds(gpu.name, forward_class(True, it.captured), own_profile=own,
                                roofline_share=it.source_share.get("roofline", 0.0))

    def iteration_band(b: int, c: int, k: int) -> tuple[float, float]:
        it = iteration_it(b, c, k)
        return table.log_bounds(gpu.name, tpot_class(prof, b, c), own_profile=own,
                                roofline_share=it.source_share.get("roofline", 0.0))

    return ReplicaTimer(lambda n: prefill_it(n).time_s, lambda b, c, k: iteration_it(b, c, k).time_s,
                        fit.kv_tokens, engines=pp, max_replicas=fit.max_replicas,
                        prefill_log_band=prefill_band, iteration_log_band=iteration_band)


def tpot_class(prof: EngineProfile, b: int, context: int) -> str:
    """Interval class of a TPOT: the decode forward of ``b`` sequences at ``context``, graph or
    eager as the profile launches that decode batch (``decode_graph`` for vLLM's captured decodes)."""
    return forward_class(False, captures(prof, [Seq(1, context)] * b))


MAX_RATE_RPS = 1e7
"""The largest demand the full planner takes: its integer programs count replicas, and a
rate beyond this (a unit slip, 1e300) would only overflow the solver's numerics."""


def _too_fast(rate_rps: float) -> ConfigError:
    return ConfigError(f"rate_rps={rate_rps:g} is beyond what the planner sizes ({MAX_RATE_RPS:g} req/s, "
                       "about a million GPUs of a small model): check the units (requests per second)")


def planner_flags(*values: Any) -> bool:
    return any(v is not None for v in values)


def plan_serving(
    model: str | ModelSpec,
    cluster: str | ClusterSpec | None,
    *,
    isl: int | None = None,
    osl: int | None = None,
    workload: str | None = None,
    rate_rps: float | None = None,
    ttft_s: float | None = None,
    tpot_s: float | None = None,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
    engine: str | Path = "vllm",
    objective: str | None = None,
    market: str | list | None = None,
    power_budget_w: float | None = None,
    slo_percentile: float = 90.0,
    goodput_share: float = 0.9,
    simulate: bool = True,
    seed: int = 0,
    buckets: int = 1,
    search_space: Any = None,
    evaluate_many: Callable[..., list[Any]] | None = None,
    executor: Any = None,
    workers: int | None = None,
    disaggregate: str = "auto",
) -> ServingPlan:
    """Rank feasible TP x PP x replica deployments of ``model`` on ``cluster``.

    ``engine``: the serving engine profile (name or YAML path) whose iterations, memory and
    layout rules price every candidate, the same the simulator runs by default.

    Lengths not given come from the mean prompt/output lengths of ``workload`` (default the
    built-in ``azure-conv``, fitted to the Azure 2023 conversation trace).

    The full planner (``.search`` / ``.plans``, run on first access; validated here):
    ``objective`` (``min_cost``, ``min_gpus``, ``min_energy`` with a rate; ``max_goodput``,
    the default without one), ``market`` (``GPU:$/h:COUNT,...`` instead of ``cluster``: pass
    ``cluster=None``), ``power_budget_w`` (facility watts), the SLO at ``slo_percentile``
    with ``goodput_share`` of requests within both targets, ``simulate`` (capacities by
    simulation for the top candidates; else analytic), ``seed`` (the plans are re-simulated
    with ``seed + 1``), ``buckets`` (request-size buckets), ``search_space``
    (``planner.serving.records.SearchSpace``), ``executor`` (``local`` process pool of
    ``workers``, ``ray``, or an object with ``map``; default in-process; results are the same
    whichever runs them) or ``evaluate_many(fn, items)``, and ``disaggregate`` (``auto``:
    co-located and xPyD prefill/decode plans ranked together; ``never``; ``only``).
    """
    from fleetsim.plan_search import (
        budget_over_baseline,
        check_disaggregate,
        evaluator,
        inventory_supply,
        market_supply,
        parse_market,
        run_search,
    )
    from fleetsim.planner.serving.records import OBJECTIVES, SearchSpace, Slo

    spec = model if isinstance(model, ModelSpec) else load_model(model)
    if market is not None:
        if cluster is not None:
            raise ConfigError("give either a cluster (inventory) or a market, not both")
        cl, supplies = market_supply(parse_market(market))
    elif cluster is None:
        raise ConfigError("give a cluster (inventory) or a market")
    else:
        cl = cluster if isinstance(cluster, ClusterSpec) else load_cluster(cluster)
        supplies = inventory_supply(cl)
    if objective is not None and objective not in OBJECTIVES:
        raise ConfigError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
    budget_w = budget_over_baseline(cl, supplies, power_budget_w, market is not None)
    if search_space is not None and not isinstance(search_space, SearchSpace):
        search_space = SearchSpace(**search_space)
    if not isinstance(simulate, bool):
        raise ConfigError(f"simulate must be true or false, got {simulate!r}")
    isl = None if isl is None else positive_int(isl, "isl")
    osl = None if osl is None else positive_int(osl, "osl")
    rate_rps = None if rate_rps is None else positive(rate_rps, "rate_rps")
    if rate_rps is not None and rate_rps > MAX_RATE_RPS and (market is not None or planner_flags(
            objective, power_budget_w, search_space, executor)):
        raise _too_fast(rate_rps)
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
    slo = Slo(ttft_s=ttft_s, tpot_s=tpot_s, percentile=slo_percentile, goodput_share=goodput_share)
    if objective is not None and objective != "max_goodput" and rate_rps is None:
        raise ConfigError(f"objective {objective!r} needs a request rate (rate_rps / --rate)")
    check_disaggregate(disaggregate, objective or ("min_cost" if rate_rps is not None else "max_goodput"), rate_rps)
    if executor is not None and evaluate_many is not None:
        raise ConfigError("give either executor or evaluate_many, not both")
    evaluate_many = evaluate_many or evaluator(executor, workers)
    for name, value in (("dtype", dtype), ("kv_dtype", kv_dtype)):
        if value is not None and value not in DTYPE_BYTES:
            raise ConfigError(f"{name} {value!r} is not one of {', '.join(DTYPE_BYTES)}")
    check_context(spec, isl + osl, "isl + osl")
    if not isinstance(engine, (str, Path)):
        raise ConfigError(f"engine must be a profile name or YAML path, got {type(engine).__name__}")
    get_engine(engine)  # an unknown name: one line with close matches
    eng = EngineConfig(profile=str(engine), dtype=dtype, kv_dtype=kv_dtype or act_dtype(dtype))
    check_engine(eng.engine_profile, spec)
    gpus = {p.node.gpu: get_gpu(p.node.gpu) for p in cl.pools}
    fp = first_plan(
        cl,
        gpus,
        spec.num_heads,
        spec.num_kv_heads,
        targets,
        lambda pool, gpu, tp, pp: make_replica_timer(spec, pool, gpu, tp, pp, eng, targets.isl),
        spec.num_layers,
    )
    planner_mode = market is not None or planner_flags(objective, power_budget_w, search_space, executor)
    if not fp.rows and not planner_mode:
        reasons = "; ".join(f"{r.gpu} TP={r.tp} PP={r.pp}: {r.reason}" for r in fp.rejected)
        raise InfeasibleError(f"no deployment of {spec.name} runs on {cl.name}: {reasons}")
    if not math.isfinite(sum(r.output_tok_s for r in fp.rows)):
        raise ConfigError("plan produced a non-finite throughput")
    wl = _search_workload(workload, lengths_from, isl, osl, rate_rps)

    def searched() -> Any:
        if rate_rps is not None and rate_rps > MAX_RATE_RPS:
            raise _too_fast(rate_rps)
        return run_search(spec, cl, supplies, wl, rate_rps, slo, objective, eng,
                          lambda pool, gpu, tp, pp, ep, e: make_replica_timer(spec, pool, gpu, tp, pp, e, isl, ep),
                          budget_w=budget_w, simulate=simulate, seed=seed, space=search_space, buckets=buckets,
                          evaluate_many=evaluate_many, disaggregate=disaggregate)

    return ServingPlan(spec, cl, fp, lengths_from, _provenance(spec, fp, eng), eng.engine_profile.name, searched)


def _search_workload(workload: str | None, lengths_from: str, isl: int, osl: int, rate_rps: float | None) -> Any:
    """The workload the search simulates: the named one, or Poisson arrivals of the given
    fixed lengths (its rate is set per simulation)."""
    from fleetsim.workloads.defaults import get_workload

    if lengths_from == "given":
        return get_workload(f"poisson:rate={rate_rps or 1.0:g},isl={isl},osl={osl}")
    return get_workload(workload or "azure-conv")


def _provenance(spec: ModelSpec, fp: FirstPlan, eng: EngineConfig) -> dict[str, dict[str, float]]:
    """Where the device time of each GPU type's best row comes from (one prefill and one
    decode iteration at its batch)."""
    out: dict[str, dict[str, float]] = {}
    t = fp.targets
    for row in fp.rows:
        if row.gpu in out:
            continue
        gpu = get_gpu(row.gpu)
        par = ParallelConfig(tp=row.tp, pp=row.pp)
        cost = get_cost_model(gpu)
        its = [price_iteration(spec, gpu, batch, par, cost, eng.engine_profile, dtype=eng.dtype,
                               kv_dtype=eng.kv_dtype)
               for batch in ([Seq(t.isl, 0)], [Seq(1, t.isl + t.osl // 2)] * max(1, row.batch // row.pp))]
        total = sum(it.device_s for it in its)
        out[row.gpu] = {k: sum(it.source_share.get(k, 0.0) * it.device_s for it in its) / total
                        for k in ("measured", "interpolated", "roofline")}
    return out
