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


def limiter_rows() -> pd.DataFrame:
    """The clock model held out against the board's own limiter: a large bf16 GEMM demands
    about 1 kW at full clock; under the default 700 W limit the board lowers its clock. The
    measured throughput ratio (continuous GEMM rate over the rate of the same GEMM run at 25-50 %
    duty, where the clock stays at its maximum) against the ratio the clock model predicts from
    the occupancy model's demand (``calibration.power_cap``, not fitted on these GPUs)."""
    from fleetsim.calibration.measured import PROFILE_ROOT
    from fleetsim.calibration.power import OCCUPANCY_FILE, power_state
    from fleetsim.hardware.catalog import get_gpu

    out = []
    for path in sorted(PROFILE_ROOT.glob(f"*/{OCCUPANCY_FILE}")):
        gpu = get_gpu(path.parent.name)
        d = pd.read_csv(path)
        big = d[(d["workload"] == "gemm_bf16") & (d["shape"] == "8192x8192x8192")]
        free = d[(d["workload"] == "duty_gemm") & (d["sm_clock_mhz"] >= 0.96 * gpu.max_clock_hz / 1e6)]
        if big.empty or free.empty:
            continue
        st = power_state(gpu)
        p, clock = st.params, st.clock()
        demand = float(p.demand_w(free["flop_per_s"].mean() / gpu.peak_flops["bf16"],
                                  free["bytes_per_s"].mean() / gpu.memory_bw_bps))
        s = clock.clock_ratio(demand, st.settle_w, p.tdp_w)
        out.append({"gpu": gpu.name, "demand_w": demand, "clock_mhz_pred": s * gpu.max_clock_hz / 1e6,
                    "clock_mhz_meas": float(big["sm_clock_mhz"].median()),
                    "ratio_pred": 1.0 / clock.time_factor(1.0, s),
                    "ratio_meas": float(big["flop_per_s"].mean() / free["flop_per_s"].mean()),
                    "clock_model": clock.source})
    res = pd.DataFrame(out)
    if len(res):
        res["ratio_err"] = res["ratio_pred"] - res["ratio_meas"]
    return res
