"""Autoscaling oracles: a pinned autoscaler is the fixed fleet, constant load settles at the
closed-form count, cold starts delay exactly their hand-computed time, GPU-hours are the
integral of paid replicas, runs are deterministic, bad input is one line."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fleetsim.hardware.catalog import get_link, get_system
from fleetsim.hardware.errors import ConfigError
from fleetsim.sim.serving.autoscale import AutoscaleConfig, ColdStart
from fleetsim.workloads.memory import weight_bytes
from fleetsim.workloads.models import load_model
from fleetsim.workloads.parallel import ParallelConfig
from fleetsim.workloads.requests import RequestStream

from fleetsim.capacity import parse_autoscale
from fleetsim.serving import (
    Deployment,
    EngineConfig,
    PoolDeployment,
    VllmScheduler,
    simulate_serving,
)

MODEL = "llama-3.2-1b"


def _dep(replicas: int | None = None, **eng: object) -> Deployment:
    return Deployment(pools=(PoolDeployment(gpu="H100-SXM", replicas=replicas, engine=EngineConfig(**eng)),))


def test_pinned_autoscaler_equals_the_fixed_fleet() -> None:
    kw = dict(model=MODEL, cluster="4xH100", workload="poisson:rate=20,isl=512,osl=64",
              deployment=_dep(2), num_requests=600)
    fixed = simulate_serving(**kw)
    scaled = simulate_serving(**kw, autoscaler=AutoscaleConfig(policy={"kind": "utilization"}, min_replicas=2,
                                                               max_replicas=2, interval_s=2.0))
    pd.testing.assert_frame_equal(fixed.requests, scaled.requests)
    pd.testing.assert_frame_equal(fixed.timeseries, scaled.timeseries)
    for k, v in fixed.summary.items():
        w = scaled.summary[k]
        assert v == w or (isinstance(v, float) and math.isnan(v) and math.isnan(w)), k
    assert scaled.summary["gpu_hours"] == pytest.approx(2 * fixed.summary["duration_s"] / 3600, rel=1e-12)
    assert scaled.summary["cold_starts"] == 0


def test_gpu_hours_are_the_integral_of_paid_replicas() -> None:
    res = simulate_serving(MODEL, "4xH100", "poisson:rate=30,isl=512,osl=64", _dep(), num_requests=1500,
                           autoscaler="queue:target=4,min=1,max=4,interval=2,down_delay=4,cold_start=3")
    tl = res.scaling.timeline
    t0 = float(res.requests["arrival_s"].min())
    t1 = t0 + float(res.summary["duration_s"])
    steps = tl.groupby("time_s")["gpus"].sum()
    knots = np.append(steps.index.to_numpy(), t1)
    lo, hi = np.maximum(knots[:-1], t0), np.minimum(knots[1:], t1)
    integral = float((steps.to_numpy() * np.clip(hi - lo, 0, None)).sum()) / 3600
    assert res.summary["cold_starts"] >= 1
    assert res.summary["gpu_hours"] == pytest.approx(integral, rel=1e-9)
    assert res.scaling.entries["cost_usd"].iloc[0] == pytest.approx(integral * 2.99, rel=1e-9)


def test_cold_start_delay_is_exact() -> None:
    """Scale from zero: the request at t=0 is held; the queue policy asks for one replica at
    the first tick (t=10); its 7 s cold start ends at 17, so its TTFT is 17 s plus what it
    takes on a warm idle replica."""
    one = RequestStream(arrival_s=[0.0], prompt_tokens=[300], output_tokens=[20])
    warm = simulate_serving(MODEL, "1xH100", one, _dep(1))
    cold = simulate_serving(MODEL, "1xH100", one, _dep(),
                            autoscaler=AutoscaleConfig(policy={"kind": "queue", "target_per_replica": 1},
                                                       min_replicas=0, max_replicas=1, initial_replicas=0,
                                                       interval_s=10.0, cold_start_s=7.0))
    assert cold.requests["ttft_s"].iloc[0] == pytest.approx(17.0 + warm.requests["ttft_s"].iloc[0], abs=1e-9)
    assert cold.summary["delayed_by_cold_start"] == 1
    # paid from the scale-up at 10 s to the finish
    assert cold.summary["gpu_hours"] * 3600 == pytest.approx(cold.summary["duration_s"] - 10.0, abs=1e-9)


def test_modelled_cold_start_is_weights_over_the_slowest_link_plus_graph_warmup() -> None:
    res = simulate_serving(MODEL, "1xH100", RequestStream(arrival_s=[0.0], prompt_tokens=[8], output_tokens=[2]),
                           _dep(), autoscaler=AutoscaleConfig(policy={"kind": "queue", "target_per_replica": 1},
                                                               max_replicas=1, cold_start=ColdStart(graph_warmup=False)))
    node = get_system("DGX-H100")
    w = weight_bytes(load_model(MODEL), ParallelConfig(), "bf16")
    host = get_link(node.host_link)
    expect = max(w / node.nvme_bw_bps, w / (host.bandwidth_bps * host.efficiency))
    assert res.scaling.entries["cold_start_s"].iloc[0] == pytest.approx(expect, rel=1e-12)
    with_graphs = simulate_serving(MODEL, "1xH100", RequestStream(arrival_s=[0.0], prompt_tokens=[8], output_tokens=[2]),
                                   _dep(), autoscaler=AutoscaleConfig(policy={"kind": "queue", "target_per_replica": 1},
                                                                      max_replicas=1))
    assert with_graphs.scaling.entries["warmup_s"].iloc[0] > 0


def test_constant_load_settles_at_the_closed_form_count() -> None:
    """Evenly spaced arrivals at 12 req/s and a replica capacity of 5 req/s: ceil(12/5) = 3."""
    res = simulate_serving(MODEL, "8xH100", "constant:rate=12,isl=256,osl=16", _dep(), duration_s=120.0,
                           autoscaler="rate:capacity=5,min=1,max=8,interval=10,down_delay=0,cold_start=2")
    dec = res.scaling.decisions
    assert (dec["desired"].iloc[1:] == 3).all()
    assert res.scaling.timeline["ready"].iloc[-1] in (3, 0)
    last = res.scaling.timeline[res.scaling.timeline["time_s"] < 100]
    assert last["ready"].iloc[-1] == 3


def test_busy_utilization_policy_settles_at_lambda_s_over_target() -> None:
    """One request at a time per replica (max_num_seqs=1): each request keeps a replica busy
    for its service time S, so the fleet's busy replicas are lambda * S and the HPA rule
    settles at ceil(lambda * S / target)."""
    eng = {"scheduler": VllmScheduler(max_num_seqs=1)}
    one = RequestStream(arrival_s=[0.0], prompt_tokens=[256], output_tokens=[64])
    s = float(simulate_serving(MODEL, "1xH100", one, _dep(1, **eng)).requests["e2e_s"].iloc[0])
    lam, target = 6.0, 0.6
    want = math.ceil(lam * s / target)
    assert 0.1 < lam * s / target % 1 < 0.9, "choose a load away from a rounding edge"
    res = simulate_serving(MODEL, "8xH100", "constant:rate=6,isl=256,osl=64", _dep(None, **eng), duration_s=150.0,
                           autoscaler=AutoscaleConfig(policy={"kind": "utilization", "target": target},
                                                      min_replicas=want, max_replicas=8, initial_replicas=want,
                                                      interval_s=10.0, scale_down_delay_s=0.0, cold_start_s=1.0))
    dec = res.scaling.decisions
    assert (dec["desired"].iloc[1:-1] == want).all()
    assert dec["busy"].iloc[1:-1].mul(want).sub(lam * s).abs().max() < 0.05


def test_deterministic() -> None:
    kw = dict(model=MODEL, cluster="4xH100", workload="poisson:rate=30,isl=512,osl=64", deployment=_dep(),
              autoscaler="slo:ttft=0.05,min=1,max=4,interval=2,down_delay=4", duration_s=40.0,
              load_profile="diurnal:peak=40,trough=5")
    a, b = simulate_serving(**kw), simulate_serving(**kw)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.scaling.timeline, b.scaling.timeline)


def test_pd_policy_keeps_the_ratio() -> None:
    dep = Deployment(pools=(PoolDeployment(gpu="H100-SXM", role="prefill"), PoolDeployment(gpu="H100-SXM", role="decode")))
    cfg = AutoscaleConfig(policy={"kind": "pd", "prefill_per_decode": 0.5,
                                  "decode": {"kind": "rate", "capacity_rps": 4}},
                          min_replicas=1, max_replicas=4, interval_s=5, scale_down_delay_s=0, cold_start_s=1)
    res = simulate_serving(MODEL, "8xH100", "constant:rate=12,isl=256,osl=16", dep, duration_s=40.0, autoscaler=cfg)
    dec = res.scaling.decisions
    later = dec[dec["time_s"] > 5]
    assert (later[later["role"] == "decode"]["desired"] == 3).all()
    assert (later[later["role"] == "prefill"]["desired"] == 2).all()
    assert res.summary["finished"] == res.summary["num_requests"]


@pytest.mark.parametrize("spec,match", [
    ("utilization:target=1.5,max=4", "target"),
    ("utilization:min=5,max=4", "min_replicas 5 above max_replicas 4"),
    ("queue:target=2,max=4,cold_start=-1", "cold_start_s"),
    ("queue:target=2", "max=N"),
    ("hpa:max=2", "unknown policy"),
    ("slo:max=2", "ttft_s and/or tpot_s"),
])
def test_bad_autoscale_specs_name_the_input(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cfg = parse_autoscale(spec)
        cfg.limits(1)


def test_cli_matches_the_api(capsys: pytest.CaptureFixture[str]) -> None:
    from fleetsim.cli import main

    args = dict(workload="poisson:rate=1,isl=256,osl=32", duration_s=60.0,
                load_profile="diurnal:peak=40,trough=5,peak_hour=0",
                autoscaler="queue:target=4,max=4,interval=5,down_delay=10")
    rc = main(["simulate", "--model", MODEL, "--cluster", "4xH100", "--workload", args["workload"],
               "--duration-s", "60", "--load-profile", args["load_profile"], "--autoscale", args["autoscaler"]])
    out = capsys.readouterr().out
    assert rc == 0
    api = simulate_serving(MODEL, "4xH100", **args)
    e = api.scaling.entries.iloc[0]
    assert f"{e.gpu_hours:.4g} GPU-h, ${e.cost_usd:.4g}" in out
    assert f"{api.summary['delayed_by_cold_start']} requests delayed by cold starts" in out


@pytest.mark.parametrize("flags,needle", [
    (["--autoscale", "utilization:target=2,max=4"], "target"),
    (["--autoscale", "queue:target=1,min=3,max=2"], "min_replicas 3 above max_replicas 2"),
    (["--load-profile", "diurnal:peak=1,trough=-1"], "trough_rps"),
    (["--load-profile", "diurnal:peak=inf,trough=1"], "peak"),
])
def test_cli_bad_input_exit_2(flags: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    from fleetsim.cli import main

    rc = main(["simulate", "--model", MODEL, "--cluster", "4xH100", "--duration-s", "5", *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1
