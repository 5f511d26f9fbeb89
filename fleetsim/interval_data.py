"""Residual rows for the prediction intervals, from the committed validation ground truth.

Each row is one measured time and fleetsim's prediction of it (``calibration.intervals``
``ROW_COLUMNS``), from the three validation sections:

* ``forward.csv``: whole forward passes, class = the ``mode`` (``prefill_eager``,
  ``decode_graph``), priced as the ``reference`` kernel sequence of the measured decoder
  (``validate_forward.forward_rows``: the cost model's error on the software that ran,
  not the fusion gap between that software and a serving engine);
* ``ops_heldout.csv``: single operators, class ``gemm`` or ``attention``;
* ``training.csv``: steps, class ``train_step`` (GPU-bound steps), ``train_step_host_bound``
  and ``train_device`` (summed kernel time), from ``training_validate.our_rows``.

Every point is priced with its GPU's own profile (``own``) and, for each other profile of
the same architecture, from that profile's fitted roofline (``cross``: the GPU treated as
one without a profile). Roofline share: forward rows their share of time, single
operators 0 or 1 by their source, training rows the share of operators by count.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pandas as pd

from fleetsim.calibration.intervals import ROW_COLUMNS, fit_table

__all__ = ["TABLE_HEADER", "residual_rows", "training_rows", "write_table"]

TRAIN_CLASSES = {"step_time_s": "train_step", "step_time_host_bound_s": "train_step_host_bound",
                 "device_time_s": "train_device"}


def _profile(label: str) -> str:
    return "own" if label == "own" else "cross"


def _roofline_share(cost_source: str) -> float:
    counts = {k: float(v) for k, v in (p.split("=") for p in str(cost_source).split(",") if "=" in p)}
    total = sum(counts.values())
    return counts.get("roofline", 0.0) / total if total > 0 else 1.0


def training_rows(root: Path | None = None, profile_root: Path | None = None) -> pd.DataFrame:
    """Training residual rows: own profile and, per same-architecture profile, cross."""
    from fleetsim.calibration import MeasuredCostModel, RooflineCostModel, profile_dirs
    from fleetsim.hardware.catalog import get_gpu
    from fleetsim.training_validate import MEASURED_ROOT, measured_files, our_rows

    root = root if root is not None else MEASURED_ROOT
    parts = []
    for path in measured_files(root):
        gpu = get_gpu(path.parent.name)
        parts.append(our_rows(root, gpus={gpu.name}).assign(predictor="own"))
        for name, pdir in profile_dirs(profile_root).items():
            other = get_gpu(name)
            if name == gpu.name or other.architecture != gpu.architecture:
                continue
            cm = RooflineCostModel(MeasuredCostModel(pdir, other).fit)
            parts.append(our_rows(root, cm, gpus={gpu.name}).assign(predictor=f"cross:{name}"))
    df = pd.concat(parts, ignore_index=True)
    df = df[df["metric"].isin(TRAIN_CLASSES)]
    return pd.DataFrame({
        "gpu": df["gpu"], "cls": df["metric"].map(TRAIN_CLASSES), "profile": df["predictor"].map(_profile),
        "measured_s": df["measured"].astype(float), "predicted_s": df["predicted"].astype(float),
        "roofline_share": [1.0 if p != "own" else _roofline_share(s) for p, s in zip(df["predictor"], df["cost_source"], strict=True)],
        "predictor": df["predictor"], "what": df["model"] + " " + df["config"],
    })


def residual_rows(validation_root: Path | None = None, profile_root: Path | None = None) -> pd.DataFrame:
    """All residual rows (``ROW_COLUMNS`` plus ``predictor`` and ``what``), in file order."""
    from fleetsim.validate_forward import forward_rows, heldout_rows

    f = forward_rows(validation_root, profile_root)
    f = f[f["graph"] == "reference"]
    fwd = pd.DataFrame({
        "gpu": f["gpu"], "cls": f["mode"], "profile": f["predictor"].map(_profile),
        "measured_s": f["measured_s"], "predicted_s": f["predicted_s"],
        "roofline_share": (1.0 - f["measured_share"]).clip(0.0, 1.0), "predictor": f["predictor"],
        "what": f["model"] + " b" + f["batch"].astype(str) + " q" + f["q_len"].astype(str)
        + " ctx" + f["context"].astype(str) + " tp" + f["tp"].astype(str),
    })
    h = heldout_rows(validation_root, profile_root)
    ops = pd.DataFrame({
        "gpu": h["gpu"], "cls": h["op"].where(h["op"] == "gemm", "attention"),
        "profile": h["predictor"].map(_profile), "measured_s": h["measured_s"], "predicted_s": h["predicted_s"],
        "roofline_share": (h["source"] == "roofline").astype(float), "predictor": h["predictor"],
        "what": h["op"] + " " + h["shape"],
    })
    out = pd.concat([fwd, ops, training_rows(validation_root, profile_root)], ignore_index=True)
    return out[[*ROW_COLUMNS, "predictor", "what"]]


TABLE_HEADER = (
    "# 80% prediction intervals: split-conformal q10/q90 of ln(measured/predicted) per (gpu, cls, profile);\n"
    "# gpu '*' = the class over all GPUs, cls '*' = every class of that profile kind (fallbacks).\n"
    "# fit data: every committed row of calibration/validation/<GPU>/forward.csv (reference graph),\n"
    "# ops_heldout.csv and training.csv (step_time_s, step_time_host_bound_s, device_time_s),\n"
    "# priced with the GPU's own profile (own) and from each other same-architecture profile (cross).\n"
    "# written by benchmarks/fit_intervals.py (fleetsim.interval_data.write_table); see docs/intervals.md\n"
)


def write_table(path: Path, rows: pd.DataFrame | None = None, date: str | None = None) -> pd.DataFrame:
    """Fit the table on ``rows`` (default: ``residual_rows()``) and write it with its header."""
    rows = residual_rows() if rows is None else rows
    table = fit_table(rows)
    day = date or datetime.date.today().isoformat()
    text = TABLE_HEADER + f"# fitted on {len(rows)} rows, {day}\n" + table.to_csv(index=False)
    path.write_text(text)
    return table
