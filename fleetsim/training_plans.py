"""Public training-plan API: ``plan_training`` (what ``fleetsim plan --training`` prints).

The search itself is ``fleetsim.planner.training`` (one pool) and
``fleetsim.planner.mixed_training`` (pipeline stages across GPU types); this module resolves
names, simulates the candidates the search asks for with the training simulator (the numbers
of ``estimate_train_step``), and turns the result into ``TrainPlan`` with engine arguments.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fleetsim.calibration.engines import EngineProfile
from fleetsim.hardware.checks import positive, positive_int
from fleetsim.hardware.errors import ConfigError, InfeasibleError
from fleetsim.hardware.specs import ClusterSpec
from fleetsim.planner.executor import Executor, LocalExecutor, make_executor
from fleetsim.planner.flags import TrainingLayout
from fleetsim.planner.training import (
    OBJECTIVES,
    Rejection,
    SearchResult,
    TrainCandidate,
    TrainEvaluation,
    closest_miss,
    search,
)
from fleetsim.sim.training import step as _step
from fleetsim.sim.training.job import TrainJob, TrainParallel
from fleetsim.training import TrainEstimate, _cluster, build_train_job
from fleetsim.workloads.models import ModelSpec, load_model

GIB = 2.0**30
FAILURE_OBJECTIVE = "time_to_train_failures"
"""Rank by ``estimate_training_run``'s mean time to train under the default failure catalog."""
FAILURE_CANDIDATES = 3
"""Plans (best by step time) that get the run simulation under ``FAILURE_OBJECTIVE``."""
FAILURE_SEEDS = 4
"""Seeds of each run simulation under ``FAILURE_OBJECTIVE`` (the same for every plan)."""


def evaluation(est: TrainEstimate, tokens: float | None, bound_s: float = 0.0) -> TrainEvaluation:
    """The planner's record of one simulated step (``TrainEstimate``'s numbers)."""
    from fleetsim.planner.training import candidate_of

    cost = est.train_cost(tokens) if tokens else None
    bd = {k: float(v) for k, v in est.breakdown.items() if not k.startswith("mem_")}
    bd["hfu"] = est.hfu
    return TrainEvaluation(
        candidate=candidate_of(est.job), gpu=est.gpu.name, gpus=est.num_gpus, time_s=est.time_s, mfu=est.mfu,
        tokens_per_s=est.tokens_per_s, peak_memory_bytes=est.peak_memory_bytes,
        memory={k.removeprefix("mem_"): float(v) for k, v in est.breakdown.items() if k.startswith("mem_")},
        energy_j=est.energy_j, facility_j_per_token=est.facility_j_per_token,
        train_time_s=None if cost is None else float(cost["time_s"] or 0.0),
        train_cost_usd=None if cost is None or cost["cost_usd"] is None else float(cost["cost_usd"]),
        train_energy_j=None if cost is None else float(cost["energy_j"] or 0.0),
        price_per_gpu_hour=est.price_per_gpu_hour(), breakdown=bd, bound_s=bound_s,
    )


