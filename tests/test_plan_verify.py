"""A plan that misses its SLO on re-simulation is not reported as its prediction: a
``max_goodput`` plan is re-checked at lower rates and reports the highest verified one; a
demand-sized plan is re-solved with derated capacities until a re-simulation meets the SLO.
Oracles: fake checks with a known threshold (the answer is computable by hand), and the
planner end to end (every reported plan that says it meets the SLO did so in a simulation at
the rate it reports)."""

from __future__ import annotations

from fleetsim.planner.serving.records import PlanEntry, PlanMetrics, PoolChoice
from fleetsim.planner.serving.search import BACK_OFF, DERATE, _back_off, _derate

from fleetsim.planning import plan_serving


def _entry(name: str = "optimal mix", goodput: float = 40.0, replicas: int = 1) -> PlanEntry:
    pool = PoolChoice(gpu="H100-SXM", pool=0, tp=4, pp=1, ep=1, replicas=replicas, role="both", power_cap_w=None,
                      engine="vllm", max_num_seqs=256, max_num_batched_tokens=8192)
    return PlanEntry(name=name, pools=(pool,), objective="max_goodput", objective_value=goodput,
                     predicted_goodput_rps=goodput, cost_per_hour=12.0 * replicas, gpus=4 * replicas,
                     gpus_by_type={"H100-SXM": 4 * replicas}, power_w=2800.0 * replicas)


def _metrics(rate: float, ok: bool) -> PlanMetrics:
    return PlanMetrics(seed=1, rate_rps=rate, goodput_rps=rate if ok else 0.5 * rate, goodput_share=1.0 if ok else 0.5,
                       ttft_p90_s=0.5, ttft_p99_s=0.9, tpot_p90_s=0.04, tpot_p99_s=0.05, output_tokens_per_s=rate * 200,
                       meets_slo=ok, missed="" if ok else "TPOT p90 0.06 s > 0.05 s")


def test_back_off_reports_the_highest_verified_rate() -> None:
    limit = 30.0  # the plan truly sustains 30 req/s: 0.85 x 40 = 34 fails, 0.7 x 40 = 28 passes
    asked: list[float] = []

    def check(p: PlanEntry, rate: float) -> PlanMetrics:
        asked.append(rate)
        return _metrics(rate, rate <= limit)

    got = _back_off(_entry(goodput=40.0), check)
    assert asked == [40.0 * s for s in BACK_OFF[:2]]
    assert got.meets_slo and got.checked is not None and got.checked.rate_rps == 28.0
    assert got.objective_value == 28.0 and got.predicted_goodput_rps == 40.0


def test_back_off_keeps_the_miss_when_no_rate_passes() -> None:
    p = _entry(goodput=40.0).model_copy(update={"checked": _metrics(40.0, False)})
    got = _back_off(p, lambda q, r: _metrics(r, False))
    assert got.meets_slo is False and got.objective_value == 40.0


def test_derate_re_solves_with_every_capacity_scaled_until_a_check_passes() -> None:
    """Fake selection: replicas = ceil(demand / capacity); the check passes from 3 replicas on."""
    import math

    from fleetsim.planner.serving.records import Analytic, Capacity, Evaluation, Knobs

    demand, cap = 10.0, 6.0  # 2 replicas at 6.0 and at 0.85 x 6.0 = 5.1; 3 at 0.7 x 6.0 = 4.2
    k = Knobs(pool=0, gpu="H100-SXM", tp=4, pp=1, ep=1, max_num_seqs=256, max_num_batched_tokens=8192)
    ev = Evaluation(analytic=Analytic(knobs=k, batch=64, kv_tokens=1000, replica_rps=cap, limited_by="compute",
                                      prefill_s=0.1, ttft_s=0.2, tpot_s=0.03, max_replicas=2),
                    capacity=(Capacity(bucket="all", rps=cap, simulations=3, limited_by="tpot_slo"),),
                    price_per_hour=12.0, power_w=2800.0)
    seen: list[float] = []

    def solve(evals: list[Evaluation], only_gpu: str | None) -> PlanEntry:
        c = evals[0].capacity_rps()["all"]
        seen.append(c)
        return _entry(replicas=math.ceil(demand / c))

    def check(p: PlanEntry, rate: float) -> PlanMetrics:
        return _metrics(rate, p.pools[0].replicas >= 3)

    failed = _entry(replicas=math.ceil(demand / cap)).model_copy(update={"checked": _metrics(demand, False)})
    got = _derate(failed, [ev], None, solve, lambda p: p, check, demand)
    assert seen == [cap * s for s in DERATE]
    assert got.meets_slo and got.pools[0].replicas == 3


