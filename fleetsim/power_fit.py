"""Fit the power-cap clock model (``fleetsim.calibration.power_cap``) on the Zeus traces.

Data: ``zeus-nsdi23-power-traces/summary_power_{a40,v100,p100,rtx6000}.csv`` (You, Chung,
Chowdhury, "Zeus", NSDI '23): per (dataset, network, batch size, optimizer) curve, the time of
one epoch and the average board power at each power limit. Each curve's ``demand_w`` is its
average power at the highest limit (the uncapped point); throughput is normalised to that point.

Per GPU the fit shares ``gamma``, ``static_share``, ``min_clock_ratio``, ``cap_headroom`` and the
compute-share rule ``k = clip(k_intercept + k_slope * demand/tdp, 0, 1)`` over all curves
(``scipy.optimize.least_squares`` on the relative errors of throughput and power). A second fit
frees ``k`` per curve (an upper bound on what the clock/power law can do). Split: within each
(dataset, network), batch sizes sorted ascending alternate fit / held out (1st, 3rd, ... fit);
every optimizer of a batch size goes to the same side. The pooled row is fitted on the fit
halves of all four GPUs together.

``python3 -m fleetsim.power_fit --write [--data DIR]`` regenerates ``power_cap_fit.csv``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from fleetsim.calibration.power_cap import FIT_CSV, POOLED, ClockModel
from fleetsim.hardware.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "zeus-nsdi23-power-traces"
CURVE = ["dataset", "network", "batch_size", "optimizer"]
SPLIT_RULE = ("within each (dataset, network) the sorted batch sizes alternate fit/test "
              "(1st, 3rd, ... fit); all optimizers of a batch size on one side")


@dataclass(frozen=True)
class ZeusGPU:
    """One Zeus GPU: its file, board TDP (= the highest limit swept), card and catalog name."""

    name: str
    file: str
    tdp_w: float
    card: str
    catalog_gpu: str


ZEUS_GPUS = (
    ZeusGPU("A40", "summary_power_a40.csv", 300.0, "NVIDIA A40 PCIe, 300 W board power", ""),
    ZeusGPU("V100", "summary_power_v100.csv", 250.0,
            "V100 PCIe: limits swept to 250 W, the PCIe card's TDP (SXM2 is 300 W); same GV100 chip",
            "V100-SXM2-32GB"),
    ZeusGPU("P100", "summary_power_p100.csv", 250.0, "Tesla P100 PCIe, 250 W", ""),
    ZeusGPU("RTX6000", "summary_power_rtx6000.csv", 260.0, "Quadro RTX 6000, 260 W", ""),
)
BOUNDS = {"gamma": (0.2, 8.0), "static_share": (0.0, 0.95), "min_clock_ratio": (0.05, 1.0),
          "cap_headroom": (0.5, 1.0), "k_intercept": (-5.0, 5.0), "k_slope": (-5.0, 5.0)}
SHARED = ("gamma", "static_share", "min_clock_ratio", "cap_headroom")
START = {"gamma": 1.5, "static_share": 0.3, "min_clock_ratio": 0.4, "cap_headroom": 0.95,
         "k_intercept": 0.5, "k_slope": 0.5}


def load_curves(data_dir: Path, gpu: ZeusGPU) -> pd.DataFrame:
    """One GPU's trace with per-point ``thr_ratio`` (uncapped epoch time / time), ``demand_w``,
    ``is_ref`` (the uncapped point), ``curve`` id and ``fit`` side of the split."""
    path = Path(data_dir) / gpu.file
    if not path.is_file():
        raise ConfigError(f"Zeus trace {str(path)!r} does not exist")
    df = pd.read_csv(path)
    missing = [c for c in [*CURVE, "power_limit", "time_per_epoch", "average_power"] if c not in df]
    if missing:
        raise ConfigError(f"{path}: lacks column(s) {', '.join(missing)}")
    if df.duplicated([*CURVE, "power_limit"]).any():
        raise ConfigError(f"{path}: more than one row for a (curve, power_limit)")
    df = df.sort_values([*CURVE, "power_limit"]).reset_index(drop=True)
    top = df.groupby(CURVE).power_limit.transform("max")
    ref = df[df.power_limit == top].set_index(CURVE)[["time_per_epoch", "average_power"]]
    df = df.join(ref.rename(columns={"time_per_epoch": "ref_time_s", "average_power": "demand_w"}), on=CURVE)
    df["thr_ratio"] = df.ref_time_s / df.time_per_epoch
    df["is_ref"] = df.power_limit == top
    df["curve"] = df.groupby(CURVE).ngroup()
    rank = df.groupby(["dataset", "network"]).batch_size.rank(method="dense").astype(int)
    df["fit"] = rank % 2 == 1
    df["gpu"] = gpu.name
    df["tdp_w"] = gpu.tdp_w
    return df


class _Arrays:
    """The columns the optimiser reads, as plain arrays (read once, not per evaluation)."""

    def __init__(self, d: pd.DataFrame) -> None:
        self.tdp = d.tdp_w.to_numpy(float)
        self.dem = d.demand_w.to_numpy(float)
        self.lim = d.power_limit.to_numpy(float)
        self.thr = d.thr_ratio.to_numpy(float)
        self.pow = d.average_power.to_numpy(float)
        self.capped = ~d.is_ref.to_numpy(bool)


def _predict(p: dict[str, float], a: _Arrays, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ClockModel (same equations) for the optimiser: throughput ratio, power (W)."""
    tdp, dem = a.tdp, a.dem
    lim = a.lim * p["cap_headroom"]
    st = p["static_share"] * tdp
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.clip((lim - st) / (dem - st), 0.0, 1.0) ** (1.0 / p["gamma"])
    s = np.where(dem <= lim, 1.0, np.where(lim <= st, p["min_clock_ratio"], root))
    s = np.clip(s, p["min_clock_ratio"], 1.0)
    power = np.where(dem <= st, dem, st + (dem - st) * s ** p["gamma"])
    return 1.0 / (1.0 - k + k / s), power


