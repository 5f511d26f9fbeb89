"""SimPy discrete-event simulation of one training step over the pipeline stages.

One representative GPU per pipeline stage (the tp/cp/dp peers of a stage run the same
schedule in lockstep, so one of them stands for all). Each GPU has two streams:

* **compute** executes the stage's op order (``schedule.py``): chunk forwards and
  backwards per micro-batch, TP/CP/EP collectives inside them (they sit on the critical
  path in Megatron-style tensor parallelism), then the optimizer step;
* **communication** runs data-parallel gradient reductions (issued per bucket as the last
  micro-batch's backward produces gradients, or every micro-batch with ZeRO-2/3), ZeRO-3/FSDP
  parameter all-gathers (prefetched one unit ahead) and the post-step parameter all-gather of
  ZeRO-1/2, one at a time in issue order.

Contention: while the communication stream is busy, compute progresses at rate
``1 / (1 + comm_slowdown)`` (NCCL kernels take SMs and HBM bandwidth from the GEMMs). Because
only a stage's own process issues its communication, and only between compute kernels, every
communication interval that can overlap a compute kernel is known when the kernel starts; the
kernel's end is then computed exactly by integrating the rate over those intervals.

Host dispatch (eager execution): each GPU also keeps its host's clock. A chunk (or unit)
carries the ``Dispatch`` summary of its kernel list (``fleetsim.calibration.launch``); issued
from host time ``h`` onto a device free at ``t`` it ends at ``max(t + device work slowed by
contention, h + dispatch.end_s)`` and the host clock advances by ``dispatch.host_s``; the host
never waits for the device (no synchronisation inside a step).

Energy: each unit carries the board energy of its forward and backward kernels
(``layer_ops``); a stage's GPU books ``kernel_j`` and the kernel seconds ``kernel_s`` (the
uncontended work) of what it runs, and ``step.py`` prices the rest of the step (bubbles,
waits for communication and the host, contention, the drain) at the engine's gap power.

Pipeline send/recv: a chunk's output reaches the next stage ``p2p_s`` after the chunk ends
(asynchronous P2P on its own channel); the receiver waits for it. Bubbles, exposed
communication and imbalance are not formulas here: they are the waits that occur.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

import simpy
from fleetsim.calibration.launch import Dispatch, chain

from .schedule import Action


@dataclass(frozen=True, slots=True)
class Unit:
    """A group of consecutive layers priced together (ZeRO-3 gather and bucket granularity)."""

    fwd_s: float
    bwd_s: float
    param_bytes: float  # 16-bit weights of the unit on this GPU (TP/EP-sharded, not ZeRO-sharded)
    grad_bytes: float  # gradient bytes reduced over the data-parallel group
    reduce_extra_s: float = 0.0  # compute-stream work to hand the gradients to the reduction
    fwd_dispatch: Dispatch | None = None  # eager host dispatch of the forward (None: no host term)
    bwd_dispatch: Dispatch | None = None
    reduce_dispatch: Dispatch | None = None
    fwd_j: float = 0.0  # board energy of the forward's kernels (J)
    bwd_j: float = 0.0  # of the backward's, recomputation included
    reduce_extra_j: float = 0.0


@dataclass
class EngineSpec:
    """Everything the simulation needs, already priced."""

    p: int
    v: int
    m: int
    orders: list[list[Action]]
    units: list[list[list[Unit]]]  # [stage][local chunk][unit]
    p2p_s: float
    dp_reduce: Callable[[float], float] | None  # seconds to reduce a gradient bucket; None if dp == 1
    grad_sync_every_mb: bool = False
    zero3_gather: Callable[[float], float] | None = None  # seconds to all-gather a unit's weights
    bucket_bytes: float = 160e6
    overlap_grad_reduce: bool = True
    optimizer_s: list[float] = field(default_factory=list)
    optimizer_j: list[float] = field(default_factory=list)  # per stage: board energy of its kernels
    optimizer_kernel_s: list[float] | None = None  # per stage: GPU kernel seconds (None: optimizer_s)
    optimizer_dispatch: list[Dispatch] | None = None  # per stage; None: no host term
    post_step_comm_s: list[float] = field(default_factory=list)
    comm_slowdown: float = 0.0
    record: bool = True


@dataclass
class StageStats:
    busy_s: float = 0.0  # compute-stream time of forwards/backwards (contention included)
    pipeline_wait_s: float = 0.0
    comm_wait_s: float = 0.0
    contention_s: float = 0.0
    host_bound_s: float = 0.0  # compute-stream time spent waiting for the host to issue kernels
    comm_busy_s: float = 0.0
    pipeline_end_s: float = 0.0
    end_s: float = 0.0
    kernel_s: float = 0.0  # compute-stream kernel seconds as priced (contention and waits excluded)
    kernel_j: float = 0.0  # board energy of those kernels


@dataclass
class EngineResult:
    step_s: float
    stages: list[StageStats]
    events: list[tuple[int, str, str, float, float, int, int]]
    """(stage, stream, name, start_s, end_s, micro_batch, chunk)."""


class _Arrival(simpy.Event):
    """An event a receiver waits on, which the sender triggers ``delay`` seconds later in
    one scheduling step (what ``succeed`` does with no delay)."""

    def succeed_after(self, delay: float) -> None:
        self._ok = True
        self._value = None
        self.env.schedule(self, simpy.core.NORMAL, delay)


class _Gpu:
    """The two streams of one representative GPU."""

    def __init__(self, env: simpy.Environment, stage: int, spec: EngineSpec,
                 events: list[tuple[int, str, str, float, float, int, int]]) -> None:
        self.env, self.stage, self.spec, self.events = env, stage, spec, events
        self.rate = 1.0 / (1.0 + spec.comm_slowdown)
        self.comm_starts: list[float] = []
        self.comm_ends: list[float] = []
        self.comm_free_at = 0.0
        self.host_at = 0.0  # time the host has issued everything so far (eager dispatch)
        self.stats = StageStats()

    def issue_comm(self, name: str, dur: float, mb: int = -1, chunk: int = -1) -> simpy.Event:
        """Queue a communication op; returns the event of its completion."""
        now = self.env.now
        start = max(now, self.comm_free_at)
        end = start + dur
        self.comm_free_at = end
        if dur > 0:
            self.comm_starts.append(start)
            self.comm_ends.append(end)
            self.stats.comm_busy_s += dur
            if self.spec.record:
                self.events.append((self.stage, "comm", name, start, end, mb, chunk))
        return self.env.timeout(end - now)

    def compute_end(self, start: float, work: float) -> float:
        """End time of ``work`` seconds of compute begun at ``start``, slowed inside comm."""
        if work <= 0:
            return start
        t, left = start, work
        i = max(0, bisect_right(self.comm_ends, start))
        while i < len(self.comm_starts) and left > 0:
            a, b = self.comm_starts[i], self.comm_ends[i]
            if a > t:  # free gap before the next comm interval
                gap = a - t
                if left <= gap:
                    return t + left
                left -= gap
                t = a
            span = b - t
            if left <= span * self.rate:
                return t + left / self.rate
            left -= span * self.rate
            t = b
            i += 1
        return t + left

    def advance(self, name: str, work: float, mb: int, chunk: int, busy: bool = True,
                start: float | None = None, disp: Dispatch | None = None, joules: float = 0.0,
                kernel_s: float | None = None) -> float:
        """Book ``work`` seconds of compute from ``start`` (default now; a later start is a
        known arrival, before which this GPU issues nothing); returns the delay from now to
        its (slowed) end. With ``disp`` (eager host dispatch of the same kernels, ``work`` =
        its device time) the end is also bounded by the host issuing them
        (``Dispatch.finish``): ``max(device end, host clock + disp.end_s)``. ``joules``: board
        energy of the kernels, over ``kernel_s`` of them (default ``work``)."""
        now = self.env.now
        self.stats.kernel_s += work if kernel_s is None else kernel_s
        self.stats.kernel_j += joules
        t0 = now if start is None else start
        end = t0 + work if self.comm_free_at <= t0 else self.compute_end(t0, work)
        slowed = end
        if disp is not None:
            end = max(end, self.host_at + disp.end_s)
            self.host_at += disp.host_s
            self.stats.host_bound_s += end - slowed
        dur = end - t0
        if dur > 0:
            if busy:
                self.stats.busy_s += dur
            self.stats.contention_s += slowed - t0 - work
            if self.spec.record:
                self.events.append((self.stage, "compute", name, t0, end, mb, chunk))
        return end - now

    def compute(self, name: str, work: float, mb: int, chunk: int, busy: bool = True,  # noqa: ANN201
                disp: Dispatch | None = None, joules: float = 0.0, kernel_s: float | None = None):
        dur = self.advance(name, work, mb, chunk, busy, disp=disp, joules=joules, kernel_s=kernel_s)
        if dur > 0:
            yield self.env.timeout(dur)

    def wait(self, ev: simpy.Event, cause: str):  # noqa: ANN201
        if ev.processed:
            return
        t0 = self.env.now
        yield ev
        dt = self.env.now - t0
        if cause == "pipeline":
            self.stats.pipeline_wait_s += dt
        else:
            self.stats.comm_wait_s += dt


def run_engine(spec: EngineSpec) -> EngineResult:
    """Simulate one step; deterministic (no randomness, FIFO event order)."""
    env = simpy.Environment()
    events: list[tuple[int, str, str, float, float, int, int]] = []
    gpus = [_Gpu(env, s, spec, events) for s in range(spec.p)]
    n_chunks = spec.p * spec.v
    m = spec.m
    arrivals: dict[int, float | _Arrival] = {}
    """Activation (even key) or gradient (odd key) of micro-batch ``mb`` for global chunk ``g``:
    key ``2 (g m + mb) + kind``. A sender that comes first records the arrival time; a
    receiver that comes first leaves an event that the sender triggers ``p2p_s`` later."""
    p2p = spec.p2p_s

    def send(key: int) -> None:
        waiting = arrivals.pop(key, None)
        if waiting is None:
            arrivals[key] = env.now + p2p
        else:
            assert isinstance(waiting, _Arrival)
            waiting.succeed_after(max(0.0, p2p))

    def receive(key: int) -> _Arrival | float:
        """The arrival time when the sender has posted it (possibly already past), else an
        event to wait for."""
        got = arrivals.pop(key, None)
        if got is None:
            ev = arrivals[key] = _Arrival(env)
            return ev
        assert isinstance(got, float)
        return got

    def arrive(key: int, gpu: _Gpu):  # noqa: ANN202
        """Wait for ``key``; returns when compute may start (a known future arrival is not
        waited for here: the caller books its compute from that time)."""
        got = receive(key)
        if isinstance(got, float):
            if got > env.now:
                gpu.stats.pipeline_wait_s += got - env.now
                return got
            return env.now
        t0 = env.now
        yield got
        gpu.stats.pipeline_wait_s += env.now - t0
        return env.now

    fwd_total = [[sum(u.fwd_s for u in ch) for ch in st] for st in spec.units]
    bwd_total = [[sum(u.bwd_s for u in ch) for ch in st] for st in spec.units]
    fwd_j = [[sum(u.fwd_j for u in ch) for ch in st] for st in spec.units]
    bwd_j = [[sum(u.bwd_j for u in ch) for ch in st] for st in spec.units]

    def chunk_dispatch(ch: list[Unit], phase: str) -> Dispatch | None:
        parts = [getattr(u, phase) for u in ch]
        return None if any(d is None for d in parts) else chain(parts)

    fwd_disp = [[chunk_dispatch(ch, "fwd_dispatch") for ch in st] for st in spec.units]
    bwd_disp = [[chunk_dispatch(ch, "bwd_dispatch") for ch in st] for st in spec.units]

    def stage_proc(s: int):  # noqa: ANN202
        gpu = gpus[s]
        pending: list[simpy.Event] = []
        gathers: dict[tuple[int, int, str, int], simpy.Event] = {}

        def gather(mb: int, c: int, phase: str, u: int) -> simpy.Event:
            key = (mb, c, phase, u)
            ev = gathers.get(key)
            if ev is None:
                assert spec.zero3_gather is not None
                unit = spec.units[s][c][u]
                ev = gathers[key] = gpu.issue_comm("param_all_gather", spec.zero3_gather(unit.param_bytes), mb, c)
            return ev

        for a in spec.orders[s]:
            c, mb = a.chunk, a.micro_batch
            g = c * spec.p + s
            units = spec.units[s][c]
            if a.kind == "F":
                start = env.now
                if g > 0:
                    start = yield from arrive(2 * (g * m + mb), gpu)
                if spec.zero3_gather is None:
                    yield env.timeout(gpu.advance("forward", fwd_total[s][c], mb, c, start=start,
                                                  disp=fwd_disp[s][c], joules=fwd_j[s][c]))
                else:
                    if start > env.now:
                        yield env.timeout(start - env.now)
                    for i, unit in enumerate(units):
                        ev = gather(mb, c, "F", i)
                        if i + 1 < len(units):
                            gather(mb, c, "F", i + 1)
                        yield from gpu.wait(ev, "comm")
                        yield from gpu.compute("forward", unit.fwd_s, mb, c, disp=unit.fwd_dispatch,
                                               joules=unit.fwd_j)
                        gathers.pop((mb, c, "F", i), None)
                if g < n_chunks - 1:
                    send(2 * ((g + 1) * m + mb))
                    if spec.record and spec.p2p_s > 0:
                        events.append((s, "p2p", "send_activation", env.now, env.now + spec.p2p_s, mb, c))
            else:
                start = env.now
                if g < n_chunks - 1:
                    start = yield from arrive(2 * (g * m + mb) + 1, gpu)
                reduce_now = spec.dp_reduce is not None and spec.overlap_grad_reduce and (
                    spec.grad_sync_every_mb or mb == spec.m - 1)
                if spec.zero3_gather is None and not reduce_now:
                    yield env.timeout(gpu.advance("backward", bwd_total[s][c], mb, c, start=start,
                                                  disp=bwd_disp[s][c], joules=bwd_j[s][c]))
                else:
                    if start > env.now:
                        yield env.timeout(start - env.now)
                    bucket = 0.0
                    order = list(range(len(units) - 1, -1, -1))
                    for j, i in enumerate(order):
                        if spec.zero3_gather is not None:
                            ev = gather(mb, c, "B", i)
                            if j + 1 < len(order):
                                gather(mb, c, "B", order[j + 1])
                            yield from gpu.wait(ev, "comm")
                            gathers.pop((mb, c, "B", i), None)
                        yield from gpu.compute("backward", units[i].bwd_s, mb, c, disp=units[i].bwd_dispatch,
                                               joules=units[i].bwd_j)
                        if reduce_now:
                            assert spec.dp_reduce is not None
                            if units[i].reduce_extra_s > 0:
                                yield from gpu.compute("bucket_copy", units[i].reduce_extra_s, mb, c,
                                                       disp=units[i].reduce_dispatch, joules=units[i].reduce_extra_j)
                            # full buckets go out as one op per unit (same stream time as
                            # one op each); the rest of the chunk's gradients at its end
                            bucket += units[i].grad_bytes
                            full = int(bucket // spec.bucket_bytes)
                            if full:
                                dur = full * spec.dp_reduce(spec.bucket_bytes)
                                pending.append(gpu.issue_comm("grad_reduce", dur, mb, c))
                                bucket -= full * spec.bucket_bytes
                            if j == len(order) - 1 and bucket > 0:
                                pending.append(gpu.issue_comm("grad_reduce", spec.dp_reduce(bucket), mb, c))
                                bucket = 0.0
                if g > 0:
                    send(2 * ((g - 1) * m + mb) + 1)
                    if spec.record and spec.p2p_s > 0:
                        events.append((s, "p2p", "send_gradient", env.now, env.now + spec.p2p_s, mb, c))
        gpu.stats.pipeline_end_s = env.now
        if spec.dp_reduce is not None and not spec.overlap_grad_reduce:
            for c, units in enumerate(spec.units[s]):
                total = sum(u.grad_bytes for u in units)
                nb = max(1, int(-(-total // spec.bucket_bytes)))
                for _ in range(nb):
                    pending.append(gpu.issue_comm("grad_reduce", spec.dp_reduce(total / nb), spec.m - 1, c))
        for ev in pending:
            yield from gpu.wait(ev, "comm")
        if spec.optimizer_s:
            od = spec.optimizer_dispatch[s] if spec.optimizer_dispatch else None
            yield from gpu.compute("optimizer", spec.optimizer_s[s], -1, -1, busy=False, disp=od,
                                   joules=spec.optimizer_j[s] if spec.optimizer_j else 0.0,
                                   kernel_s=None if spec.optimizer_kernel_s is None else spec.optimizer_kernel_s[s])
        if spec.post_step_comm_s and spec.post_step_comm_s[s] > 0:
            ev = gpu.issue_comm("param_all_gather", spec.post_step_comm_s[s])
            yield from gpu.wait(ev, "comm")
        gpu.stats.end_s = env.now

    for s in range(spec.p):
        env.process(stage_proc(s))
    env.run()
    stats = [g.stats for g in gpus]
    return EngineResult(max(st.end_s for st in stats), stats, events)
