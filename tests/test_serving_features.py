"""Serving features end to end: PD transfers, speculative decoding, prefix caching, PP,
determinism, throughput bound, feasibility, CLI = API."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
from fleetsim.calibration import get_cost_model
from fleetsim.calibration.ops import dtype_bytes
from fleetsim.hardware.catalog import get_gpu, get_link
from fleetsim.hardware.cluster import load_cluster
from fleetsim.hardware.errors import ConfigError, InfeasibleError
from fleetsim.sim.serving.speculative import expected_tokens_per_step
from fleetsim.sim.serving.steptime import GraphStepTimer
from fleetsim.workloads.models import load_model
from fleetsim.workloads.parallel import ParallelConfig
from fleetsim.workloads.requests import Request, RequestStream

from fleetsim.serving import (
    Deployment,
    EngineConfig,
    PoolDeployment,
    SpecDecode,
    VllmScheduler,
    default_deployment,
    simulate_serving,
)

M = "llama-3.1-8b"


def _stream(reqs: list[Request]) -> RequestStream:
    return RequestStream.from_requests(reqs)


def test_pd_transfer_time_is_bytes_over_bandwidth_plus_latency() -> None:
    eng = EngineConfig(sched_overhead_s=1e-3)
    dep = Deployment(pools=(PoolDeployment(gpu="H100", replicas=1, role="prefill", engine=eng),
                            PoolDeployment(gpu="H100", replicas=1, role="decode", engine=eng)))
    res = simulate_serving(M, "2xH100", _stream([Request(0, 0.0, 3000, 4)]), dep)
    model = load_model(M)
    nbytes = 3000 * model.num_layers * model.kv_cache_width * dtype_bytes("bf16")
    link = get_link("NVLink4")
    expected = nbytes / (link.bandwidth_bps * link.efficiency) + link.latency_s
    tr = res.transfers.iloc[0]
    assert tr["bytes"] == pytest.approx(nbytes)
    assert tr["end_s"] - tr["start_s"] == pytest.approx(expected, rel=1e-12)
    r = res.requests.iloc[0]
    assert r["prefill_replica"] == 0 and r["replica"] == 1 and r["finished"]
    times = res.token_times(0)
    g = get_gpu("H100")
    timer = GraphStepTimer(model, g, ParallelConfig(), get_cost_model(g), sched_overhead_s=1e-3)
    assert times[0] == pytest.approx(timer.step_time(0, 0, [3000], [3000], 1), rel=1e-12)
    dec = float(timer.decode_times(1, np.array([3001.0]))[0])
    assert times[1] == pytest.approx(tr["end_s"] + dec, rel=1e-12)


def test_pd_transfers_contend_on_a_shared_link() -> None:
    eng = EngineConfig(sched_overhead_s=1e-3)
    dep = Deployment(pools=(PoolDeployment(gpu="H100", replicas=1, role="prefill", engine=eng),
                            PoolDeployment(gpu="H100", replicas=1, role="decode", engine=eng)))
    # Two prompts prefilled in one iteration finish together: the second transfer waits.
    res = simulate_serving(M, "2xH100", _stream([Request(0, 0.0, 2000, 4), Request(1, 0.0, 2000, 4)]), dep)
    tr = res.transfers.sort_values("end_s")
    one = tr["end_s"].iloc[0] - tr["start_s"].iloc[0]
    assert tr["start_s"].iloc[0] == tr["start_s"].iloc[1]
    assert tr["end_s"].iloc[1] - tr["start_s"].iloc[1] == pytest.approx(2 * one, rel=1e-9)


@pytest.mark.parametrize("k,alpha", [(4, 0.7), (3, 0.5)])
def test_spec_decode_tokens_per_step_in_simulation(k: int, alpha: float) -> None:
    eng = EngineConfig(spec_decode=SpecDecode(method="ngram", num_speculative_tokens=k, acceptance_rate=alpha))
    dep = Deployment(pools=(PoolDeployment(gpu="H100", replicas=1, engine=eng),))
    res = simulate_serving(M, "1xH100", _stream([Request(0, 0.0, 100, 3001)]), dep, seed=3)
    iters = int(res.replicas["iterations"].iloc[0])
    per_step = 3000 / (iters - 1)  # first iteration is the prefill (one token)
    assert per_step == pytest.approx(expected_tokens_per_step(k, alpha), rel=0.04)
    assert res.requests["generated_tokens"].iloc[0] == 3001


def test_spec_decode_with_draft_model_costs_more_per_step() -> None:
    reqs = _stream([Request(0, 0.0, 100, 200)])
    out = {}
    for method in ("ngram", "draft"):
        spec = SpecDecode(method=method, draft_model="llama-3.2-1b" if method == "draft" else None,
                          num_speculative_tokens=4, acceptance_rate=0.0)
        dep = Deployment(pools=(PoolDeployment(gpu="H100", replicas=1, engine=EngineConfig(spec_decode=spec)),))
        out[method] = simulate_serving(M, "1xH100", reqs, dep).requests["tpot_s"].iloc[0]
    assert out["draft"] > out["ngram"]


def test_prefix_hits_on_a_shared_prefix() -> None:
    reqs = [Request(i, 2.0 * i, 600, 8, prefix_id=7, prefix_tokens=512) for i in range(10)]
    eng = EngineConfig(enable_prefix_caching=True)
    dep = Deployment(pools=(PoolDeployment(gpu="H100", replicas=1, engine=eng),))
    res = simulate_serving(M, "1xH100", _stream(reqs), dep)
    hits = res.requests["prefix_hit_tokens"].tolist()
    assert hits == [0] + [512] * 9
    assert res.summary["prefix_hit_rate"] == pytest.approx(9 * 512 / (10 * 600))
    no_cache = simulate_serving(M, "1xH100", _stream(reqs), Deployment(pools=(PoolDeployment(gpu="H100", replicas=1),)))
    assert (res.requests["ttft_s"].iloc[1:] < no_cache.requests["ttft_s"].iloc[1:]).all()


def test_prefix_aware_router_follows_the_cache() -> None:
    reqs = [Request(i, 1.0 * i, 800, 4, prefix_id=i % 2, prefix_tokens=768) for i in range(8)]
    eng = EngineConfig(enable_prefix_caching=True)
    dep = Deployment(router="prefix_aware", pools=(PoolDeployment(gpu="H100", replicas=4, engine=eng),))
    res = simulate_serving(M, "4xH100", _stream(reqs), dep)
    rep = res.requests.set_index("req_id")["replica"]
    for i in range(2, 8):
        assert rep[i] == rep[i % 2]
    assert (res.requests["prefix_hit_tokens"].iloc[2:] == 768).all()


def test_pipeline_parallel_virtual_engines_share_stages() -> None:
    dep = Deployment(pools=(PoolDeployment(gpu="H100", pp=2, replicas=1,
                                           engine=EngineConfig(sched_overhead_s=1e-3)),))
    res = simulate_serving(M, "2xH100", _stream([Request(0, 0.0, 1000, 3), Request(1, 0.0, 1000, 3)]), dep)
    g, m, par = get_gpu("H100"), load_model(M), ParallelConfig(pp=2)
    t0, t1 = (GraphStepTimer(m, g, par, get_cost_model(g), sched_overhead_s=1e-3 if s == 0 else 0.0,
                             stage=s).step_time(0, 0, [1000], [1000], 1) for s in (0, 1))
    whole = GraphStepTimer(m, g, par, get_cost_model(g), sched_overhead_s=1e-3).step_time(0, 0, [1000], [1000], 1)
    assert t0 + t1 == pytest.approx(whole, rel=1e-9)
    # Each request has its own virtual engine; the second waits for stage 0 to free up.
    ttft = res.requests.set_index("req_id")["ttft_s"]
    assert ttft[0] == pytest.approx(t0 + t1, rel=1e-12)
    assert ttft[1] == pytest.approx(max(2 * t0, t0 + t1) + t1, rel=1e-12)
    assert len(res.timeseries["engine"].unique()) == 2


def test_same_seed_same_frames_and_conservation() -> None:
    wl = "poisson:rate=20,isl=lognormal(800,1.0,1,4096),osl=lognormal(150,1.0,1,1024)"
    a = simulate_serving(M, "2xH100", wl, num_requests=400, seed=4)
    b = simulate_serving(M, "2xH100", wl, num_requests=400, seed=4)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.timeseries, b.timeseries)
    c = simulate_serving(M, "2xH100", wl, num_requests=400, seed=5)
    assert not a.requests["ttft_s"].equals(c.requests["ttft_s"])
    r = a.requests
    assert len(r) == 400 and r["finished"].all()
    assert (r["generated_tokens"] == r["output_tokens"]).all()
    assert a.summary["output_tokens_per_s"] * a.summary["duration_s"] == pytest.approx(r["output_tokens"].sum())


def test_throughput_never_exceeds_step_time_bound() -> None:
    wl = "poisson:rate=400,isl=fixed(64),osl=fixed(256)"
    seqs = 64
    eng = EngineConfig(scheduler=VllmScheduler(max_num_seqs=seqs))
    dep = Deployment(pools=(PoolDeployment(gpu="H100", replicas=1, engine=eng),))
    res = simulate_serving(M, "1xH100", wl, dep, num_requests=1000)
    g = get_gpu("H100")
    timer = GraphStepTimer(load_model(M), g, ParallelConfig(), get_cost_model(g), sched_overhead_s=2e-3)
    # Most tokens one iteration can emit is max_num_seqs, and an iteration of B decodes
    # takes at least decode_time(B, context 1 each).
    bound = max(b / float(timer.decode_times(b, np.array([float(b)]))[0]) for b in range(1, seqs + 1))
    busy = float(res.replicas["busy_s"].iloc[0])
    rate = res.requests["generated_tokens"].sum() / busy
    assert rate <= bound
    assert rate > 0.5 * bound  # saturated: the engine runs near the bound
    assert res.summary["overloaded"]


def test_default_deployment_and_infeasible_layouts() -> None:
    with pytest.raises(InfeasibleError, match="fits no TP"):
        simulate_serving("llama-3.1-70b", "1xH100", "poisson:rate=1,isl=10,osl=10", num_requests=2)
    dep = default_deployment(load_model("llama-3.1-70b"), load_cluster("1xDGX-H100"))
    tp = dep.pools[0].tp
    assert tp in (2, 4)
    with pytest.raises(InfeasibleError, match="does not fit"):
        simulate_serving("llama-3.1-70b", "1xDGX-H100", "poisson:rate=1,isl=10,osl=10",
                         Deployment(pools=(PoolDeployment(gpu="H100", tp=tp // 2, replicas=1),)), num_requests=2)
    with pytest.raises(InfeasibleError, match="GPUs"):
        simulate_serving(M, "2xH100", "poisson:rate=1,isl=10,osl=10",
                         Deployment(pools=(PoolDeployment(gpu="H100", tp=1, replicas=3),)), num_requests=2)
    with pytest.raises(ConfigError, match="cluster has"):
        simulate_serving(M, "2xH100", "poisson:rate=1,isl=10,osl=10",
                         Deployment(pools=(PoolDeployment(gpu="A100-SXM-80GB", replicas=1),)), num_requests=2)
    with pytest.raises(ConfigError, match="unknown"):
        Deployment(pools=(PoolDeployment(gpu="H100"),), routr="x")  # type: ignore[call-arg]
    res = simulate_serving(M, "1xDGX-H100", "poisson:rate=2,isl=10,osl=10", num_requests=8)
    assert len(res.replicas) == 8 and (res.replicas["tp"] == 1).all()


def test_cli_matches_api(tmp_path) -> None:
    from fleetsim.cli import simulate as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    wl = "poisson:rate=8,isl=fixed(500),osl=fixed(50)"
    args = parser.parse_args(["simulate", "--model", M, "--cluster", "2xH100", "--workload", wl,
                              "--num-requests", "60", "--seed", "2", "--replicas", "2", "--router",
                              "round_robin", "--max-num-seqs", "16", "--ttft-slo-s", "0.05",
                              "--out", str(tmp_path)])
    assert args.func(args) == 0
    saved = json.loads((tmp_path / "summary.json").read_text())
    eng = EngineConfig(scheduler=VllmScheduler(max_num_seqs=16))
    dep = Deployment(router="round_robin", pools=(PoolDeployment(replicas=2, tp=1, engine=eng),))
    api = simulate_serving(M, "2xH100", wl, dep, seed=2, num_requests=60, slo={"ttft_slo_s": 0.05})
    for key in ("ttft_p50_s", "tpot_p99_s", "e2e_p90_s", "goodput_share", "output_tokens_per_s"):
        assert saved[key] == pytest.approx(api.summary[key], rel=1e-12)
    req = pd.read_parquet(tmp_path / "requests.parquet")
    pd.testing.assert_frame_equal(req, api.requests)
    assert (tmp_path / "trace.json.gz").exists()


def test_cli_pd_and_spec_decode_flags() -> None:
    from fleetsim.cli import simulate as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["simulate", "--model", M, "--cluster", "4xH100", "--pd", "1p3d",
                              "--spec-decode", "ngram:k=3,alpha=0.6", "--num-requests", "5",
                              "--workload", "poisson:rate=1,isl=10,osl=10"])
    dep, _ = cli.build_deployment(args)
    assert [p.role for p in dep.pools] == ["prefill", "decode"]
    assert [p.replicas for p in dep.pools] == [1, 3]
    spec = dep.pools[0].engine.spec_decode
    assert spec.num_speculative_tokens == 3 and spec.acceptance_rate == 0.6
    with pytest.raises(ConfigError):
        cli.parse_spec_decode("ngram:q=3")


def test_fp8_weights_and_kv_enlarge_the_cache() -> None:
    from fleetsim.sim.serving.cluster import kv_blocks_for
    from fleetsim.workloads.memory import kv_cache_bytes_per_token, weight_bytes

    m, g, par = load_model(M), get_gpu("H100"), ParallelConfig()
    base = kv_blocks_for(m, g, par, EngineConfig())
    kv8 = kv_blocks_for(m, g, par, EngineConfig(kv_dtype="fp8"))
    w8 = kv_blocks_for(m, g, par, EngineConfig(dtype="fp8"))
    assert kv8 == pytest.approx(2 * base, rel=0.01)  # half the bytes per token
    freed = weight_bytes(m, par, "bf16") - weight_bytes(m, par, "fp8")
    per_block = kv_cache_bytes_per_token(m, par, "bf16") * 16
    assert w8 - base == pytest.approx(freed / per_block, rel=0.05)
    res = simulate_serving(M, "1xH100", "poisson:rate=4,isl=fixed(500),osl=fixed(50)", num_requests=20,
                           engine=EngineConfig(dtype="fp8", kv_dtype="fp8"))
    assert res.requests["finished"].all()
    assert int(res.replicas["kv_blocks"].iloc[0]) == kv_blocks_for(m, g, par, EngineConfig(dtype="fp8", kv_dtype="fp8"))


def test_moe_expert_parallel_replica_runs() -> None:
    dep = Deployment(pools=(PoolDeployment(gpu="H100", tp=2, ep=2, replicas=1),))
    res = simulate_serving("mixtral-8x7b", "2xH100", "poisson:rate=2,isl=fixed(300),osl=fixed(20)", dep,
                           num_requests=10)
    assert res.requests["finished"].all()
    assert res.replicas["ep"].iloc[0] == 2


def test_heterogeneous_pools_share_load_by_speed() -> None:
    wl = "poisson:rate=30,isl=fixed(800),osl=fixed(200)"
    res = simulate_serving(M, "1xH100+1xA100-SXM-80GB", wl, num_requests=600, seed=1)
    assert list(res.replicas["gpu"]) == ["H100-SXM", "A100-SXM-80GB"]
    counts = res.requests.groupby("replica").size()
    assert counts[0] > counts[1] > 0  # the faster H100 takes more requests


def test_pooled_itl_percentiles_match_every_itl() -> None:
    eng = EngineConfig(gpu_memory_utilization=0.22)  # tight KV: preemption gaps appear
    wl = "poisson:rate=30,isl=lognormal(800,1.0,1,4096),osl=lognormal(150,1.0,1,1024)"
    res = simulate_serving(M, "1xH100", wl, Deployment(pools=(PoolDeployment(replicas=1, engine=eng),)),
                           num_requests=300, seed=2)
    itl = res.itl()
    assert len(itl) == int((res.requests["generated_tokens"] - 1).clip(lower=0).sum())
    for q in (50, 90, 99):
        assert res.summary[f"itl_p{q}_s"] == pytest.approx(
            np.quantile(itl["itl_s"], q / 100, method="inverted_cdf"), rel=1e-12)
    one = itl[itl["req_id"] == 5]["itl_s"]
    row = res.requests.set_index("req_id").loc[5]
    assert row["itl_p50_s"] == pytest.approx(np.percentile(one, 50), rel=1e-12)
    assert row["itl_max_s"] == pytest.approx(one.max(), rel=1e-12)


def test_default_deployment_skips_pools_that_cannot_hold_the_model() -> None:
    # 70B bf16 needs two H100s: the single-GPU pool stays unused, the 8-GPU pool gets 4 x TP2.
    res = simulate_serving("llama-3.1-70b", "1xH100+8xH100", "poisson:rate=2,isl=100,osl=10", num_requests=8)
    assert res.replicas["pool"].tolist() == [1, 1, 1, 1]
    assert (res.replicas["tp"] == 2).all()
    with pytest.raises(ConfigError, match="out of range"):
        simulate_serving(M, "1xH100", "poisson:rate=1,isl=10,osl=10",
                         Deployment(pools=(PoolDeployment(pool=3),)), num_requests=2)


def test_lone_request_ttft_equals_direct_op_graph_price() -> None:
    from fleetsim.workloads.parallel import Seq

    res = simulate_serving(M, "1xH100", _stream([Request(0, 0.5, 300, 2)]))
    g = get_gpu("H100")
    timer = GraphStepTimer(load_model(M), g, ParallelConfig(), get_cost_model(g), sched_overhead_s=2e-3)
    prefill = timer.direct_time([Seq(300, 0)], graphs=False)  # whole graph, eager
    decode = timer.direct_time([Seq(1, 300)], graphs=True)  # whole graph, CUDA graph
    r = res.requests.iloc[0]
    assert r["ttft_s"] == pytest.approx(prefill, rel=1e-9)
    assert r["e2e_s"] - r["ttft_s"] == pytest.approx(decode, rel=2e-3)