def _k_rule(p: dict[str, float], a: _Arrays) -> np.ndarray:
    return np.clip(p["k_intercept"] + p["k_slope"] * a.dem / a.tdp, 0.0, 1.0)


def _residuals(a: _Arrays, thr: np.ndarray, power: np.ndarray) -> np.ndarray:
    m = a.capped
    return np.concatenate([(thr / a.thr - 1)[m], (power / a.pow - 1)[m]])


def fit_rule(d: pd.DataFrame) -> dict[str, float]:
    """Shared parameters and the k(demand) rule, least squares on the fit curves ``d``."""
    names = list(BOUNDS)
    a = _Arrays(d)

    def res(x: np.ndarray) -> np.ndarray:
        p = dict(zip(names, x, strict=True))
        return _residuals(a, *_predict(p, a, _k_rule(p, a)))

    r = least_squares(res, [START[n] for n in names], bounds=tuple(zip(*BOUNDS.values(), strict=True)))
    return dict(zip(names, map(float, r.x), strict=True))


def _local(d: pd.DataFrame) -> np.ndarray:
    return d.groupby("curve").ngroup().to_numpy()


def fit_free_k(d: pd.DataFrame, shared: dict[str, float] | None = None) -> tuple[dict[str, float], np.ndarray]:
    """k free per curve; the shared parameters too unless ``shared`` fixes them (held-out use)."""
    idx = _local(d)
    n = int(idx.max()) + 1
    fixed = shared is not None
    names = [] if fixed else list(SHARED)

    def split(x: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
        p = dict(shared) if shared is not None else dict(zip(names, x[:len(names)], strict=True))
        return p, x[len(names):][idx]

    a = _Arrays(d)

    def res(x: np.ndarray) -> np.ndarray:
        p, k = split(x)
        return _residuals(a, *_predict(p, a, k))

    lo = [BOUNDS[n][0] for n in names] + [0.0] * n
    hi = [BOUNDS[n][1] for n in names] + [1.0] * n
    rows = np.concatenate([idx[a.capped], idx[a.capped]])
    sparsity = np.zeros((rows.size, len(names) + n), dtype=bool)
    sparsity[:, :len(names)] = True
    sparsity[np.arange(rows.size), len(names) + rows] = True
    r = least_squares(res, [START[n] for n in names] + [0.5] * n, bounds=(lo, hi), jac_sparsity=sparsity)
    p, _ = split(r.x)
    return {n: float(p[n]) for n in SHARED}, r.x[len(names):]


def model_of(p: dict[str, float], gpu: str) -> ClockModel:
    return ClockModel(gpu=gpu, gamma=p["gamma"], static_share=p["static_share"],
                      min_clock_ratio=p["min_clock_ratio"], source="power_fit",
                      cap_headroom=p["cap_headroom"], k_intercept=p.get("k_intercept", 1.0),
                      k_slope=p.get("k_slope", 0.0))


def mape(model: ClockModel, d: pd.DataFrame, k_per_point: np.ndarray | None = None) -> tuple[float, float]:
    """MAPE (%) of throughput ratio and of average power over the capped points of ``d``,
    priced point by point through ``ClockModel`` (the one owner of the equations)."""
    e_thr, e_pow = [], []
    for i, row in enumerate(d.itertuples()):
        if row.is_ref:
            continue
        k = model.compute_share(row.demand_w, row.tdp_w) if k_per_point is None else float(k_per_point[i])
        s = model.clock_ratio(row.demand_w, row.power_limit, row.tdp_w)
        e_thr.append(abs(1.0 / model.time_factor(k, s) / row.thr_ratio - 1))
        e_pow.append(abs(model.power_w(row.demand_w, s, row.tdp_w) / row.average_power - 1))
    return 100 * float(np.mean(e_thr)), 100 * float(np.mean(e_pow))


def _row(name: str, files: str, card: str, catalog: str, tdp: float | str,
         d: pd.DataFrame) -> dict[str, object]:
    f, t = d[d.fit], d[~d.fit]
    p = fit_rule(f)
    m = model_of(p, name)
    shared, k_fit = fit_free_k(f)
    _, k_test = fit_free_k(t, shared)
    free = model_of(shared, name)
    thr_fit, pow_fit = mape(m, f)
    thr_test, pow_test = mape(m, t)
    thr_fit_a, pow_fit_a = mape(free, f, k_fit[_local(f)])
    thr_test_a, pow_test_a = mape(free, t, k_test[_local(t)])
    r4 = {k: round(v, 4) for k, v in p.items()}
    return {"gpu": name, "catalog_gpu": catalog, "card": card, "zeus_file": files, "tdp_w": tdp, **r4,
            "n_fit": f.curve.nunique() if name != POOLED else f.groupby(["gpu", "curve"]).ngroups,
            "n_test": t.curve.nunique() if name != POOLED else t.groupby(["gpu", "curve"]).ngroups,
            "mape_thr_fit": round(thr_fit, 2), "mape_thr_test": round(thr_test, 2),
            "mape_power_fit": round(pow_fit, 2), "mape_power_test": round(pow_test, 2),
            "kfree_gamma": round(shared["gamma"], 4), "kfree_static_share": round(shared["static_share"], 4),
            "kfree_mape_thr_fit": round(thr_fit_a, 2), "kfree_mape_thr_test": round(thr_test_a, 2),
            "kfree_mape_power_fit": round(pow_fit_a, 2), "kfree_mape_power_test": round(pow_test_a, 2),
            "date": dt.date.today().isoformat(), "split_rule": SPLIT_RULE}


def fit_table(data_dir: Path = DATA_DIR) -> pd.DataFrame:
    """One row per Zeus GPU plus the pooled row (fit on the fit halves of all GPUs)."""
    rows, frames = [], []
    for g in ZEUS_GPUS:
        d = load_curves(data_dir, g)
        frames.append(d)
        rows.append(_row(g.name, g.file, g.card, g.catalog_gpu, g.tdp_w, d))
    allg = pd.concat(frames, ignore_index=True)
    allg["curve"] = allg.groupby(["gpu", "curve"]).ngroup()
    rows.append(_row(POOLED, " + ".join(g.file for g in ZEUS_GPUS), "all four Zeus GPUs", "", "", allg))
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m fleetsim.power_fit", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA_DIR, help="folder of the Zeus summary_power_*.csv")
    ap.add_argument("--write", action="store_true", help=f"write {FIT_CSV.name} (else print)")
    args = ap.parse_args(argv)
    try:
        table = fit_table(args.data)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.write:
        table.to_csv(FIT_CSV, index=False)
    cols = ["gpu", "gamma", "static_share", "min_clock_ratio", "cap_headroom", "k_intercept", "k_slope",
            "mape_thr_fit", "mape_thr_test", "mape_power_fit", "mape_power_test",
            "kfree_mape_thr_fit", "kfree_mape_thr_test", "kfree_mape_power_fit", "kfree_mape_power_test"]
    print(table[cols].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
