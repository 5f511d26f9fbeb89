"""Latency intervals by scaling iteration times, checked by re-simulating with scaled times."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fleetsim.hardware.cluster import load_cluster
from fleetsim.sim.serving.cluster import ServingSimulation
from fleetsim.sim.serving.config import Deployment, EngineConfig, PoolDeployment, VllmScheduler
from fleetsim.sim.serving.results import collect
from fleetsim.sim.serving.steptime import AffineStepTimer
from fleetsim.workloads.requests import RequestStream


def _p50(gap_s: float, k: float) -> tuple[float, float]:
    """(TTFT p50, TPOT p50) of 40 requests spaced ``gap_s`` apart, iteration times x ``k``."""
    n = 40
    rng = np.random.default_rng(3)
    stream = RequestStream(arrival_s=np.arange(n) * gap_s, prompt_tokens=rng.integers(100, 800, n),
                           output_tokens=rng.integers(5, 30, n))
    dep = Deployment(pools=(PoolDeployment(gpu="H100", replicas=1, engine=EngineConfig(
        scheduler=VllmScheduler(max_num_seqs=8, max_num_batched_tokens=1024))),))
    timer = AffineStepTimer(base_s=0.005 * k, per_token_s=2e-5 * k, per_ctx_s=1e-7 * k)
    sim = ServingSimulation("llama-3.1-8b", load_cluster("1xH100"), dep, stream, seed=0,
                            timer_factory=lambda plan: timer)
    sim.run()
    req = collect(sim, None, None).requests
    return float(req["ttft_s"].median()), float(req["tpot_s"].median())


@pytest.mark.parametrize("k", [math.exp(-0.06), math.exp(0.12)])
def test_light_load_latency_scales_exactly(k: float) -> None:
    base, scaled = _p50(10.0, 1.0), _p50(10.0, k)  # requests never overlap
    assert scaled == pytest.approx((base[0] * k, base[1] * k), rel=1e-9)


def test_under_load_the_scaled_upper_end_understates() -> None:
    k = math.exp(0.12)
    base, scaled = _p50(0.02, 1.0), _p50(0.02, k)  # a queue forms
    assert scaled[0] > base[0] * k  # slower iterations also wait longer