def test_every_reported_pass_was_simulated_at_its_rate() -> None:
    """End to end: max_goodput on an inventory; the plan that says it meets the SLO was
    re-simulated at the goodput rate it reports (or a share of its prediction)."""
    res = plan_serving("llama-3.2-1b", "2xH100", isl=512, osl=64, ttft_s=0.3, tpot_s=0.02).search
    assert res.status == "optimal"
    for p in res.plans:
        if p.checked is not None and p.checked.meets_slo:
            assert p.checked.goodput_rps >= p.checked.rate_rps * 0.9 - 1e-9
            assert p.objective_value <= p.predicted_goodput_rps * (1 + 1e-6)
            shares = [1.0, *BACK_OFF]
            assert any(abs(p.checked.rate_rps - p.predicted_goodput_rps * s) < 1e-9 for s in shares)


def test_plan_power_counts_its_own_gpus_only() -> None:
    """A one-GPU plan out of a 32-GPU market draws at most one GPU's board power: the other 31
    idle GPUs of the market cluster are not the plan's (they were, 6 kW for a 4-GPU plan)."""
    from fleetsim.hardware.catalog import get_gpu

    res = plan_serving("llama-3.2-1b", None, market="H100:3.0:16,L40S:1.0:16", isl=512, osl=64, rate_rps=5,
                       ttft_s=0.5, tpot_s=0.05, objective="min_cost", disaggregate="never").search
    best = res.plans[0]
    assert best.gpus == 1 and best.checked is not None and best.checked.avg_power_w is not None
    gpu = get_gpu(best.pools[0].gpu)
    assert gpu.idle_power_w <= best.checked.avg_power_w <= gpu.tdp_w


def test_decode_capacity_is_bounded_by_a_full_batch_step() -> None:
    """A decode candidate's capacity (output tokens/s) cannot beat ``max_num_seqs`` sequences
    stepping together at the cheapest context they can have (the prompt length): the step
    time of that batch, priced by ``estimate_forward`` with the same engine, bounds it. Before
    the fill and feed rules a decode replica given fewer requests than its slots (or starved
    by its prefill feed) passed every rate the bracket tried."""
    import math

    from fleetsim.hardware.cluster import load_cluster
    from fleetsim.planner.serving.capacity import Bucket, CapacityJob, capacity, engine_config
    from fleetsim.planner.serving.records import Knobs, Slo
    from fleetsim.workloads.defaults import get_workload
    from fleetsim.workloads.models import load_model
    from fleetsim.workloads.parallel import Seq

    from fleetsim.estimate import estimate_forward

    model, isl, osl, seqs = load_model("llama-3.2-1b"), 512, 64, 16
    k = Knobs(pool=0, gpu="H100-SXM", tp=1, pp=1, ep=1, max_num_seqs=seqs, max_num_batched_tokens=8192,
              role="decode")
    job = CapacityJob(model=model, cluster=load_cluster("8xH100"), knobs=k, engine=engine_config(k, "vllm", "bf16", "bf16"),
                      workload=get_workload(f"poisson:rate=1,isl={isl},osl={osl}"),
                      buckets=(Bucket("all", 0.0, math.inf, 1.0),), slo=Slo(ttft_s=10.0, tpot_s=1.0),
                      start_rps=50.0, seed=0, requests=10, steps=3, prefill_replicas=4)
    (cap,) = capacity(job)
    step = estimate_forward(model, "H100-SXM", [Seq(1, isl)] * seqs, tp=1, engine="vllm").time_s
    assert 0 < cap.rps * osl <= seqs / step * 1.05
