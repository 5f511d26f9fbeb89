"""Energy in the serving simulator against its oracles: the step timer's energy against
``price_iteration``, energy conservation per replica and pool, idle draw, hand-computed
energy and budget overrun with a constant-power timer, power caps, determinism, bad input."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from fleetsim.calibration import get_cost_model
from fleetsim.calibration.power import power_params, power_state
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.cluster import energy_price, load_cluster, node_host_power_w
from fleetsim.hardware.errors import ConfigError
from fleetsim.sim.serving.cluster import ServingSimulation
from fleetsim.sim.serving.config import Deployment, EngineConfig, PoolDeployment
from fleetsim.sim.serving.energy import J_PER_KWH
from fleetsim.sim.serving.results import collect
from fleetsim.sim.serving.steptime import AffineStepTimer, GraphStepTimer
from fleetsim.workloads.models import load_model
from fleetsim.workloads.parallel import ParallelConfig, Seq
from fleetsim.workloads.requests import Request, RequestStream

HAS_CAP = importlib.util.find_spec("fleetsim.calibration.power_cap") is not None
MODEL = "llama-3.1-8b"


def _timer(name: str, gpu: str, par: dict, dtype: str = "bf16", engine: str = "vllm",
           cap: float | None = None) -> GraphStepTimer:
    from fleetsim.calibration.engines import get_engine

    g = get_gpu(gpu)
    return GraphStepTimer(load_model(name), g, ParallelConfig(**par), get_cost_model(g), dtype=dtype,
                          sched_overhead_s=1e-3, engine=get_engine(engine), power=power_state(g, cap))


def _random_batch(rng: np.random.Generator):
    n_dec = int(rng.integers(0, 200))
    ctx = rng.integers(1, 6000, n_dec)
    n_pre = int(rng.integers(0, 4)) if n_dec else int(rng.integers(1, 4))
    q = rng.integers(1, 3000, n_pre)
    c = rng.integers(0, 4000, n_pre)
    emits = rng.random(n_pre) < 0.7
    batch = [Seq(1, int(x)) for x in ctx] + [Seq(int(a), int(b), bool(e)) for a, b, e in zip(q, c, emits, strict=True)]
    return batch, n_dec, int((ctx + 1).sum()), list(q), list(q + c), int(emits.sum())


@pytest.mark.parametrize("case", [("llama-3.1-8b", "H100", dict(tp=1)), ("mixtral-8x7b", "H200", dict(tp=2, ep=2)),
                                  ("llama-3.1-70b", "H100", dict(tp=4, pp=2))], ids=lambda c: c[0])
def test_surrogate_energy_matches_price_iteration(case) -> None:
    """Same tolerance as the time surrogate (tests/test_serving_steptime.py: 2%)."""
    timer = _timer(*case)
    rng = np.random.default_rng(11)
    worst = 0.0
    for _ in range(20):
        batch, n_dec, dec_ctx, q, kv, sampled = _random_batch(rng)
        direct = timer.direct_cost(batch)
        if not q:
            t, e = (float(x[0]) for x in timer.decode_costs(n_dec, np.array([float(dec_ctx)])))
        else:
            t, e = timer.step_cost(n_dec, dec_ctx, q, kv, sampled)
        assert t == pytest.approx(direct.time_s, rel=0.02)
        worst = max(worst, abs(e / direct.energy_j - 1))
    assert worst < 0.02


def test_direct_path_energy_is_exact() -> None:
    """An engine without host overlap prices each batch directly: energy equals price_iteration's."""
    timer = _timer("llama-3.1-8b", "H100", dict(tp=1), engine="torch-eager")
    rng = np.random.default_rng(3)
    for _ in range(4):
        batch, n_dec, dec_ctx, q, kv, sampled = _random_batch(rng)
        if not q:
            continue
        dec = [Seq(1, max(0, k - 1)) for k in _spread(dec_ctx, n_dec)] if n_dec else []
        pre = [Seq(a, b - a, i < sampled) for i, (a, b) in enumerate(zip(q, kv, strict=True))]
        t, e = timer.step_cost(n_dec, dec_ctx, q, kv, sampled)
        c = timer.direct_cost(dec + pre)
        assert (t, e) == (c.time_s, c.energy_j)


