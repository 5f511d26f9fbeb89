"""Differential test: the analytic plan's steady state against the discrete-event simulator.

The plan sizes a replica at batch ``b`` and predicts its request throughput and TPOT from
closed-form steady-state algebra; a closed loop of ``b`` clients with no think time holds the
simulated replica at that batch, so the two paths must agree.
"""

from __future__ import annotations

import pytest

import fleetsim


@pytest.mark.parametrize("model,cluster,isl,osl,tpot", [
    ("llama-3.1-8b", "1xH100", 1024, 256, 0.03),
    ("qwen2.5-7b", "1xH200", 512, 128, 0.02),
])
def test_plan_throughput_and_tpot_match_simulation(model: str, cluster: str, isl: int, osl: int, tpot: float) -> None:
    plan = fleetsim.plan_serving(model, cluster, isl=isl, osl=osl, tpot_s=tpot)
    row = plan.best
    assert row is not None and row.replicas == 1
    # clients start spread over one request lifetime so they do not finish in lockstep
    wl = f"closed:clients={row.batch},think=0,isl={isl},osl={osl},ramp={osl * row.tpot_s}"
    res = fleetsim.simulate_serving(model, cluster, wl, num_requests=row.batch * 25, seed=1)
    s = res.summary
    assert s["finished"] == row.batch * 25
    assert s["requests_per_s"] == pytest.approx(row.replica_rps, rel=0.10)
    assert s["tpot_mean_s"] == pytest.approx(row.tpot_s, rel=0.10)
    assert s["tpot_mean_s"] <= tpot * 1.05


def test_pipeline_parallel_plan_is_an_optimistic_bound_of_the_simulation() -> None:
    """With PP the plan assumes the virtual engines keep every stage busy; in the simulator
    chunked prefills make engines' iterations unequal, stages wait on each other and the
    replica delivers less (about 20 % here). The plan stays an upper bound.

    TPOT target 70 ms: under the vllm profile one sequence of the tp=1 pp=2 replica already
    takes 61.7 ms per token (a mixed iteration with its chunked prefill), so the former 60 ms
    target left no pp=2 row; at 70 ms the pp=2 batch (22) is bounded by its KV cache."""
    isl, osl = 1024, 256
    plan = fleetsim.plan_serving("llama-3.1-70b", "2x2xH100", isl=isl, osl=osl, tpot_s=0.07)
    row = next(r for r in plan.rows if r.pp == 2)
    assert row.tp == 1 and row.gpus_used == 4 and row.replicas == 2
    wl = f"closed:clients={row.batch},think=0,isl={isl},osl={osl},ramp={osl * row.tpot_s}"
    dep = {"pools": [{"gpu": row.gpu, "tp": row.tp, "pp": row.pp, "replicas": 1}]}
    s = fleetsim.simulate_serving("llama-3.1-70b", "2x2xH100", wl, dep, num_requests=row.batch * 10, seed=1).summary
    assert row.replica_rps >= s["requests_per_s"] >= 0.75 * row.replica_rps
    assert row.tpot_s <= s["tpot_mean_s"] <= 1.25 * row.tpot_s
