"""The compressed replay against full simulation of a day's diurnal shape."""

from __future__ import annotations

import numpy as np
import pytest
from fleetsim.hardware.errors import ConfigError
from fleetsim.sim.serving.autoscale import AutoscaleConfig
from fleetsim.workloads.profile import PiecewiseProfile

from fleetsim.capacity import profile_requests
from fleetsim.replay import replay_compressed
from fleetsim.serving import (
    Deployment,
    EngineConfig,
    PoolDeployment,
    VllmScheduler,
    simulate_serving,
)

WL = "poisson:rate=1,isl=1024,osl=256"
SLO = {"ttft_slo_s": 0.3, "tpot_slo_s": 0.03}
CAPACITY_RPS = 1.875
"""``measure_capacity`` of this replica (llama-3.1-8b, one H100, max_num_seqs 8) for WL and SLO
with 400 requests (re-derived by ``test_capacity_is_measured``)."""


def _dep() -> Deployment:
    return Deployment(pools=(PoolDeployment(gpu="H100-SXM", engine=EngineConfig(scheduler=VllmScheduler(max_num_seqs=8))),))


def test_compressed_replay_matches_full_simulation_on_a_day_shape() -> None:
    """A day's cosine shape (trough 0.6, peak 4 replicas' capacity) with one minute per hour,
    so the full simulation stays a test (6,375 requests): GPU-hours agree within 2% and SLO
    attainment within 0.01 (measured: 0.2% and 0.0013)."""
    hours = 0.5 * (1 + np.cos(2 * np.pi * (np.arange(24) - 14) / 24))
    prof = PiecewiseProfile(interval_s=60, rates_rps=tuple((CAPACITY_RPS * (0.6 + 3.4 * hours)).tolist()))
    cfg = AutoscaleConfig(policy={"kind": "rate", "capacity_rps": CAPACITY_RPS, "target": 0.9}, min_replicas=1,
                          max_replicas=8, interval_s=30, scale_down_delay_s=60, cold_start_s=20)
    full = simulate_serving("llama-3.1-8b", "8xH100", WL, _dep(), duration_s=1440, load_profile=prof,
                            autoscaler=cfg, slo=SLO)
    stream, _ = profile_requests(WL, prof, 0, 1440.0, None)
    fast = replay_compressed(stream.arrival_s, 1440.0, cfg, CAPACITY_RPS, 1)
    assert fast.summary["gpu_hours"] == pytest.approx(full.summary["gpu_hours"], rel=0.02)
    assert abs(fast.summary["slo_attainment"] - full.summary["goodput_share"]) < 0.01
    assert full.summary["cold_starts"] >= 3


def test_compressed_replay_refuses_latency_policies() -> None:
    cfg = AutoscaleConfig(policy={"kind": "slo", "ttft_s": 1}, max_replicas=2, cold_start_s=1)
    with pytest.raises(ConfigError, match="needs full simulation"):
        replay_compressed(np.zeros(3), 100.0, cfg, 1.0, 1)


def test_capacity_is_measured() -> None:
    from fleetsim.replay import measure_capacity

    c = measure_capacity("llama-3.1-8b", "1xH100", _dep(), WL, SLO, num_requests=400, start_rps=2.0)
    assert c == pytest.approx(CAPACITY_RPS, rel=1e-12)
