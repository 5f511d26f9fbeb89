"""A serving cluster: replicas placed on the cluster's pools, a router, admission control,
optional prefill/decode disaggregation, and the arrival process - all in one SimPy run.

Placement and KV capacity per replica: ``sim.serving.feasibility.check_replica`` (the
planner calls the same function): replicas of a pool entry take consecutive GPUs of one
node, or whole nodes when ``tp * pp`` exceeds one; the KV cache fills what weights and
activations leave, in blocks. With ``pp`` stages the replica runs
``pp`` virtual engines (vLLM's pipeline scheduling), each with ``1/pp`` of the blocks and
its own scheduler, so up to ``pp`` micro-batches are in flight. Each stage is a SimPy
resource shared by the virtual engines: an iteration holds stage 0 for its stage-0 time,
then stage 1, and so on, so iterations of different virtual engines overlap, the slowest
stage bounds throughput, and idle stages (too few micro-batches, unequal stages) are the
pipeline bubble.

Power: each pool entry's GPUs run under its engine's ``power_cap_w`` (None: the TDP), the
limit the step timers price kernels under (``calibration.power.PowerState``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy
from fleetsim.calibration import get_cost_model
from fleetsim.calibration.power import PowerState, power_state
from fleetsim.hardware.catalog import get_gpu, get_link
from fleetsim.hardware.checks import plural
from fleetsim.hardware.errors import ConfigError, InfeasibleError
from fleetsim.hardware.specs import ClusterSpec, GPUSpec, LinkSpec
from fleetsim.sim.serving.autoscale import AutoscaleConfig
from fleetsim.sim.serving.config import Deployment, EngineConfig, PoolDeployment
from fleetsim.sim.serving.disagg import TransferLink, kv_transfer_bytes, transfer_route
from fleetsim.sim.serving.engine import Engine, SeqState
from fleetsim.sim.serving.feasibility import (
    check_draft,
    check_replica,
    gpus_per_node,
    kv_blocks_for,
    place_replicas,
)
from fleetsim.sim.serving.kvcache import KVCache
from fleetsim.sim.serving.lora import AdapterCache
from fleetsim.sim.serving.reqlog import RequestLog
from fleetsim.sim.serving.router import make_router
from fleetsim.sim.serving.scaler import Scaler
from fleetsim.sim.serving.steptime import GraphStepTimer, StepTimer
from fleetsim.workloads.models import ModelSpec, load_model
from fleetsim.workloads.parallel import ParallelConfig
from fleetsim.workloads.requests import Request, RequestStream
from simpy.core import URGENT


@dataclass
class ReplicaPlan:
    """Where one replica runs and with what (before the simulation starts)."""

    index: int
    pool: int
    node: int
    gpu: GPUSpec
    entry: PoolDeployment
    parallel: ParallelConfig
    kv_blocks: int
    kv_bytes_per_token_gpu: float


def _pool_index(cluster: ClusterSpec, gpu: str | None) -> int:
    if gpu is None:
        return 0
    want = get_gpu(gpu).name
    for i, p in enumerate(cluster.pools):
        if get_gpu(p.node.gpu).name == want:
            return i
    have = ", ".join(sorted({p.node.gpu for p in cluster.pools}))
    raise ConfigError(f"deployment asks for GPU {gpu!r}; the cluster has {have}")


def smallest_tp(model: ModelSpec, gpu: GPUSpec, max_tp: int, eng: EngineConfig) -> int:
    """The smallest power-of-two TP degree (<= ``max_tp``) whose replica fits ``gpu``."""
    reasons = []
    tp = 1
    while tp <= max_tp:
        try:
            par = ParallelConfig(tp=tp)
            par.validate_for(model)
            kv_blocks_for(model, gpu, par, eng)
            return tp
        except InfeasibleError as e:
            reasons.append(f"tp={tp}: {e.reason}")
        tp *= 2
    raise InfeasibleError(f"{model.name} fits no TP degree up to {max_tp} on {gpu.name} ("
                          + "; ".join(reasons[-1:]) + ")")


def default_deployment(model: ModelSpec, cluster: ClusterSpec, engine: EngineConfig | None = None
                       ) -> Deployment:
    """One replica per GPU where the model fits on one GPU, else the smallest TP that fits
    (per pool / GPU type), as many replicas as the pool holds. A GPU type that cannot hold
    the model at any TP within a node is left unused; if none can, ``InfeasibleError``."""
    eng = engine or EngineConfig()
    entries = []
    errors = []
    for i, pool in enumerate(cluster.pools):
        gpu = get_gpu(pool.node.gpu)
        try:
            tp = smallest_tp(model, gpu, gpus_per_node(pool), eng)
        except InfeasibleError as e:  # skip a GPU type the model cannot use
            errors.append(e)
            continue
        entries.append(PoolDeployment(gpu=gpu.name, pool=i, tp=tp, engine=eng))
    if not entries:
        raise errors[0]
    return Deployment(pools=tuple(entries))


def plan_replicas(model: ModelSpec, cluster: ClusterSpec, dep: Deployment) -> list[ReplicaPlan]:
    """Place every replica on GPUs of its pool; raise ``InfeasibleError`` with the reason
    when a layout does not fit (memory, GPUs, node size)."""
    used = [0] * len(cluster.pools)
    plans: list[ReplicaPlan] = []
    for entry in dep.pools:
        if entry.pool is not None:
            if entry.pool >= len(cluster.pools):
                raise ConfigError(f"deployment pool {entry.pool} out of range: cluster "
                                  f"{cluster.name!r} has {len(cluster.pools)} pools")
            pi = entry.pool
        else:
            pi = _pool_index(cluster, entry.gpu)
        pool = cluster.pools[pi]
        gpu = get_gpu(pool.node.gpu)
        par = ParallelConfig(tp=entry.tp, pp=entry.pp, ep=entry.ep)
        fit = check_replica(model, pool, gpu, par, entry.engine)
        starts = place_replicas(pool, entry.tp, entry.pp, used[pi])
        size = entry.tp * entry.pp
        n = entry.replicas if entry.replicas is not None else len(starts)
        if n > len(starts) or n < 1:
            left = pool.gpus - used[pi]
            raise InfeasibleError(f"{plural(n, 'replica')} of {size} {gpu.name} need "
                                  f"{plural(n * size, 'GPU')}; pool has {left} left of {pool.gpus}")
        per_node = gpus_per_node(pool)
        for start in starts[:n]:
            used[pi] = start + size
            plans.append(ReplicaPlan(len(plans), pi, start // per_node, gpu, entry, par, fit.kv_blocks,
                                     fit.kv_bytes_per_token_gpu))
    return plans


def iter_requests(stream: RequestStream, chunk: int = 8192) -> Generator[Request, None, None]:
    """``Request`` objects of ``stream`` built a chunk of rows at a time (bounded memory:
    only one chunk of columns is ever converted to Python objects)."""
    cols = ("req_id", "arrival_s", "prompt_tokens", "output_tokens", "session_id", "prefix_id",
            "prefix_tokens", "system_prefix_id", "system_prefix_tokens", "client_id", "think_s",
            "adapter_id", "lora_rank")
    arrays = [stream.column(c) for c in cols]
    opt = {4, 5, 7, 9, 11}
    for lo in range(0, len(stream), chunk):
        lists = [a[lo: lo + chunk].tolist() for a in arrays]
        for row in zip(*lists, strict=True):
            yield Request(**{c: (None if (k in opt and v < 0) else v)
                             for k, (c, v) in enumerate(zip(cols, row, strict=True))})


class Replica:
    """A model replica: one engine, or ``pp`` virtual engines sharing its GPUs."""

    def __init__(self, plan: ReplicaPlan, engines: list[Engine], speed: float) -> None:
        self.plan = plan
        self.index = plan.index
        self.engines = engines
        self.speed = speed
        self.inv_speed = 1.0 / speed
        self.block_size = plan.entry.engine.block_size
        self.prefix_caching = plan.entry.engine.enable_prefix_caching
        self.role = plan.entry.role

        if len(engines) == 1:
            self.load_tokens = engines[0].load_tokens  # type: ignore[method-assign]

    def load_tokens(self, now: float) -> int:
        return sum(e.load_tokens(now) for e in self.engines)

    def num_waiting(self) -> int:
        return sum(len(e.waiting) for e in self.engines)

    def cached_blocks(self, hashes: tuple[int, ...], now: float) -> int:
        best = 0
        for e in self.engines:
            e.sync(now)
            best = max(best, e.kv.match(hashes))
        return best

    def fits(self, seq: SeqState) -> str:
        return self.engines[0].fits(seq)

    def holds_adapter(self, adapter: int) -> bool:
        """Whether an engine of this replica has ``adapter`` resident (or loading)."""
        return any(e.lora is not None and e.lora.holds(adapter) for e in self.engines)

    def add(self, seq: SeqState) -> None:
        """Queue ``seq`` on the virtual engine with the fewest unfinished requests."""
        eng = min(self.engines, key=lambda e: (len(e.running) + len(e.waiting), e.uid))
        seq.replica = self.index
        eng.add(seq)


class ServingSimulation:
    """Build replicas for ``deployment`` on ``cluster`` and replay ``requests`` through them."""

    def __init__(self, model: ModelSpec | str, cluster: ClusterSpec, deployment: Deployment,
                 requests: RequestStream, *, seed: int = 0,
                 timer_factory: Callable[[ReplicaPlan], StepTimer] | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 timers: dict[tuple, StepTimer] | None = None,
                 autoscale: AutoscaleConfig | None = None) -> None:
        """``timers``: a step-timer cache to share across simulations of the same model (a
        capacity search runs one layout at many rates; step times are pure functions of
        the cache key, so sharing changes no result). ``autoscale``: scale the replicas of
        each deployment entry between its limits (``sim.serving.scaler``); every replica
        up to ``max_replicas`` is placed, those off cost nothing."""
        self.model = load_model(model) if isinstance(model, str) else model
        self.cluster = cluster
        self.deployment = deployment
        self.requests = requests.sorted() if not requests.is_closed_loop else requests
        self.env = simpy.Environment()
        self.rng = np.random.default_rng(seed)
        self.progress = progress
        placed = deployment
        if autoscale is not None:
            _, hi = autoscale.limits(len(deployment.pools))
            placed = deployment.model_copy(update={"pools": tuple(
                p.model_copy(update={"replicas": h}) for p, h in zip(deployment.pools, hi, strict=True))})
        self.plans = plan_replicas(self.model, cluster, placed)
        n_req = len(requests)
        last = float(requests.arrival_s.max()) if n_req else 0.0
        self.cap_s = deployment.max_sim_time_s or last + 86400.0
        self._timers: dict[tuple, StepTimer] = {} if timers is None else timers
        self._timer_factory = timer_factory
        self.replicas: list[Replica] = []
        self.engines: list[Engine] = []
        self._build()
        self.log = RequestLog()
        self.live: set[SeqState] = set()
        self.arrived = 0
        self.rejected = 0
        self.done = 0
        self.not_issued = 0
        self.links: dict[tuple, TransferLink] = {}
        self.transfers: list[tuple[int, float, float, float]] = []
        both = [r for r in self.replicas if r.role != "decode"]
        self.front = both
        self.back = [r for r in self.replicas if r.role == "decode"]
        self.router = make_router(deployment.router)
        self.back_router = make_router(deployment.router)
        self.back_all = list(self.back)
        self._chains: dict[int, list[int]] = {}
        self.scaler: Scaler | None = None
        if autoscale is not None:
            self.deployment = placed
            self.scaler = Scaler(self, autoscale, [p.replicas for p in deployment.pools])

    # -- construction -------------------------------------------------------------------
    def power(self, plan: ReplicaPlan) -> PowerState:
        """The power model and limit of ``plan``'s GPUs (its engine's ``power_cap_w``, checked
        against the GPU's range)."""
        return power_state(plan.gpu, plan.entry.engine.power_cap_w, "power_cap_w")

    def _timer(self, plan: ReplicaPlan) -> StepTimer:
        e = plan.entry.engine
        key = (plan.gpu.name, plan.parallel, e.dtype, e.kv_dtype, e.sched_overhead_s, e.profile, e.power_cap_w)
        t = self._timers.get(key)
        if t is None:
            if self._timer_factory is not None:
                t = self._timer_factory(plan)
            else:
                t = GraphStepTimer(self.model, plan.gpu, plan.parallel, get_cost_model(plan.gpu),
                                   dtype=e.dtype, kv_dtype=e.kv_dtype, engine=e.engine_profile,
                                   power=self.power(plan))
            self._timers[key] = t
        return t

    def _stage_timers(self, plan: ReplicaPlan) -> list[StepTimer] | None:
        """One timer per pipeline stage (the CPU overhead charged to the first), or None
        when a custom timer factory is in use."""
        if self._timer_factory is not None:
            return None
        e = plan.entry.engine
        out: list[StepTimer] = []
        for st in range(plan.parallel.pp):
            key = (plan.gpu.name, plan.parallel, e.dtype, e.kv_dtype, e.sched_overhead_s, e.profile,
                   e.power_cap_w, st)
            t = self._timers.get(key)
            if t is None:
                prof = e.engine_profile
                t = GraphStepTimer(self.model, plan.gpu, plan.parallel, get_cost_model(plan.gpu),
                                   dtype=e.dtype, kv_dtype=e.kv_dtype, engine=prof,
                                   sched_overhead_s=None if st == 0 else 0.0, stage=st,
                                   power=self.power(plan))
                self._timers[key] = t
            out.append(t)
        return out

    def _draft_timer(self, plan: ReplicaPlan) -> StepTimer | None:
        spec = plan.entry.engine.spec_decode
        if spec is None or spec.method != "draft":
            return None
        draft = check_draft(self.model, spec.draft_model)
        par = ParallelConfig(tp=plan.parallel.tp if draft.num_heads % plan.parallel.tp == 0 else 1)
        return GraphStepTimer(draft, plan.gpu, par, get_cost_model(plan.gpu), dtype=plan.entry.engine.dtype,
                              engine=plan.entry.engine.engine_profile, sched_overhead_s=0.0,
                              power=self.power(plan))

    def _lora_factory(self, plan: ReplicaPlan, host: LinkSpec, block_bytes: float
                      ) -> Callable[[KVCache], AdapterCache] | None:
        """The adapter memory of each engine of ``plan`` (None without ``lora``)."""
        cfg = plan.entry.engine.lora
        if cfg is None:
            return None
        from fleetsim.calibration.lora import kernel_model, load_model
        from fleetsim.calibration.ops import dtype_bytes
        from fleetsim.workloads.lora import adapter_params_per_rank, projection_shapes

        kernel = kernel_model(plan.gpu, cfg.kernel)
        pinned = load_model(plan.gpu, host, True)
        pageable = load_model(plan.gpu, host, False)
        per_rank, n_proj = adapter_params_per_rank(self.model)
        par = plan.parallel
        layers = -(-self.model.num_layers // par.pp)
        db = dtype_bytes(plan.entry.engine.dtype)

        def build(kv: KVCache) -> AdapterCache:
            cache = AdapterCache(cfg, kernel, pinned, kv, hidden=self.model.hidden_size,
                                 params_per_rank=per_rank, n_proj=n_proj, layers_per_stage=layers,
                                 shards=par.tp * par.pp, dtype_bytes=db, block_bytes=block_bytes,
                                 projections=projection_shapes(self.model))
            cache.pageable = pageable
            return cache

        return build

    def _build(self) -> None:
        speeds = []
        for plan in self.plans:
            t = self._timer(plan)
            d = float(t.decode_times(32, np.array([32 * 1024.0]))[0])
            speeds.append(plan.parallel.pp / d)
        ref = max(speeds) if speeds else 1.0
        for plan, sp in zip(self.plans, speeds, strict=True):
            e = plan.entry.engine
            node = self.cluster.pools[plan.pool].node
            host = get_link(node.host_link)
            block_bytes = plan.kv_bytes_per_token_gpu * e.block_size
            pp = plan.parallel.pp
            engines = []
            draft = self._draft_timer(plan)
            stage_timers = self._stage_timers(plan) if pp > 1 else None
            stage_res = ([simpy.Resource(self.env, capacity=1) for _ in range(pp)]
                         if stage_timers is not None else None)
            lora = self._lora_factory(plan, host, block_bytes)
            for _ in range(pp):
                eng = Engine(self.env, len(self.engines), plan.index, e, self._timer(plan),
                             max(1, plan.kv_blocks // pp), rng=self.rng,
                             stop_after_first_token=plan.entry.role == "prefill",
                             block_bytes=block_bytes,
                             host_bps=host.bandwidth_bps * host.efficiency,
                             host_latency_s=host.latency_s, draft_timer=draft,
                             on_done=self._on_done, cap_s=self.cap_s,
                             stage_timers=stage_timers, stage_res=stage_res,
                             gpus=plan.parallel.tp, gap_w=self.power(plan).gap_w(), lora=lora)
                engines.append(eng)
                self.engines.append(eng)
            self.replicas.append(Replica(plan, engines, sp / ref))

    # -- arrivals -----------------------------------------------------------------------
    def _at(self, t: float) -> simpy.Event:
        """An event at time ``t`` that fires before engine events at the same time, so an
        iteration starting at ``t`` sees arrivals at ``t``."""
        ev = simpy.Event(self.env)
        ev._ok = True
        ev._value = None
        self.env.schedule(ev, URGENT, max(0.0, t - self.env.now))
        return ev

    def _open_loop(self, reqs: Any) -> Generator[simpy.Event, Any, None]:
        env = self.env
        for req in reqs:
            if req.arrival_s >= self.cap_s:
                self.not_issued += 1
                continue
            if req.arrival_s > env.now:
                yield self._at(req.arrival_s)
            self._arrive(req, req.arrival_s)
        if self.scaler is not None:
            self.scaler.arrivals_done = True
            self.scaler.check_quiet()

    def _closed_loop_start(self) -> list[Request]:
        """Split a closed-loop stream into per-client chains; return the chain heads and
        the requests with no client (open loop)."""
        cid = self.requests.client_id
        heads: list[Request] = []
        self._by_row: dict[int, Request] = {}
        for row, req in enumerate(self.requests):
            c = int(cid[row])
            if c < 0:
                heads.append(req)
                continue
            chain = self._chains.setdefault(c, [])
            chain.append(row)
            self._by_row[row] = req
        for c, rows in self._chains.items():
            heads.append(self._by_row[rows[0]])
            rows.reverse()
            rows.pop()
            self._chains[c] = rows
        heads.sort(key=lambda r: r.arrival_s)
        return heads

    def _issue_next(self, seq: SeqState) -> None:
        c = seq.req.client_id
        if c is None:
            return
        rows = self._chains.get(c)
        if not rows:
            return
        nxt = self._by_row.pop(rows.pop())
        t = self.env.now + nxt.think_s
        if t >= self.cap_s:
            self.not_issued += 1 + len(rows)
            rows.clear()
            return

        def go() -> Generator[simpy.Event, Any, None]:
            yield self._at(t)
            self._arrive(nxt, t)

        self.env.process(go())

    def _arrive(self, req: Request, t: float) -> None:
        seq = SeqState(req, t)
        self.arrived += 1
        if self.progress is not None and self.arrived % 1000 == 0:
            self.progress(self.arrived, len(self.requests))
        if self.scaler is not None and not self.front:
            self.live.add(seq)
            self.scaler.hold(seq)
            return
        self._route(seq, t)

    def _route(self, seq: SeqState, t: float) -> None:
        """Send an arrived request to a front replica, or reject it."""
        reps = self.front
        rep = reps[self.router.route(seq, reps, t)]
        seq.replica = rep.index
        why = rep.fits(seq)
        if not why and self.back_all:
            why = self.back_all[0].fits(seq)
        lim = self.deployment.queue_limit
        if not why and lim is not None and rep.num_waiting() >= lim:
            why = f"queue limit {lim} reached"
        if why:
            seq.rejected = why
            seq.status = "rejected"
            seq.finish_s = t
            self.rejected += 1
            self.live.discard(seq)
            self.log.add(seq)
            self._issue_next(seq)
            if self.scaler is not None:
                self.scaler.check_quiet()
            return
        self.live.add(seq)
        if self.scaler is not None:
            self.scaler.on_route(rep)
        rep.add(seq)

    # -- completions --------------------------------------------------------------------
    def _on_done(self, seq: SeqState, eng: Engine) -> None:
        if seq.status == "prefilled":
            seq.prefill_replica = eng.replica
            self.env.process(self._handoff(seq, self.replicas[eng.replica]))
            if self.scaler is not None:
                self.scaler.on_done(seq, eng.replica)
            return
        if seq.status == "rejected":
            self.rejected += 1
        else:
            self.done += 1
        self.live.discard(seq)
        self.log.add(seq)
        self._issue_next(seq)
        if self.scaler is not None:
            self.scaler.on_done(seq, eng.replica)

    def _link(self, src: Replica, dst: Replica) -> TransferLink:
        sp, dp = src.plan, dst.plan
        route, name = transfer_route(self.cluster, sp.pool, dp.pool, sp.node == dp.node)
        key: tuple = ("scale_up", sp.index) if route == "scale_up" else (route, sp.pool, sp.node)
        link = self.links.get(key)
        if link is None:
            link = TransferLink(self.env, get_link(name), sp.parallel.tp * sp.parallel.pp)
            self.links[key] = link
        return link

    def kv_transfer_bytes(self, seq: SeqState) -> float:
        """Whole-model KV bytes of the prompt (all layers, all KV heads)."""
        eng = self.replicas[seq.prefill_replica].plan.entry.engine
        return kv_transfer_bytes(self.model, seq.prompt, eng.kv_dtype)

    def _handoff(self, seq: SeqState, src: Replica) -> Generator[simpy.Event, Any, None]:
        while not self.back:
            assert self.scaler is not None
            self.scaler.delayed.add(seq.req_id)
            yield self.scaler.wait_back()
        now = self.env.now
        dst = self.back[self.back_router.route(seq, self.back, now)]
        if self.scaler is not None:
            self.scaler.on_route(dst)
        link = self._link(src, dst)
        nbytes = self.kv_transfer_bytes(seq)
        t0 = self.env.now
        yield from link.transfer(nbytes)
        self.transfers.append((seq.req_id, t0, self.env.now, nbytes))
        seq.first_token_s = self.env.now  # the decode replica streams the first token
        seq.status = "waiting"
        dst.add(seq)

    # -- run ----------------------------------------------------------------------------
    def run(self) -> None:
        if self.requests.is_closed_loop:
            reqs: Any = self._closed_loop_start()
        else:
            reqs = iter_requests(self.requests)
        self.env.process(self._open_loop(reqs))
        if self.scaler is None:
            self.env.run()
        else:
            self.env.process(self.scaler.loop())
            try:
                self.env.run(until=self.scaler.stop)
            except RuntimeError as e:  # pragma: no cover - cap reached with requests in flight
                if "until" not in str(e):
                    raise
        if self.progress is not None:
            self.progress(self.arrived, len(self.requests))

    def final_log(self) -> RequestLog:
        """The request log plus the requests still in the system (unfinished), in order
        of arrival of the recorded ones followed by the unfinished ones by req_id."""
        for seq in sorted(self.live, key=lambda q: q.req_id):
            self.log.add(seq)
        self.live.clear()
        return self.log

    @property
    def end_s(self) -> float:
        ends = [e.clock for e in self.engines]
        return max([self.env.now, *ends])

