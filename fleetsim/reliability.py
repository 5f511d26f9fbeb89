"""Training runs under failures: ``estimate_training_run`` and ``TrainingRunEstimate``.

One call prices a training step (``estimate_train_step``), turns the failure catalog's rates
into job-level failure processes (per GPU, node, NIC, rack or job, scaled to the job's
size), prices a checkpoint from the step's memory breakdown (weights + optimizer state per
rank) and the storage/link bandwidths, picks the checkpoint interval (Young/Daly, then the
simulated optimum: a parabola in log(interval) through simulated points with common random numbers), and simulates the
run with ``fleetsim.sim.reliability`` over ``seeds`` seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fleetsim.hardware import catalog
from fleetsim.hardware.checks import integer, non_negative, positive
from fleetsim.hardware.errors import ConfigError
from fleetsim.hardware.failures import FailureCatalog, load_failures
from fleetsim.sim.reliability import (
    CheckpointCost,
    FailureProcess,
    RunOutcome,
    RunSpec,
    StragglerSpec,
    checkpoint_cost,
    simulate_run,
    young_daly_interval_s,
)
from fleetsim.training import TrainEstimate, estimate_train_step


def checkpoint_bytes_per_rank(est: TrainEstimate) -> float:
    """Bytes one rank writes per checkpoint: its weights and optimizer state (offloaded parts
    included), each divided over the data-parallel copies that hold the same shard (a
    replicated tensor is written once); the mean over pipeline stages."""
    job = est.job
    copies = job.parallel.dp * job.parallel.cp
    z = job.zero_stage
    out = []
    for m in est.result.memory:
        w = m.weights_bytes if z >= 3 else m.weights_bytes / copies
        o = m.optimizer_bytes + m.host_bytes + m.nvme_bytes
        out.append(w + (o if z >= 1 else o / copies))
    return float(np.mean(out))


def failure_processes(cat: FailureCatalog, gpus: int, gpus_per_node: int, nics_per_node: int,
                      include_planned: bool = True) -> tuple[FailureProcess, ...]:
    """Job-level processes: rate per unit-hour times the job's units, per second."""
    nodes = -(-gpus // gpus_per_node)
    per_rack = cat.exposure.gpus_per_rack if cat.exposure else gpus_per_node
    rack_nodes = max(1, per_rack // gpus_per_node)
    units = {"gpu": gpus, "node": nodes, "nic": nodes * nics_per_node, "rack": -(-gpus // per_rack), "job": 1}
    blast = {"none": 0, "node": 1, "rack": rack_nodes}
    return tuple(FailureProcess(name=c.name, rate_per_s=cat.rate_per_unit_hour(c) * units[c.unit] / 3600.0,
                                blast_nodes=blast[c.blast], repair_s=cat.repair_s(c))
                 for c in cat.causes if include_planned or not c.planned)


@dataclass
class TrainingRunEstimate:
    step: TrainEstimate
    tokens: float
    spec: RunSpec
    checkpoint: CheckpointCost
    interval_s: float
    young_daly_s: float
    simulated_optimum_s: float | None
    outcomes: list[RunOutcome]
    price_per_gpu_hour: float | None

    @property
    def walls_s(self) -> np.ndarray:
        return np.array([o.wall_s for o in self.outcomes])

    @property
    def time_to_train_s(self) -> float:
        return float(self.walls_s.mean())

    def time_to_train_percentile_s(self, q: float) -> float:
        return float(np.percentile(self.walls_s, q))

    @property
    def ideal_time_s(self) -> float:
        """Steps x nominal step time: no failures, checkpoints or stragglers."""
        return self.spec.steps * self.spec.step_s

    @property
    def ettr(self) -> float:
        """Effective training time ratio (mean over seeds): useful time / wall time."""
        return float(np.mean([o.ettr for o in self.outcomes]))

    @property
    def goodput_tokens_per_s(self) -> float:
        return self.spec.steps * self.step.job.tokens_per_step / self.time_to_train_s

    @property
    def mtbf_s(self) -> float:
        lam = self.spec.failure_rate_per_s
        return math.inf if lam == 0 else 1.0 / lam

    @property
    def billed_gpus(self) -> int:
        return self.spec.gpus + (self.spec.spare_nodes or 0) * self.spec.gpus_per_node

    @property
    def cost_usd(self) -> float | None:
        p = self.price_per_gpu_hour
        return None if p is None else self.time_to_train_s / 3600.0 * self.billed_gpus * p

    def lost_gpu_hours(self, by: str = "cause") -> dict[str, float]:
        """Mean GPU-hours of the job lost per failure cause (``by="cause"``) or per kind
        (detection, recovery, rollback, repair-wait, checkpoint, stragglers, elastic)."""
        acc: dict[str, float] = {}
        for o in self.outcomes:
            src = o.by_cause if by == "cause" else {k: v for k, v in o.by_kind.items() if k != "useful"}
            for k, v in src.items():
                acc[k] = acc.get(k, 0.0) + v * self.spec.gpus / 3600.0 / len(self.outcomes)
        return dict(sorted(acc.items(), key=lambda kv: -kv[1]))

    def interruptions(self) -> dict[str, float]:
        """Mean interruptions per cause over the seeds."""
        acc: dict[str, float] = {}
        for o in self.outcomes:
            for k, v in o.interruptions.items():
                acc[k] = acc.get(k, 0.0) + v / len(self.outcomes)
        return dict(sorted(acc.items(), key=lambda kv: -kv[1]))

    @property
    def failures(self) -> pd.DataFrame:
        """Per cause: mean interruptions and lost GPU-hours."""
        n, h = self.interruptions(), self.lost_gpu_hours("cause")
        rows = [(k, n.get(k, 0.0), h.get(k, 0.0)) for k in sorted(set(n) | set(h), key=lambda k: -h.get(k, 0.0))]
        return pd.DataFrame(rows, columns=["cause", "interruptions", "lost_gpu_hours"])

    def summary(self) -> pd.DataFrame:
        day = 86400.0
        rows: list[tuple[str, Any, str]] = [
            ("tokens", self.tokens, ""), ("steps", self.spec.steps, ""),
            ("ideal time (steps x step time)", self.ideal_time_s / day, "days"),
            ("job MTBF", self.mtbf_s / 3600.0, "h"),
            ("checkpoint per rank", self.checkpoint.bytes_per_rank / 2**30, "GiB"),
            ("checkpoint save (write)", self.checkpoint.write_s, "s"),
            ("checkpoint stall", self.checkpoint.blocking_s, f"s ({self.checkpoint.mode})"),
            ("checkpoint load", self.checkpoint.load_s, "s"),
            ("checkpoint interval", self.interval_s, "s"),
            ("Young/Daly interval", self.young_daly_s, "s"),
            ("simulated optimum interval", "n/a" if self.simulated_optimum_s is None else self.simulated_optimum_s,
             "s"),
            ("time to train (mean)", self.time_to_train_s / day, "days"),
            ("time to train p10", self.time_to_train_percentile_s(10) / day, "days"),
            ("time to train p50", self.time_to_train_percentile_s(50) / day, "days"),
            ("time to train p90", self.time_to_train_percentile_s(90) / day, "days"),
            ("effective training time ratio", self.ettr, ""),
            ("goodput", self.goodput_tokens_per_s, "tok/s"),
            ("interruptions", sum(self.interruptions().values()), ""),
            ("cost", "n/a (no catalog price)" if self.cost_usd is None else self.cost_usd, "USD"),
        ]
        for k, v in self.lost_gpu_hours("kind").items():
            rows.append((f"  lost to {k}", v, "GPU-h"))
        rows.append(("seeds", len(self.outcomes), ""))
        return pd.DataFrame(rows, columns=["metric", "value", "unit"])


def _mean_wall(spec: RunSpec, seeds: int) -> float:
    return float(np.mean([simulate_run(spec, s).wall_s for s in range(seeds)]))


def simulated_optimal_interval(spec: RunSpec, lo_steps: int, hi_steps: int, seeds: int,
                               points: int = 9) -> int:
    """Steps per checkpoint minimising the mean time to train over ``seeds`` (the same seeds
    for every candidate): the mean wall time on ``points`` log-spaced intervals in [lo, hi],
    a least-squares parabola in log(interval) through them, and its vertex (clamped to the
    range). Near its optimum the wall time is a + b/tau + c*tau, symmetric in log(tau), so
    the parabola's vertex averages out the noise that an argmin of single points keeps."""
    lo, hi = max(1, lo_steps), max(lo_steps, hi_steps)
    ks = sorted({max(1, round(k)) for k in np.geomspace(lo, hi, points)})
    walls = np.array([_mean_wall(spec.model_copy(update={"steps_per_checkpoint": k}), seeds) for k in ks])
    if len(ks) < 3:
        return ks[int(np.argmin(walls))]
    x = np.log(np.array(ks, dtype=float))
    c2, c1, _ = np.polyfit(x, walls / walls.min(), 2)
    if c2 <= 0:
        return ks[int(np.argmin(walls))]
    return int(min(hi, max(lo, round(math.exp(-c1 / (2 * c2))))))


def estimate_training_run(
    model: Any,
    cluster: Any,
    parallel: Any = None,
    micro_batch: int = 1,
    global_batch: int | None = None,
    seq_len: int | None = None,
    *,
    tokens: float,
    failures: str | Path | FailureCatalog | None = "default",
    checkpoint_interval: str | float = "auto",
    checkpoint_mode: str = "sync",
    spare_nodes: int | None = None,
    elastic: bool = False,
    stragglers: StragglerSpec | dict | None = None,
    detection_s: float | None = None,
    restart_s: float | None = None,
    seeds: int = 8,
    include_planned: bool = True,
    estimate: TrainEstimate | None = None,
    **options: Any,
) -> TrainingRunEstimate:
    """Time to train ``tokens`` tokens under failures, checkpoints and stragglers.

    ``failures``: a failure catalog name (``default`` = Llama 3 405B's Table 5), a YAML path,
    a ``FailureCatalog``, or None/``"none"`` for no failures. ``checkpoint_interval``:
    ``"auto"`` (the simulated optimum, searched around Young/Daly) or seconds of training
    between checkpoints (at least the checkpoint save time). ``checkpoint_mode``: ``sync`` or
    ``async`` (snapshot to host memory, persist in the background). ``spare_nodes``: hot
    spares (None: replacements always available); ``elastic``: continue on fewer
    data-parallel replicas when short of nodes. ``stragglers``: a ``StragglerSpec`` (or its
    fields). ``detection_s``/``restart_s`` override the catalog's. ``estimate``: a step
    estimate to reuse; else the remaining arguments go to ``estimate_train_step``.
    """
    tokens = positive(tokens, "tokens")
    seeds = integer(seeds, "seeds", minimum=1)
    if checkpoint_mode not in ("sync", "async"):
        raise ConfigError(f"checkpoint_mode must be sync or async, got {checkpoint_mode!r}")
    if not isinstance(elastic, bool):
        raise ConfigError(f"elastic must be True or False, got {elastic!r}")
    est = estimate if estimate is not None else estimate_train_step(
        model, cluster, parallel, micro_batch, global_batch, seq_len, record_timeline=False, **options)
    job = est.job
    pool = job.cluster.pools[job.pool]
    gpn = pool.gpus_used_per_node
    nodes = est.num_nodes
    if spare_nodes is not None:
        spare_nodes = integer(spare_nodes, "spare_nodes", minimum=0)
        free = pool.num_nodes - nodes
        if spare_nodes > pool.num_nodes:
            raise ConfigError(f"spare_nodes = {spare_nodes} exceeds the cluster's {pool.num_nodes} nodes "
                              f"(the job uses {nodes}, {free} left)")
    none = failures is None or (isinstance(failures, str) and failures.strip().lower() == "none")
    cat = load_failures("default" if none else failures)  # type: ignore[arg-type]
    procs = () if none else failure_processes(cat, est.num_gpus, gpn, pool.node.nics_per_node, include_planned)
    detection = cat.recovery.detection_s if detection_s is None else non_negative(detection_s, "detection_s")
    restart = cat.recovery.restart_s if restart_s is None else non_negative(restart_s, "restart_s")
    if isinstance(stragglers, dict):
        stragglers = StragglerSpec(**stragglers)
    strag = stragglers or StragglerSpec()

    gpu = est.gpu
    nic = catalog.get_link(pool.node.nic_link).effective_bandwidth_bps * max(1, pool.node.nics_per_node)
    host = catalog.get_link(gpu.host_link).effective_bandwidth_bps
    ck = checkpoint_cost(checkpoint_bytes_per_rank(est), est.num_gpus, nodes, write_bps=cat.storage.write_bps,
                         read_bps=cat.storage.read_bps, node_net_bps=nic, snapshot_bps=host,
                         mode=checkpoint_mode)  # type: ignore[arg-type]
    if checkpoint_mode == "async":
        need = ck.bytes_per_rank * gpn
        if need > pool.node.host_memory_bytes:
            raise ConfigError(f"async checkpoint: {need / 2**30:.0f} GiB snapshot per node > host memory "
                              f"{pool.node.host_memory_bytes / 2**30:.0f} GiB of {pool.node.name!r}")
    step_s = est.time_s
    steps = max(1, math.ceil(tokens / job.tokens_per_step))
    lam = sum(p.rate_per_s for p in procs)
    mtbf = math.inf if lam == 0 else 1.0 / lam
    yd = young_daly_interval_s(max(ck.blocking_s, 1e-9), mtbf) if lam > 0 else math.inf
    base = RunSpec(steps=steps, step_s=step_s, nodes=nodes, gpus_per_node=gpn,
                   gpus_per_replica=job.parallel.tp * job.parallel.cp * job.parallel.pp, processes=procs,
                   detection_s=detection, restart_s=restart, steps_per_checkpoint=steps,
                   checkpoint_blocking_s=ck.blocking_s, checkpoint_persist_s=ck.persist_s, load_s=ck.load_s,
                   spare_nodes=spare_nodes, elastic=elastic, stragglers=strag)
    lo = max(1, math.ceil(ck.write_s / step_s))
    sim_opt: float | None = None
    if checkpoint_interval == "auto":
        if lam == 0:
            k = steps
        else:
            guess = max(lo, round(yd / step_s))
            k = simulated_optimal_interval(base, max(lo, guess // 4), max(lo, guess * 4), min(seeds, 8))
            sim_opt = k * step_s
    else:
        if isinstance(checkpoint_interval, str):
            raise ConfigError(f"checkpoint_interval must be 'auto' or seconds, got {checkpoint_interval!r}")
        iv = positive(checkpoint_interval, "checkpoint_interval")
        if iv < ck.write_s:
            raise ConfigError(f"checkpoint_interval = {iv:g} s is shorter than the checkpoint save time "
                              f"{ck.write_s:.3g} s")
        k = max(1, round(iv / step_s))
    spec = base.model_copy(update={"steps_per_checkpoint": min(k, steps)})
    outcomes = [simulate_run(spec, s) for s in range(seeds)]
    return TrainingRunEstimate(step=est, tokens=tokens, spec=spec, checkpoint=ck, interval_s=k * step_s,
                               young_daly_s=yd, simulated_optimum_s=sim_opt, outcomes=outcomes,
                               price_per_gpu_hour=est.price_per_gpu_hour())


__all__ = ["TrainingRunEstimate", "checkpoint_bytes_per_rank", "estimate_training_run", "failure_processes",
           "simulated_optimal_interval"]
