"""Prediction intervals: conformal quantiles, coverage oracle, the committed table re-derived."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fleetsim.calibration.intervals import (
    INTERVALS_CSV,
    IntervalTable,
    conformal_quantiles,
    coverage,
    crossfit,
    fit_table,
    load_table,
    summarize_coverage,
)
from fleetsim.hardware.errors import ConfigError


def test_conformal_quantiles_finite_sample_ranks() -> None:
    r = np.arange(1.0, 20.0)[::-1]  # n = 19: ranks floor(0.1*20) = 2 and ceil(0.9*20) = 18
    assert conformal_quantiles(r) == (2.0, 18.0)
    assert conformal_quantiles(np.arange(9.0)) == (0.0, 8.0)  # n = 9: the extremes
    assert conformal_quantiles(np.arange(8.0)) is None  # too few for an 80% interval


def _rows(gpu: str, cls: str, profile: str, ratios: list[float], share: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"gpu": gpu, "cls": cls, "profile": profile, "measured_s": ratios,
                         "predicted_s": 1.0, "roofline_share": share})


def test_coverage_against_hand_built_oracle() -> None:
    table = IntervalTable(pd.DataFrame([
        {"gpu": "G", "cls": "a", "profile": "own", "n": 10, "q10": math.log(0.9), "q90": math.log(1.2)},
        {"gpu": "*", "cls": "a", "profile": "cross", "n": 10, "q10": math.log(0.5), "q90": math.log(2.0)},
        {"gpu": "*", "cls": "*", "profile": "own", "n": 10, "q10": math.log(0.8), "q90": math.log(1.0)},
    ]))
    rows = pd.concat([
        _rows("G", "a", "own", [0.9, 1.0, 1.2, 1.21, 0.89]),       # group: [0.9, 1.2] -> 3 inside
        _rows("H", "a", "cross", [0.5, 1.9, 2.1]),                 # class fallback [0.5, 2] -> 2
        _rows("G", "b", "own", [0.85, 1.05]),                      # kind fallback [0.8, 1] -> 1
        _rows("G", "a", "own", [1.5, 1.6], share=0.5),             # widened: exp(mean of logs)
    ], ignore_index=True)
    cov = coverage(table, rows)
    hi_half = math.exp(0.5 * math.log(1.2) + 0.5 * math.log(2.0))  # 1.549
    assert cov["p90_s"].iloc[-1] == pytest.approx(hi_half)
    assert list(cov["inside"]) == [True, True, True, False, False, True, True, False, True, False,
                                   True, False]
    summ = summarize_coverage(cov, by=("cls",))
    assert summ.to_dict("records")[-1] == {"cls": "all", "rows": 12, "inside": 7, "coverage": 7 / 12}
    assert summ.set_index("cls").loc["b", "coverage"] == 0.5


def test_fit_table_levels_and_fallback_refusal() -> None:
    rows = pd.concat([_rows("G", "a", "own", list(np.linspace(0.8, 1.3, 12))),
                      _rows("H", "a", "own", list(np.linspace(0.9, 1.1, 5)))], ignore_index=True)
    t = fit_table(rows)
    assert set(zip(t["gpu"], t["cls"], strict=True)) == {("G", "a"), ("*", "a"), ("*", "*")}  # H: 5 < 9
    assert IntervalTable(t).quantiles("H", "a", "own") == IntervalTable(t).quantiles("*", "a", "own")
    with pytest.raises(ConfigError, match="roofline_share"):
        IntervalTable(t).interval(1.0, "G", "a", own_profile=True, roofline_share=1.5)
    with pytest.raises(ConfigError, match="crossfit split"):
        crossfit(rows, "random")


def test_crossfit_never_tests_on_fit_rows() -> None:
    # one extreme row per fold: a table fitted on the others cannot contain it by construction
    ratios = [1.0 + 0.01 * i for i in range(20)]
    rows = _rows("G", "a", "own", ratios)
    cov = crossfit(rows, "alternate", folds=2)
    assert len(cov) == 20 and set(cov["fold"]) == {"0", "1"}
    # the largest and smallest ratios lie outside any table fitted without them
    assert not cov.loc[cov["measured_s"].idxmax(), "inside"]
    assert not cov.loc[cov["measured_s"].idxmin(), "inside"]


@pytest.fixture(scope="module")
def residuals() -> pd.DataFrame:
    from fleetsim.interval_data import residual_rows

    return residual_rows()


def test_committed_table_rederived_from_validation_rows(residuals: pd.DataFrame) -> None:
    committed = pd.read_csv(INTERVALS_CSV, comment="#")
    header = [ln for ln in INTERVALS_CSV.read_text().splitlines() if ln.startswith("# fitted on")]
    assert header and header[0].startswith(f"# fitted on {len(residuals)} rows, 20")
    fresh = fit_table(residuals)
    pd.testing.assert_frame_equal(committed, fresh, check_dtype=False, atol=1e-9, rtol=0)


def test_heldout_coverage_in_target(residuals: pd.DataFrame) -> None:
    cov = crossfit(residuals)
    assert 0.75 <= cov["inside"].mean() <= 0.85
    assert cov.index.is_unique and len(cov) == len(residuals)


def test_forward_and_training_estimates_carry_the_interval() -> None:
    from fleetsim import estimate_forward, estimate_train_step

    t = load_table()
    e = estimate_forward("llama-3.1-8b", "H100-SXM", (8, 1, 512), graphs=True)
    lo, hi = t.log_bounds("H100-SXM", "decode_graph", own_profile=True, roofline_share=e.source_share["roofline"])
    assert (e.time_s_p10, e.time_s_p90) == pytest.approx((e.time_s * math.exp(lo), e.time_s * math.exp(hi)))
    b = estimate_forward("llama-3.1-8b", "B200", 256)  # no profile: the cross spread
    lo, hi = t.quantiles("B200", "prefill_eager", "cross")
    assert (b.time_s_p10, b.time_s_p90) == pytest.approx((b.time_s * math.exp(lo), b.time_s * math.exp(hi)))
    tr = estimate_train_step("llama-3.1-8b", "8xH100-SXM", micro_batch=1, global_batch=16, zero=3)
    assert tr.time_s_p10 < tr.time_s < tr.time_s_p90
    assert {"step time p10", "step time p90"} <= set(tr.summary()["metric"])


def test_validate_intervals_section(capsys: pytest.CaptureFixture[str]) -> None:
    from fleetsim.cli import main

    assert main(["validate", "--only", "intervals"]) == 0
    out = capsys.readouterr().out
    assert "coverage of the 80% interval on held-out rows (every 10th shape held out" in out
    assert "one GPU held out" in out and "all targets met" in out
