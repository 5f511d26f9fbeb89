"""Public serving-simulation API: ``simulate_serving`` and its ``ServingResult``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fleetsim.hardware.checks import (
    make_out_dir,
    non_negative_int,
    positive,
    positive_int,
    warn_user,
)
from fleetsim.hardware.cluster import load_cluster
from fleetsim.hardware.errors import ConfigError
from fleetsim.hardware.specs import ClusterSpec
from fleetsim.sim.serving.autoscale import AutoscaleConfig
from fleetsim.sim.serving.cluster import ServingSimulation, default_deployment
from fleetsim.sim.serving.config import (
    Deployment,
    EngineConfig,
    LoraConfig,
    PoolDeployment,
    SpecDecode,
    StaticScheduler,
    VllmScheduler,
)
from fleetsim.sim.serving.results import RawTables, collect
from fleetsim.workloads import DEFAULT_NUM_REQUESTS
from fleetsim.workloads.arrivals import TraceArrivals
from fleetsim.workloads.defaults import get_workload
from fleetsim.workloads.lora import check_lora_ranks
from fleetsim.workloads.models import ModelSpec, check_context, load_model, over_context
from fleetsim.workloads.requests import RequestStream
from fleetsim.workloads.workload import Workload

__all__ = ["AutoscaleConfig", "default_deployment", "Deployment", "EngineConfig", "LoraConfig", "PoolDeployment", "ServingResult", "SpecDecode",
           "StaticScheduler", "VllmScheduler", "simulate_serving"]

TRACE_SPAN_LIMIT = 200_000
"""Most iteration spans written to the Chrome trace (the first ones in time)."""


class ServingResult:
    """Outcome of a serving simulation.

    ``requests``: one row per arrived request (times in seconds; NaN where a request never
    got that far). ``summary``: percentiles, throughput, goodput, cache and overload figures.
    ``timeseries``: one row per engine iteration run (a fast-forwarded decode run is one row
    of ``iterations`` identical-batch iterations) with batch size and KV occupancy, in
    order of start time.
    ``replicas``: layout, KV capacity, busy time and utilisation per replica, and its GPUs'
    energy (``energy_j`` = ``busy_energy_j`` of its iterations + ``idle_energy_j``) and mean draw.
    ``power``: mean GPU draw (W) per cluster pool in time bins; ``pools``: energy per pool
    (GPU, and facility with node hosts and PUE). Energy accounting: ``sim.serving.energy``;
    the request table's ``energy_j`` is each request's token share of its iterations' energy,
    the timeseries' ``energy_j`` / ``power_w`` those of the replica's GPUs in each row.
    """

    def __init__(self, raw: RawTables, deployment: Deployment, model: ModelSpec,
                 cluster: ClusterSpec) -> None:
        self._raw = raw
        self.requests: pd.DataFrame = raw.requests
        self.summary: dict[str, Any] = raw.summary
        self.timeseries: pd.DataFrame = raw.timeseries
        self.replicas: pd.DataFrame = raw.replicas
        self.transfers: pd.DataFrame = raw.transfers
        self.power: pd.DataFrame = raw.power
        self.pools: pd.DataFrame = raw.pools
        self.scaling = raw.scaling
        """Autoscaled runs: ``timeline`` (replicas per state over time), ``entries`` (GPU-hours,
        cost, cold start per deployment entry), ``decisions``, ``slo`` (attainment per
        interval); None for a fixed fleet."""
        self.tenant: np.ndarray | None = None
        """With a tenant mix: each request's tenant index, in ``requests`` row order."""
        self.deployment = deployment
        self.model = model
        self.cluster = cluster

    def token_times(self, req_id: int) -> np.ndarray:
        """Times (s) at which request ``req_id`` received its tokens (per iteration)."""
        span = self._raw.token_runs.get(int(req_id))
        if span is None:
            raise ConfigError(f"no token record for request {req_id} (unknown id, or run too large)")
        runs = self._raw.runs[span[0]: span[1]].tolist()
        ends = self._raw.iter_end
        parts = [ends[runs[i]][runs[i + 1]: runs[i + 2] + 1] for i in range(0, len(runs), 3)]
        return np.concatenate(parts) if parts else np.zeros(0)

    def itl(self) -> pd.DataFrame:
        """Every inter-token latency, long format (``req_id``, ``token``, ``itl_s``)."""
        ids, idx, vals = [], [], []
        for rid in self._raw.token_runs:
            t = self.token_times(rid)
            if len(t) > 1:
                d = np.diff(t)
                ids.append(np.full(len(d), rid, np.int64))
                idx.append(np.arange(1, len(d) + 1))
                vals.append(d)
        if not vals:
            return pd.DataFrame({"req_id": [], "token": [], "itl_s": []})
        return pd.DataFrame({"req_id": np.concatenate(ids), "token": np.concatenate(idx),
                             "itl_s": np.concatenate(vals)})

    def trace_spans(self, limit: int = TRACE_SPAN_LIMIT) -> list[dict[str, Any]]:
        """Iteration spans per replica/engine for a Chrome/Perfetto timeline."""
        ts = self.timeseries.head(limit)
        spans = []
        for row in ts.itertuples(index=False):
            name = f"decode x{row.iterations}" if row.iterations > 1 else "iteration"
            spans.append({"process": f"replica {row.replica}", "thread": f"engine {row.engine}",
                          "name": name, "start_s": row.start_s, "dur_s": row.end_s - row.start_s,
                          "args": {"batch_size": int(row.batch_size), "tokens": int(row.tokens),
                                   "kv_occupancy": float(row.kv_occupancy)}})
        return spans

    def power_counters(self, limit: int = TRACE_SPAN_LIMIT) -> list[dict[str, Any]]:
        """The per-pool GPU draw of ``power`` as Perfetto counter events (one track per pool)."""
        rows = self.power.head(limit)
        return [{"process": f"pool {int(p)} power", "name": "power_w", "time_s": float(t),
                 "values": {"W": float(w)}}
                for t, p, w in zip(rows["start_s"], rows["pool"], rows["power_w"], strict=True)]

    def save(self, out_dir: str | Path) -> Path:
        """Write requests/timeseries/replicas (parquet when pyarrow is present, else CSV),
        summary.json and a Chrome trace ``trace.json.gz``; returns the directory."""
        from fleetsim.traces.chrome import write_chrome_trace

        out = make_out_dir(out_dir)
        try:
            import pyarrow  # noqa: F401

            def write(df: pd.DataFrame, name: str) -> None:
                df.to_parquet(out / f"{name}.parquet", index=False)
        except ImportError:  # pragma: no cover - pyarrow is optional

            def write(df: pd.DataFrame, name: str) -> None:
                df.to_csv(out / f"{name}.csv", index=False)

        write(self.requests, "requests")
        write(self.timeseries, "timeseries")
        write(self.replicas, "replicas")
        write(self.power, "power")
        if len(self.transfers):
            write(self.transfers, "kv_transfers")
        if self.scaling is not None:
            for name in ("timeline", "entries", "decisions", "slo"):
                write(getattr(self.scaling, name), f"scaling_{name}")
        summ = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.summary.items()}
        (out / "summary.json").write_text(json.dumps(summ, indent=2, default=float))
        (out / "deployment.json").write_text(self.deployment.model_dump_json(indent=2))
        counters = [{"process": s["process"], "name": "kv_occupancy", "time_s": s["start_s"] + s["dur_s"],
                     "values": {"kv": s["args"]["kv_occupancy"]}} for s in self.trace_spans()]
        counters += self.power_counters()
        write_chrome_trace(self.trace_spans(), out / "trace.json.gz", counters,
                           metadata={"model": self.model.name, "cluster": self.cluster.name})
        return out

    def figures(self, slo: dict[str, float] | None = None) -> dict[str, Any]:
        """Matplotlib figures (``fleetsim.figures.serving_figures``): ``latency_cdf``,
        ``latency_hist``, ``timeseries``; SLO lines from ``slo`` or the run's own targets.
        ``fleetsim.figures.save_figures`` writes them as PNGs."""
        from fleetsim.figures import serving_figures

        return serving_figures(self, slo)

    def __repr__(self) -> str:
        s = self.summary
        return (f"ServingResult({s['num_requests']} requests, {s['finished']} finished, "
                f"ttft p50 {s['ttft_p50_s']:.3g} s, tpot p50 {s['tpot_p50_s']:.3g} s)")


