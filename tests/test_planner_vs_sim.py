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
