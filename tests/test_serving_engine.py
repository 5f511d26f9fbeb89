"""Serving engine against hand computations and queueing closed forms.

These scenarios use ``AffineStepTimer`` (iteration time = base + per-token x tokens) so
every event time can be computed by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fleetsim.hardware.cluster import load_cluster
from fleetsim.sim.serving.cluster import ServingSimulation
from fleetsim.sim.serving.config import (
    Deployment,
    EngineConfig,
    PoolDeployment,
    StaticScheduler,
    VllmScheduler,
)
from fleetsim.sim.serving.results import collect
from fleetsim.sim.serving.steptime import AffineStepTimer
from fleetsim.workloads.requests import Request, RequestStream

MODEL = "llama-3.1-8b"


def _run(reqs, engine: EngineConfig, timer, replicas: int = 1, cluster: str = "1xH100", **dep):
    deployment = Deployment(pools=(PoolDeployment(gpu="H100", replicas=replicas, engine=engine),), **dep)
    stream = reqs if isinstance(reqs, RequestStream) else RequestStream.from_requests(reqs)
    sim = ServingSimulation(MODEL, load_cluster(cluster), deployment, stream, seed=0,
                            timer_factory=lambda plan: timer)
    sim.run()
    return sim, collect(sim, None, None)


def test_exact_event_log_two_requests() -> None:
    # base 10 ms + 1 ms per new token; budget 100 tokens per iteration, chunked prefill.
    timer = AffineStepTimer(base_s=0.010, per_token_s=0.001)
    eng = EngineConfig(scheduler=VllmScheduler(max_num_seqs=8, max_num_batched_tokens=100))
    reqs = [Request(0, 0.0, 150, 3), Request(1, 0.005, 20, 2)]
    for ff in (True, False):
        sim, raw = _run(reqs, eng.model_copy(update={"fast_forward": ff}), timer)
        # it1 [0, 0.110]: A prefills 100 tokens.  it2 [0.110, 0.190]: A's last 50 + B's 20
        # (both emit token 1).  it3 [0.190, 0.202]: 2 decodes (B done).  it4 [0.202, 0.213].
        ends = np.frombuffer(sim.engines[0].iter_end)
        np.testing.assert_allclose(ends, [0.110, 0.190, 0.202, 0.213], rtol=0, atol=1e-12)
        r = raw.requests.set_index("req_id")
        assert r.loc[0, "queue_delay_s"] == pytest.approx(0.0, abs=1e-12)
        assert r.loc[0, "ttft_s"] == pytest.approx(0.190, abs=1e-12)
        assert r.loc[0, "e2e_s"] == pytest.approx(0.213, abs=1e-12)
        assert r.loc[0, "tpot_s"] == pytest.approx((0.213 - 0.190) / 2, abs=1e-12)
        assert r.loc[0, "itl_max_s"] == pytest.approx(0.012, abs=1e-12)
        assert r.loc[1, "queue_delay_s"] == pytest.approx(0.105, abs=1e-12)
        assert r.loc[1, "ttft_s"] == pytest.approx(0.185, abs=1e-12)
        assert r.loc[1, "e2e_s"] == pytest.approx(0.197, abs=1e-12)
        assert list(r["generated_tokens"]) == [3, 2]
        ts = raw.timeseries
        assert list(ts["batch_size"]) == [1, 2, 2, 1]
        assert list(ts["tokens"]) == [100, 70, 2, 1]


def test_static_batching_event_log() -> None:
    # Static batches of 2: {A, B} prefill together, decode until both finish, then C.
    timer = AffineStepTimer(base_s=0.010, per_token_s=0.001)
    eng = EngineConfig(scheduler=StaticScheduler(max_num_seqs=2))
    reqs = [Request(0, 0.0, 10, 2), Request(1, 0.0, 30, 4), Request(2, 0.001, 5, 1)]
    sim, raw = _run(reqs, eng, timer)
    # it1 [0, 0.050] prefill 40 tokens; decodes: 2 seqs 0.012 -> 0.062 (A done);
    # B alone 0.011 x 2 -> 0.084; then C prefill 5 tokens 0.015 -> 0.099.
    ends = np.frombuffer(sim.engines[0].iter_end)
    np.testing.assert_allclose(ends, [0.050, 0.062, 0.073, 0.084, 0.099], atol=1e-12)
    r = raw.requests.set_index("req_id")
    assert r.loc[2, "queue_delay_s"] == pytest.approx(0.083, abs=1e-12)
    assert r.loc[2, "e2e_s"] == pytest.approx(0.098, abs=1e-12)


def test_md1_mean_waiting_time() -> None:
    # One request at a time, each a single 2000-token prefill emitting its only token: a
    # deterministic service time S; Poisson arrivals at rho = 0.7 -> M/D/1.
    timer = AffineStepTimer(base_s=0.002, per_token_s=1e-5)
    s = 0.002 + 2000 * 1e-5
    rho = 0.7
    n = 30_000
    rng = np.random.default_rng(7)
    t = np.cumsum(rng.exponential(s / rho, n))
    stream = RequestStream(arrival_s=t, prompt_tokens=np.full(n, 2000), output_tokens=np.ones(n, int))
    eng = EngineConfig(scheduler=VllmScheduler(max_num_seqs=1, max_num_batched_tokens=4096))
    _, raw = _run(stream, eng, timer)
    wq = raw.requests["queue_delay_s"].mean()
    expected = rho * s / (2 * (1 - rho))
    assert wq == pytest.approx(expected, rel=0.05)
    np.testing.assert_allclose(raw.requests["e2e_s"] - raw.requests["queue_delay_s"], s, rtol=1e-9)


def _random_stream(n: int, rate: float, seed: int) -> RequestStream:
    rng = np.random.default_rng(seed)
    return RequestStream(arrival_s=np.cumsum(rng.exponential(1 / rate, n)),
                         prompt_tokens=rng.integers(1, 3000, n), output_tokens=rng.integers(1, 400, n))


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_conservation_and_kv_capacity_under_pressure(mode: str) -> None:
    timer = AffineStepTimer(base_s=0.005, per_token_s=2e-5, per_ctx_s=1e-8)
    eng = EngineConfig(gpu_memory_utilization=0.215, preemption_mode=mode,
                       scheduler=VllmScheduler(max_num_seqs=64))
    stream = _random_stream(600, 20.0, 1)
    sim, raw = _run(stream, eng, timer)
    req = raw.requests
    assert sim.engines[0].kv.num_blocks < 1000  # tight: preemptions must happen
    assert req["preemptions"].sum() > 0
    assert len(req) == len(stream)
    assert (req["finished"] | req["rejected"]).all()
    fin = req[req["finished"]]
    assert (fin["generated_tokens"] == fin["output_tokens"]).all()
    ts = raw.timeseries
    assert (ts["kv_used_blocks"] <= ts["kv_capacity_blocks"]).all()
    kv = sim.engines[0].kv
    assert kv.free + len(kv.evictable) == kv.num_blocks  # everything returned at the end


@pytest.mark.parametrize("case", ["recompute", "swap", "static", "prefix"])
def test_fast_path_equals_slow_path(case: str) -> None:
    timer = AffineStepTimer(base_s=0.004, per_token_s=3e-5, per_ctx_s=2e-8, per_seq_s=1e-5)
    stream = _random_stream(400, 15.0, 3)
    knobs: dict = dict(gpu_memory_utilization=0.22,
                       scheduler=VllmScheduler(max_num_seqs=32, max_num_batched_tokens=1024))
    router = "least_outstanding_tokens"
    if case == "swap":
        knobs["preemption_mode"] = "swap"
    elif case == "static":
        knobs = dict(scheduler=StaticScheduler(max_num_seqs=16))
    elif case == "prefix":
        knobs["enable_prefix_caching"] = True
        router = "prefix_aware"
        rng = np.random.default_rng(4)
        n = 400
        stream = RequestStream(arrival_s=np.cumsum(rng.exponential(1 / 15.0, n)),
                               prompt_tokens=rng.integers(600, 3000, n), output_tokens=rng.integers(1, 400, n),
                               prefix_id=rng.integers(0, 5, n), prefix_tokens=np.full(n, 512))
    out = {}
    for ff in (True, False):
        eng = EngineConfig(fast_forward=ff, **knobs)
        out[ff] = _run(stream, eng, timer, replicas=2, cluster="2xH100", router=router)[1].requests
    a, b = out[True], out[False]
    if case in ("recompute", "swap"):
        assert a["preemptions"].sum() > 0
    if case == "prefix":
        assert a["prefix_hit_tokens"].sum() > 0
    for col in ("queue_delay_s", "ttft_s", "tpot_s", "e2e_s", "itl_p50_s", "itl_p99_s"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=0, equal_nan=True)
    for col in ("replica", "preemptions", "prefix_hit_tokens", "generated_tokens"):
        assert (a[col] == b[col]).all()


def test_lone_request_ttft_is_prefill_time() -> None:
    timer = AffineStepTimer(base_s=0.003, per_token_s=1e-4)
    eng = EngineConfig(scheduler=VllmScheduler(max_num_batched_tokens=8192))
    _, raw = _run([Request(0, 1.0, 700, 5)], eng, timer)
    r = raw.requests.iloc[0]
    assert r["ttft_s"] == pytest.approx(timer.step_time(0, 0, [700], [700], 1), abs=1e-12)
    assert r["tpot_s"] == pytest.approx(float(timer.decode_times(1, np.array([701.0]))[0]), abs=1e-12)


def test_queue_limit_rejects_and_reports() -> None:
    timer = AffineStepTimer(base_s=0.010, per_token_s=1e-4)
    eng = EngineConfig(scheduler=VllmScheduler(max_num_seqs=1))
    reqs = [Request(i, 0.001 * i, 100, 50) for i in range(6)]
    sim, raw = _run(reqs, eng, timer, queue_limit=2)
    req = raw.requests
    # Request 0 runs; 1 and 2 wait; 3, 4, 5 find two waiting and are rejected.
    assert list(req["rejected"]) == [False, False, False, True, True, True]
    assert raw.summary["rejected"] == 3
    assert raw.summary["finished"] == 3
    assert req.loc[3, "reject_reason"].startswith("queue limit")


def test_oversized_request_is_rejected_not_hung() -> None:
    timer = AffineStepTimer(base_s=0.01)
    eng = EngineConfig(gpu_memory_utilization=0.215)
    sim, raw = _run([Request(0, 0.0, 100, 10), Request(1, 0.0, 10_000_000, 10)], eng, timer)
    req = raw.requests.set_index("req_id")
    assert req.loc[0, "finished"] and req.loc[1, "rejected"]
    assert "KV blocks" in req.loc[1, "reject_reason"]


def test_time_cap_reports_unfinished() -> None:
    timer = AffineStepTimer(base_s=0.5)
    eng = EngineConfig(scheduler=VllmScheduler(max_num_seqs=1))
    reqs = [Request(i, 0.0, 10, 20) for i in range(4)]
    _, raw = _run(reqs, eng, timer, max_sim_time_s=15.0)
    s = raw.summary
    assert s["finished"] == 1 and s["unfinished"] == 3 and s["overloaded"] is True
    assert math.isnan(raw.requests.loc[3, "e2e_s"])


def test_closed_loop_clients_issue_after_completion() -> None:
    timer = AffineStepTimer(base_s=0.01, per_token_s=1e-4)
    # Two clients, three requests each, think 0.5 s after each completion.
    reqs = [Request(i, 0.0, 100, 10, client_id=i % 2, think_s=0.0 if i < 2 else 0.5) for i in range(6)]
    stream = RequestStream.from_requests(reqs)
    _, raw = _run(stream, EngineConfig(), timer)
    req = raw.requests.set_index("req_id")
    assert req["finished"].all()
    for c in (0, 1):
        rows = req[req.index % 2 == c].sort_index()
        finish = (rows["arrival_s"] + rows["e2e_s"]).to_numpy()
        np.testing.assert_allclose(rows["arrival_s"].to_numpy()[1:], finish[:-1] + 0.5, atol=1e-12)


def test_swap_preemption_is_priced_on_the_host_link() -> None:
    from fleetsim.hardware.catalog import get_gpu, get_link
    from fleetsim.workloads.memory import kv_cache_bytes_per_token, memory_breakdown
    from fleetsim.workloads.models import load_model
    from fleetsim.workloads.parallel import ParallelConfig

    m, g = load_model(MODEL), get_gpu("H100")
    mb = memory_breakdown(m, g, ParallelConfig(), "bf16", None, 0.9, 8192)
    block_bytes = kv_cache_bytes_per_token(m, ParallelConfig(), "bf16") * 16
    reserve = mb.usable_bytes - mb.weight_bytes - 10.5 * block_bytes  # exactly 10 KV blocks
    eng = EngineConfig(activation_reserve_bytes=reserve, preemption_mode="swap",
                       scheduler=VllmScheduler(max_num_seqs=2))
    timer = AffineStepTimer(base_s=0.01, per_token_s=1e-4)
    sim, raw = _run([Request(0, 0.0, 48, 60), Request(1, 0.001, 48, 60)], eng, timer)
    assert sim.engines[0].kv.num_blocks == 10
    req = raw.requests
    assert req["finished"].all() and req["preemptions"].tolist() == [0, 1]
    ts = raw.timeseries
    affine = (ts["iterations"] * 0.01 + ts["tokens"] * 1e-4).sum()
    swap_s = float((ts["end_s"] - ts["start_s"]).sum() - affine)
    host = get_link("PCIe5-x16")
    per_block = block_bytes / (host.bandwidth_bps * host.efficiency)
    blocks = (swap_s - 2 * host.latency_s) / (2 * per_block)  # out and back in
    assert blocks == pytest.approx(round(blocks), abs=1e-6) and 3 <= round(blocks) <= 5


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_kv_block_accounting_invariant_every_iteration(mode: str, monkeypatch) -> None:
    from fleetsim.sim.serving.engine import Engine

    checked = []
    original = Engine._log_segment

    def checking(self, *args, **kwargs):  # after every iteration or decode run
        kv = self.kv
        held = sum(s.held_blocks() for s in self.running)
        assert kv.used() == held  # no prefix sharing: every held block counted once
        for s in self.running:
            assert s.held_blocks() >= kv.blocks_for(s.computed)
        assert 0 <= kv.free <= kv.num_blocks
        checked.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "_log_segment", checking)
    timer = AffineStepTimer(base_s=0.005, per_token_s=2e-5, per_ctx_s=1e-8)
    eng = EngineConfig(gpu_memory_utilization=0.215, preemption_mode=mode,
                       scheduler=VllmScheduler(max_num_seqs=64, max_num_batched_tokens=512))
    sim, raw = _run(_random_stream(300, 20.0, 9), eng, timer)
    assert raw.requests["preemptions"].sum() > 0 and len(checked) > 100