def _requests(workload: Any, seed: int, num_requests: int | None, duration_s: float | None
              ) -> RequestStream:
    if isinstance(workload, RequestStream):
        return workload
    wl: Workload = get_workload(workload)
    if num_requests is None and duration_s is None:
        if not isinstance(wl.arrivals, TraceArrivals) or wl.sessions is not None:
            num_requests = DEFAULT_NUM_REQUESTS
        else:
            num_requests = wl.arrivals.num_trace_requests()  # a trace replays once by default
    return wl.generate(seed, num_requests=num_requests, duration_s=duration_s)


def simulate_serving(model: str | ModelSpec | dict, cluster: str | ClusterSpec | dict,
                     workload: Any, deployment: Deployment | dict | None = None, seed: int = 0,
                     slo: dict[str, float] | None = None, *, num_requests: int | None = None,
                     duration_s: float | None = None, engine: EngineConfig | dict | str | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     autoscaler: AutoscaleConfig | dict | str | None = None,
                     load_profile: Any = None) -> ServingResult:
    """Simulate serving ``model`` on ``cluster`` under ``workload``.

    ``workload``: a ``RequestStream``, or anything ``workloads.defaults.get_workload``
    takes (a built-in name such as ``azure-conv``, a file, a spec string like
    ``poisson:rate=5``), drawn with ``seed`` for ``num_requests`` and/or ``duration_s``
    (neither: ``DEFAULT_NUM_REQUESTS`` requests; a trace workload replays its own arrivals). ``deployment``: a ``Deployment`` (or its
    dict); None means one replica per GPU where the model fits on one GPU, else the
    smallest TP that fits, per GPU type, with ``engine`` knobs (an ``EngineConfig``, its
    dict, or an engine profile name/path as shorthand for ``EngineConfig(profile=...)``;
    the summary's ``engine`` names the profile each pool ran). ``slo``: targets
    ``ttft_slo_s`` and/or ``tpot_slo_s`` for goodput. Raises ``InfeasibleError`` with the
    reason when a layout does not fit.

    ``load_profile``: a time-varying rate (``workloads.profile``: a profile, its dict, or a spec
    such as ``diurnal:peak=20,trough=5``) replacing the workload's arrivals for ``duration_s``
    seconds; the workload then only gives the length distributions (or is a ``TenantMix``).
    ``autoscaler``: an ``AutoscaleConfig`` (or its dict, or a spec such as
    ``utilization:target=0.7,max=8``, see ``fleetsim.capacity.parse_autoscale``); the result's
    ``scaling`` holds the replica timeline, GPU-hours and cost.
    """
    m = load_model(model)
    cl = load_cluster(cluster)
    deployment = _config(deployment, Deployment, "deployment")
    if isinstance(engine, str):
        engine = EngineConfig(profile=engine)
    eng_cfg: EngineConfig | None = _config(engine, EngineConfig, "engine")
    if deployment is not None and eng_cfg is not None:
        raise ConfigError("give engine knobs inside the deployment, not both")
    slo = _slo(slo)
    if not isinstance(seed, np.random.Generator | np.random.SeedSequence):
        seed = non_negative_int(seed, "seed")
    if num_requests is not None:
        num_requests = positive_int(num_requests, "num_requests")
    if duration_s is not None:
        duration_s = positive(duration_s, "duration_s")
    if progress is not None and not callable(progress):
        raise ConfigError(f"progress must be a callable (done, total), got {type(progress).__name__}")
    tenant = None
    if load_profile is not None:
        from fleetsim.capacity import profile_requests

        stream, tenant = profile_requests(workload, load_profile, seed, duration_s, num_requests)
    else:
        stream = _requests(workload, seed, num_requests, duration_s)
    if autoscaler is not None:
        from fleetsim.capacity import autoscale_config

        autoscaler = autoscale_config(autoscaler)
    reqs, rejected = _within_context(stream, m)
    if tenant is not None and rejected:
        tenant = tenant[~over_context(m, stream.prompt_tokens + stream.output_tokens)]
    if not len(reqs):
        raise ConfigError("the workload produced no requests")
    uses_lora = bool((reqs.column("lora_rank") > 0).any())
    if uses_lora:
        check_lora_ranks(reqs, m.hidden_size, m.name)
        if deployment is None and (eng_cfg is None or eng_cfg.lora is None):
            eng_cfg = (eng_cfg or EngineConfig()).model_copy(update={"lora": LoraConfig()})
    if deployment is None:
        deployment = default_deployment(m, cl, eng_cfg)
    if uses_lora:
        _check_lora_deployment(reqs, deployment)
    sim = ServingSimulation(m, cl, deployment, reqs, seed=seed, progress=progress, autoscale=autoscaler)
    sim.run()
    raw = collect(sim, slo.get("ttft_slo_s"), slo.get("tpot_slo_s"))
    raw.summary["rejected_over_context"] = rejected
    raw.summary["engine"] = ",".join(dict.fromkeys(p.engine.engine_profile.name for p in sim.deployment.pools))
    result = ServingResult(raw, sim.deployment if autoscaler is not None else deployment, m, cl)
    if tenant is not None:
        order = np.argsort(reqs.req_id, kind="stable")
        by_id = dict(zip(reqs.req_id[order].tolist(), tenant[order].tolist(), strict=True))
        result.tenant = np.array([by_id[int(i)] for i in result.requests["req_id"]], dtype=np.int64)
    return result


