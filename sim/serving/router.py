"""Routers: which replica an arriving request goes to. Small strategies with one method,
``route(seq, replicas, now) -> index``, looked up in ``ROUTERS``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fleetsim.sim.serving.cluster import Replica
    from fleetsim.sim.serving.engine import SeqState


class Router(Protocol):
    def route(self, seq: SeqState, replicas: Sequence[Replica], now: float) -> int: ...


class RoundRobin:
    """Replicas in turn, ignoring their load."""

    def __init__(self) -> None:
        self.next = 0

    def route(self, seq: SeqState, replicas: Sequence[Replica], now: float) -> int:
        i = self.next % len(replicas)
        self.next = i + 1
        return i


class LeastOutstandingTokens:
    """The replica with the fewest tokens still to process (unprefilled prompt plus
    ungenerated output of every request it holds), normalised by its relative speed
    (``Replica.speed``) so a faster GPU type takes proportionally more; ties -> lowest index."""

    def route(self, seq: SeqState, replicas: Sequence[Replica], now: float) -> int:
        loads = [r.load_tokens(now) * r.inv_speed for r in replicas]
        return loads.index(min(loads))


class PrefixAware:
    """KV-aware routing: the replica holding the most leading blocks of the prompt in its
    prefix cache; ties (e.g. no hit anywhere) go to the least loaded one."""

    def __init__(self) -> None:
        self.fallback = LeastOutstandingTokens()

    def route(self, seq: SeqState, replicas: Sequence[Replica], now: float) -> int:
        best, best_key = 0, (-1, 0.0)
        hashes: dict[int, tuple[int, ...]] = {}
        for i, r in enumerate(replicas):
            bs = r.block_size
            if bs not in hashes:
                hashes[bs] = seq.req.prompt_hashes(bs) if r.prefix_caching else ()
            hit = r.cached_blocks(hashes[bs], now)
            key = (hit, -r.load_tokens(now) / r.speed)
            if key > best_key:
                best, best_key = i, key
        return best


class AdapterAffinity:
    """LoRA adapter affinity: among the replicas holding the request's adapter, the least
    loaded, unless its load (speed-normalised outstanding tokens) exceeds
    ``slack x`` the least loaded replica's plus ``slack_tokens``: then, as for a request
    without an adapter, the least loaded replica (which will load the adapter). Keeps a
    popular adapter on a few replicas without letting one of them queue unboundedly."""

    def __init__(self, slack: float = 2.0, slack_tokens: int = 4096) -> None:
        self.slack = slack
        self.slack_tokens = slack_tokens

    def route(self, seq: SeqState, replicas: Sequence[Replica], now: float) -> int:
        loads = [r.load_tokens(now) * r.inv_speed for r in replicas]
        low = min(loads)
        best = loads.index(low)
        a = seq.adapter
        if a < 0:
            return best
        have = [i for i, r in enumerate(replicas) if r.holds_adapter(a)]
        if not have:
            return best
        i = min(have, key=lambda k: (loads[k], k))
        return i if loads[i] <= self.slack * low + self.slack_tokens else best


ROUTERS: dict[str, type[RoundRobin] | type[LeastOutstandingTokens] | type[PrefixAware] | type[AdapterAffinity]] = {
    "round_robin": RoundRobin, "least_outstanding_tokens": LeastOutstandingTokens,
    "prefix_aware": PrefixAware, "adapter_affinity": AdapterAffinity}


def make_router(name: str) -> Router:
    """A fresh router of the named kind."""
    router: Router = ROUTERS[name]()
    return router
