"""The autoscaler inside a ``ServingSimulation``: replica states, cold starts, the scaling
loop, and the replica timeline (policies and configuration: ``sim.serving.autoscale``).

Every replica of a deployment entry is placed up front (``max_replicas`` of them); each is
``off``, ``starting`` (cold start: paid, serves nothing), ``ready`` (in the router's list) or
``draining`` (out of the router, paid until its last request leaves). Requests that arrive
while no replica of the front (``both``/``prefill``) is ready wait in a holding queue and are
routed, in arrival order, the moment one becomes ready; a prefilled request with no decode
replica ready waits likewise. Those requests are the ones *delayed by a cold start*.

Observation reads engine state without changing it (no decode run is materialised), so a
run with ``min_replicas == max_replicas`` makes the same decisions as a fixed fleet: none.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy
from fleetsim.hardware.catalog import get_link
from fleetsim.hardware.errors import ConfigError
from fleetsim.sim.serving.autoscale import AutoscaleConfig, Observation, Stabilizer, capture_sizes
from fleetsim.sim.serving.engine import Engine, SeqState
from fleetsim.workloads.memory import weight_bytes

if TYPE_CHECKING:
    from fleetsim.sim.serving.cluster import Replica, ReplicaPlan, ServingSimulation

STATES = ("off", "starting", "ready", "draining")


def busy_until(e: Engine, now: float) -> float:
    """Seconds ``e`` has spent in iterations up to ``now``, counting the one in progress."""
    extra = now - e.clock if (e.running or e.waiting) and e.clock < now else 0.0
    return e.busy_s + extra


def cold_start_s(sim: ServingSimulation, plan: ReplicaPlan, cfg: AutoscaleConfig) -> tuple[float, float, float]:
    """(total, weight load, warm-up) seconds of one replica's cold start (module docstring of
    ``sim.serving.autoscale``)."""
    if cfg.cold_start_s is not None:
        return cfg.cold_start_s, 0.0, 0.0
    cs = cfg.cold_start
    node = sim.cluster.pools[plan.pool].node
    e = plan.entry.engine
    gpus = plan.parallel.tp * plan.parallel.pp
    per_gpu = sum(weight_bytes(sim.model, plan.parallel, e.dtype, stage=s) for s in range(plan.parallel.pp)
                  ) / plan.parallel.pp
    total = per_gpu * gpus
    host = get_link(node.host_link).effective_bandwidth_bps
    if cs.source == "nvme":
        if node.nvme_bw_bps <= 0:
            raise ConfigError(f"cold start from nvme: system {node.name!r} has no nvme_bw_bps in the catalog")
        src = node.nvme_bw_bps
    elif cs.source == "network":
        nic = get_link(node.nic_link).effective_bandwidth_bps
        src = nic * max(1, min(gpus, node.nics_per_node))
    else:
        src = math.inf
    load = max(total / src, per_gpu / host)
    warm = 0.0
    launch = e.engine_profile.launch
    if cs.graph_warmup and launch.has_graphs:
        top = launch.max_capture_batch or e.scheduler.max_num_seqs
        timer = sim._timer(plan)
        for b in capture_sizes(top):
            warm += (cs.warmup_runs + 1) * float(timer.decode_times(b, np.array([float(b)]))[0])
    return cs.fixed_s + load + warm, load, warm


class Scaler:
    """Replica states and the scaling loop of one simulation."""

    def __init__(self, sim: ServingSimulation, cfg: AutoscaleConfig, asked: list[int | None]) -> None:
        """``asked``: the deployment's replica count per entry (None: not given)."""
        if sim.requests.is_closed_loop:
            raise ConfigError("autoscaling needs an open-loop workload (closed-loop clients adapt to latency)")
        self.sim = sim
        self.cfg = cfg
        self.env: simpy.Environment = sim.env
        entries = list(sim.deployment.pools)
        self.n = len(entries)
        self.lo, self.hi = cfg.limits(self.n)
        self.entry_of: list[int] = []
        self.members: list[list[int]] = [[] for _ in entries]
        for r in sim.replicas:
            i = next(k for k, ent in enumerate(entries) if ent is r.plan.entry)
            self.entry_of.append(i)
            self.members[i].append(r.index)
        self.role = [ent.role for ent in entries]
        init = cfg.per_entry(self.n, "initial_replicas") if cfg.initial_replicas is not None else [
            a if a is not None else self.lo[i] for i, a in enumerate(asked)]
        self.state = ["off"] * len(sim.replicas)
        self.gen = [0] * len(sim.replicas)
        self.transitions: list[tuple[float, int, str]] = []
        for i in range(self.n):
            k = min(max(init[i], self.lo[i]), self.hi[i])
            for r in self.members[i][:k]:
                self._set(r, "ready", 0.0)
        self.cold = [cold_start_s(sim, sim.replicas[m[0]].plan, cfg) for m in self.members]
        self.held: deque[SeqState] = deque()
        self.delayed: set[int] = set()
        self.back_wait: simpy.Event | None = None
        self.routed = [0] * self.n
        self.busy_mark = [busy_until_replica(r, 0.0) for r in sim.replicas]
        self.samples: list[list[tuple[float, float]]] = [[] for _ in range(self.n)]
        self.stab = [Stabilizer(cfg) for _ in range(self.n)]
        self.decisions: list[dict[str, Any]] = []
        self.stop = simpy.Event(self.env)
        self.arrivals_done = False
        self.cold_starts = 0
        self._sync_lists()

    # -- states ---------------------------------------------------------------------------
    def _set(self, r: int, state: str, t: float) -> None:
        self.state[r] = state
        self.transitions.append((t, r, state))

    def _sync_lists(self) -> None:
        sim = self.sim
        sim.front[:] = [r for r in sim.replicas if r.role != "decode" and self.state[r.index] == "ready"]
        sim.back[:] = [r for r in sim.replicas if r.role == "decode" and self.state[r.index] == "ready"]

    def count(self, i: int, *states: str) -> int:
        return sum(1 for r in self.members[i] if self.state[r] in states)

    # -- hooks called by the simulation ---------------------------------------------------------
    def hold(self, seq: SeqState) -> None:
        self.held.append(seq)
        self.delayed.add(seq.req_id)

    def on_route(self, replica: Replica) -> None:
        self.routed[self.entry_of[replica.index]] += 1

    def wait_back(self) -> simpy.Event:
        """An event that fires when a decode replica becomes ready."""
        if self.back_wait is None or self.back_wait.triggered:
            self.back_wait = simpy.Event(self.env)
        return self.back_wait

    def on_done(self, seq: SeqState, replica: int) -> None:
        now = self.env.now
        if seq.status == "finished":
            i = self.entry_of[seq.replica]
            pre = seq.prefill_replica if seq.prefill_replica >= 0 else seq.replica
            gen = seq.generated
            tpot = (seq.finish_s - seq.first_token_s) / (gen - 1) if gen > 1 else math.nan
            self.samples[self.entry_of[pre]].append((seq.first_token_s - seq.arrival_s, math.nan))
            if not math.isnan(tpot):
                self.samples[i].append((math.nan, tpot))
        if self.state[replica] == "draining" and _idle(self.sim.replicas[replica]):
            self._set(replica, "off", now)
        self.check_quiet()

    def check_quiet(self) -> None:
        sim = self.sim
        if self.arrivals_done and not sim.live and not self.held and not self.stop.triggered:
            self.stop.succeed()

    # -- the loop ---------------------------------------------------------------------------
    def loop(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        cap = self.sim.cap_s
        step = self.cfg.interval_s
        while not self.stop.triggered and env.now < cap:
            yield env.timeout(min(step, cap - env.now))
            if self.stop.triggered:
                return
            self.decide()

    def observe(self) -> list[Observation]:
        now = self.env.now
        sim = self.sim
        dt = self.cfg.interval_s
        q = self.cfg.policy.percentile
        n_front = sum(1 for r in self.role if r != "decode")
        waiting_age: list[float] = [now - s.arrival_s for s in self.held]
        live_by_entry: list[int] = [0] * self.n
        ages: list[list[float]] = [[] for _ in range(self.n)]
        for s in sim.live:
            if s.replica >= 0:
                i = self.entry_of[s.replica]
                live_by_entry[i] += 1
                if math.isnan(s.first_token_s):
                    ages[i].append(now - s.arrival_s)
        obs = []
        for i in range(self.n):
            ready = [r for r in self.members[i] if self.state[r] == "ready"]
            busy = 0.0
            for r in self.members[i]:
                b = busy_until_replica(sim.replicas[r], now)
                if r in ready:
                    busy += (b - self.busy_mark[r]) / dt
                self.busy_mark[r] = b
            kv = [sum(e.kv.used() for e in sim.replicas[r].engines) /
                  max(1, sum(e.kv.num_blocks for e in sim.replicas[r].engines)) for r in ready]
            share_held = len(self.held) / n_front if self.role[i] != "decode" and n_front else 0.0
            ttft = [a for a, _ in self.samples[i] if not math.isnan(a)] + ages[i]
            if self.role[i] != "decode":
                ttft += waiting_age
            tpot = [b for _, b in self.samples[i] if not math.isnan(b)]
            obs.append(Observation(
                now_s=now, interval_s=dt, role=self.role[i], current=self.count(i, "ready", "starting"),
                ready=len(ready), arrivals_rps=(self.routed[i] + share_held) / dt,
                busy=min(1.0, busy / len(ready)) if ready else 0.0,
                kv_occupancy=float(np.mean(kv)) if kv else 0.0,
                in_system=live_by_entry[i] + math.ceil(share_held),
                ttft_s=float(np.percentile(ttft, q)) if ttft else math.nan,
                tpot_s=float(np.percentile(tpot, q)) if tpot else math.nan))
            self.routed[i] = 0
            self.samples[i] = []
        return obs

    def decide(self) -> None:
        now = self.env.now
        obs = self.observe()
        want = self.cfg.policy.targets(obs)
        for i, (o, w) in enumerate(zip(obs, want, strict=True)):
            w = min(max(int(w), self.lo[i]), self.hi[i])
            cur = o.current
            self.decisions.append({"time_s": now, "entry": i, "role": o.role, "ready": o.ready, "current": cur,
                                   "desired": w, "arrivals_rps": o.arrivals_rps, "busy": o.busy,
                                   "kv_occupancy": o.kv_occupancy, "in_system": o.in_system,
                                   "ttft_s": o.ttft_s, "tpot_s": o.tpot_s})
            k = self.stab[i].change(now, cur, w)
            if k > 0:
                self._scale_up(i, k)
            elif k < 0:
                self._scale_down(i, -k)
        self._sync_lists()

    def _scale_up(self, i: int, k: int) -> None:
        now = self.env.now
        for r in self.members[i]:
            if k == 0:
                break
            if self.state[r] == "draining":  # take back a draining replica: it is warm
                self._set(r, "ready", now)
                k -= 1
        for r in self.members[i]:
            if k == 0:
                break
            if self.state[r] == "off":
                self._set(r, "starting", now)
                self.cold_starts += 1
                self.gen[r] += 1
                self.env.process(self._start(r, self.cold[i][0], self.gen[r]))
                k -= 1

    def _scale_down(self, i: int, k: int) -> None:
        now = self.env.now
        for st in ("starting", "ready"):
            for r in reversed(self.members[i]):
                if k == 0:
                    return
                if self.state[r] == st:
                    idle = st == "starting" or _idle(self.sim.replicas[r])
                    self._set(r, "off" if idle else "draining", now)
                    k -= 1

    def _start(self, r: int, delay_s: float, gen: int) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(delay_s)
        if self.state[r] != "starting" or self.gen[r] != gen:  # cancelled while starting
            return
        self._set(r, "ready", self.env.now)
        self.busy_mark[r] = busy_until_replica(self.sim.replicas[r], self.env.now)
        self._sync_lists()
        if self.sim.replicas[r].role == "decode":
            if self.back_wait is not None and not self.back_wait.triggered:
                self.back_wait.succeed()
            return
        t = self.env.now
        while self.held:
            self.sim._route(self.held.popleft(), t)


def busy_until_replica(r: Replica, now: float) -> float:
    """Mean busy seconds of ``r``'s engines up to ``now`` (as the replica table averages them)."""
    return sum(busy_until(e, now) for e in r.engines) / len(r.engines)


def _idle(r: Replica) -> bool:
    return all(not e.running and not e.waiting for e in r.engines)