def _check_lora_deployment(reqs: RequestStream, deployment: Deployment) -> None:
    """Every pool serves LoRA, and no adapter's rank exceeds a slot's ``max_lora_rank``."""
    ranks = reqs.column("lora_rank")
    for i, p in enumerate(deployment.pools):
        lora = p.engine.lora
        if lora is None:
            raise ConfigError(f"the requests carry LoRA adapters but deployment pool {i} has no engine.lora "
                              "(give EngineConfig(lora=LoraConfig(...)))")
        bad = ranks > lora.max_lora_rank
        if lora.memory == "slots" and bad.any():
            j = int(np.argmax(bad))
            raise ConfigError(f"request {int(reqs.req_id[j])}: lora_rank {int(ranks[j])} exceeds max_lora_rank "
                              f"{lora.max_lora_rank} of deployment pool {i}'s adapter slots")


def _within_context(reqs: RequestStream, model: ModelSpec) -> tuple[RequestStream, int]:
    """The requests whose prompt plus output fit ``model``'s context, and how many did not.

    As vLLM does (it answers such a request with an error), a request longer than the
    context is rejected, not served; a warning names how many, and the result's summary
    keeps the count as ``rejected_over_context``."""
    total = reqs.prompt_tokens + reqs.output_tokens
    over = over_context(model, total)
    n = int(over.sum())
    if not n:
        return reqs, 0
    if n == len(reqs):
        check_context(model, int(total.min()), f"every request of the workload is too long: prompt + output of {n} requests, shortest")
    warn_user(f"{n} of {len(reqs)} requests have prompt + output longer than {model.name}'s context of "
              f"{model.max_position_embeddings} tokens (longest {int(total.max())}); rejected them, as vLLM "
              f"does (summary: rejected_over_context)")
    return reqs.select(~over), n


def _config(value: Any, model: type[Any], name: str) -> Any:
    """``value`` as a ``model`` (a dict of its fields is converted; errors name the field)."""
    if value is None or isinstance(value, model):
        return value
    if isinstance(value, dict):
        return model(**value)
    raise ConfigError(f"{name} must be a {model.__name__} or a dict of its fields, got {type(value).__name__}")


def _slo(slo: Any) -> dict[str, float]:
    if slo is None:
        return {}
    if not isinstance(slo, dict):
        raise ConfigError(f"slo must be a dict with ttft_slo_s and/or tpot_slo_s, got {type(slo).__name__}")
    unknown = set(slo) - {"ttft_slo_s", "tpot_slo_s"}
    if unknown:
        raise ConfigError(f"slo: unknown key(s) {sorted(map(str, unknown))}; known: ttft_slo_s, tpot_slo_s")
    return {k: positive(v, f"slo {k}") for k, v in slo.items() if v is not None}