@dataclass
class TrainPlanEntry:
    """One ranked training configuration with its simulated (or per-stage priced) numbers."""

    evaluation: TrainEvaluation
    job: TrainJob
    run: Any = None
    """``TrainingRunEstimate`` under failures (objective ``time_to_train_failures`` only)."""

    @property
    def candidate(self) -> TrainCandidate:
        return self.evaluation.candidate

    @property
    def parallel(self) -> TrainParallel:
        return self.candidate.parallel()

    @property
    def micro_batch(self) -> int:
        return self.candidate.micro_batch

    @property
    def recompute(self) -> str:
        return self.candidate.recompute

    @property
    def zero(self) -> int:
        return self.candidate.zero

    @property
    def time_s(self) -> float:
        return self.evaluation.time_s

    @property
    def mfu(self) -> float:
        return self.evaluation.mfu

    @property
    def tokens_per_s(self) -> float:
        return self.evaluation.tokens_per_s

    @property
    def peak_memory_bytes(self) -> float:
        return self.evaluation.peak_memory_bytes

    @property
    def memory(self) -> dict[str, float]:
        return self.evaluation.memory

    @property
    def energy_j(self) -> float:
        return self.evaluation.energy_j

    @property
    def train_time_s(self) -> float | None:
        return self.evaluation.train_time_s

    @property
    def train_cost_usd(self) -> float | None:
        return self.evaluation.train_cost_usd

    @property
    def train_energy_j(self) -> float | None:
        return self.evaluation.train_energy_j

    def layout(self) -> TrainingLayout:
        """The engine-settings record of this plan (``planner.flags.TrainingLayout``)."""
        from fleetsim.planner.train_flags import training_layout

        return training_layout(self.job)

    def megatron_args(self) -> list[str]:
        """Megatron-LM ``pretrain_gpt.py`` arguments (``planner.flags.megatron_args``)."""
        from fleetsim.planner.flags import megatron_args

        return list(megatron_args(self.layout()))

    def torchtitan_toml(self) -> str:
        """A torchtitan job config (``planner.flags.torchtitan_toml``)."""
        from fleetsim.planner.flags import torchtitan_toml

        return torchtitan_toml(self.layout())

    def setting_notes(self) -> list[str]:
        """What the engine settings above do not say (uneven stages, ZeRO-2, offload)."""
        from fleetsim.planner.train_flags import setting_notes

        return setting_notes(self.job)

    def explain(self) -> list[str]:
        from fleetsim.planner.train_flags import explain

        return explain(self.evaluation, self.job)

    def as_dict(self) -> dict[str, Any]:
        ev = self.evaluation
        c = ev.candidate
        return {
            "gpu": ev.gpu, "gpus": ev.gpus, "pool": c.pool, "tp": c.tp, "cp": c.cp, "pp": c.pp, "dp": c.dp,
            "ep": c.ep, "vpp": c.vpp, "micro_batch": c.micro_batch, "sequence_parallel": c.sequence_parallel,
            "recompute": c.recompute, "zero": c.zero, "offload_optimizer": c.offload_optimizer,
            "offload_params": c.offload_params, "layer_split": None if c.layer_split is None else list(c.layer_split),
            "time_s": ev.time_s, "mfu": ev.mfu, "tokens_per_s": ev.tokens_per_s,
            "peak_memory_bytes": ev.peak_memory_bytes, "energy_j_per_step": ev.energy_j,
            "facility_j_per_token": ev.facility_j_per_token, "train_time_s": ev.train_time_s,
            "train_cost_usd": ev.train_cost_usd, "train_energy_j": ev.train_energy_j,
            "priced_by": ev.priced_by, "breakdown": ev.breakdown, "memory": ev.memory,
            **self._settings(),
            **({} if self.run is None else {"train_time_failures_s": self.run.time_to_train_s,
                                            "ettr": self.run.ettr, "checkpoint_interval_s": self.run.interval_s}),
        }

    def _settings(self) -> dict[str, Any]:
        """Engine settings for ``as_dict``; a layout the engines cannot run (a model outside the
        catalog, a sequence the flags' divisibility rules refuse) gives None and the reason."""
        try:
            got: dict[str, Any] = {"megatron_args": self.megatron_args(), "torchtitan_toml": self.torchtitan_toml()}
        except ConfigError as exc:
            return {"megatron_args": None, "torchtitan_toml": None, "setting_notes": [str(exc)]}
        return {**got, "setting_notes": self.setting_notes()}


