"""Energy of a training step (``fleetsim.sim.training.energy``) and the power cap on it."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from fleetsim.calibration import get_cost_model
from fleetsim.calibration.power import power_params, power_state
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.cluster import energy_price, host_power_w, load_cluster
from fleetsim.hardware.errors import ConfigError
from fleetsim.sim.training.layer_ops import LayerCoster
from fleetsim.sim.training.placement import CollectivePricer
from fleetsim.sim.training.step import _optimizer, simulate_step

from fleetsim.cli import main
from fleetsim.training import build_train_job, estimate_train_step

HAS_CAP = importlib.util.find_spec("fleetsim.calibration.power_cap") is not None
needs_cap = pytest.mark.skipif(not HAS_CAP, reason="fleetsim.calibration.power_cap (the clock model) is absent")
MODEL = "llama-3.2-1b"
GPU = get_gpu("H100-SXM")


def _job(cluster: str = "2xH100-SXM", **kw: object):  # noqa: ANN202
    opts: dict = dict(global_batch=4, micro_batch=1, seq_len=1024, pp=2, execution="graph")
    opts.update(kw)
    return build_train_job(MODEL, cluster, **opts)


def test_layer_energy_is_each_kernel_at_its_occupancy_power() -> None:
    """Forward energy of a layer = sum over its operators of count x time x the occupancy
    model's demand (base + memory x u_mem + compute x u_compute), held by the limiter to
    ``limit_share x TDP`` on average over the layer pass, recomputed here by hand."""
    job = _job("1xH100-SXM", pp=1, global_batch=2)
    cost = get_cost_model(GPU)
    coster = LayerCoster(job, GPU, cost, CollectivePricer(job, GPU, cost))
    lt = coster.layer("dense", False)
    ops = list(coster._graph("dense", False).forward)
    t, _ = cost.op_times(ops, GPU)
    p = power_params(GPU)
    tt = np.asarray(t, float)
    flops = np.array([op.flops for op in ops], float)
    moved = np.array([op.bytes_moved for op in ops], float)
    peak = np.array([GPU.peak_flops.get(getattr(op, "dtype", "bf16"), GPU.peak_flops["bf16"]) for op in ops])
    demand = p.base_w + p.memory_w * np.clip(moved / tt / GPU.memory_bw_bps, 0, 1) \
        + p.compute_w * np.clip(flops / tt / peak, 0, 1)
    counts = np.array([op.count for op in ops], float)
    want = min(float((counts * tt * demand).sum()), p.limit_share * p.tdp_w * float((counts * tt).sum()))
    assert lt.fwd_j == pytest.approx(want, rel=1e-12)
    assert lt.fwd_s == pytest.approx(float((counts * np.asarray(t)).sum()), rel=1e-12)
    assert 0 < lt.fwd_j / lt.fwd_s <= GPU.tdp_w


def test_energy_conservation_by_hand_on_a_two_stage_pipeline() -> None:
    """Each stage GPU: m micro-batches of its layers' (and embedding / head) forward and
    backward kernel energy + the optimizer's + (step - kernel seconds) at gap power; the step
    is the sum over both stages (tp = dp = 1: one GPU per stage)."""
    job = _job()
    cost = get_cost_model(GPU)
    res = simulate_step(job, GPU, cost, record=False)
    coster = LayerCoster(job, GPU, cost, CollectivePricer(job, GPU, cost))
    lt = coster.layer("dense", False)
    (ef, efj), (eb, ebj) = coster.embedding_priced()
    (hf, hfj), (hb, hbj), _ = coster.head_priced()
    half, m = job.model.num_layers // 2, job.grad_accum
    gap_w = power_state(GPU).gap_w()
    total = 0.0
    for s, (extra_s, extra_j) in enumerate([(ef + eb, efj + ebj), (hf + hb, hfj + hbj)]):
        opt_s, opt_j, _ = _optimizer(job, GPU, cost, s, power_state(GPU))
        kernel_s = m * (half * (lt.fwd_s + lt.bwd_s) + extra_s) + opt_s
        kernel_j = m * (half * (lt.fwd_j + lt.bwd_j) + extra_j) + opt_j
        assert res.energy is not None
        assert res.energy.stage_kernel_s[s] == pytest.approx(kernel_s, rel=1e-9)
        assert res.energy.stage_kernel_j[s] == pytest.approx(kernel_j, rel=1e-9)
        total += kernel_j + (res.step_s - kernel_s) * gap_w
    assert res.energy.energy_j == pytest.approx(total, rel=1e-9)
    assert res.energy.energy_j == pytest.approx(res.energy.kernel_j + res.energy.gap_j, rel=1e-12)
    assert res.energy.gap_j > 0  # the pipeline bubble


def test_larger_bubble_has_more_gap_energy() -> None:
    """Same tokens per step on two stages: 2 micro-batches of 4 (bubble (p-1)/m = 1/2) idle
    longer at gap power than 8 micro-batches of 1 (1/8); the gap energy is at least the
    bubble of the busiest stage at gap power."""
    big = estimate_train_step(MODEL, "2xH100-SXM", global_batch=8, micro_batch=4, seq_len=1024, pp=2,
                              execution="graph", record_timeline=False)
    small = estimate_train_step(MODEL, "2xH100-SXM", global_batch=8, micro_batch=1, seq_len=1024, pp=2,
                                execution="graph", record_timeline=False)
    assert big.bubble_fraction > small.bubble_fraction
    assert big.gap_energy_j > small.gap_energy_j
    gap_w = power_state(GPU).gap_w()
    for est in (big, small):
        busy = max(est.result.stage_compute_s)
        assert est.gap_energy_j >= gap_w * est.bubble_fraction * busy * (1 - 1e-9)


def test_public_estimate_energy_figures() -> None:
    """Average power, energy per token, facility energy (host power x nodes, PUE) and the
    energy cost of N tokens, each recomputed from its definition."""
    cl = load_cluster("2xH100-SXM")
    est = estimate_train_step(MODEL, cl.model_copy(update={"pue": 1.25}), global_batch=4, seq_len=1024, pp=2,
                              record_timeline=False)
    tokens = 4 * 1024
    assert est.avg_power_w == pytest.approx(est.energy_j / est.time_s / 2)
    assert power_state(GPU).params.idle_w < est.avg_power_w < GPU.tdp_w
    assert est.j_per_token == pytest.approx(est.energy_j / tokens)
    host = host_power_w(cl.pools[0].node, cl.pools[0].gpus)
    assert est.num_nodes == 1
    assert est.energy_facility_j == pytest.approx((est.energy_j + host * est.time_s) * 1.25)
    n = 1e9
    assert est.energy_to_train_j(n) == pytest.approx(est.energy_facility_j * n / tokens)
    assert est.energy_cost_usd(n) == pytest.approx(est.energy_to_train_j(n) / 3.6e6 * energy_price(cl))
    c = est.train_cost(n)
    assert c["energy_j"] == est.energy_to_train_j(n)
    with pytest.raises(ConfigError, match="tokens"):
        est.energy_to_train_j(0)


def test_energy_is_deterministic() -> None:
    a = estimate_train_step(MODEL, "2xH100-SXM", global_batch=8, seq_len=1024, dp=2, record_timeline=False)
    b = estimate_train_step(MODEL, "2xH100-SXM", global_batch=8, seq_len=1024, dp=2, record_timeline=False)
    assert (a.energy_j, a.gap_energy_j, a.time_s) == (b.energy_j, b.gap_energy_j, b.time_s)


def test_cap_at_tdp_equals_uncapped_exactly() -> None:
    a = estimate_train_step(MODEL, "2xH100-SXM", global_batch=8, seq_len=1024, pp=2, record_timeline=False)
    b = estimate_train_step(MODEL, "2xH100-SXM", global_batch=8, seq_len=1024, pp=2, record_timeline=False,
                            power_cap_w=GPU.tdp_w)
    assert (a.time_s, a.energy_j) == (b.time_s, b.energy_j)
    assert b.power_cap_w is None and b.job.power_cap_w == GPU.tdp_w


@pytest.mark.parametrize("cap", [50.0, 701.0, float("nan")])
def test_bad_cap_is_one_line_naming_power_cap_w(cap: float) -> None:
    with pytest.raises(ConfigError, match="power_cap_w") as err:
        build_train_job(MODEL, "1xH100-SXM", global_batch=2, power_cap_w=cap)
    assert "\n" not in str(err.value)


def test_cli_bad_cap_exits_2_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--model", MODEL, "--cluster", "1xH100-SXM", "--global-batch", "2",
               "--power-cap-w", "100"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--power-cap-w" in err and "\n" not in err


def test_cli_prints_the_api_energy(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--model", MODEL, "--cluster", "2xH100-SXM", "--global-batch", "4", "--seq-len", "1024",
               "--pp", "2", "--tokens", "1e9"])
    out = capsys.readouterr().out
    assert rc == 0
    est = estimate_train_step(MODEL, "2xH100-SXM", global_batch=4, seq_len=1024, pp=2, record_timeline=False)
    lines = [line.strip() for line in out.splitlines()]

    def value(metric: str) -> float:
        return float(next(x for x in lines if x.startswith(metric)).split()[-2])

    assert value("energy per step (GPUs)") == pytest.approx(est.energy_j / 1e3, rel=1e-5)
    assert value("avg power per GPU") == pytest.approx(est.avg_power_w, rel=1e-5)
    assert value("energy cost") == pytest.approx(est.energy_cost_usd(1e9), rel=1e-5)


@needs_cap
def test_lower_cap_never_faster_and_never_draws_more() -> None:
    prev = None
    for cap in (700.0, 600.0, 500.0, 400.0, 300.0, 200.0):
        est = estimate_train_step(MODEL, "2xH100-SXM", global_batch=8, seq_len=1024, pp=2,
                                  record_timeline=False, power_cap_w=cap)
        assert est.avg_power_w <= cap
        if prev is not None:
            assert est.time_s >= prev.time_s
            assert est.avg_power_w <= prev.avg_power_w
        prev = est


@needs_cap
def test_compute_bound_training_slows_more_than_memory_bound_decode() -> None:
    from fleetsim.estimate import estimate_forward

    def train(cap: float | None) -> float:
        return estimate_train_step("llama-3.1-8b", "1xH100-SXM", global_batch=1, seq_len=2048,
                                   record_timeline=False, check_memory=False, power_cap_w=cap).time_s

    def decode(cap: float | None) -> float:
        return estimate_forward("llama-3.1-8b", "H100-SXM", (1, 1, 1024), power_cap_w=cap).time_s

    slow_train = train(400.0) / train(None)
    slow_decode = decode(400.0) / decode(None)
    assert slow_train > slow_decode >= 1.0
    assert slow_train > 1.05
