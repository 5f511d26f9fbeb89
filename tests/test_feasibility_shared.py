"""One feasibility module (``sim.serving.feasibility``) serves the planner and the simulator:
every layout the planner reports feasible is accepted by the simulator's deployment builder
with the same KV capacity and replica count, and every layout it rejects for memory or
placement the builder refuses too."""

from __future__ import annotations

import pytest
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.cluster import load_cluster
from fleetsim.hardware.errors import InfeasibleError
from fleetsim.hardware.specs import PoolSpec
from fleetsim.sim.serving.cluster import plan_replicas
from fleetsim.sim.serving.config import Deployment, EngineConfig, PoolDeployment
from fleetsim.sim.serving.feasibility import check_replica, place_replicas
from fleetsim.workloads.models import load_model
from fleetsim.workloads.parallel import ParallelConfig

import fleetsim

CASES = [
    ("llama-3.1-405b", "2x8xH100", {}),
    ("llama-3.1-70b", "2x2xH100", {"tpot_s": 0.07}),
    ("llama-3.1-70b", "8xH100", {"tpot_s": 0.05, "rate_rps": 10}),
    ("llama-3.1-8b", "4xL4", {}),
    ("qwen2.5-7b", "8xH100+4xL40S", {"dtype": "fp8"}),
    ("llama-3.1-70b", "8xH100+2xL4", {}),  # the L4 pool cannot hold it at any layout
]


def _deployment(gpu: str, tp: int, pp: int, replicas: int, eng: EngineConfig) -> Deployment:
    return Deployment(pools=(PoolDeployment(gpu=gpu, tp=tp, pp=pp, replicas=replicas, engine=eng),))


@pytest.mark.parametrize("model,cluster,kw", CASES)
def test_every_feasible_plan_row_is_accepted_by_the_simulator(model: str, cluster: str, kw: dict) -> None:
    plan = fleetsim.plan_serving(model, cluster, isl=1024, osl=256, **kw)
    dtype = kw.get("dtype", "bf16")
    eng = EngineConfig(dtype=dtype, kv_dtype="bf16")
    spec, cl = load_model(model), load_cluster(cluster)
    assert plan.rows
    for r in plan.rows:
        reps = plan_replicas(spec, cl, _deployment(r.gpu, r.tp, r.pp, r.replicas, eng))
        assert len(reps) == r.replicas
        assert reps[0].kv_blocks * eng.block_size == r.kv_capacity_tokens
        assert all(p.gpu.name == r.gpu for p in reps)
    refused = [rej for rej in plan.rejected if "does not fit" in rej.reason or "spans nodes" in rej.reason]
    for rej in refused:
        with pytest.raises(InfeasibleError):
            plan_replicas(spec, cl, _deployment(rej.gpu, rej.tp, rej.pp, 1, eng))
    assert bool(refused) == (cluster == "8xH100+2xL4")


def test_405b_on_two_h100_nodes_planner_best_row_runs_in_the_simulator() -> None:
    """The planner's best row for llama-3.1-405b on 2x8xH100 spans both nodes (the model
    does not fit one node's 640 GB); the simulator accepts that layout and serves requests."""
    plan = fleetsim.plan_serving("llama-3.1-405b", "2x8xH100", isl=1024, osl=64)
    best = plan.best
    assert best is not None and best.tp * best.pp == 16
    dep = {"pools": [{"gpu": best.gpu, "tp": best.tp, "pp": best.pp, "replicas": 1}]}
    s = fleetsim.simulate_serving("llama-3.1-405b", "2x8xH100", "closed:clients=4,think=0,isl=1024,osl=64",
                                  dep, num_requests=8, seed=0).summary
    assert s["finished"] == 8
    # one node alone cannot hold it: both paths say so
    spec, cl = load_model("llama-3.1-405b"), load_cluster("8xH100")
    with pytest.raises(InfeasibleError, match="does not fit"):
        check_replica(spec, cl.pools[0], get_gpu("H100-SXM"), ParallelConfig(tp=8), EngineConfig())
    with pytest.raises(InfeasibleError):
        fleetsim.plan_serving("llama-3.1-405b", "8xH100", isl=1024, osl=64)


def _pool(nodes: int, per_node: int) -> PoolSpec:
    return load_cluster(f"{nodes}x{per_node}xH100").pools[0]


@pytest.mark.parametrize("nodes,per_node,tp,pp,used,starts", [
    (2, 8, 2, 8, 0, [0]),            # one replica over both nodes
    (2, 8, 4, 1, 0, [0, 4, 8, 12]),  # packed within nodes
    (2, 8, 4, 1, 6, [8, 12]),        # no replica straddles two nodes
    (4, 8, 8, 2, 4, [8]),            # multi-node replicas start on a node boundary
    (2, 8, 4, 3, 0, [0]),            # 12 GPUs: only within-node or whole nodes
])
def test_placement_oracle(nodes: int, per_node: int, tp: int, pp: int, used: int, starts: list[int]) -> None:
    pool = _pool(nodes, per_node)
    if tp * pp > per_node and (tp * pp) % per_node:
        with pytest.raises(InfeasibleError, match="spans nodes"):
            place_replicas(pool, tp, pp, used)
    else:
        assert place_replicas(pool, tp, pp, used) == starts


