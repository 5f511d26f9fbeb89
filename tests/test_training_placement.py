"""Placement of parallel groups on the topology and the link each collective uses."""

from __future__ import annotations

import pytest
from _training_stub import COLL_BPS, StubCost
from fleetsim.hardware.catalog import get_gpu
from fleetsim.sim.training.placement import CollectivePricer, groups

from fleetsim.training import build_train_job
from fleetsim.training_validate import megatron_gpt

GPT = megatron_gpt("g", 16, 1024, 16, 4096, 32000, 1024)
GPU = get_gpu("H100-SXM")


def _job(cluster: str, **kw: object):
    return build_train_job(GPT, cluster, global_batch=256, seq_len=1024, **kw)  # type: ignore[arg-type]


def test_default_order_tp_inside_node() -> None:
    g = groups(_job("64xH100-SXM", tp=8, pp=4, dp=2))
    assert (g["tp"].tier, g["tp"].stride) == ("scale_up", 1)
    assert (g["pp"].tier, g["pp"].stride, g["pp"].per_domain) == ("scale_out", 8, 1)
    assert (g["dp"].tier, g["dp"].stride) == ("scale_out", 32)


def test_small_groups_stay_in_the_node() -> None:
    g = groups(_job("8xH100-SXM", tp=2, pp=2, dp=2))
    assert all(g[d].tier == "scale_up" for d in ("tp", "pp", "dp"))


def test_overridden_order_puts_dp_inside() -> None:
    g = groups(_job("64xH100-SXM", tp=2, pp=8, dp=4, placement=("tp", "dp", "cp", "pp")))
    assert (g["dp"].tier, g["dp"].stride) == ("scale_up", 2)
    assert g["pp"].tier == "scale_out"


def test_hierarchical_allreduce_closed_form() -> None:
    """dp=8 at stride 2 on 8-GPU nodes: 4 members per node. Priced as the all-reduce inside
    the node on B bytes plus the all-reduce across the 2 nodes on B/4 (4 NICs in parallel)."""
    job = _job("16xH100-SXM", tp=2, dp=8)
    pricer = CollectivePricer(job, GPU, StubCost())
    g = pricer.groups["dp"]
    assert (g.tier, g.per_domain) == ("scale_out", 4)
    B = 1e9
    assert pricer.time("all_reduce", B, "dp") == pytest.approx(B / COLL_BPS + B / 4 / COLL_BPS)


def test_oversubscription_scales_scale_out() -> None:
    job = _job("16xH100-SXM", tp=8, dp=2)
    cl = job.cluster.model_copy(update={"oversubscription": 2.0})
    job2 = job.model_copy(update={"cluster": cl})
    t1 = CollectivePricer(job, GPU, StubCost()).time("all_reduce", 1e9, "dp")
    t2 = CollectivePricer(job2, GPU, StubCost()).time("all_reduce", 1e9, "dp")
    assert t2 == pytest.approx(2 * t1)
    assert CollectivePricer(job2, GPU, StubCost()).time("all_reduce", 1e9, "tp") == pytest.approx(1.0)
