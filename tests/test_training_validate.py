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


def _gpu_bound(t):  # noqa: ANN001, ANN202
    """Rows of >= 1.3B-parameter models (hidden >= 2048) with >= 2048 tokens per micro-batch."""
    tokens = t.config.str.extract(r"b(\d+) ga\d+ s(\d+)").astype(int).prod(axis=1)
    big = t.model.str.extract(r"h(\d+)$")[0].astype(int) >= 2048
    return t[(tokens >= 2048) & big]


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


@needs_measured
def test_our_step_times() -> None:
    """SUSTAINED_KERNEL_FACTOR was fitted on the H100 single-GPU GPU-bound rows; on the
    held-out H200 single-GPU GPU-bound rows the 10 % target is met. DDP rows and small,
    host-bound models are not held to it (docs/training.md lists every row); GPU-bound rows
    get a 25 % regression bound."""
    rows = our_rows(MEASURED_ROOT)
    t = _gpu_bound(rows[rows.metric == "step_time_s"])
    held_out = t[(t.gpu == "H200-SXM") & t.config.str.contains(" dp1 ")]
    if len(held_out):
        assert (held_out.error.abs() <= 0.10).all(), held_out.to_string()
    assert len(t) > 0
    assert (t.error.abs() <= 0.25).all(), t.to_string()