def test_plan_engine_flag_names_the_profile_and_matches_the_api(capsys: pytest.CaptureFixture[str]) -> None:
    from fleetsim.cli import main

    assert main(["plan", "--analytic", "--model", "llama-3.1-8b", "--cluster", "1xH100", "--isl", "512",
                 "--osl", "128", "--engine", "hf-transformers"]) == 0
    out = capsys.readouterr().out
    assert "engine profile: hf-transformers" in out
    api = fleetsim.plan_serving("llama-3.1-8b", "1xH100", isl=512, osl=128, engine="hf-transformers")
    vllm = fleetsim.plan_serving("llama-3.1-8b", "1xH100", isl=512, osl=128)
    assert api.engine == "hf-transformers" and vllm.engine == "vllm"
    assert f"{api.best.tpot_s * 1e3:.2f}" in out
    assert api.best.tpot_s != vllm.best.tpot_s
    assert main(["plan", "--model", "llama-3.1-8b", "--cluster", "1xH100", "--engine", "vlm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'vlm'" in err[0] and "vllm" in err[0]


@pytest.mark.parametrize("model,cluster,tp,pp,engine", [
    ("llama-3.1-8b", "1xH100", 1, 1, "vllm"),
    ("llama-3.1-70b", "2x2xH100", 1, 2, "vllm"),
    ("qwen2.5-7b", "2xH200", 2, 1, "hf-transformers"),
])
def test_planner_iterations_are_the_simulators(model: str, cluster: str, tp: int, pp: int, engine: str) -> None:
    """The planner's prefill and mixed/pure-decode iterations equal the simulator's step
    timer's ``direct_time`` (both ``price_iteration``) on the same batches, to 1e-9."""
    from fleetsim.calibration import get_cost_model
    from fleetsim.sim.serving.steptime import GraphStepTimer
    from fleetsim.workloads.parallel import Seq

    from fleetsim.planning import make_replica_timer

    spec, cl = load_model(model), load_cluster(cluster)
    pool = cl.pools[0]
    gpu = get_gpu(pool.node.gpu)
    eng = EngineConfig(profile=engine)
    timer = make_replica_timer(spec, pool, gpu, tp, pp, eng, isl_hint=512)
    sim = GraphStepTimer(spec, gpu, ParallelConfig(tp=tp, pp=pp), get_cost_model(gpu), dtype=eng.dtype,
                         kv_dtype=eng.kv_dtype, engine=eng.engine_profile)
    assert timer.prefill_s(700) == pytest.approx(sim.direct_time([Seq(700, 0)]), rel=1e-9)
    for b, c, k in ((8, 900, 0), (8, 900, 1100), (64, 300, 40)):
        batch = [Seq(1, c)] * b + [Seq(512, 0)] * (k // 512) + ([Seq(k % 512, 0)] if k % 512 else [])
        assert timer.iteration_s(b, c, k) == pytest.approx(sim.direct_time(batch), rel=1e-9)
    assert timer.kv_capacity_tokens == check_replica(spec, pool, gpu, ParallelConfig(tp=tp, pp=pp), eng).kv_tokens


def test_draft_model_weights_and_kv_come_off_the_target_kv_cache() -> None:
    """A draft model's weights take free memory and its own KV rides on every block: the
    target's blocks fall from B0 to (B0 * 16 * kv_t - W_d) / (16 * (kv_t + kv_d)) (hand form)."""
    from fleetsim.hardware.catalog import get_gpu
    from fleetsim.sim.serving.config import EngineConfig, SpecDecode
    from fleetsim.sim.serving.feasibility import kv_blocks_for
    from fleetsim.workloads.memory import kv_cache_bytes_per_token, weight_bytes
    from fleetsim.workloads.models import load_model
    from fleetsim.workloads.parallel import ParallelConfig

    target, draft = load_model("llama-3.1-8b"), load_model("llama-3.2-1b")
    gpu, par = get_gpu("H100"), ParallelConfig()
    plain = kv_blocks_for(target, gpu, par, EngineConfig())
    spec = EngineConfig(spec_decode=SpecDecode(method="draft", draft_model="llama-3.2-1b"))
    with_draft = kv_blocks_for(target, gpu, par, spec)
    kv_t, kv_d = kv_cache_bytes_per_token(target, par), kv_cache_bytes_per_token(draft, par)
    expected = (plain * 16 * kv_t - weight_bytes(draft, par)) / (16 * (kv_t + kv_d))
    assert abs(with_draft - expected) <= 1.0
    assert with_draft < plain
    ngram = EngineConfig(spec_decode=SpecDecode(method="ngram"))
    assert kv_blocks_for(target, gpu, par, ngram) == plain
