"""One serving engine: a SimPy process running iterations of continuous batching.

Each iteration the scheduler picks sequences and token counts (``scheduler.Plan``); the
step-time model prices the batch; the engine waits that long, then applies the results
(KV computed, tokens sampled, sequences finished). A replica is one engine, or ``pp``
engines (vLLM's virtual engines) under pipeline parallelism.

Fast path: between events nothing changes but context lengths. When an iteration is pure
decode over every running sequence and nobody waits who could be admitted, the next
iterations are identical up to context growth, so the engine plans a *run* of ``n``
iterations in closed form - ``n`` limited by the first sequence to finish and by free KV
blocks - with durations from the vectorised step-time model, and sleeps once. An arrival
that could change the plan wakes it; the run is cut after the iteration in progress. Run
state is applied lazily (``sync``) so routers that look inside the engine mid-run see the
same state as the iteration-by-iteration path. Iteration end times are accumulated as
``clock + d0 + d1 + ...`` in the same order on both paths, so results agree to rounding.

Energy: the step timer prices each iteration's board energy on one GPU of each stage
(kernels at occupancy power, gaps and scheduler time at gap power); the engine's ``gpus``
GPUs per stage all run it, so an iteration adds ``gpus x`` that energy to the engine's busy
energy and ``gpus x`` its stage seconds to its busy GPU-seconds (a swap's host transfer at
gap power). Each sequence of the batch is charged the iteration's energy in proportion to
the tokens it computed. Between iterations an engine with no work draws idle power; that is
accounted by the results from the busy GPU-seconds (``results.energy``).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy
from fleetsim.sim.serving.config import EngineConfig
from fleetsim.sim.serving.kvcache import KVCache
from fleetsim.sim.serving.lora import AdapterCache, batch_shape
from fleetsim.sim.serving.scheduler import Plan, make_scheduler
from fleetsim.sim.serving.speculative import draw_accepted
from fleetsim.sim.serving.steptime import StepTimer
from fleetsim.workloads.requests import Request

RUN_CHUNK = 256
"""Most iterations planned per decode run; a longer run continues as a new one (the
accumulated end times are the same), so a run cut short by an arrival wastes little."""


class SeqState:
    """Mutable progress of one request inside the serving system."""

    __slots__ = ("req", "req_id", "arrival_s", "prompt", "output", "computed", "generated",
                 "own_blocks", "held", "pending_hit", "hit_tokens", "admit_s", "first_token_s",
                 "finish_s", "preemptions", "tokens", "engine", "swapped_blocks", "replica",
                 "prefill_replica", "rejected", "status", "last_iter", "energy_j", "adapter", "lora_rank",
                 "lora_state")

    def __init__(self, req: Request, arrival_s: float) -> None:
        self.req = req
        self.req_id = req.req_id
        self.arrival_s = arrival_s
        self.prompt = max(1, req.prompt_tokens)
        self.output = max(1, req.output_tokens)
        self.computed = 0
        self.generated = 0
        self.own_blocks = 0
        self.held: list[int] = []
        self.pending_hit = 0
        self.hit_tokens = 0
        self.admit_s = math.nan
        self.first_token_s = math.nan
        self.finish_s = math.nan
        self.preemptions = 0
        self.tokens: list[int] = []
        """Flat triples (engine uid, first iteration, last iteration) of consecutive
        iterations of one engine that each emitted a token of this sequence."""
        self.engine: Engine | None = None
        self.swapped_blocks = 0
        self.replica = -1
        self.prefill_replica = -1
        self.rejected = ""
        self.status = "waiting"
        self.last_iter = -2
        self.energy_j = 0.0
        """GPU energy charged to this sequence: its token share of every iteration it was in."""
        rank = req.lora_rank
        self.adapter = req.adapter_id if rank > 0 and req.adapter_id is not None else -1
        """LoRA adapter (-1: the base model only; a rank-0 adapter is the base model)."""
        self.lora_rank = rank if self.adapter >= 0 else 0
        self.lora_state = 0
        """0: adapter not yet admitted; 2: its first admission had to load it; 1: counted."""

    def held_blocks(self) -> int:
        return self.own_blocks + len(self.held)

    def remaining_tokens(self) -> int:
        """Tokens still to compute: unprocessed prompt plus output not yet generated
        (``prompt + output - computed``; a decode computes the previous token's KV)."""
        return self.prompt + self.output - self.computed


class Engine:
    """Iteration loop of one engine (a replica, or one virtual engine of a PP replica)."""

    def __init__(self, env: simpy.Environment, uid: int, replica: int, cfg: EngineConfig,
                 timer: StepTimer, num_blocks: int, *, rng: np.random.Generator,
                 stop_after_first_token: bool = False, block_bytes: float = 0.0,
                 host_bps: float = 1.0, host_latency_s: float = 0.0,
                 draft_timer: StepTimer | None = None,
                 on_done: Callable[[SeqState, Engine], None] | None = None,
                 cap_s: float = math.inf, stage_timers: list[StepTimer] | None = None,
                 stage_res: list[simpy.Resource] | None = None, gpus: int = 1,
                 gap_w: float = 0.0, lora: Callable[[KVCache], AdapterCache] | None = None) -> None:
        self.env = env
        self.uid = uid
        self.replica = replica
        self.cfg = cfg
        self.timer = timer
        self.draft_timer = draft_timer
        self.kv = KVCache(num_blocks, cfg.block_size, cfg.enable_prefix_caching)
        self.lora = lora(self.kv) if lora is not None else None
        self.scheduler = make_scheduler(cfg.scheduler)
        self.rng = rng
        self.stop_after_first = stop_after_first_token
        self.block_bytes = block_bytes
        self.host_bps = host_bps
        self.host_latency_s = host_latency_s
        self.swap_capacity = int(cfg.swap_space_bytes // block_bytes) if block_bytes > 0 else 0
        self.swap_used = 0
        spec = cfg.spec_decode
        self.spec_k = spec.num_speculative_tokens if spec is not None else 0
        self.spec_alpha = spec.acceptance_rate if spec is not None else 0.0
        self.lookahead = self.spec_k
        self.on_done = on_done
        self.cap_s = cap_s
        self.stage_timers = stage_timers
        self.stage_res = stage_res
        self.gpus = gpus
        self.gap_w = gap_w
        self.waiting: deque[SeqState] = deque()
        self.running: list[SeqState] = []
        self.clock = 0.0
        self.wake: simpy.Event | None = None
        self.outstanding = 0
        # run state (fast path)
        self._run: list[SeqState] | None = None
        self._run_c0: list[int] = []
        self._run_ends: list[float] = []
        self._run_energy: np.ndarray = np.zeros(0)
        self._run_base = 0
        self._run_applied = 0
        self._run_alloc = 0
        # logs
        self.iter_end = array("d")
        self.seg: dict[str, array[Any]] = {k: array("d") for k in ("start_s", "end_s")}
        self.seg.update({k: array("i") for k in ("iters", "batch", "tokens", "kv_used")})
        self.seg.update({k: array("d") for k in ("energy_j", "gpu_s")})
        self.busy_s = 0.0
        self.busy_j = 0.0
        """GPU energy of this engine's iterations (all ``gpus`` GPUs of every stage)."""
        self.busy_gpu_s = 0.0
        """GPU-seconds its iterations kept GPUs busy (stage seconds x ``gpus``)."""
        self.preemptions = 0
        self.process = env.process(self._loop())

    # -- hooks used by the scheduler -------------------------------------------------------
    def on_admit(self, seq: SeqState) -> None:
        if math.isnan(seq.admit_s):
            # an arrival event fires at ``now + (t - now)``, which can round one ulp below t
            seq.admit_s = max(self.clock, seq.arrival_s)
        seq.status = "running"

    def match_prefix(self, seq: SeqState) -> tuple[int, int]:
        """Find cached leading blocks of the prompt (at least one token is always computed).
        Returns (hit blocks, how many of them are evictable and would become pinned)."""
        if not self.kv.prefix_caching:
            return 0, 0
        hashes = seq.req.prompt_hashes(self.kv.block_size)
        hit = self.kv.match(hashes)
        if hit * self.kv.block_size >= seq.prompt + seq.generated:
            hit -= 1
        seq.pending_hit = hit
        seq.held = list(hashes[:hit])
        ev = self.kv.evictable
        return hit, sum(1 for h in seq.held if h in ev)

    def unmatch_prefix(self, seq: SeqState) -> None:
        seq.pending_hit = 0
        seq.held = []

    def take_prefix(self, seq: SeqState) -> None:
        hit = seq.pending_hit
        if self.kv.prefix_caching and seq.computed == 0:
            self.kv.query_tokens += seq.prompt
            if hit:
                self.kv.acquire(tuple(seq.held))
                seq.computed = hit * self.kv.block_size
                seq.hit_tokens += seq.computed
                self.kv.hit_tokens += seq.computed
                self.outstanding -= seq.computed
        seq.pending_hit = 0

    def preempt(self, seq: SeqState, plan: Plan) -> None:
        """Evict ``seq`` (the lowest-priority running one) to make room for KV blocks."""
        self.running.remove(seq)
        for i, (s, _) in enumerate(plan.items):
            if s is seq:
                del plan.items[i]
                break
        if self.lora is not None and seq.adapter >= 0:
            self.lora.release(seq)
        blocks = seq.held_blocks()
        if self.cfg.preemption_mode == "swap" and self.swap_used + blocks <= self.swap_capacity:
            self.kv.unref(seq.held)
            self.kv.release(seq.own_blocks)
            seq.swapped_blocks = blocks
            self.swap_used += blocks
            plan.swapped_out_blocks += blocks
        else:
            self.kv.unref(seq.held)
            self.kv.release(seq.own_blocks)
            self.outstanding += seq.computed
            seq.computed = 0
        seq.held = []
        seq.own_blocks = 0
        seq.preemptions += 1
        self.preemptions += 1
        seq.status = "waiting"
        self.waiting.appendleft(seq)
        plan.preempted.append(seq)

    def swap_in(self, seq: SeqState, plan: Plan) -> None:
        blocks = seq.swapped_blocks
        self.kv.allocate(blocks)
        seq.own_blocks = blocks
        self.swap_used -= blocks
        seq.swapped_blocks = 0
        plan.swapped_in_blocks += blocks

    # -- entry points ---------------------------------------------------------------------
    def add(self, seq: SeqState) -> None:
        """Queue a routed request (called at its arrival time)."""
        seq.engine = self
        self.waiting.append(seq)
        self.outstanding += seq.remaining_tokens()
        w = self.wake
        if w is not None and not w.triggered:
            w.succeed()

    def fits(self, seq: SeqState) -> str:
        """'' when ``seq`` can ever run here, else the reason it cannot."""
        total = seq.prompt + seq.output + self.lookahead
        if self.kv.blocks_for(total) > self.kv.num_blocks:
            return f"needs {self.kv.blocks_for(total)} KV blocks > capacity {self.kv.num_blocks}"
        sch = self.cfg.scheduler
        if sch.kind == "vllm" and not sch.chunked_prefill and seq.prompt > sch.max_num_batched_tokens:
            return f"prompt {seq.prompt} > max_num_batched_tokens {sch.max_num_batched_tokens}"
        return ""

    def load_tokens(self, now: float) -> int:
        """Outstanding (unprocessed prompt + ungenerated output) tokens at ``now``."""
        run = self._run
        if run is None:
            return self.outstanding
        done = bisect_left(self._run_ends, now)
        return self.outstanding - (done - self._run_applied) * len(run)

    def num_waiting(self) -> int:
        return len(self.waiting)

    def sync(self, now: float) -> None:
        """Materialise a decode run's iterations that ended (and blocks of those started)
        before ``now``."""
        if self._run is None:
            return
        ends = self._run_ends
        self._apply_run(bisect_left(ends, now), min(len(ends), 1 + bisect_left(ends, now)))

    # -- main loop ------------------------------------------------------------------------
    def _loop(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        sched = self.scheduler
        while True:
            if not self.running and not self.waiting:
                self.wake = env.event()
                yield self.wake
                self.wake = None
                self.clock = max(self.clock, env.now)
                continue
            if self.clock >= self.cap_s:
                return
            plan = sched.schedule(self)
            if not plan.items:
                if plan.preempted:
                    continue
                if self.running:
                    raise RuntimeError("scheduler produced an empty plan with running requests")
                # Nothing running and the queue head cannot be admitted: it never will.
                seq = self.waiting.popleft()
                self._drop(seq, "does not fit in KV cache")
                continue
            if (self.cfg.fast_forward and not self.spec_k and self.stage_res is None
                    and not plan.preempted and (self.lora is None or not self.lora.pending_s)
                    and plan.admitted == 0 and not plan.swapped_in_blocks
                    and len(plan.items) == len(self.running)
                    and all(n == 1 and s.generated for s, n in plan.items)):
                yield from self._decode_run()
            else:
                yield from self._iteration(plan)

    def _drop(self, seq: SeqState, why: str) -> None:
        self.outstanding -= seq.remaining_tokens()
        seq.rejected = why
        seq.status = "rejected"
        seq.finish_s = self.clock
        if self.on_done is not None:
            self.on_done(seq, self)

    # -- one general iteration --------------------------------------------------------------
    def _iteration(self, plan: Plan) -> Generator[simpy.Event, Any, None]:
        dec_n = 0
        dec_ctx = 0
        pre_q: list[int] = []
        pre_kv: list[int] = []
        sampled = 0
        for seq, n in plan.items:
            total = seq.prompt + seq.generated
            if n == 1 and seq.generated:
                dec_n += 1
                dec_ctx += seq.computed + 1
            else:
                pre_q.append(n)
                pre_kv.append(seq.computed + n)
                if seq.computed + n == total:
                    sampled += 1
        k = self.spec_k
        timers = self.stage_timers if self.stage_timers is not None else [self.timer]
        costs = [self._price(t, dec_n, dec_ctx, pre_q, pre_kv, sampled) for t in timers]
        durs = [c[0] for c in costs]
        joules = sum(c[1] for c in costs)
        if k and dec_n and self.draft_timer is not None:
            steps, step_j = self.draft_timer.decode_costs(dec_n, np.array([dec_ctx], dtype=float))
            durs[0] += k * float(steps[0])
            joules += k * float(step_j[0])
        moved = plan.swapped_in_blocks + plan.swapped_out_blocks
        if moved:
            swap_s = self.host_latency_s + moved * self.block_bytes / self.host_bps
            durs[0] += swap_s
            joules += swap_s * self.gap_w
        if self.lora is not None:
            lt, la, lr = batch_shape(plan.items)
            k_s = self.lora.kernel_s(lt, la, lr)
            if k_s:
                for i, (d, e) in enumerate(costs):
                    durs[i] += k_s
                    joules += k_s * e / d if d > 0 else 0.0
            load_s = self.lora.take_pending()
            if load_s:
                durs[0] += load_s
                joules += load_s * self.gap_w
        joules *= self.gpus
        gpu_s = self.gpus * sum(durs)
        start = self.clock
        if self.stage_res is None:
            end = start + durs[0]
            yield self.env.timeout(max(0.0, end - self.env.now))
        else:
            # Pipeline stages are shared by the replica's virtual engines: a micro-batch
            # holds each stage in turn, so stages overlap across virtual engines and the
            # slowest stage bounds throughput; idle stages are the bubble.
            for res, d in zip(self.stage_res, durs, strict=True):
                with res.request() as req:
                    yield req
                    yield self.env.timeout(d)
            end = self.env.now
        self.clock = end
        it = len(self.iter_end)
        self.iter_end.append(end)
        ntok = 0
        done: list[SeqState] = []
        prefix = self.kv.prefix_caching
        per_tok = joules / max(1, dec_n + sum(pre_q))
        for seq, n in plan.items:
            ntok += n
            seq.energy_j += per_tok * n
            before = seq.computed
            seq.computed += n
            if seq.computed == seq.prompt + seq.generated:
                a = 1
                if k and n == 1 and seq.generated:
                    a = draw_accepted(self.rng, k, self.spec_alpha)
                a = min(a, seq.output - seq.generated)
                if prefix and not (n == 1 and seq.generated):
                    self._register_blocks(seq, final=False)
                self._emit(seq, it, a, end)
                if seq.generated >= seq.output or (self.stop_after_first and seq.generated >= 1):
                    done.append(seq)
            if k and seq.generated:
                seq.computed = seq.prompt + seq.generated - 1
            self.outstanding -= seq.computed - before
        self._log_segment(start, end, 1, len(plan.items), ntok, joules, gpu_s)
        for seq in done:
            self._finish(seq)

    def _price(self, timer: StepTimer, dec_n: int, dec_ctx: int, pre_q: list[int],
               pre_kv: list[int], sampled: int) -> tuple[float, float]:
        """(seconds, joules on one GPU) of this iteration on ``timer`` (speculative decodes
        verify k+1 tokens)."""
        k = self.spec_k
        if k and dec_n:
            return timer.step_cost(dec_n, dec_ctx + dec_n * k, pre_q, pre_kv, sampled, dec_q=k + 1)
        if not pre_q:
            t, e = timer.decode_costs(dec_n, np.array([dec_ctx], dtype=float))
            return float(t[0]), float(e[0])
        return timer.step_cost(dec_n, dec_ctx, pre_q, pre_kv, sampled)

    def _emit(self, seq: SeqState, it: int, a: int, t: float) -> None:
        if seq.generated == 0:
            seq.first_token_s = t
        seq.generated += a
        toks = seq.tokens
        if seq.last_iter == it - 1 and toks and toks[-3] == self.uid:
            toks[-1] = it
        else:
            toks.extend((self.uid, it, it))
        seq.last_iter = it

    def _finish(self, seq: SeqState) -> None:
        self.running.remove(seq)
        if self.lora is not None and seq.adapter >= 0:
            self.lora.release(seq)
        kv = self.kv
        if kv.prefix_caching and not self.stop_after_first:
            self._register_blocks(seq, final=True)
        kv.unref(seq.held)
        kv.release(seq.own_blocks)
        seq.held = []
        seq.own_blocks = 0
        self.outstanding -= seq.remaining_tokens()
        seq.status = "prefilled" if self.stop_after_first else "finished"
        if not self.stop_after_first:
            seq.finish_s = self.clock
        if self.on_done is not None:
            self.on_done(seq, self)

    def _register_blocks(self, seq: SeqState, final: bool) -> None:
        """Hash this sequence's full own blocks into the prefix cache (prompt blocks are
        shared with later requests; with a session id the output blocks too)."""
        bs = self.kv.block_size
        n_tokens = seq.prompt + seq.generated if seq.req.session_id is not None else seq.prompt
        n_tokens = min(n_tokens, seq.computed)
        hashes = seq.req.block_hashes(bs, n_tokens)
        new = hashes[len(seq.held):]
        new = new[: seq.own_blocks]
        self.kv.cache_tail(new) if final else self.kv.register(new)
        seq.own_blocks -= len(new)
        if not final:
            seq.held.extend(new)

    def _log_segment(self, start: float, end: float, iters: int, batch: int, tokens: int,
                     joules: float, gpu_s: float) -> None:
        s = self.seg
        s["energy_j"].append(joules)
        s["gpu_s"].append(gpu_s)
        self.busy_j += joules
        self.busy_gpu_s += gpu_s
        s["start_s"].append(start)
        s["end_s"].append(end)
        s["iters"].append(iters)
        s["batch"].append(batch)
        s["tokens"].append(tokens)
        s["kv_used"].append(self.kv.used())
        self.busy_s += end - start

    # -- fast path: a run of pure-decode iterations --------------------------------------------
    def _decode_run(self) -> Generator[simpy.Event, Any, None]:
        seqs = list(self.running)
        b = len(seqs)
        kv = self.kv
        c0 = [s.computed for s in seqs]
        n = min(min(s.output - s.generated for s in seqs), RUN_CHUNK)
        avail = kv.available()
        bs = kv.block_size
        if n > 1 and b * (n // bs + 1) > avail:
            held = np.array([s.held_blocks() for s in seqs], dtype=np.int64)
            c = np.array(c0, dtype=np.int64)

            def extra(m: int) -> int:
                return int(np.maximum(0, -(-(c + m) // bs) - held).sum())

            if extra(n) > avail:
                lo, hi = 1, n
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if extra(mid) <= avail:
                        lo = mid
                    else:
                        hi = mid
                n = lo
        ctx0 = float(sum(c0) + b)
        ctx = ctx0 + b * np.arange(n, dtype=float)
        d, joules = self.timer.decode_costs(b, ctx)  # fresh arrays
        if self.lora is not None:
            k_s = self.lora.kernel_s(*batch_shape([(s, 1) for s in seqs]))
            if k_s:
                joules += k_s * joules / d
                d += k_s
        self._run_energy = joules
        d[0] += self.clock
        ends_l = np.cumsum(d).tolist()
        if ends_l[-1] >= self.cap_s:
            n = min(n, bisect_left(ends_l, self.cap_s) + 1)
            del ends_l[n:]
        self._run = seqs
        self._run_c0 = c0
        self._run_ends = ends_l
        self._run_base = len(self.iter_end)
        self._run_applied = 0
        self._run_alloc = 1
        start = self.clock
        env = self.env
        cut = False
        while True:
            target = self._run_ends[n - 1]
            if not cut and self.scheduler.arrivals_matter(self):
                self.wake = env.event()
                yield env.timeout(max(0.0, target - env.now)) | self.wake
                woke = self.wake.triggered and env.now < target
                self.wake = None
                if woke:
                    # Cut after the iteration in progress; the arrival joins the next plan.
                    cut = True
                    n = min(n, bisect_left(self._run_ends, env.now) + 1)
                    del self._run_ends[n:]
                    continue
            else:
                yield env.timeout(max(0.0, target - env.now))
            break
        self._apply_run(n, n)
        self.iter_end.extend(self._run_ends)
        end = self._run_ends[n - 1]
        self.clock = end
        self._run = None
        run_j = self.gpus * float(self._run_energy[:n].sum())
        share = run_j / b
        for s in seqs:
            s.energy_j += share
        self._log_segment(start, end, n, b, b * n, run_j, self.gpus * (end - start))
        done = [s for s in seqs if s.generated >= s.output]
        for s in done:
            self._finish(s)

    def _apply_run(self, completed: int, started: int) -> None:
        """Apply iterations [applied, completed) of the run; allocate blocks for the first
        ``started`` iterations."""
        seqs = self._run
        assert seqs is not None
        kv = self.kv
        if started > self._run_alloc:
            for s, c in zip(seqs, self._run_c0, strict=True):
                need = kv.blocks_for(c + started) - s.held_blocks()
                if need > 0:
                    kv.allocate(need)
                    s.own_blocks += need
            self._run_alloc = started
        d = completed - self._run_applied
        if d <= 0:
            return
        base = self._run_base
        first = base + self._run_applied
        last = base + completed - 1
        uid = self.uid
        for s in seqs:
            s.computed += d
            s.generated += d
            toks = s.tokens
            if s.last_iter == first - 1 and toks and toks[-3] == uid:
                toks[-1] = last
            else:
                toks.extend((uid, first, last))
            s.last_iter = last
        self.outstanding -= d * len(seqs)
        self._run_applied = completed
