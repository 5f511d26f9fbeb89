"""Prefill/decode disaggregation: KV-cache transfers between replicas over shared links.

After a prefill replica computes a prompt (and its first token), the request's KV cache,
``prompt_tokens * kv_bytes_per_token`` for the whole model, moves to a decode replica.
Each of the prefill replica's ``tp * pp`` GPUs sends its shard over its own link, so a
transfer takes ``bytes / (ranks * bw * efficiency) + latency``. Same node: the scale-up
link (NVLink); different nodes of one pool: the pool's NIC link; different pools: the
cluster's scale-out fabric. A link is a SimPy ``Resource`` of capacity one, keyed by the
sending replica for NVLink and by the sending node for the NIC/fabric, so concurrent
transfers queue and share its bandwidth (FIFO: the last of ``m`` equal transfers finishes
after ``m`` transfer times, as with fair sharing). The client sees a disaggregated request's
first token when its KV cache has reached the decode replica (the decode engine streams the
response), so its TTFT includes the transfer.

The module-level functions are the one owner of a transfer's bytes, route and time; the
simulator and the planner (``planner.serving.disagg``) both call them.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Literal

import simpy
from fleetsim.calibration.ops import dtype_bytes
from fleetsim.hardware.specs import ClusterSpec, LinkSpec
from fleetsim.workloads.models import ModelSpec

Route = Literal["scale_up", "nic", "fabric"]


def kv_transfer_bytes(model: ModelSpec, prompt_tokens: float, kv_dtype: str) -> float:
    """Whole-model KV bytes of a prompt (all layers, all KV heads) in ``kv_dtype``."""
    return float(prompt_tokens * model.num_layers * model.kv_cache_width * dtype_bytes(kv_dtype))


def transfer_route(cluster: ClusterSpec, src_pool: int, dst_pool: int, same_node: bool) -> tuple[Route, str]:
    """Which link a KV transfer takes and its catalog name: the node's scale-up link within a
    node, its NIC link between nodes of one pool, the cluster's scale-out fabric between pools."""
    node = cluster.pools[src_pool].node
    if src_pool == dst_pool and same_node:
        return "scale_up", node.scale_up_link
    if src_pool == dst_pool:
        return "nic", node.nic_link
    return "fabric", cluster.scale_out_link


def link_rate_bps(link: LinkSpec, ranks: int) -> float:
    """Bytes/s a sender of ``ranks`` GPUs moves over ``link`` (each GPU its own shard)."""
    return link.bandwidth_bps * link.efficiency * max(1, ranks)


def transfer_time_s(link: LinkSpec, ranks: int, nbytes: float) -> float:
    """Seconds to move ``nbytes`` from a sender of ``ranks`` GPUs over a free ``link``."""
    return nbytes / link_rate_bps(link, ranks) + link.latency_s


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
        return transfer_time_s(self.link, self.ranks, nbytes)

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
