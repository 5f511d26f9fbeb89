"""The published engine tables: schema, SI units, catalog names, sources, split, strict errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from fleetsim.hardware.catalog import has_gpu
from fleetsim.hardware.errors import ProfileError
from fleetsim.workloads.models import load_model

from fleetsim.published_engines import (
    ENGINES,
    PUBLISHED_ROOT,
    SERVING_METRICS,
    serving_table,
    training_table,
)
from fleetsim.validation_data import VALIDATION_ROOT, gpus_with_data


def test_serving_table_schema_and_units() -> None:
    df = serving_table()
    assert len(df) >= 60 and set(df["engine"]) == set(ENGINES)
    assert all(has_gpu(g) for g in df["gpu"]) and set(df["gpu"]) <= {"H100-SXM", "H200-SXM"}
    for m in df["model"].unique():
        assert load_model(m).num_layers > 0
    lat = df[df["metric"].str.startswith(("tpot", "itl"))]["value"]
    assert ((lat >= 1e-3) & (lat <= 1.0)).all() and (df["value"] > 0).all()
    assert (df["source"].str.len() > 20).all() and set(df["split"]) == {"fit", "test"}
    assert set(df["metric"]) <= set(SERVING_METRICS)


def test_split_holds_out_whole_groups() -> None:
    """No (engine, model, gpu) group has rows on both sides of the split."""
    df = serving_table()
    sides = df.groupby(["engine", "model", "gpu"])["split"].nunique()
    assert (sides == 1).all()
    for engine in ENGINES:
        assert {"fit", "test"} <= set(df[df["engine"] == engine]["split"])
    t = training_table()
    assert (t.groupby(["model"])["split"].nunique() == 1).all()


def test_training_table_schema() -> None:
    t = training_table()
    assert len(t) >= 10
    assert ((t["tp"] * t["pp"] * t["cp"] * t["dp"]) == t["num_gpus"]).all()
    mfu = t[t["metric"] == "mfu"]["value"]
    assert ((mfu > 0) & (mfu < 1)).all()
    assert (t["source"].str.len() > 20).all()


def test_published_folder_is_not_a_gpu_folder() -> None:
    assert "published" not in gpus_with_data(VALIDATION_ROOT)


def _copy(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copy(PUBLISHED_ROOT / name, dst)
    return dst


def _edit(path: Path, row: int, col: str, value: object) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[row, col] = value
    df.to_csv(path, index=False)


@pytest.mark.parametrize(("col", "value", "needle"), [
    ("gpu", "H100-XL", "column 'gpu' must be a catalog GPU name"),
    ("model", "llama-9", "column 'model' must be one of"),
    ("metric", "tpot_ms", "column 'metric' must be one of"),
    ("value", "30", "must be in [0.001, 1]"),
    ("source", "", "must name the exact source"),
    ("split", "train", "column 'split' must be one of fit, test"),
    ("request_rate", "-1", "column 'request_rate' must be empty or a positive number"),
    ("concurrency", "8", "must be empty when 'concurrency' is given"),
    ("tp", "16", "column 'num_gpus' must be at least tp x pp"),
])
def test_bad_serving_row_is_one_line(tmp_path: Path, col: str, value: str, needle: str) -> None:
    path = _copy(tmp_path, "serving.csv")
    df = serving_table(path)
    row = int(df.index[(df["metric"] == "ttft_mean_s")][0]) if col in ("concurrency",) else \
        int(df.index[df["metric"] == "itl_mean_s"][0])
    _edit(path, row, col, value)
    with pytest.raises(ProfileError) as exc:
        serving_table(path)
    msg = str(exc.value)
    assert needle in msg and f"row {row + 2}" in msg and str(path) in msg and "\n" not in msg


def test_bad_training_row_is_one_line(tmp_path: Path) -> None:
    path = _copy(tmp_path, "training_runs.csv")
    _edit(path, 3, "dp", "3")
    with pytest.raises(ProfileError, match=r"row 5: column 'dp'.*must equal num_gpus"):
        training_table(path)
    path = _copy(tmp_path, "training_runs.csv")
    _edit(path, 0, "value", "2.0")
    _edit(path, 0, "metric", "mfu")
    with pytest.raises(ProfileError, match=r"row 2: column 'value' of metric 'mfu' must be in \[0.01, 1\]"):
        training_table(path)
