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


ROUTERS: dict[str, type[RoundRobin] | type[LeastOutstandingTokens] | type[PrefixAware]] = {
    "round_robin": RoundRobin, "least_outstanding_tokens": LeastOutstandingTokens,
    "prefix_aware": PrefixAware}


def make_router(name: str) -> Router:
    """A fresh router of the named kind."""
    router: Router = ROUTERS[name]()
    return router