def _spread(total: int, n: int) -> tuple[int, ...]:
    base, extra = divmod(total, n)
    return (base + 1,) * extra + (base,) * (n - extra)


def test_scheduler_time_is_drawn_at_gap_power() -> None:
    """Two timers that differ only in scheduler time differ in energy by gap_w x that time."""
    g = get_gpu("H100")
    a = GraphStepTimer(load_model(MODEL), g, ParallelConfig(), get_cost_model(g), sched_overhead_s=1e-3)
    b = GraphStepTimer(load_model(MODEL), g, ParallelConfig(), get_cost_model(g), sched_overhead_s=4e-3)
    ta, ea = (float(x[0]) for x in a.decode_costs(16, np.array([16 * 900.0])))
    tb, eb = (float(x[0]) for x in b.decode_costs(16, np.array([16 * 900.0])))
    assert tb - ta == pytest.approx(3e-3, rel=1e-9)
    assert eb - ea == pytest.approx(3e-3 * power_state(g).gap_w(), rel=1e-9)


def _sim(reqs, *, replicas: int = 1, cluster: str = "1xH100", timer=None, engine: EngineConfig | None = None,
         **dep):
    eng = engine or EngineConfig()
    deployment = Deployment(pools=(PoolDeployment(gpu="H100", replicas=replicas, engine=eng),), **dep)
    cl = cluster if not isinstance(cluster, str) else load_cluster(cluster)
    sim = ServingSimulation(MODEL, cl, deployment, RequestStream.from_requests(reqs), seed=0,
                            timer_factory=None if timer is None else (lambda plan: timer))
    sim.run()
    return sim, collect(sim, None, None)


def _reqs(n: int, gap_s: float, prompt: int = 300, out: int = 40) -> list[Request]:
    return [Request(i, i * gap_s, prompt, out) for i in range(n)]


def test_energy_conservation_and_idle_replica() -> None:
    # round robin over 3 replicas of 4 GPUs used; requests 0, 3, 6 on replica 0 ... replica 2
    # gets requests 2, 5 only; a 4th GPU hosts no replica and idles.
    reqs = _reqs(6, 0.5)
    sim, raw = _sim(reqs, replicas=3, cluster="4xH100", router="round_robin")
    s, rep, pools = raw.summary, raw.replicas, raw.pools
    span = s["duration_s"]
    idle_w = power_params(get_gpu("H100")).idle_w
    for r in rep.itertuples():
        assert r.energy_j == pytest.approx(r.busy_energy_j + r.idle_energy_j, rel=1e-12)
        assert r.idle_energy_j == pytest.approx(idle_w * (span - r.busy_s), rel=1e-9)
        assert r.avg_power_w == pytest.approx(r.energy_j / span, rel=1e-12)
    # the request table's shares and the timeseries add up to the iterations' energy
    assert raw.requests["energy_j"].sum() == pytest.approx(rep["busy_energy_j"].sum(), rel=1e-9)
    assert raw.timeseries["energy_j"].sum() == pytest.approx(rep["busy_energy_j"].sum(), rel=1e-9)
    # pool = replicas + the unused GPU at idle; the power table integrates to it
    unused = idle_w * span
    assert pools["energy_j"].iloc[0] == pytest.approx(rep["energy_j"].sum() + unused, rel=1e-9)
    width = np.diff(np.append(raw.power["start_s"].to_numpy(), raw.power["start_s"].iloc[0] + span))
    assert float((raw.power["power_w"] * width).sum()) == pytest.approx(s["energy_j"], rel=1e-9)
    host = node_host_power_w(sim.cluster.pools[0].node)
    assert s["energy_facility_j"] == pytest.approx((s["energy_j"] + host * span) * sim.cluster.pue, rel=1e-12)
    assert s["energy_cost_usd"] == pytest.approx(s["energy_facility_j"] / J_PER_KWH * energy_price(sim.cluster))
    assert s["avg_power_w"] == pytest.approx(s["energy_j"] / span, rel=1e-12)
    assert 4 * idle_w < s["avg_power_w"] < s["peak_power_w"] <= 4 * 700
    assert s["j_per_output_token"] == pytest.approx(s["energy_j"] / raw.requests["generated_tokens"].sum())
    assert s["j_per_request"] == pytest.approx(s["energy_j"] / 6)


