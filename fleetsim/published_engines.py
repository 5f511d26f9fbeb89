"""Published serving and training figures of software fleetsim was not fitted on.

The tables live in ``fleetsim/calibration/validation/published/`` (``serving.csv``,
``training_runs.csv``; columns in that folder's README). Each row is one figure a vendor
or a paper published, with its exact source and a ``split`` (``fit``/``test``) saying
whether an engine profile may be fitted on it. Values are SI: seconds, tokens/s, FLOP/s.

Reading is strict: every failure is one ``ProfileError`` line naming the file, the CSV
line and the column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fleetsim.calibration.measured import VALIDATION_ROOT
from fleetsim.hardware.catalog import has_gpu
from fleetsim.hardware.errors import ProfileError
from fleetsim.validation_data import read_table
from fleetsim.workloads.models import list_models

PUBLISHED_ROOT = VALIDATION_ROOT / "published"
SERVING_FILE = "serving.csv"
TRAINING_FILE = "training_runs.csv"

ENGINES = ("vllm", "sglang", "trtllm")
SPLITS = ("fit", "test")
WEIGHT_DTYPES = ("bf16", "fp16", "fp8")
RECOMPUTE = ("none", "selective", "full")
SERVING_METRICS = {
    "output_tok_s": (1.0, 1e7), "total_tok_s": (1.0, 1e7), "req_s": (1e-3, 1e5),
    "ttft_mean_s": (1e-3, 3600.0), "ttft_p50_s": (1e-3, 3600.0),
    "tpot_mean_s": (1e-3, 1.0), "tpot_p50_s": (1e-3, 1.0),
    "itl_mean_s": (1e-3, 1.0), "itl_p50_s": (1e-3, 1.0),
    "e2e_mean_s": (1e-3, 3600.0), "e2e_p50_s": (1e-3, 3600.0),
}
"""Serving metric -> plausible (low, high) in SI units; TPOT/ITL between 1 ms and 1 s."""
TRAINING_METRICS = {
    "mfu": (0.01, 1.0), "flops_per_s_per_gpu": (1e12, 1e16),
    "tokens_per_s_per_gpu": (1.0, 1e6), "step_time_s": (1e-3, 1e4),
}
SERVING_COLUMNS = ("engine", "engine_version", "gpu", "num_gpus", "tp", "pp", "ep", "model", "dtype",
                   "kv_dtype", "isl", "osl", "concurrency", "request_rate", "num_prompts", "metric",
                   "value", "source", "source_date", "notes", "split")
TRAINING_COLUMNS = ("framework", "framework_version", "gpu", "num_gpus", "model", "tp", "pp", "dp", "cp",
                    "ep", "vpp", "fsdp", "micro_batch", "global_batch", "seq_len", "recompute", "dtype",
                    "metric", "value", "source", "source_date", "notes", "split")

__all__ = ["ENGINES", "PUBLISHED_ROOT", "SERVING_METRICS", "TRAINING_METRICS", "serving_table",
           "training_table"]


def _where(path: Path, df: pd.DataFrame, i: int, col: str) -> str:
    return f"{path}: row {int(df.index[i]) + 2}: column {col!r}"


def _choice(path: Path, df: pd.DataFrame, col: str, allowed: tuple[object, ...] | list[str]) -> None:
    for i, v in enumerate(df[col].tolist()):
        if v not in allowed:
            shown = ", ".join(map(str, allowed)) if len(allowed) <= 12 else f"one of {len(allowed)} catalog names"
            raise ProfileError(f"{_where(path, df, i, col)} must be one of {shown}, got {v!r}")


def _text(df: pd.DataFrame, cols: tuple[str, ...]) -> None:
    for c in cols:
        df[c] = df[c].astype(object).where(df[c].notna(), "").astype(str).str.strip()


def _optional_positive(path: Path, df: pd.DataFrame, col: str) -> None:
    """``col`` is empty (NaN) or a positive finite number on every row."""
    raw = df[col]
    x = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    given = raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
    bad = np.flatnonzero(given & (~np.isfinite(x) | (x <= 0)))
    if bad.size:
        i = int(bad[0])
        raise ProfileError(f"{_where(path, df, i, col)} must be empty or a positive number, got {str(raw.iloc[i])!r}")
    df[col] = x


def _common(path: Path, df: pd.DataFrame, metrics: dict[str, tuple[float, float]]) -> None:
    """Checks both tables share: catalog GPU and model, metric and its unit range, source,
    split."""
    for i, g in enumerate(df["gpu"].tolist()):
        if not has_gpu(g):
            raise ProfileError(f"{_where(path, df, i, 'gpu')} must be a catalog GPU name (fleetsim specs gpus), got {g!r}")
    _choice(path, df, "model", list_models())
    _choice(path, df, "metric", tuple(metrics))
    _choice(path, df, "split", SPLITS)
    _choice(path, df, "dtype", WEIGHT_DTYPES)
    for i, s in enumerate(df["source"].tolist()):
        if len(s) < 10:
            raise ProfileError(f"{_where(path, df, i, 'source')} must name the exact source (repository + path + "
                               f"commit, or a URL/paper + table), got {s!r}")
    values = df["value"].to_numpy(dtype=float)
    for i, (m, v) in enumerate(zip(df["metric"].tolist(), values, strict=True)):
        lo, hi = metrics[m]
        if not lo <= v <= hi:
            raise ProfileError(f"{_where(path, df, i, 'value')} of metric {m!r} must be in [{lo:g}, {hi:g}] "
                               f"(SI units), got {v:g}")


def _ints(df: pd.DataFrame, cols: tuple[str, ...]) -> None:
    for c in cols:
        df[c] = pd.to_numeric(df[c]).astype(int)


def serving_table(path: str | Path | None = None) -> pd.DataFrame:
    """The published serving figures (default: the shipped ``serving.csv``). A row with
    neither ``concurrency`` nor ``request_rate`` is an offline max-throughput run (every
    request queued at once); both given is an error."""
    p = Path(path) if path is not None else PUBLISHED_ROOT / SERVING_FILE
    df = read_table(p, SERVING_COLUMNS, numeric=("value",),
                    positive=("num_gpus", "tp", "pp", "ep", "isl", "osl", "num_prompts", "value"))
    _text(df, ("engine", "engine_version", "gpu", "model", "dtype", "kv_dtype", "metric", "source",
               "source_date", "notes", "split"))
    _choice(p, df, "engine", ENGINES)
    _choice(p, df, "kv_dtype", ("bf16", "fp16", "fp8"))
    for c in ("concurrency", "request_rate"):
        _optional_positive(p, df, c)
    both = np.flatnonzero(np.isfinite(df["concurrency"].to_numpy()) & np.isfinite(df["request_rate"].to_numpy()))
    if both.size:
        raise ProfileError(f"{_where(p, df, int(both[0]), 'request_rate')} must be empty when 'concurrency' is given "
                           "(a row is closed-loop, Poisson, or offline)")
    _ints(df, ("num_gpus", "tp", "pp", "ep", "isl", "osl", "num_prompts"))
    bad = np.flatnonzero(df["tp"].to_numpy() * df["pp"].to_numpy() > df["num_gpus"].to_numpy())
    if bad.size:
        raise ProfileError(f"{_where(p, df, int(bad[0]), 'num_gpus')} must be at least tp x pp")
    _common(p, df, SERVING_METRICS)
    return df.reset_index(drop=True)


def training_table(path: str | Path | None = None) -> pd.DataFrame:
    """The published training-throughput figures (default: the shipped
    ``training_runs.csv``). ``tp * pp * cp * dp`` must equal ``num_gpus``."""
    p = Path(path) if path is not None else PUBLISHED_ROOT / TRAINING_FILE
    df = read_table(p, TRAINING_COLUMNS, numeric=("value", "fsdp"),
                    positive=("num_gpus", "tp", "pp", "dp", "cp", "ep", "global_batch", "seq_len", "value"))
    _text(df, ("framework", "framework_version", "gpu", "model", "recompute", "dtype", "metric", "source",
               "source_date", "notes", "split"))
    for c in ("vpp", "micro_batch"):
        _optional_positive(p, df, c)
    _choice(p, df, "recompute", ("", *RECOMPUTE))
    _ints(df, ("num_gpus", "tp", "pp", "dp", "cp", "ep", "global_batch", "seq_len", "fsdp"))
    _choice(p, df, "fsdp", (0, 1))
    prod = (df["tp"] * df["pp"] * df["cp"] * df["dp"]).to_numpy()
    bad = np.flatnonzero(prod != df["num_gpus"].to_numpy())
    if bad.size:
        i = int(bad[0])
        raise ProfileError(f"{_where(p, df, i, 'dp')}: tp x pp x cp x dp = {int(prod[i])} must equal num_gpus "
                           f"{int(df['num_gpus'].iloc[i])}")
    _common(p, df, TRAINING_METRICS)
    return df.reset_index(drop=True)