@dataclass
class TrainPlan:
    """Ranked training configurations, best first, with what was searched."""

    model: ModelSpec
    cluster: ClusterSpec
    objective: str
    global_batch: int
    seq_len: int
    tokens: float | None
    plans: list[TrainPlanEntry]
    rejected: list[Rejection]
    candidates: int
    simulated: int
    notes: list[str] = field(default_factory=list)
    search_s: float = 0.0
    """Wall seconds of the search (not part of ``as_dict``: it varies run to run)."""

    @property
    def best(self) -> TrainPlanEntry:
        return self.plans[0]

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures (``fleetsim.figures.plan_figures``): ``train_frontier`` (step
        time vs cost and MFU) and ``train_memory``."""
        from fleetsim.figures import plan_figures

        return plan_figures(self)

    def headline(self) -> str:
        lines = [
            f"Training plan for {self.model.name} ({self.model.params_total() / 1e9:.1f}B params) on "
            f"{self.cluster.name} ({self.cluster.num_gpus} GPUs)",
            f"global batch {self.global_batch} x {self.seq_len} tokens; objective: {self.objective}"
            + (f"; {self.tokens:.3g} tokens to train" if self.tokens else ""),
            f"{self.candidates} memory-feasible candidates, {self.simulated} simulated "
            f"(the rest bounded out), {len(self.rejected)} rejected",
        ]
        return "\n".join(lines + self.notes)

    def table(self) -> pd.DataFrame:
        recs = []
        for i, e in enumerate(self.plans, 1):
            ev, c = e.evaluation, e.candidate
            recs.append({
                "rank": i, "gpu": ev.gpu, "gpus": ev.gpus, "tp": c.tp, "pp": c.pp, "dp": c.dp, "cp": c.cp,
                "ep": c.ep, "vpp": c.vpp, "mb": c.micro_batch, "recompute": c.recompute, "zero": c.zero,
                "offload": "-" if not (c.offload_optimizer or c.offload_params) else
                "opt" + ("+params" if c.offload_params else ""),
                "step_s": round(ev.time_s, 3), "mfu": round(ev.mfu, 3), "tok_s": round(ev.tokens_per_s),
                "mem_GiB": round(ev.peak_memory_bytes / GIB, 1),
                "days": None if ev.train_time_s is None else round(ev.train_time_s / 86400, 2),
                "cost_usd": None if ev.train_cost_usd is None else round(ev.train_cost_usd),
                "MWh": None if ev.train_energy_j is None else round(ev.train_energy_j / 3.6e9, 1),
                "priced_by": ev.priced_by,
            })
            if e.run is not None:
                recs[-1].update({"days_failures": round(e.run.time_to_train_s / 86400, 2),
                                 "ettr": round(e.run.ettr, 3), "ckpt_interval_s": round(e.run.interval_s)})
        return pd.DataFrame.from_records(recs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.name, "cluster": self.cluster.name, "objective": self.objective,
            "global_batch": self.global_batch, "seq_len": self.seq_len, "tokens": self.tokens,
            "candidates": self.candidates, "simulated": self.simulated, "rejected": len(self.rejected),
            "notes": self.notes, "plans": [e.as_dict() for e in self.plans],
        }


@dataclass(frozen=True)
class Simulate:
    """Simulates one candidate job (``estimate_train_step``'s simulator) into its record."""

    tokens: float | None

    def __call__(self, job: TrainJob, bound_s: float) -> TrainEvaluation:
        est = TrainEstimate(_step.simulate_step(job, record=False))
        return evaluation(est, self.tokens, bound_s)


def infeasible_message(model: ModelSpec, cluster: ClusterSpec, rejected: list[Rejection]) -> str:
    """The binding constraint and the closest miss of a request nothing satisfies."""
    miss = closest_miss(rejected)
    if miss is not None:
        return (f"no training layout of {model.name} fits on {cluster.name}: binding constraint GPU memory; "
                f"closest miss {miss.candidate.label()} needs {miss.overshoot_bytes / GIB:.1f} GiB more per GPU "
                f"({miss.reason})")
    kinds = sorted({r.constraint for r in rejected})
    first = rejected[0].reason if rejected else "no layout divides the cluster"
    return (f"no training layout of {model.name} runs on {cluster.name}: binding constraint "
            f"{', '.join(kinds) or 'layout'} ({first})")


def plan_training(
    model: str | dict | ModelSpec,
    cluster: str | ClusterSpec,
    *,
    global_batch: int,
    seq_len: int | None = None,
    tokens: float | None = None,
    objective: str = "throughput",
    engine: str | Path | EngineProfile = "megatron",
    top: int = 10,
    mixed: bool = True,
    executor: str | Executor | None = None,
    workers: int | None = None,
    **recipe: Any,
) -> TrainPlan:
    """Rank training configurations of ``model`` on ``cluster`` (best first).

    Searches TP/CP/PP/DP/EP, micro-batch, interleaving, recomputation, ZeRO stage and offload
    on each GPU pool (``fleetsim.planner.training``); on a cluster of several GPU types also
    pipelines across the types with layers assigned by an integer program
    (``fleetsim.planner.mixed_training``; those plans are priced from per-stage estimates,
    ``priced_by`` says so) unless ``mixed=False``. ``executor``: where the simulations run
    (``planner.executor``): None in this process (``workers`` > 1: a local pool of that many
    processes), ``"local"`` a process pool of ``workers`` (None: one per core), ``"ray"`` a
    Ray cluster, or an ``Executor``; the plan does not depend on it. ``objective``: ``throughput`` (tokens/s),
    ``time`` (to train ``tokens``; same order), ``cost`` (USD per token at the catalog price),
    ``energy`` (facility joules per token) or ``time_to_train_failures`` (needs ``tokens``:
    ``rank_under_failures`` re-ranks the fastest plans by simulated time to train under the
    default failure catalog and reports each one's checkpoint interval). ``recipe``: ``build_train_job``'s numerics
    options (``dtype``, ``precision``, ``attention``, ``dropout``, ``grad_dtype``,
    ``power_cap_w``, ``execution``). Raises ``InfeasibleError`` naming the binding constraint
    and the closest miss when nothing fits.
    """
    allowed = {"dtype", "precision", "attention", "dropout", "grad_dtype", "power_cap_w", "execution"}
    for k in recipe:
        if k not in allowed:
            raise ConfigError(f"plan_training: unknown option {k!r} (known: {', '.join(sorted(allowed))})")
    if objective not in OBJECTIVES + (FAILURE_OBJECTIVE,):
        raise ConfigError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES + (FAILURE_OBJECTIVE,))}")
    failures = objective == FAILURE_OBJECTIVE
    if failures:
        if tokens is None:
            raise ConfigError(f"objective {FAILURE_OBJECTIVE!r} needs tokens (the tokens to train)")
        objective = "time"  # the step-time search picks the candidates the run simulation ranks
    top = positive_int(top, "top")
    run = _executor(executor, workers)
    if tokens is not None:
        tokens = positive(tokens, "tokens")
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    cl = _cluster(cluster)
    if global_batch is None:
        raise ConfigError("global_batch (sequences per step) is required")
    global_batch = positive_int(global_batch, "global_batch")
    if seq_len is not None:
        seq_len = positive_int(seq_len, "seq_len")
    t0 = time.perf_counter()
    entries: list[TrainPlanEntry] = []
    rejected: list[Rejection] = []
    n_cand = n_sim = 0
    notes: list[str] = []
    for pool in range(len(cl.pools)):
        base = build_train_job(spec, cl, None, 1, _base_batch(global_batch, cl, pool), seq_len,
                               pool=pool, engine=engine, **recipe)
        base = base.model_copy(update={"global_batch": global_batch})
        res: SearchResult = search(base, Simulate(tokens), objective, top, executor=run)
        rejected += res.rejected + res.failed
        n_cand += res.candidates
        n_sim += res.simulated
        for ev in res.plans:
            from fleetsim.planner.training import job_for

            entries.append(TrainPlanEntry(ev, job_for(base, ev.candidate)))
    if len(cl.pools) > 1 and mixed:
        from fleetsim.planner.mixed_training import mixed_search

        base = build_train_job(spec, cl, None, 1, _base_batch(global_batch, cl, 0), seq_len, engine=engine, **recipe)
        base = base.model_copy(update={"global_batch": global_batch})
        mres = mixed_search(base, objective, top, tokens)
        rejected += mres.rejected
        n_cand += mres.candidates
        entries += [TrainPlanEntry(ev, job) for ev, job in mres.plans]
        if mres.plans:
            notes.append("mixed-type plans (priced_by 'per-stage estimate'): the simulator runs one GPU type per "
                         "job, so stages on different types are priced from their simulator layer costs with the "
                         "1F1B pipeline formula, not simulated")
    if not entries and rejected and all(r.constraint == "layout" for r in rejected):
        raise ConfigError(f"global_batch={global_batch}: no layout of {spec.name} on {cl.name} divides it "
                          f"({rejected[0].reason})")
    if not entries:
        raise InfeasibleError(infeasible_message(spec, cl, rejected))
    from fleetsim.planner.training import Score

    score = Score(objective, entries[0].job)
    entries.sort(key=lambda e: (score.score(e.evaluation), e.candidate.sort_key()))
    if failures:
        assert tokens is not None
        entries = rank_under_failures(entries, tokens)
        objective = FAILURE_OBJECTIVE
        notes.append(f"time_to_train_failures: the {FAILURE_CANDIDATES} fastest plans by step time re-ranked by "
                     f"the mean simulated time to train under the default failure catalog ({FAILURE_SEEDS} "
                     "seeds, auto checkpoint interval); the rest follow by step time")
    return TrainPlan(spec, cl, objective, global_batch, entries[0].job.seq_len, tokens, entries[:top],
                     rejected, n_cand, n_sim, notes, time.perf_counter() - t0)


