"""Validation targets: Korthikanti et al. 2022 table 5 iteration times within 15 %, fig. 1
memory within 10 %, and our own GPU measurements (when committed) within 10 %."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetsim.training_validate import (
    MEASURED_ROOT,
    PUBLISHED,
    korthikanti_fig1_rows,
    korthikanti_table5_rows,
    measured_files,
    our_rows,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "published").is_dir(),
                                  reason="../shared/data/published (Korthikanti et al. 2022 tables) is absent")


@needs_shared
def test_korthikanti_table5_iteration_times() -> None:
    rows = korthikanti_table5_rows(PUBLISHED)
    assert len(rows) == 8
    bad = rows[~rows.within_target]
    assert bad.empty, bad[["model", "config", "predicted", "measured", "error"]].to_string()
    # the ratio full/selective that the paper reports is reproduced too
    for model, grp in rows.groupby("model"):
        full = grp[grp.config.str.contains("full")]
        sel = grp[grp.config.str.contains("selective")]
        pred = float(full.predicted.iloc[0] / sel.predicted.iloc[0])
        meas = float(full.measured.iloc[0] / sel.measured.iloc[0])
        assert pred == pytest.approx(meas, rel=0.15), model


@needs_shared
def test_korthikanti_fig1_memory() -> None:
    rows = korthikanti_fig1_rows(PUBLISHED)
    assert len(rows) == 16
    bad = rows[~rows.within_target]
    assert bad.empty, bad[["model", "config", "metric", "predicted", "measured", "error"]].to_string()


needs_measured = pytest.mark.skipif(not measured_files(MEASURED_ROOT),
                                    reason="no calibration/validation/<GPU>/training.csv yet")


@needs_measured
def test_our_memory() -> None:
    """Peak allocated memory meets the 10 % target on every measured row whose peak is
    consistent (not above the next larger micro-batch's; at most one such row)."""
    rows = our_rows(MEASURED_ROOT)
    mem = rows[rows.metric == "peak_alloc_gib"]
    assert len(mem) > 0
    assert (mem.note != "").sum() <= 1, mem[mem.note != ""].to_string()
    ok = mem[mem.note == ""]
    assert (ok.error.abs() <= 0.10).all(), ok.to_string()


def _split(rows):  # noqa: ANN001, ANN202
    t = rows[rows.metric == "step_time_s"]
    big = t.model.str.extract(r"h(\d+)$")[0].astype(int) >= 2048
    dp1 = t.config.str.contains(" dp1 ")
    return t, big, dp1


@needs_measured
def test_our_step_times() -> None:
    """The claims of docs/training.md, with the eager host-dispatch model and the fitted
    SUSTAINED_KERNEL_FACTOR (H100 rows) and COMM_SLOWDOWN (2.7B DDP rows):

    * one H100, >= 1.3B parameters: every row within 10 % (15 rows; 13 are the factor's fit);
    * one H200 (held out), >= 1.3B: every row within 10 % except the two 2.7B rows
      without recomputation at micro-batch 4 and 8 (-10.7 %, -10.0 %);
    * DDP on two H200s, >= 1.3B: at least 14 of 16 within 10 %, all within 20 %;
    * the 350M model (host-bound, all GPUs): at least 10 of 24 within 10 %, all within 45 %.
    """
    t, big, dp1 = _split(our_rows(MEASURED_ROOT))
    h100 = t[big & (t.gpu == "H100-SXM")]
    assert len(h100) == 15 and (h100.error.abs() <= 0.10).all(), h100.to_string()
    h200 = t[big & (t.gpu == "H200-SXM") & dp1]
    assert len(h200) == 16
    misses = h200[h200.error.abs() > 0.10]
    assert len(misses) <= 2 and misses.config.str.endswith(" none").all(), misses.to_string()
    assert misses.model.str.endswith("h2560").all() and (misses.error.abs() <= 0.11).all()
    ddp = t[big & ~dp1]
    assert len(ddp) == 16
    assert (ddp.error.abs() <= 0.10).sum() >= 14 and (ddp.error.abs() <= 0.20).all(), ddp.to_string()
    small = t[~big]
    assert len(small) == 24
    assert (small.error.abs() <= 0.10).sum() >= 10 and (small.error.abs() <= 0.45).all(), small.to_string()


@needs_measured
def test_fitted_constants_are_reproduced() -> None:
    """SUSTAINED_KERNEL_FACTOR and COMM_SLOWDOWN are what their documented fits return."""
    from fleetsim.sim.training.step import COMM_SLOWDOWN, SUSTAINED_KERNEL_FACTOR

    from fleetsim.training_validate import fit_comm_slowdown, fit_sustained_kernel_factor

    assert fit_sustained_kernel_factor(MEASURED_ROOT) == pytest.approx(SUSTAINED_KERNEL_FACTOR, abs=0.001)
    assert fit_comm_slowdown(MEASURED_ROOT) == pytest.approx(COMM_SLOWDOWN, abs=0.01)