def test_replica_without_work_draws_idle_power_exactly() -> None:
    # least outstanding tokens: each request arrives after the previous one finished, so both
    # go to replica 0 (ties to the lowest index) and replica 1 never runs an iteration.
    sim, raw = _sim(_reqs(2, 5.0), replicas=2, cluster="2xH100")
    rep = raw.replicas.set_index("replica")
    idle_w = power_params(get_gpu("H100")).idle_w
    assert rep.loc[1, "iterations"] == 0
    assert rep.loc[1, "busy_energy_j"] == 0.0
    assert rep.loc[1, "energy_j"] == idle_w * raw.summary["duration_s"]


def test_constant_power_timer_by_hand_and_power_budget() -> None:
    """One request on one GPU with an affine timer at constant P: energy P x busy + idle x
    rest; with a budget between the idle and busy facility draw, the seconds over budget are
    the busy seconds."""
    p_w, idle_w = 500.0, power_params(get_gpu("H100")).idle_w
    cl = load_cluster("1xH100")
    host = node_host_power_w(cl.pools[0].node)
    budget = (host + 0.5 * (p_w + idle_w)) * 1.2
    cl = cl.model_copy(update={"pue": 1.2, "power_budget_w": budget})
    timer = AffineStepTimer(base_s=0.01, per_token_s=1e-4, power_w=p_w)
    reqs = [Request(0, 0.0, 100, 5), Request(1, 3.0, 100, 5)]
    sim, raw = _sim(reqs, cluster=cl, timer=timer)
    busy = 2 * (0.01 + 1e-4 * 100) + 8 * (0.01 + 1e-4)  # two prefills, 4 decodes each
    s = raw.summary
    assert raw.replicas["busy_s"].iloc[0] == pytest.approx(busy, rel=1e-12)
    span = s["duration_s"]
    assert s["energy_j"] == pytest.approx(p_w * busy + idle_w * (span - busy), rel=1e-12)
    assert s["peak_power_w"] == pytest.approx(p_w, rel=1e-12)
    assert s["peak_facility_power_w"] == pytest.approx((p_w + host) * 1.2, rel=1e-12)
    assert s["power_budget_exceeded"] is True
    assert s["power_budget_exceeded_s"] == pytest.approx(busy, rel=1e-9)
    shares = raw.requests["energy_j"].to_numpy()
    assert shares.sum() == pytest.approx(p_w * busy, rel=1e-12)
    assert shares[0] == pytest.approx(shares[1], rel=1e-12)


def _api(**kw):
    from fleetsim.serving import simulate_serving

    return simulate_serving(MODEL, "1xH100", "azure-conv", num_requests=60, seed=2, **kw)


def test_cap_at_tdp_equals_uncapped_and_runs_are_deterministic() -> None:
    a = _api()
    b = _api(engine=EngineConfig(power_cap_w=700.0))
    c = _api()
    for k in ("energy_j", "energy_facility_j", "peak_power_w", "ttft_p50_s", "tpot_p50_s", "j_per_output_token"):
        assert a.summary[k] == b.summary[k] == c.summary[k]
    assert a.requests["energy_j"].equals(c.requests["energy_j"])
    assert a.power.equals(c.power)


@pytest.mark.skipif(not HAS_CAP, reason="fleetsim.calibration.power_cap (the clock model) is not on this branch")
def test_lower_cap_is_never_faster_and_never_draws_more() -> None:
    full = _timer("llama-3.1-8b", "H100", dict(tp=1))
    capped = _timer("llama-3.1-8b", "H100", dict(tp=1), cap=350.0)
    for n, c in ((1, 500.0), (64, 64 * 2000.0), (256, 256 * 1000.0)):
        tf, ef = (float(x[0]) for x in full.decode_costs(n, np.array([c])))
        tc, ec = (float(x[0]) for x in capped.decode_costs(n, np.array([c])))
        assert tc >= tf
        assert ec / tc <= ef / tf + 1e-9
    tf, ef = full.step_cost(0, 0, [4096], [4096], 1)
    tc, ec = capped.step_cost(0, 0, [4096], [4096], 1)
    assert tc >= tf and ec / tc <= ef / tf + 1e-9


