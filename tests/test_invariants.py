"""The result invariants (``fleetsim.sim.check``) pass on real results and catch each kind
of corruption, naming the field and the request or stage."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
from fleetsim.hardware.errors import FleetsimError, InvariantError
from fleetsim.sim.check import (
    assert_serving_result,
    assert_train_estimate,
    check_serving_result,
    check_train_estimate,
)

import fleetsim
import fleetsim.serving
import fleetsim.training
from fleetsim.cli import main

WL = "poisson:rate=20,isl=256,osl=32"


@pytest.fixture(scope="module")
def serving() -> fleetsim.serving.ServingResult:
    return fleetsim.simulate_serving("gpt2", "1xH100", WL, num_requests=20, seed=3)


@pytest.fixture(scope="module")
def train() -> object:
    return fleetsim.estimate_train_step("gpt2", "4xH100", global_batch=8, seq_len=512, pp=2)


def _corrupt(res: fleetsim.serving.ServingResult) -> fleetsim.serving.ServingResult:
    out = copy.copy(res)
    out.requests = res.requests.copy()
    out.summary = dict(res.summary)
    out.timeseries = res.timeseries.copy()
    out.replicas = res.replicas.copy()
    return out


def test_real_results_pass(serving: fleetsim.serving.ServingResult, train: object) -> None:
    assert check_serving_result(serving) == []
    assert check_train_estimate(train) == []
    assert_serving_result(serving)
    assert_train_estimate(train)
    assert fleetsim.check_serving_result is check_serving_result
    assert issubclass(fleetsim.InvariantError, FleetsimError)


def test_conftest_checks_every_result() -> None:
    from fleetsim.sim.serving import results

    assert fleetsim.serving.collect is results.collect
    assert results.collect.__name__ == "checked_collect"
    assert fleetsim.training.simulate_step.__name__ == "checked_simulate_step"


@pytest.mark.parametrize("edit,expect", [
    (lambda r: r.summary.update(finished=r.summary["finished"] - 1), "summary.finished"),
    (lambda r: r.summary.update(unfinished=r.summary["unfinished"] + 1), "finished + rejected + unfinished"),
    (lambda r: r.summary.update(output_tokens_per_s=r.summary["output_tokens_per_s"] * 1.001),
     "summary.output_tokens_per_s"),
    (lambda r: r.summary.update(goodput_rps=r.summary["requests_per_s"] * 2), "summary.goodput_rps"),
    (lambda r: r.summary.update(ttft_p90_s=r.summary["ttft_p99_s"] + 1), "p50 <= p90 <= p99"),
    (lambda r: r.summary.update(duration_s=float("nan")), "summary.duration_s"),
    (lambda r: r.requests.__setitem__("ttft_s", r.requests["e2e_s"] + 1), "ttft_s > e2e_s"),
    (lambda r: r.requests.__setitem__("queue_delay_s", -r.requests["queue_delay_s"] - 1), "queue_delay_s"),
    (lambda r: r.requests.__setitem__("tpot_s", np.inf), "requests.tpot_s"),
    (lambda r: r.requests.__setitem__("rejected", True), "finished and rejected"),
    (lambda r: r.requests.__setitem__("generated_tokens", r.requests["output_tokens"] + 1),
     "generated_tokens > output_tokens"),
    (lambda r: r.timeseries.__setitem__("kv_used_blocks", r.timeseries["kv_capacity_blocks"] + 1),
     "kv_used_blocks outside"),
    (lambda r: r.timeseries.__setitem__("end_s", r.timeseries["start_s"] - 1), "reversed"),
    (lambda r: r.replicas.__setitem__("busy_s", 1e9), "busy_s"),
])
def test_serving_corruption_is_caught(serving: fleetsim.serving.ServingResult, edit: object, expect: str) -> None:
    bad = _corrupt(serving)
    edit(bad)  # type: ignore[operator]
    found = check_serving_result(bad)
    assert any(expect in v for v in found), found
    assert all("\n" not in v for v in found)
    with pytest.raises(InvariantError, match="invariant") as exc:
        assert_serving_result(bad)
    assert "\n" not in str(exc.value)


def test_request_violations_name_the_request(serving: fleetsim.serving.ServingResult) -> None:
    bad = _corrupt(serving)
    rid = int(bad.requests["req_id"].iloc[4])
    bad.requests.loc[bad.requests.index[4], "ttft_s"] = bad.requests["e2e_s"].iloc[4] + 1.0
    found = [v for v in check_serving_result(bad) if "ttft_s > e2e_s" in v]
    assert found == [f"requests: first token after finish (ttft_s > e2e_s) for req {rid}"]


@pytest.mark.parametrize("edit,expect", [
    (lambda r: dataclasses.replace(r, step_s=float("nan")), "step_s"),
    (lambda r: dataclasses.replace(r, step_s=-1.0), "step_s"),
    (lambda r: dataclasses.replace(r, step_s=r.step_s * 2), "last stage end"),
    (lambda r: dataclasses.replace(r, mfu=0.0), "mfu"),
    (lambda r: dataclasses.replace(r, mfu=r.hfu * 2), "mfu"),
    (lambda r: dataclasses.replace(r, bubble_fraction=-0.5), "bubble_fraction"),
    (lambda r: dataclasses.replace(r, optimizer_s=r.step_s * 3), "optimizer_s"),
    (lambda r: dataclasses.replace(r, stage_compute_s=[x * 2 for x in r.stage_compute_s]), "stage_compute_s"),
    (lambda r: dataclasses.replace(r, memory=[dataclasses.replace(m, activations_bytes=-1.0) for m in r.memory]),
     "activations_bytes"),
])
def test_training_corruption_is_caught(train: object, edit: object, expect: str) -> None:
    bad = edit(train.result)  # type: ignore[attr-defined, operator]
    found = check_train_estimate(bad)
    assert any(expect in v for v in found), found
    with pytest.raises(InvariantError):
        assert_train_estimate(bad)


def test_memory_components_sum_to_the_total(train: object) -> None:
    r = train.result  # type: ignore[attr-defined]

    class Skewed(type(r.memory[0])):  # type: ignore[misc]
        @property
        def total_bytes(self) -> float:
            return super().total_bytes + 1e6

    mem = [Skewed(**{f.name: getattr(m, f.name) for f in dataclasses.fields(m)}) for m in r.memory]
    found = check_train_estimate(dataclasses.replace(r, memory=mem))
    assert any("components sum to" in v for v in found), found


def test_cli_check_flag(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetsim.sim import check

    sim = ["simulate", "--model", "gpt2", "--cluster", "1xH100", "--workload", WL, "--num-requests", "10", "--check"]
    assert main(sim) == 0
    assert f"checks: {len(check.SERVING_INVARIANTS)} invariants passed" in capsys.readouterr().out
    tr = ["train", "--model", "gpt2", "--cluster", "2xH100", "--global-batch", "4", "--seq-len", "256", "--check"]
    assert main(tr) == 0
    assert f"checks: {len(check.TRAINING_INVARIANTS)} invariants passed" in capsys.readouterr().out
    from conftest import _simulate_step  # the unchecked step, so only --check sees the violations

    monkeypatch.setattr(fleetsim.training, "simulate_step", _simulate_step)
    monkeypatch.setattr(check, "check_train_estimate", lambda est: ["step_s = nan, expected", "mfu = 2"])
    assert main(tr) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["fleetsim train: invariant violated: step_s = nan, expected",
                   "fleetsim train: invariant violated: mfu = 2"]


def test_one_token_requests_have_no_itl_and_pass(capsys: pytest.CaptureFixture[str]) -> None:
    """A request that asks for one output token has no inter-token gap: its ITL percentiles are
    all missing, which is consistent (the check used to report NaN <= NaN as a disorder); one
    percentile missing of three is not."""
    res = fleetsim.simulate_serving("llama-3.2-1b", "1xH100", "poisson:rate=5,isl=128,osl=1", num_requests=20)
    assert res.requests["itl_p50_s"].isna().all()
    assert check_serving_result(res) == []
    bad = copy.copy(res)
    bad.requests = res.requests.copy()
    bad.requests.loc[0, "itl_max_s"] = 0.01
    assert any("ITL percentiles partly missing for req 0" in v for v in check_serving_result(bad))
    assert main(["simulate", "--model", "llama-3.2-1b", "--cluster", "1xH100", "--workload",
                 "poisson:rate=5,isl=128,osl=1", "--num-requests", "20", "--check"]) == 0
    assert "nan" not in capsys.readouterr().out.split("80% interval")[1]
