"""Training runs under failures: catalog rates, closed-form oracles, Young/Daly, spares, CLI."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from fleetsim.hardware.errors import ConfigError, SpecError
from fleetsim.hardware.failures import load_failures
from fleetsim.sim.reliability import (
    FailureProcess,
    RunSpec,
    StragglerSpec,
    checkpoint_cost,
    draw_max_slowdown,
    expected_max_slowdown,
    simulate_run,
    young_daly_interval_s,
)
from fleetsim.sim.reliability.run import RunOutcome

from fleetsim.reliability import (
    estimate_training_run,
    failure_processes,
    simulated_optimal_interval,
)


def _spec(**kw: object) -> RunSpec:
    base = dict(steps=10_000, step_s=2.0, nodes=4, gpus_per_node=8, gpus_per_replica=8,
                steps_per_checkpoint=300, checkpoint_blocking_s=7.0)
    base.update(kw)
    return RunSpec(**base)  # type: ignore[arg-type]


def _sums(o: RunOutcome) -> None:
    assert sum(o.by_kind.values()) == pytest.approx(o.wall_s, rel=1e-12)


def test_llama3_catalog_counts_and_rates() -> None:
    cat = load_failures("default")
    unexpected = [c for c in cat.causes if not c.planned]
    assert sum(c.count or 0 for c in unexpected) == 419  # Llama 3 Table 5
    assert sum(c.count or 0 for c in cat.causes) == 466  # 466 interruptions, 47 planned
    # the job-level rates of the exposure's own job give back the counts over 54 days
    procs = failure_processes(cat, 16384, 8, 8)
    for p, c in zip(procs, cat.causes, strict=True):
        assert p.rate_per_s * 1296 * 3600 == pytest.approx(c.count)
    assert 1 / sum(p.rate_per_s for p in procs) / 3600 == pytest.approx(1296 / 466)


def test_zero_failures_sync_is_steps_times_step_plus_checkpoints() -> None:
    s = _spec()
    o = simulate_run(s, 3)
    n_ck = math.ceil(10_000 / 300) - 1
    assert o.wall_s == pytest.approx(10_000 * 2.0 + n_ck * 7.0, rel=1e-12)
    assert o.checkpoints == n_ck
    _sums(o)


def test_zero_failures_async_adds_only_stalls_when_persist_is_longer() -> None:
    # k * step = 600 s of compute per cycle; persist 650 s -> 50 s wait before each later snapshot
    s = _spec(checkpoint_blocking_s=1.5, checkpoint_persist_s=650.0)
    o = simulate_run(s, 0)
    n_ck = math.ceil(10_000 / 300) - 1
    assert o.wall_s == pytest.approx(10_000 * 2.0 + n_ck * 1.5 + (n_ck - 1) * 50.0, rel=1e-12)
    _sums(o)


def test_deterministic_per_seed_and_buckets_sum_to_wall() -> None:
    procs = (FailureProcess(name="gpu", rate_per_s=1 / 3600, blast_nodes=1, repair_s=7200),
             FailureProcess(name="sw", rate_per_s=1 / 7200, blast_nodes=0, repair_s=0))
    s = _spec(steps=50_000, processes=procs, detection_s=60, restart_s=120, load_s=10, spare_nodes=1,
              elastic=True, checkpoint_persist_s=30)
    a, b, c = simulate_run(s, 5), simulate_run(s, 5), simulate_run(s, 6)
    assert a == b and a.wall_s != c.wall_s
    for o in (a, c):
        _sums(o)
        assert o.by_kind["useful"] == pytest.approx(50_000 * 2.0)
        assert sum(o.interruptions.values()) > 10


def test_young_daly_matches_simulated_optimum() -> None:
    # Young's assumptions: exponential failures, C << MTBF, negligible restart; 1 s steps
    mtbf, c = 3600.0, 10.0
    s = _spec(steps=2_000_000, step_s=1.0, checkpoint_blocking_s=c,
              processes=(FailureProcess(name="f", rate_per_s=1 / mtbf, blast_nodes=0, repair_s=0),))
    yd = young_daly_interval_s(c, mtbf)
    assert yd == pytest.approx(math.sqrt(2 * c * mtbf))
    best = simulated_optimal_interval(s, round(yd / 4), round(yd * 4), seeds=2)
    assert abs(best - yd) / yd < 0.06
    # exact optimum for exponential failures with no restart cost: minimise (e^(lam (tau + C)) - 1) / tau
    from scipy.optimize import minimize_scalar

    exact = minimize_scalar(lambda t: math.expm1((t + c) / mtbf) / t, bounds=(10, 2000), method="bounded").x
    assert abs(best - exact) / exact < 0.03


def test_more_spares_never_lower_goodput() -> None:
    procs = (FailureProcess(name="node", rate_per_s=1 / 1800, blast_nodes=1, repair_s=6 * 3600),)
    walls = []
    for spares in (0, 1, 2, 4, None):
        s = _spec(steps=20_000, processes=procs, detection_s=30, restart_s=60, load_s=5, spare_nodes=spares)
        walls.append(np.mean([simulate_run(s, k).wall_s for k in range(6)]))
    assert all(a >= b - 1e-9 for a, b in zip(walls, walls[1:], strict=False))
    assert walls[0] > walls[-1]


def test_elastic_beats_waiting_without_spares() -> None:
    procs = (FailureProcess(name="node", rate_per_s=1 / 1800, blast_nodes=1, repair_s=12 * 3600),)
    s = _spec(steps=20_000, processes=procs, detection_s=30, restart_s=60, spare_nodes=0)
    wait = np.mean([simulate_run(s, k).wall_s for k in range(6)])
    el = np.mean([simulate_run(s.model_copy(update={"elastic": True}), k).wall_s for k in range(6)])
    assert el < wait


def test_straggler_expected_max_closed_form_and_draws() -> None:
    spec = StragglerSpec(slow_fraction=0.001, slowdown=1.2)
    n = 1024
    assert expected_max_slowdown(spec, n) == pytest.approx(1 + 0.2 * (1 - 0.999**n))
    rng = np.random.default_rng(0)
    draws = [draw_max_slowdown(spec, n, rng) for _ in range(4000)]
    brute = [1 + 0.2 * (rng.random(n) < 0.001).any() for _ in range(4000)]
    assert np.mean(draws) == pytest.approx(np.mean(brute), abs=0.01)
    measured = StragglerSpec(rank_speeds=(1.0, 1.0, 0.95, 0.9))
    sl = np.sort(1 / np.array([1.0, 1.0, 0.95, 0.9]))
    exact = sum(sl[i] * (((i + 1) / 4) ** 8 - (i / 4) ** 8) for i in range(4))
    assert expected_max_slowdown(measured, 8) == pytest.approx(exact)
    o = simulate_run(_spec(stragglers=spec), 0)
    assert o.by_kind.get("stragglers", 0.0) in (0.0, pytest.approx(0.2 * 20_000))


def test_checkpoint_cost_sync_and_async() -> None:
    ck = checkpoint_cost(1e9, 64, 8, write_bps=1e11, read_bps=2e11, node_net_bps=5e9, snapshot_bps=5e10)
    assert ck.write_s == pytest.approx(64e9 / 4e10) and ck.load_s == pytest.approx(64e9 / 4e10)
    assert ck.blocking_s == ck.write_s and ck.persist_s == 0
    ak = checkpoint_cost(1e9, 64, 8, write_bps=1e11, read_bps=2e11, node_net_bps=5e9, snapshot_bps=5e10,
                         mode="async")
    assert ak.blocking_s == pytest.approx(0.02) and ak.persist_s == ck.write_s


def test_llama3_validation_interruptions_and_ettr() -> None:
    """Llama 3 405B on 16,384 H100s for 54 days: 466 interruptions, > 90% effective time."""
    cat = load_failures("default")
    procs = failure_processes(cat, 16384, 8, 8)
    ck = checkpoint_cost(405e9 * 14 / 16384, 16384, 2048, write_bps=cat.storage.write_bps,
                         read_bps=cat.storage.read_bps, node_net_bps=8 * 50e9, snapshot_bps=64e9)
    mtbf = 1 / sum(p.rate_per_s for p in procs)
    step = 10.0
    s = RunSpec(steps=int(54 * 86400 / step * 0.93), step_s=step, nodes=2048, gpus_per_node=8,
                gpus_per_replica=128, processes=procs, detection_s=cat.recovery.detection_s,
                restart_s=cat.recovery.restart_s, load_s=ck.load_s, checkpoint_blocking_s=ck.blocking_s,
                steps_per_checkpoint=round(young_daly_interval_s(ck.blocking_s, mtbf) / step))
    outs = [simulate_run(s, k) for k in range(8)]
    total = np.mean([sum(o.interruptions.values()) for o in outs])
    days = np.mean([o.wall_s for o in outs]) / 86400
    assert total / days * 54 == pytest.approx(466, rel=0.06)
    gpu = np.mean([o.interruptions["faulty-gpu"] for o in outs]) / days * 54
    assert gpu == pytest.approx(148, rel=0.15)
    assert np.mean([o.ettr for o in outs]) > 0.9


def test_api_zero_failures_equals_train_cost() -> None:
    r = estimate_training_run("llama-3.2-1b", "16xH100", global_batch=64, tokens=1e9, failures="none", seeds=2)
    assert r.time_to_train_s == pytest.approx(r.spec.steps * r.step.time_s)
    assert r.ettr == pytest.approx(1.0)


def test_api_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="checkpoint_interval"):
        estimate_training_run("llama-3.2-1b", "16xH100", global_batch=64, tokens=1e9, checkpoint_interval=1e-4)
    with pytest.raises(ConfigError, match="spare_nodes"):
        estimate_training_run("llama-3.2-1b", "16xH100", global_batch=64, tokens=1e9, spare_nodes=99)
    with pytest.raises(ConfigError, match="tokens"):
        estimate_training_run("llama-3.2-1b", "16xH100", global_batch=64, tokens=-1)


def test_negative_rate_in_yaml_is_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = (load_failures("default").model_dump_json())
    import json

    data = json.loads(text)
    data["causes"][0]["count"] = -3
    import yaml

    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"bad.yaml:\d+: field 'causes.0.count'"):
        load_failures(p)


def test_cli_matches_api_and_exit_2() -> None:
    base = [sys.executable, "-m", "fleetsim", "train", "--model", "llama-3.2-1b", "--cluster", "16xH100",
            "--global-batch", "64", "--tokens", "1e9"]
    out = subprocess.run(base + ["--failures", "none", "--seeds", "2"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    api = estimate_training_run("llama-3.2-1b", "16xH100", global_batch=64, tokens=1e9, failures="none", seeds=2)
    line = next(ln for ln in out.stdout.splitlines() if "time to train (mean)" in ln)
    assert float(line.split()[-2]) == pytest.approx(api.time_to_train_s / 86400, rel=1e-4)
    bad = subprocess.run(base + ["--failures", "default", "--checkpoint-interval", "soon"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--checkpoint-interval" in bad.stderr
