"""Iteration schedulers: which sequences run in the next engine iteration, with how many
tokens each. Strategies are small classes with one method, ``schedule(state)``, looked up
in ``SCHEDULERS`` by the config's ``kind``.

Token accounting follows vLLM v1: a sequence has ``prompt + generated`` tokens, of which
``computed`` have KV in the cache; an iteration computes ``n`` more. When ``computed``
reaches ``prompt + generated`` the iteration samples the next token. A decode is the case
``n == 1`` on a sequence that already produced a token; a prefill (or a recompute after
preemption) is everything else.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from fleetsim.sim.serving.config import StaticScheduler, VllmScheduler

if TYPE_CHECKING:
    from fleetsim.sim.serving.engine import Engine, SeqState


class Plan:
    """One iteration: ``items`` are (sequence, new tokens); ``preempted`` were evicted to
    make room; ``swapped_in_blocks``/``swapped_out_blocks`` are KV blocks moved over the
    host link before the forward pass."""

    __slots__ = ("items", "preempted", "swapped_in_blocks", "swapped_out_blocks", "admitted")

    def __init__(self) -> None:
        self.items: list[tuple[SeqState, int]] = []
        self.preempted: list[SeqState] = []
        self.swapped_in_blocks = 0
        self.swapped_out_blocks = 0
        self.admitted = 0


class VllmSchedulerStrategy:
    """Running requests first (oldest first), then waiting FCFS (see ``VllmScheduler``).

    When a running request needs a KV block and none is available, the most recently
    admitted running request is preempted (recompute: its blocks are freed and it rejoins
    the head of the queue; swap: its blocks move to host memory) - vLLM's policy.
    """

    def __init__(self, cfg: VllmScheduler) -> None:
        self.cfg = cfg

    def arrivals_matter(self, eng: Engine) -> bool:
        """Whether a new arrival could change the next plan of a pure-decode engine: not
        when the batch is full, nor behind a waiting request that could not be admitted
        (with LoRA a waiting request may only be skipped for its adapter, so any arrival
        matters while the batch has room)."""
        if eng.lora is not None:
            return len(eng.running) < self.cfg.max_num_seqs
        return not eng.waiting and len(eng.running) < self.cfg.max_num_seqs

    def schedule(self, eng: Engine) -> Plan:
        cfg = self.cfg
        plan = Plan()
        budget = cfg.max_num_batched_tokens
        running = eng.running
        kv = eng.kv
        bs = kv.block_size
        la = eng.lookahead
        items = plan.items
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            n = seq.prompt + seq.generated - seq.computed
            if n > budget:
                n = budget
            need = -(-(seq.computed + n + la) // bs) - seq.own_blocks - len(seq.held)
            if need > 0:
                evicted_self = False
                while need > kv.free + len(kv.evictable):
                    victim = running[-1]
                    eng.preempt(victim, plan)
                    if victim is seq:
                        evicted_self = True
                        break
                if evicted_self:
                    break
                kv.allocate(need)
                seq.own_blocks += need
            items.append((seq, n))
            budget -= n + (la if n == 1 and seq.generated else 0)
            i += 1
        if plan.preempted:
            return plan
        self._admit(eng, plan, budget)
        return plan

    def _admit(self, eng: Engine, plan: Plan, budget: int) -> None:
        """Admit waiting requests in order while sequences, tokens and KV blocks allow (a
        swapped-out sequence swaps back in; a new one takes its cached prefix). With LoRA
        adapters (``sim.serving.lora``) a request whose adapter would exceed ``max_loras``
        distinct adapters in the batch is skipped (it keeps its place; later requests may go
        first, as in vLLM), and under unified adapter memory an adapter that must load needs
        KV blocks of its own."""
        cfg = self.cfg
        lora = eng.lora
        running = eng.running
        kv = eng.kv
        waiting = eng.waiting
        i = 0
        while i < len(waiting) and len(running) < cfg.max_num_seqs and budget > 0:
            seq = waiting[i]
            extra = lora.blocks_needed(seq) if lora is not None and seq.adapter >= 0 else 0
            if extra < 0:
                i += 1
                continue
            idle = lora.idle_blocks() if lora is not None else 0
            if seq.swapped_blocks:
                n = min(seq.prompt + seq.generated - seq.computed, budget)
                more = max(0, kv.blocks_for(seq.computed + n + eng.lookahead) - seq.swapped_blocks)
                if seq.swapped_blocks + more + extra > kv.available() + idle:
                    break
                if lora is not None and seq.adapter >= 0:
                    lora.admit(seq, seq.swapped_blocks + more)
                eng.swap_in(seq, plan)
                kv.allocate(more)
                seq.own_blocks += more
            else:
                hit, pinned = eng.match_prefix(seq) if seq.computed == 0 else (0, 0)
                start = seq.computed + hit * kv.block_size
                n = seq.prompt + seq.generated - start
                if n > budget:
                    if not cfg.chunked_prefill:
                        break
                    n = budget
                need = max(0, kv.blocks_for(start + n + eng.lookahead) - seq.own_blocks - hit)
                if need + pinned + extra > kv.available() + idle:
                    eng.unmatch_prefix(seq)
                    break
                if lora is not None and seq.adapter >= 0:
                    lora.admit(seq, need + pinned)
                eng.take_prefix(seq)
                kv.allocate(need)
                seq.own_blocks += need
            del waiting[i]
            running.append(seq)
            eng.on_admit(seq)
            plan.items.append((seq, n))
            plan.admitted += 1
            budget -= n


class StaticSchedulerStrategy:
    """Request-level batching (see ``StaticScheduler``)."""

    def __init__(self, cfg: StaticScheduler) -> None:
        self.cfg = cfg

    def arrivals_matter(self, eng: Engine) -> bool:
        return not eng.running

    def schedule(self, eng: Engine) -> Plan:
        plan = Plan()
        running = eng.running
        kv = eng.kv
        if running:
            for seq in running:
                n = seq.prompt + seq.generated - seq.computed
                plan.items.append((seq, n))
            return plan
        waiting: deque[SeqState] = eng.waiting
        while waiting and len(running) < self.cfg.max_num_seqs:
            seq = waiting[0]
            need = kv.blocks_for(seq.prompt + seq.output)
            if need > kv.available():
                break
            kv.allocate(need)
            seq.own_blocks += need
            waiting.popleft()
            running.append(seq)
            eng.on_admit(seq)
            plan.items.append((seq, seq.prompt - seq.computed))
            plan.admitted += 1
        return plan


Strategy = VllmSchedulerStrategy | StaticSchedulerStrategy
SCHEDULERS: dict[str, type[VllmSchedulerStrategy] | type[StaticSchedulerStrategy]] = {
    "vllm": VllmSchedulerStrategy, "static": StaticSchedulerStrategy}


def make_scheduler(cfg: VllmScheduler | StaticScheduler) -> Strategy:
    """The strategy object for a scheduler config (looked up by its ``kind``)."""
    strategy: Strategy = SCHEDULERS[cfg.kind](cfg)  # type: ignore[arg-type]
    return strategy
