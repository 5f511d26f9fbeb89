"""Power model against NVML: whole forward passes and training steps of software fleetsim did
not write (Hugging Face ``transformers``), measured by ``calibration/bench/engines/hf_power.py``.

Each committed ``calibration/validation/<GPU>/engines/hf_power.csv`` row (average board power
from the energy counter over a ~2.5 s window of back-to-back iterations) is predicted with the
``hf-transformers`` engine profile on that GPU: ``estimate_forward`` for decode (CUDA graph)
and prefill (eager) rows, ``estimate_train_step`` for training steps. The power model's
parameters were fitted on kernel micro-benchmarks (``power_occupancy.csv``), never on these
rows, so every row here is held out. Reported per row: measured and predicted time, average
power and energy per iteration, and the errors (predicted / measured - 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fleetsim.calibration.measured import VALIDATION_ROOT

POWER_FILE = "hf_power.csv"
ENGINE = "hf-transformers"


def power_files(root: Path = VALIDATION_ROOT) -> dict[str, Path]:
    """Catalog GPU name -> its committed ``hf_power.csv``."""
    return {p.parents[1].name: p for p in sorted(root.glob(f"*/engines/{POWER_FILE}"))}


def _config(model: str, layers: int) -> dict:
    from fleetsim.engine_fit import _config as cfg

    return cfg(model, layers)


def predict_row(row: pd.Series, gpu: str) -> tuple[float, float]:
    """(seconds, joules) fleetsim predicts for one measured row on ``gpu``."""
    from fleetsim import estimate_forward
    from fleetsim.training import estimate_train_step
    from fleetsim.workloads.models import load_model

    spec = load_model(_config(str(row["model"]), int(row["layers"])))
    phase = str(row["phase"])
    if phase == "train":
        est = estimate_train_step(spec, f"1x{gpu}", micro_batch=int(row["batch"]), global_batch=int(row["batch"]),
                                  seq_len=int(row["seq_len"]), engine=ENGINE,
                                  recompute="full" if int(row["gradient_checkpointing"]) else "none",
                                  record_timeline=False)
        return est.time_s, est.energy_j
    batch = (int(row["batch"]), 1, int(row["ctx"])) if phase == "decode" else (int(row["batch"]), int(row["q"]))
    fwd = estimate_forward(spec, gpu, batch, engine=ENGINE, graphs=phase == "decode", check_context=False)
    return fwd.time_s, fwd.energy_j


def power_rows(root: Path = VALIDATION_ROOT) -> pd.DataFrame:
    """One row per measured point of every GPU: measured and predicted time, power, energy."""
    out = []
    for gpu, path in power_files(root).items():
        df = pd.read_csv(path)
        df = df[df["phase"].isin(["decode", "prefill", "train"]) & df["power_w_mean"].notna()]
        for _, r in df.iterrows():
            t, j = predict_row(r, gpu)
            shape = (f"b={r['batch']} ctx={r['ctx']}" if r["phase"] == "decode" else
                     f"b={r['batch']} s={r['q']}" if r["phase"] == "prefill" else
                     f"mb={r['batch']} s={r['seq_len']}{' ckpt' if int(r['gradient_checkpointing']) else ''}")
            out.append({"gpu": gpu, "model": r["model"], "layers": int(r["layers"]), "phase": r["phase"],
                        "shape": shape, "time_s": float(r["time_s"]), "pred_time_s": t,
                        "power_w": float(r["power_w_mean"]), "pred_power_w": j / t,
                        "energy_j": float(r["energy_j_per_iter"]), "pred_energy_j": j})
    res = pd.DataFrame(out)
    if res.empty:
        return res
    for k in ("time", "power", "energy"):
        a, b = ("time_s", "pred_time_s") if k == "time" else (("power_w", "pred_power_w") if k == "power"
                                                              else ("energy_j", "pred_energy_j"))
        res[f"{k}_err"] = res[b] / res[a] - 1.0
    return res


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per GPU and phase: rows, MAPE of power, energy and time, worst power row."""
    out = []
    for (gpu, phase), g in rows.groupby(["gpu", "phase"], sort=False):
        worst = g.loc[g["power_err"].abs().idxmax()]
        out.append({"gpu": gpu, "phase": phase, "rows": len(g),
                    "power_mape_pct": 100 * float(np.mean(np.abs(g["power_err"]))),
                    "energy_mape_pct": 100 * float(np.mean(np.abs(g["energy_err"]))),
                    "time_mape_pct": 100 * float(np.mean(np.abs(g["time_err"]))),
                    "worst_power": f"{worst['model']} {worst['shape']}: {worst['power_err'] * 100:+.1f}%"})
    return pd.DataFrame(out)