def test_bad_power_input_is_one_line() -> None:
    with pytest.raises(ConfigError, match="power_cap_w"):
        EngineConfig(power_cap_w=-5)
    with pytest.raises(ConfigError, match=r"power_cap_w=100: H100-SXM accepts power limits from 200 W to 700 W"):
        _api(engine=EngineConfig(power_cap_w=100))


@pytest.mark.parametrize("flags, words", [(["--power-cap-w", "100"], "--power-cap-w=100"),
                                          (["--power-cap-w", "900"], "--power-cap-w=900"),
                                          (["--pue", "0.9"], "--pue"), (["--energy-price", "-1"], "--energy-price")])
def test_cli_bad_power_flags_exit_2(flags, words, capsys: pytest.CaptureFixture[str]) -> None:
    from fleetsim.cli import main

    try:
        rc = main(["simulate", "--model", MODEL, "--cluster", "1xH100", "--num-requests", "5", *flags])
    except SystemExit as e:
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_cli_prints_the_api_energy_figures(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    import gzip
    import json

    from fleetsim.cli import main
    from fleetsim.cli.simulate import energy_line

    rc = main(["simulate", "--model", MODEL, "--cluster", "1xH100", "--workload", "azure-conv",
               "--num-requests", "60", "--seed", "2", "--pue", "1.25", "--energy-price", "0.1",
               "--out", str(tmp_path / "o")])
    assert rc == 0
    out = capsys.readouterr().out
    cl = load_cluster("1xH100").model_copy(update={"pue": 1.25, "energy_price_usd_per_kwh": 0.1})
    res = _api_cluster(cl)
    assert energy_line(res) in out
    assert f"{res.summary['j_per_output_token']:.4g} J/output token" in out
    assert not math.isnan(res.summary["energy_cost_usd"])
    trace = json.loads(gzip.decompress((tmp_path / "o" / "trace.json.gz").read_bytes()))
    power = [e for e in trace["traceEvents"] if e.get("ph") == "C" and e["name"] == "power_w"]
    assert len(power) == len(res.power)
    assert power[0]["args"]["W"] == pytest.approx(float(res.power["power_w"].iloc[0]))


def _api_cluster(cl):
    from fleetsim.serving import simulate_serving

    return simulate_serving(MODEL, cl, "azure-conv", num_requests=60, seed=2)


def test_scalar_kernel_power_equals_power_state() -> None:
    """The step timer's few-operator float path equals ``PowerState.kernels`` (the owner)."""
    timer = _timer("llama-3.1-8b", "H100", dict(tp=1))
    ops = [op for op in timer._ops([Seq(700, 300), Seq(1, 900), Seq(40, 0)], None)][:6]
    t = np.array([1e-5, 3e-4, 2e-6, 0.0, 5e-5, 1e-3])[: len(ops)]
    sec, joules = timer._kernels_scalar(ops, t)
    flops = np.array([op.flops for op in ops], float)
    moved = np.array([op.bytes_moved for op in ops], float)
    from fleetsim.calibration.power import op_peaks

    slow, watts = timer.power.kernels(timer.gpu, flops, moved, op_peaks(ops, timer.gpu), t)
    counts = np.array([op.count for op in ops], float)
    np.testing.assert_allclose(sec, t * slow * counts, rtol=1e-14)
    np.testing.assert_allclose(joules, t * slow * counts * watts, rtol=1e-12)


def test_two_pools_add_up() -> None:
    from fleetsim.serving import simulate_serving

    res = simulate_serving(MODEL, "1xH100+1xH200", "azure-conv", num_requests=40, seed=1)
    s, pools = res.summary, res.pools
    assert len(pools) == 2
    assert s["energy_j"] == pytest.approx(pools["energy_j"].sum(), rel=1e-12)
    assert max(pools["peak_power_w"]) <= s["peak_power_w"] <= pools["peak_power_w"].sum() + 1e-9
    span = s["duration_s"]
    for pi, grp in res.power.groupby("pool"):
        width = np.diff(np.append(grp["start_s"].to_numpy(), grp["start_s"].iloc[0] + span))
        assert float((grp["power_w"] * width).sum()) == pytest.approx(pools["energy_j"].iloc[pi], rel=1e-9)
    assert s["pool0_avg_power_w"] * span + s["pool1_avg_power_w"] * span == pytest.approx(s["energy_j"])