def _executor(executor: str | Executor | None, workers: int | None) -> Executor:
    """The executor ``plan_training`` was asked for (its docstring)."""
    if workers is not None:
        workers = positive_int(workers, "workers")
    if executor is None:
        return LocalExecutor(workers or 1)
    if isinstance(executor, str):
        return make_executor(executor, workers=workers)
    if not callable(getattr(executor, "map", None)):
        raise ConfigError(f"executor: {executor!r} is not 'local', 'ray' or an Executor (an object with map)")
    if workers is not None:
        raise ConfigError("workers goes with executor=None or 'local', not with an Executor object")
    return executor


def rank_under_failures(entries: list[TrainPlanEntry], tokens: float, candidates: int = FAILURE_CANDIDATES,
                        failures: str = "default", seeds: int = FAILURE_SEEDS) -> list[TrainPlanEntry]:
    """``entries`` (best step time first) with the first ``candidates`` simulated plans re-ranked
    by ``estimate_training_run``'s mean time to train ``tokens`` under ``failures`` (auto
    checkpoint interval, same seeds for each, so they see the same failure streams); each
    gets its ``run``. Plans priced per stage (mixed GPU types) have no single-job step to
    simulate and keep their place after the re-ranked ones."""
    from fleetsim.reliability import estimate_training_run

    head = [e for e in entries if e.evaluation.priced_by == "simulated"][:candidates]
    runs = []
    for e in head:
        est = TrainEstimate(_step.simulate_step(e.job, record=False))
        run = estimate_training_run(None, None, tokens=tokens, failures=failures, checkpoint_interval="auto",
                                    seeds=seeds, estimate=est)
        runs.append(TrainPlanEntry(e.evaluation, e.job, run))
    runs.sort(key=lambda e: (e.run.time_to_train_s, e.candidate.sort_key()))
    rest = [e for e in entries if all(e is not h for h in head)]
    return runs + rest


def _base_batch(global_batch: int, cl: ClusterSpec, pool: int) -> int:
    """A batch that ``build_train_job`` accepts on the whole pool (dp = all its GPUs), used only
    to validate the model, recipe and engine once; the search uses ``global_batch``."""
    return cl.pools[pool].gpus
