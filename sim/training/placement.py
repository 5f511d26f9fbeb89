"""Placement of the parallel groups on the cluster topology, and collective pricing.

Ranks are numbered with the placement order's first dimension innermost (default
``tp, cp, pp, dp``): a group of dimension ``X`` has ``size`` members at a rank ``stride`` equal
to the product of the dimensions placed before it. A group lies inside one scale-up domain
(NVLink/NVSwitch) when ``stride * size <= domain``; otherwise it crosses the scale-out fabric
(the node's NICs). A crossing group with ``k = domain / stride > 1`` members per domain is
priced hierarchically (NCCL-style two-level): the collective inside the domain on the full
tensor, then across domains on ``1/k`` of it, because the ``k`` members drive ``k`` NICs in
parallel. Scale-out time is multiplied by the cluster's ``oversubscription`` and by the NIC
sharing factor ``gpus_per_node / nics_per_node`` when GPUs outnumber NICs (bandwidth-bound
approximation: the factor applies to the whole transfer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleetsim.calibration.ops import CollectiveKind, CollectiveOp
from fleetsim.hardware.specs import GPUSpec, NodeSpec

from .job import TrainJob


@dataclass(frozen=True, slots=True)
class Group:
    """One parallel dimension's communicator as seen from a representative rank."""

    dim: str
    size: int
    stride: int
    tier: str  # "scale_up" or "scale_out"
    per_domain: int  # members sharing one scale-up domain (1 when fully spread)


def scale_up_domain(job: TrainJob) -> int:
    """GPUs that share the scale-up fabric, limited to the GPUs used per node."""
    pool = job.cluster.pools[job.pool]
    node = pool.node
    used = pool.gpus_per_node or node.gpus_per_node
    if node.scale_up_domain <= node.gpus_per_node:
        return min(node.scale_up_domain, used)
    return node.scale_up_domain // node.gpus_per_node * used


def groups(job: TrainJob) -> dict[str, Group]:
    """Every dimension's group (plus ``ep`` inside ``dp``) with its tier."""
    par = job.parallel
    sizes = {"tp": par.tp, "cp": par.cp, "pp": par.pp, "dp": par.dp}
    dom = scale_up_domain(job)
    out: dict[str, Group] = {}
    stride = 1
    for dim in par.order:
        out[dim] = _group(dim, sizes[dim], stride, dom)
        stride *= sizes[dim]
    out["ep"] = _group("ep", par.ep, out["dp"].stride, dom)
    # the data-parallel gradient group of Megatron's distributed optimizer is dp x cp
    out["dpcp"] = _merged(out["dp"], out["cp"], dom)
    return out


def _group(dim: str, size: int, stride: int, dom: int) -> Group:
    if size == 1 or stride * size <= dom:
        return Group(dim, size, stride, "scale_up", size)
    per = max(1, dom // stride) if stride < dom else 1
    return Group(dim, size, stride, "scale_out", min(per, size))


def _merged(a: Group, b: Group, dom: int) -> Group:
    if b.size == 1:
        return a
    if a.size == 1:
        return b
    inner, outer = (a, b) if a.stride < b.stride else (b, a)
    size = a.size * b.size
    tier = "scale_up" if inner.tier == outer.tier == "scale_up" else "scale_out"
    per = inner.per_domain * (outer.per_domain if outer.tier == "scale_up" else 1)
    if tier == "scale_out" and inner.tier == "scale_up":
        per = inner.size * max(1, min(outer.size, dom // max(1, outer.stride)))
    return Group(f"{inner.dim}+{outer.dim}", size, inner.stride, tier, min(per, size))


class CollectivePricer:
    """Seconds of collectives over a named group, priced by the cost model, cached."""

    def __init__(self, job: TrainJob, gpu: GPUSpec, cost: Any) -> None:
        self.job = job
        self.gpu = gpu
        self.cost = cost
        self.groups = groups(job)
        pool = job.cluster.pools[job.pool]
        node: NodeSpec = pool.node
        self.node = node
        used = pool.gpus_per_node or node.gpus_per_node
        nic_share = used / node.nics_per_node if 0 < node.nics_per_node < used else 1.0
        self.scale_out_factor = job.cluster.oversubscription * nic_share
        self.sources: dict[str, int] = {}
        self._cache: dict[tuple[str, str, float], float] = {}

    def _op(self, kind: CollectiveKind, nbytes: float, size: int, tier: str) -> float:
        link = self.node.scale_up_link if tier == "scale_up" else self.node.nic_link
        op = CollectiveOp(f"{kind}", kind, float(nbytes), size, tier, link)  # type: ignore[arg-type]
        c = self.cost.op_time(op, self.gpu)
        self.sources[c.source] = self.sources.get(c.source, 0) + 1
        t = float(c.time_s)
        return t * self.scale_out_factor if tier == "scale_out" else t

    def time(self, kind: CollectiveKind, nbytes: float, group: str) -> float:
        """Seconds for one ``kind`` collective of ``nbytes`` (per ``CollectiveOp`` convention)
        over the group ``group`` ("tp", "cp", "pp", "dp", "ep", "dpcp")."""
        g = self.groups[group]
        if g.size == 1 or nbytes <= 0:
            return 0.0
        key = (kind, group, float(nbytes))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if kind == "send_recv":
            crosses = g.tier == "scale_out"  # the slowest neighbour pair bounds the pipeline
            t = self._op(kind, nbytes, 2, "scale_out" if crosses else "scale_up")
        elif g.tier == "scale_up":
            t = self._op(kind, nbytes, g.size, "scale_up")
        elif g.per_domain > 1 and kind != "all_to_all":
            k = g.per_domain
            t = self._op(kind, nbytes, k, "scale_up") + self._op(kind, nbytes / k, g.size // k, "scale_out")
        else:
            t = self._op(kind, nbytes, g.size, "scale_out")
        self._cache[key] = t
        return t

    def p2p_time(self, nbytes: float) -> float:
        """Pipeline send/recv of one activation between neighbouring stages."""
        return self.time("send_recv", nbytes, "pp")
