"""Validation of the run simulation against published large-run figures, with the Llama 3
405B run's published layout, and the planner's ``time_to_train_failures`` objective."""

from __future__ import annotations

import numpy as np
import pytest
from fleetsim.hardware.errors import ConfigError
from fleetsim.hardware.failures import load_failures

from fleetsim.reliability import estimate_training_run
from fleetsim.training_plans import FAILURE_CANDIDATES, plan_training

# Llama 3 paper (arXiv:2407.21783) Table 4, 405B row at 16,384 GPUs (also in P. Balaji's SC'24
# slide): TP 8, CP 1, PP 16, DP 128, seq 8192, 16M tokens per batch (2048 sequences), 400
# TFLOP/s per GPU (BF16 MFU 38-43% over the table's rows); section 3.3.2: one layer fewer
# on the first and the last pipeline stage.
LLAMA3_LAYOUT = {"tp": 8, "cp": 1, "pp": 16, "dp": 128, "layer_split": (7,) + (8,) * 14 + (7,)}
DAYS = 54.0


@pytest.fixture(scope="module")
def llama3_run():  # type: ignore[no-untyped-def]
    """The published layout (1F1B; full recomputation, the only recipe of this layout that fits
    fleetsim's memory model) trained for ~54 days of ideal time, 4 seeds."""
    from fleetsim.training import estimate_train_step

    est = estimate_train_step("llama-3.1-405b", "16384xH100", LLAMA3_LAYOUT, global_batch=2048, seq_len=8192,
                              zero=1, recompute="full", record_timeline=False)
    steps = round(DAYS * 86400 / est.time_s)
    return estimate_training_run(None, None, tokens=steps * est.job.tokens_per_step, failures="default",
                                 checkpoint_interval="auto", seeds=4, estimate=est)


def test_llama3_layout_is_the_published_one(llama3_run) -> None:  # type: ignore[no-untyped-def]
    par = llama3_run.step.job.parallel
    assert (par.tp, par.cp, par.pp, par.dp) == (8, 1, 16, 128)
    assert llama3_run.step.job.tokens_per_step == 2048 * 8192
    assert llama3_run.spec.gpus_per_replica == 128 and llama3_run.spec.nodes == 2048


def test_llama3_interruptions_per_54_days(llama3_run) -> None:  # type: ignore[no-untyped-def]
    """466 interruptions (419 unexpected, 47 planned) in 54 days (Llama 3 paper 3.3.4): the
    simulated count per 54 wall-clock days, 4 seeds (Poisson sd ~ sqrt(466 * 4) / 4 ~ 2.3%)."""
    days = llama3_run.time_to_train_s / 86400
    per_54 = sum(llama3_run.interruptions().values()) / days * DAYS
    assert per_54 == pytest.approx(466, rel=0.08)
    unexpected = sum(v for k, v in llama3_run.interruptions().items() if k != "planned-maintenance")
    # "on average one [unexpected] failure every three hours": 54 * 24 / 419 = 3.09 h
    assert days * 24 / unexpected == pytest.approx(DAYS * 24 / 419, rel=0.08)


def test_llama3_effective_training_time_above_90_percent(llama3_run) -> None:  # type: ignore[no-untyped-def]
    """"higher than 90% effective training time" (Llama 3 paper 3.3.4). The published figure is
    a lower bound; the simulated one also counts no manual interventions (3 in the paper) and
    recovery times that are assumptions (catalog), so the upper tolerance is loose."""
    assert 0.90 < llama3_run.ettr < 0.98


def test_llama3_checkpoint_size_in_published_range(llama3_run) -> None:  # type: ignore[no-untyped-def]
    """Llama 3 paper 3.3.1: checkpoints save each GPU's model state, "1 MB to 4 GB per GPU"."""
    assert 1e6 <= llama3_run.checkpoint.bytes_per_rank <= 4e9


def test_job_mttf_scales_inversely_with_job_size() -> None:
    """The catalog's per-unit rates give the Llama 3 job's MTBF back (1296 h / 466) at 16,384
    GPUs, and half the failure rate at 8,192 GPUs (every cause scales with GPUs, nodes, NICs
    or racks; planned maintenance is per job, so it does not)."""
    from fleetsim.reliability import failure_processes

    cat = load_failures("default")
    full = sum(p.rate_per_s for p in failure_processes(cat, 16384, 8, 8)) * 3600
    half = sum(p.rate_per_s for p in failure_processes(cat, 8192, 8, 8)) * 3600
    planned = 47 / 1296
    assert 1 / full == pytest.approx(1296 / 466)
    assert half - planned == pytest.approx((full - planned) / 2)


def test_planner_time_to_train_failures_reranks_by_run_simulation() -> None:
    tokens = 2e9
    plan = plan_training("gpt2-medium", "8xH100-SXM", global_batch=16, seq_len=1024, top=4, tokens=tokens,
                         objective="time_to_train_failures", workers=1)
    assert plan.objective == "time_to_train_failures"
    head = plan.plans[:FAILURE_CANDIDATES]
    assert all(e.run is not None for e in head) and all(e.run is None for e in plan.plans[FAILURE_CANDIDATES:])
    walls = [e.run.time_to_train_s for e in head]
    assert walls == sorted(walls)
    # differential: the run's step is the planner's simulated step, and the run is
    # estimate_training_run's for that job
    from fleetsim.sim.training.step import simulate_step

    from fleetsim.training import TrainEstimate

    best = plan.best
    assert best.run.spec.step_s == pytest.approx(best.evaluation.time_s, rel=1e-12)
    api = estimate_training_run(None, None, tokens=tokens, seeds=4,
                                estimate=TrainEstimate(simulate_step(best.job, record=False)))
    assert best.run.time_to_train_s == pytest.approx(api.time_to_train_s, rel=1e-9)
    assert best.run.interval_s == pytest.approx(api.interval_s)
    row = plan.table().iloc[0]
    assert row["ckpt_interval_s"] == round(best.run.interval_s)
    assert plan.as_dict()["plans"][0]["checkpoint_interval_s"] == best.run.interval_s
    # the run adds failures and checkpoints to the step-time plan's ideal time
    assert np.all(np.array(walls) >= np.array([e.run.ideal_time_s for e in head]))


def test_planner_time_to_train_failures_needs_tokens() -> None:
    with pytest.raises(ConfigError, match="needs tokens"):
        plan_training("gpt2-medium", "8xH100-SXM", global_batch=16, seq_len=1024,
                      objective="time_to_train_failures")
