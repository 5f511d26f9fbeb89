"""Discrete-event simulation of a whole training run under failures.

Events are failures, node repairs and rejoins; between them the run advances in closed form.
A *phase* starts when the job (re)starts: recovery R (restart + checkpoint load; 0 for the
first start), then cycles of k steps followed by a checkpoint stall (async: a wait for the
previous write when k steps are shorter than it, then the snapshot), and a last segment
without a checkpoint. A checkpoint is durable when its write ends (sync: when the stall
ends; async: ``persist_s`` after the snapshot). A failure rolls work back to the last
durable checkpoint; the job waits ``detection_s``, then (if it still has the nodes) restarts.

Failures arrive as one Poisson stream at the full job's total rate; a failure while the job
runs on a fraction of its GPUs is kept with that probability (thinning), and the stream runs
on while the job is down, so runs that differ only in policy see the same failures (common
random numbers). Failed nodes (the cause's blast radius) return after their repair time.
With ``spare_nodes=None`` replacements are unlimited; with a finite pool the job takes spares
first, then (``elastic``) shrinks to the data-parallel replicas it can fill at the step time
``step_s * dp / dp'`` (same global batch, more accumulation), rejoining at the first durable
checkpoint after enough nodes return; otherwise it waits for repairs.

Every second of wall time lands in one bucket (``RunOutcome.by_kind``): useful (steps kept,
at the nominal full-size step time), checkpoint stalls, stragglers, elastic slowdown, and per
failure cause: detection, recovery (restart + load), rollback (recomputed steps), waiting for
repair. Their sum equals the wall time.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from fleetsim.hardware.specs import Frozen
from pydantic import Field

from .stragglers import StragglerSpec, draw_max_slowdown


class FailureProcess(Frozen):
    """Failures of one cause over the whole job: events per second at full size."""

    name: str
    rate_per_s: float = Field(ge=0)
    blast_nodes: int = Field(ge=0)
    """Nodes the job loses (0: restart only, e.g. software)."""
    repair_s: float = Field(ge=0)


class RunSpec(Frozen):
    steps: int = Field(gt=0)
    step_s: float = Field(gt=0)
    """Nominal step time of the full-size job (no stragglers)."""
    nodes: int = Field(gt=0)
    gpus_per_node: int = Field(gt=0)
    gpus_per_replica: int = Field(gt=0)
    """GPUs of one data-parallel replica (tp * cp * pp)."""
    processes: tuple[FailureProcess, ...] = ()
    detection_s: float = Field(default=0.0, ge=0)
    restart_s: float = Field(default=0.0, ge=0)
    steps_per_checkpoint: int = Field(gt=0)
    checkpoint_blocking_s: float = Field(default=0.0, ge=0)
    checkpoint_persist_s: float = Field(default=0.0, ge=0)
    load_s: float = Field(default=0.0, ge=0)
    spare_nodes: int | None = Field(default=None, ge=0)
    elastic: bool = False
    stragglers: StragglerSpec = StragglerSpec()

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def dp(self) -> int:
        return self.gpus // self.gpus_per_replica

    @property
    def failure_rate_per_s(self) -> float:
        return sum(p.rate_per_s for p in self.processes)


@dataclass
class RunOutcome:
    wall_s: float
    by_kind: dict[str, float]
    """Seconds of wall time per kind: useful, checkpoint, stragglers, elastic, detection,
    recovery, rollback, repair-wait, rejoin."""
    by_cause: dict[str, float]
    """Seconds of wall time lost to each failure cause (detection + recovery + rollback + wait)."""
    interruptions: Counter = field(default_factory=Counter)
    checkpoints: int = 0
    phases: int = 0

    @property
    def useful_s(self) -> float:
        return self.by_kind.get("useful", 0.0)

    @property
    def ettr(self) -> float:
        """Effective training time ratio: useful time over wall time."""
        return self.useful_s / self.wall_s


@dataclass
class _Phase:
    t0: float
    w0: int
    recovery_s: float
    cause: str | None
    dp: int
    base_s: float
    step_s: float
    k: int
    blocking_s: float
    persist_s: float
    n_ck: int = 0
    final: int = 0
    stall: float = 0.0
    first: float = 0.0
    cycle: float = 0.0

    def __post_init__(self) -> None:
        rem = self._remaining
        self.n_ck = max(0, math.ceil(rem / self.k) - 1)
        self.final = rem - self.n_ck * self.k
        self.stall = max(0.0, self.persist_s - self.k * self.step_s)
        self.first = self.k * self.step_s + self.blocking_s
        self.cycle = self.first + self.stall

    _remaining: int = 0

    def cycle_start(self, j: int) -> float:
        """Offset (after recovery) of cycle j's start; j = n_ck is the last segment."""
        return 0.0 if j == 0 else self.first + (j - 1) * self.cycle

    def duration(self) -> float:
        return self.recovery_s + self.cycle_start(self.n_ck) + self.final * self.step_s

    def state_at(self, x: float) -> tuple[float, int, int]:
        """(steps done, steps durable, snapshots finished) at ``x`` seconds into the phase."""
        y = x - self.recovery_s
        if y <= 0:
            return 0.0, 0, 0
        c = 0 if y < self.first else min(self.n_ck, 1 + int((y - self.first) // self.cycle))
        c = min(c, self.n_ck)
        pos = y - self.cycle_start(c)
        limit = self.k if c < self.n_ck else self.final
        done = self.k * c + min(float(limit), pos / self.step_s)
        z = y - self.persist_s - self.first
        durable = 0 if z < 0 else min(c, int(z // self.cycle) + 1)
        return done, self.k * durable, c

    def next_durable_after(self, y_rel: float) -> float | None:
        """Phase offset of the first checkpoint durable at or after ``y_rel`` (after recovery)."""
        if self.n_ck == 0:
            return None
        j = max(0, math.ceil((y_rel - self.first - self.persist_s) / self.cycle))
        if j >= self.n_ck:
            return None
        return self.recovery_s + self.first + j * self.cycle + self.persist_s


def simulate_run(spec: RunSpec, seed: int = 0) -> RunOutcome:
    """One run of ``spec.steps`` steps under ``spec.processes``; deterministic per ``seed``."""
    fail_rng = np.random.default_rng([seed, 0])
    strag_rng = np.random.default_rng([seed, 1])
    rates = np.array([p.rate_per_s for p in spec.processes], dtype=float)
    lam = float(rates.sum())
    cum = np.cumsum(rates) / lam if lam > 0 else rates
    kinds: dict[str, float] = defaultdict(float)
    causes: dict[str, float] = defaultdict(float)
    counts: Counter = Counter()
    checkpoints = phases = 0

    def next_event(now: float) -> tuple[float, float, int]:
        if lam <= 0:
            return math.inf, 0.0, -1
        dt = fail_rng.exponential(1.0 / lam)
        u, v = fail_rng.random(), fail_rng.random()
        return now + dt, u, min(int(np.searchsorted(cum, v, side="right")), len(rates) - 1)

    repairs: list[float] = []  # completion times of nodes under repair (finite spare pool only)
    finite = spec.spare_nodes is not None
    pool_total = spec.nodes + (spec.spare_nodes or 0)
    gpn, gpr, full_dp = spec.gpus_per_node, spec.gpus_per_replica, spec.dp

    def healthy(now: float) -> int:
        while repairs and repairs[0] <= now:
            heapq.heappop(repairs)
        return pool_total - len(repairs) if finite else spec.nodes

    def dp_for(nodes: int) -> int:
        return min(full_dp, (min(nodes, spec.nodes) * gpn) // gpr)

    t, w = 0.0, 0
    fail_t, fail_u, fail_i = next_event(0.0)
    recovery, cause = 0.0, None
    while True:
        # Wait until the job can run (all nodes, or any replica when elastic).
        need = spec.nodes
        while healthy(t) < need and not (spec.elastic and dp_for(healthy(t)) >= 1):
            nxt = repairs[0]
            assert cause is not None
            kinds["repair-wait"] += nxt - t
            causes[cause] += nxt - t
            t = nxt
        while fail_t < t:  # the stream runs on while the job is down
            fail_t, fail_u, fail_i = next_event(fail_t)
        dp = dp_for(healthy(t))
        base = spec.step_s * full_dp / dp
        slow = draw_max_slowdown(spec.stragglers, dp * gpr, strag_rng)
        ph = _Phase(t0=t, w0=w, recovery_s=recovery, cause=cause, dp=dp, base_s=base, step_s=base * slow,
                    k=spec.steps_per_checkpoint, blocking_s=spec.checkpoint_blocking_s,
                    persist_s=spec.checkpoint_persist_s, _remaining=spec.steps - w)
        phases += 1
        end = t + ph.duration()
        rejoin = math.inf
        if finite and dp < full_dp:
            # nodes back from repair while shrunk: rejoin at the next durable checkpoint after
            back = sorted(repairs)
            short = spec.nodes - healthy(t)
            if short <= len(back):
                at = back[short - 1]
                off = ph.next_durable_after(max(0.0, at - t - ph.recovery_s))
                if off is not None:
                    rejoin = t + off
        # advance to the first kept failure, the rejoin or the end
        while fail_t < min(end, rejoin) and fail_u >= dp / full_dp:
            fail_t, fail_u, fail_i = next_event(fail_t)
        stop = min(end, rejoin, fail_t)
        x = stop - t
        if stop == end:
            done, kept, snaps = float(spec.steps - w), spec.steps - w, ph.n_ck
        else:
            done, kept, snaps = ph.state_at(x)
        checkpoints += snaps
        rec_part = min(x, ph.recovery_s)
        if cause is not None:
            kinds["recovery"] += rec_part
            causes[cause] += rec_part
        lost = done - kept
        kinds["checkpoint"] += x - rec_part - done * ph.step_s
        kinds["useful"] += kept * spec.step_s
        kinds["stragglers"] += kept * (ph.step_s - base)
        kinds["elastic"] += kept * (base - spec.step_s)
        w += kept
        if stop == end:
            t = end
            break
        if stop == rejoin and rejoin < fail_t:
            kinds["rejoin"] += lost * ph.step_s
            t, recovery, cause = rejoin, spec.restart_s + spec.load_s, "elastic-rejoin"
            continue
        proc = spec.processes[fail_i]
        counts[proc.name] += 1
        kinds["rollback"] += lost * ph.step_s
        causes[proc.name] += lost * ph.step_s
        kinds["detection"] += spec.detection_s
        causes[proc.name] += spec.detection_s
        if finite:
            for _ in range(proc.blast_nodes):
                heapq.heappush(repairs, fail_t + proc.repair_s)
        t = fail_t + spec.detection_s
        recovery, cause = spec.restart_s + spec.load_s, proc.name
        fail_t, fail_u, fail_i = next_event(fail_t)
    return RunOutcome(wall_s=t, by_kind=dict(kinds), by_cause=dict(causes), interruptions=counts,
                      checkpoints=checkpoints, phases=phases)
