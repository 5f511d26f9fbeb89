"""KV-cache transfer in disaggregated (xPyD) plans: the transfer time by hand, the link's
bandwidth as a constraint of the program (brute force), a slower link never a better plan,
and the re-simulated plan's TTFT including the transfer."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from fleetsim.hardware.cluster import load_cluster
from fleetsim.planner.milp import DisaggProblem, KvRoute, plan_disaggregated
from fleetsim.planner.serving.capacity import Bucket, engine_config, stream
from fleetsim.planner.serving.disagg import kv_link
from fleetsim.planner.serving.records import Knobs, SearchSpace
from fleetsim.sim.serving.cluster import ServingSimulation
from fleetsim.sim.serving.config import Deployment, PoolDeployment
from fleetsim.sim.serving.results import collect
from fleetsim.workloads.models import load_model

from fleetsim.planning import plan_serving

SMALL = SearchSpace(max_num_seqs=(64,), sim_top=1, sim_requests=40, bisection_steps=2)
RUN = dict(isl=2048, osl=128, rate_rps=60, ttft_s=1.0, tpot_s=0.03, disaggregate="only", objective="min_gpus",
           simulate=False, search_space=SMALL)


def _with_nic(name: str):
    base = load_cluster("16xH100")
    p0 = base.pools[0]
    return base.model_copy(update={"pools": (p0.model_copy(update={"node": p0.node.model_copy(
        update={"nic_link": name})}),)})


def _knobs(tp: int, role: str, pool: int = 0) -> Knobs:
    return Knobs(pool=pool, gpu="H100-SXM", tp=tp, pp=1, max_num_seqs=64, max_num_batched_tokens=8192, role=role)


def test_transfer_time_and_link_rate_by_hand() -> None:
    # llama-3.1-8b: 32 layers x (2 x 8 KV heads x 128) x 2 bytes (bf16) = 131,072 B per token
    m = load_model("llama-3.1-8b")
    assert m.num_layers * m.kv_cache_width * 2 == 131_072
    nbytes = 1000 * 131_072
    # two nodes of one pool: InfiniBand NDR, 50 GB/s per direction x 0.9, 2 us; a TP2 sender has 2 NICs,
    # and a node's 8 GPUs hold 4 TP2 prefill replicas sharing the node's link (as the simulator keys it)
    kl = kv_link(load_cluster("16xH100"), m, "bf16", 1000, _knobs(2, "prefill"), _knobs(1, "decode"))
    assert (kl.route, kl.link) == ("nic", "InfiniBand-NDR")
    assert kl.transfer_s == pytest.approx(nbytes / (2 * 50e9 * 0.9) + 2e-6, rel=1e-12)
    assert kl.prompt_tokens_per_s == pytest.approx(2 * 50e9 * 0.9 / 131_072 / 4, rel=1e-12)
    # one node: NVLink4, 450 GB/s x 0.82, 2 us, a link per sending replica
    one = kv_link(load_cluster("8xH100"), m, "fp8", 1000, _knobs(1, "prefill"), _knobs(1, "decode"))
    assert (one.route, one.link) == ("scale_up", "NVLink4")
    assert one.transfer_s == pytest.approx(nbytes / 2 / (450e9 * 0.82) + 2e-6, rel=1e-12)
    assert one.prompt_tokens_per_s == pytest.approx(450e9 * 0.82 / 65_536, rel=1e-12)
    # two pools: the cluster's scale-out fabric
    two = kv_link(load_cluster("8xH100+8xA100-SXM-80GB"), m, "bf16", 1000, _knobs(1, "prefill"),
                  _knobs(1, "decode", pool=1))
    assert two.route == "fabric"


def _instance(seed: int) -> DisaggProblem:
    rng = np.random.default_rng(seed)

    def opts(kind: str, rate: str, base: float) -> list[dict[str, object]]:
        return [{"id": f"{kind}{i}", "gpu": g, "gpus_per_replica": int(rng.choice([1, 2])),
                 rate: base * float(rng.integers(2, 8)), "price_per_hour": float(rng.integers(1, 9)),
                 "power_w": float(rng.integers(3, 10) * 100)} for i, g in enumerate(("A", "B"))]

    pre, dec = opts("p", "prompt_tokens_per_s", 5000.0), opts("d", "output_tokens_per_s", 1000.0)
    routes = [KvRoute(prefill=str(p["id"]), decode=str(d["id"]), prompt_tokens_per_s=2500.0 * float(rng.integers(1, 8)))
              for p in pre for d in dec if rng.random() < 0.85]
    return DisaggProblem(prefill=pre, decode=dec, prompt_tokens_per_s=5000.0 * float(rng.integers(4, 14)),
                         output_tokens_per_s=1000.0 * float(rng.integers(4, 14)), routes=routes)


def _brute(p: DisaggProblem) -> float | None:
    """Cheapest (prefill option, decode option, counts): compute and the pair's link cover the
    prompt tokens/s, compute the output tokens/s; pairs without a route are not allowed."""
    best = None
    for r in p.routes or ():
        po = next(o for o in p.prefill if o.id == r.prefill)
        do = next(o for o in p.decode if o.id == r.decode)
        for xp, xd in itertools.product(range(1, 40), range(1, 20)):
            if min(po.prompt_tokens_per_s, r.prompt_tokens_per_s) * xp < p.prompt_tokens_per_s - 1e-9:
                continue
            if do.output_tokens_per_s * xd < p.output_tokens_per_s - 1e-9:
                continue
            v = po.price_per_hour * xp + do.price_per_hour * xd
            best = v if best is None else min(best, v)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_link_bandwidth_caps_the_prefill_rate_brute_force(seed: int) -> None:
    p = _instance(seed)
    want, plan = _brute(p), plan_disaggregated(p)
    if want is None:
        assert plan.status == "infeasible"
        return
    assert plan.status == "optimal" and plan.objective == pytest.approx(want, rel=1e-9)
    (pi, xp), (di,) = next(iter(plan.prefill.items())), plan.decode
    route = next(r for r in p.routes or () if (r.prefill, r.decode) == (pi, di))
    assert route.prompt_tokens_per_s * xp >= p.prompt_tokens_per_s - 1e-6
    assert plan.kv_link_load == pytest.approx(p.prompt_tokens_per_s / (route.prompt_tokens_per_s * xp))
    # a slower link (every route at half its rate) never gives a better plan
    slow = plan_disaggregated(p.model_copy(update={"routes": tuple(
        r.model_copy(update={"prompt_tokens_per_s": r.prompt_tokens_per_s / 2}) for r in p.routes or ())}))
    assert slow.status == "infeasible" or slow.objective >= plan.objective - 1e-9


def test_kv_transfer_short_is_the_binding_family() -> None:
    p = DisaggProblem(prefill=[{"id": "p", "gpu": "A", "gpus_per_replica": 1, "prompt_tokens_per_s": 1e5,
                                "price_per_hour": 1.0, "power_w": 100.0}],
                      decode=[{"id": "d", "gpu": "A", "gpus_per_replica": 1, "output_tokens_per_s": 1e4,
                               "price_per_hour": 1.0, "power_w": 100.0}],
                      prompt_tokens_per_s=5e4, output_tokens_per_s=5e3, availability={"A": 4},
                      routes=[KvRoute(prefill="p", decode="d", prompt_tokens_per_s=1e4)])
    plan = plan_disaggregated(p)  # 5 prefill replicas for the link + 1 decode > 4 GPUs
    assert plan.status == "infeasible"
    assert {m.family for m in plan.misses} >= {"kv_transfer"}


def test_slower_link_never_gives_a_better_plan() -> None:
    got = {}
    for nic in ("InfiniBand-NDR", "Ethernet-100G"):
        res = plan_serving("llama-3.2-1b", _with_nic(nic), **RUN).search
        assert res.status == "optimal"
        best = res.plans[0]
        assert best.kv_link == f"nic {nic}"
        got[nic] = best
    fast, slow = got["InfiniBand-NDR"], got["Ethernet-100G"]
    assert slow.objective_value >= fast.objective_value
    assert slow.kv_transfer_s > fast.kv_transfer_s
    # the 100 Gb/s NIC carries fewer prompt tokens than one TP1 prefill replica computes: the plan
    # pays more GPUs for link bandwidth
    assert slow.objective_value > fast.objective_value


def test_resimulated_xpyd_ttft_includes_the_transfer() -> None:
    res = plan_serving("llama-3.2-1b", "16xH100", **RUN).search
    best = res.plans[0]
    assert best.name.startswith("disaggregated") and best.checked is not None
    model, cl = load_model("llama-3.2-1b"), load_cluster("16xH100")
    pools = []
    for pc in best.pools:
        k = Knobs(pool=pc.pool, gpu=pc.gpu, tp=pc.tp, pp=pc.pp, max_num_seqs=pc.max_num_seqs,
                  max_num_batched_tokens=pc.max_num_batched_tokens, role=pc.role)
        pools.append(PoolDeployment(pool=pc.pool, tp=pc.tp, pp=pc.pp, replicas=pc.replicas, role=pc.role,
                                    engine=engine_config(k, "vllm", "bf16", "bf16")))
    from fleetsim.workloads.defaults import get_workload

    wl = get_workload("poisson:rate=60,isl=2048,osl=128")
    n = min(3000, max(SMALL.sim_requests, 40 * sum(pc.replicas for pc in best.pools)))
    reqs = stream(wl, model, Bucket("all", 0.0, math.inf, 1.0), 60.0, n, best.checked.seed)
    sim = ServingSimulation(model, cl, Deployment(pools=tuple(pools)), reqs, seed=best.checked.seed)
    sim.run()
    raw = collect(sim, res.slo.ttft_s, res.slo.tpot_s)
    req = raw.requests.set_index("req_id")
    assert float(np.percentile(req["ttft_s"], 90)) == pytest.approx(best.checked.ttft_p90_s, rel=1e-12)
    tr = raw.transfers.set_index("req_id")
    assert len(tr) == len(req)
    # every TTFT ends when the KV reached the decode replica, one transfer after the prefill
    first_token = req["arrival_s"] + req["ttft_s"]
    assert np.allclose(first_token.to_numpy(), tr.loc[req.index, "end_s"].to_numpy(), rtol=0, atol=1e-9)
    # both replicas share node 0: NVLink4 at 450 GB/s x 0.82 per TP rank, 2 us; 32,768 B per token
    per_token = model.num_layers * model.kv_cache_width * 2
    assert per_token == 32_768
    took = (tr["end_s"] - tr["start_s"]).loc[req.index].to_numpy()
    hand = req["prompt_tokens"].to_numpy() * per_token / (450e9 * 0.82 * best.pools[0].tp) + 2e-6
    assert (took >= hand * (1 - 1e-9)).all() and np.isclose(took, hand, rtol=1e-9).any()
    prefill_done = tr["start_s"].loc[req.index] - req["arrival_s"]
    assert (req["ttft_s"] >= prefill_done + hand - 1e-9).all()
