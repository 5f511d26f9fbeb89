"""Prefill/decode disaggregation: KV-cache transfers between replicas over shared links.

After a prefill replica computes a prompt (and its first token), the request's KV cache,
``prompt_tokens * kv_bytes_per_token`` for the whole model, moves to a decode replica.
Each of the prefill replica's ``tp * pp`` GPUs sends its shard over its own link, so a
transfer takes ``bytes / (ranks * bw * efficiency) + latency``. Same node: the scale-up
link (NVLink); different nodes of one pool: the pool's NIC link; different pools: the
cluster's scale-out fabric. A link is a SimPy ``Resource`` of capacity one, keyed by the
sending replica for NVLink and by the sending node for the NIC/fabric, so concurrent
transfers queue and share its bandwidth (FIFO: the last of ``m`` equal transfers finishes
after ``m`` transfer times, as with fair sharing).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy
from fleetsim.hardware.specs import LinkSpec


class TransferLink:
    """One contended link used for KV transfers."""

    def __init__(self, env: simpy.Environment, link: LinkSpec, ranks: int) -> None:
        self.env = env
        self.link = link
        self.ranks = max(1, ranks)
        self.resource = simpy.Resource(env, capacity=1)
        self.busy_s = 0.0
        self.bytes = 0.0
        self.transfers = 0

    def transfer_time_s(self, nbytes: float) -> float:
        """Seconds to move ``nbytes`` when the link is free."""
        bw = self.link.bandwidth_bps * self.link.efficiency * self.ranks
        return nbytes / bw + self.link.latency_s

    def transfer(self, nbytes: float) -> Generator[simpy.Event, Any, float]:
        """SimPy process body: wait for the link, hold it for the transfer; returns the
        time spent waiting for the link."""
        t0 = self.env.now
        with self.resource.request() as req:
            yield req
            waited = self.env.now - t0
            dur = self.transfer_time_s(nbytes)
            yield self.env.timeout(dur)
            self.busy_s += dur
            self.bytes += nbytes
            self.transfers += 1
        return waited
