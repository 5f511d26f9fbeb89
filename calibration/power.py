"""Board power of a GPU from what its kernels do: occupancy, not operator class.

A kernel's board power is modelled from the rates it achieves, measured through NVML on a
real GPU (``calibration/bench/power_occupancy.py``, results in a profile's
``power_occupancy.csv``)::

    demand = base_w + memory_w * u_mem + compute_w * u_compute

``u_mem`` is the kernel's DRAM bytes per second over the GPU's peak bandwidth and
``u_compute`` its FLOP/s over the dtype's dense peak, both from the kernel's own time. A
large GEMM demands more than the board may draw: the power limiter then lowers the SM clock
until the board draws ``limit_share * limit`` (the H200 settles at 0.987 x 700 W), which the
measured kernel times already include. Between the kernels of a running engine (host gaps,
scheduler time) the board draws ``gap_w``; a replica with no work draws ``idle_w``.

Parameters are fitted by non-negative least squares on the profile's unthrottled rows (duty-
cycled GEMM rows add ``gap_w``), and stored with the fit and its held-out rows in the profile's
``power_model.json`` (``benchmarks/fit_power.py`` writes it; a test re-derives it). A GPU
without such a file gets the measured GPU's parameters scaled to its own idle power and TDP,
labelled ``derived`` in ``source``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from fleetsim.hardware.errors import ConfigError, ProfileError
from fleetsim.hardware.specs import GPUSpec

from .ops import Op

if TYPE_CHECKING:
    from .power_cap import ClockModel

POWER_MODEL_FILE = "power_model.json"
OCCUPANCY_FILE = "power_occupancy.csv"
REFERENCE_GPU = "H200-SXM"
"""The GPU whose measured parameters other GPUs' derived parameters are scaled from."""

FIT_WORKLOADS = ("gemm_bf16", "gemm_fp8", "copy", "duty_gemm", "expand_copy")
"""Occupancy rows that fit the parameters; the others (elementwise adds, attention prefill and
decode, CUDA-graph decode GEMM chains) are held out and reported as the test rows."""

UNTHROTTLED_CLOCK_SHARE = 0.96
"""A row whose SM clock stayed at or above this share of the maximum clock ran unthrottled."""


@dataclass(frozen=True)
class PowerParams:
    """Power model of one GPU (W). ``source`` says whether the numbers were measured on this
    GPU or derived from another's; ``fit`` carries the fit report when measured."""

    gpu: str
    tdp_w: float
    min_cap_w: float
    idle_w: float
    gap_w: float
    base_w: float
    memory_w: float
    compute_w: float
    limit_share: float
    source: str
    fit: dict[str, Any] | None = None
    issue_w: float | None = None
    """Added while a kernel is bound by its SMs' instruction issue rather than by DRAM or tensor
    cores (a broadcast-strided copy such as Hugging Face's ``repeat_kv``): fitted on the
    ``expand_copy`` occupancy rows; None when the profile has none (``power_params`` then
    borrows another GPU's, scaled)."""

    def demand_w(self, u_compute: np.ndarray | float, u_mem: np.ndarray | float,
                 issue: np.ndarray | float = 0.0) -> np.ndarray:
        """Power the work would draw unthrottled (W); ``issue`` is 1 for SM-issue-bound kernels."""
        return (self.base_w + self.memory_w * np.asarray(u_mem, float) + self.compute_w * np.asarray(u_compute, float)
                + (self.issue_w or 0.0) * np.asarray(issue, float))

    def settle_w(self, limit_w: float) -> float:
        """Board power the limiter settles at under ``limit_w``."""
        return self.limit_share * limit_w

    def check_cap(self, power_cap_w: float | None, what: str = "power_cap_w") -> float:
        """The limit in force: ``power_cap_w`` (validated against the GPU's range) or the TDP."""
        if power_cap_w is None:
            return self.tdp_w
        cap = float(power_cap_w)
        if not math.isfinite(cap) or cap < self.min_cap_w or cap > self.tdp_w:
            raise ConfigError(f"{what}={power_cap_w:g}: {self.gpu} accepts power limits from "
                              f"{self.min_cap_w:g} W to {self.tdp_w:g} W")
        return cap

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)


def utilisation(flops: np.ndarray, bytes_: np.ndarray, time_s: np.ndarray, peak_flops: np.ndarray,
                gpu: GPUSpec) -> tuple[np.ndarray, np.ndarray]:
    """(u_compute, u_mem) of kernels from their work and time, each clipped to [0, 1]."""
    t = np.asarray(time_s, float)
    safe = np.where(t > 0, t, np.inf)
    uc = np.asarray(flops, float) / safe / np.asarray(peak_flops, float)
    um = np.asarray(bytes_, float) / safe / gpu.memory_bw_bps
    return np.clip(uc, 0.0, 1.0), np.clip(um, 0.0, 1.0)


def compute_share(flops: np.ndarray, bytes_: np.ndarray, peak_flops: np.ndarray, gpu: GPUSpec) -> np.ndarray:
    """Roofline share of a kernel's time that scales with the SM clock: compute time over the
    larger of compute and memory time (1 for a large GEMM, near 0 for a copy)."""
    tc = np.asarray(flops, float) / np.asarray(peak_flops, float)
    tm = np.asarray(bytes_, float) / gpu.memory_bw_bps
    den = np.maximum(tc, tm)
    return np.where(den > 0, tc / np.where(den > 0, den, 1.0), 0.0)


# -- fitting ---------------------------------------------------------------------------

def _occupancy_rows(df: pd.DataFrame, gpu: GPUSpec) -> pd.DataFrame:
    need = {"workload", "dtype", "duty", "busy_fraction", "flop_per_s", "bytes_per_s", "power_w_mean",
            "sm_clock_mhz"}
    missing = sorted(need - set(df.columns))
    if missing:
        raise ProfileError(f"{OCCUPANCY_FILE}: lacks column(s) {', '.join(missing)}")
    rows = df[~df["workload"].astype(str).str.startswith("idle")].copy()
    peak = rows["dtype"].map(lambda d: gpu.peak_flops.get(str(d), gpu.peak_flops.get("bf16")))
    rows["u_compute"] = np.clip(rows["flop_per_s"].fillna(0.0) / peak.astype(float), 0.0, 1.0)
    rows["u_mem"] = np.clip(rows["bytes_per_s"].fillna(0.0) / gpu.memory_bw_bps, 0.0, 1.0)
    max_mhz = gpu.max_clock_hz / 1e6
    rows["throttled"] = rows["sm_clock_mhz"] < UNTHROTTLED_CLOCK_SHARE * max_mhz
    rows["busy"] = np.where(rows["duty"] < 1, rows["busy_fraction"], 1.0)
    return rows


ISSUE_WORKLOADS = ("expand_copy",)
"""Occupancy rows whose kernels are bound by SM instruction issue (the ``issue_w`` column)."""


def _design(rows: pd.DataFrame) -> np.ndarray:
    b = rows["busy"].to_numpy(float)
    issue = rows["workload"].isin(ISSUE_WORKLOADS).to_numpy(float)
    return np.c_[b, b * rows["u_mem"].to_numpy(float), b * rows["u_compute"].to_numpy(float), 1.0 - b,
                 b * issue]


def fit_power_params(df: pd.DataFrame, gpu: GPUSpec, *, date: str = "") -> PowerParams:
    """Fit ``base_w, memory_w, compute_w, gap_w`` on the unthrottled rows of ``FIT_WORKLOADS``
    (non-negative least squares: unthrottled power = busy x demand + (1 - busy) x gap), the
    limiter share on the throttled full-duty rows, and the idle power on the first idle row;
    report per-row errors on the fitted and the held-out rows."""
    from scipy.optimize import nnls

    rows = _occupancy_rows(df, gpu)
    free = rows[~rows["throttled"]]
    fit_rows = free[free["workload"].isin(FIT_WORKLOADS)]
    if len(fit_rows) < 4:
        raise ProfileError(f"{OCCUPANCY_FILE}: {len(fit_rows)} unthrottled rows of {', '.join(FIT_WORKLOADS)}; "
                           "the power fit needs at least 4")
    has_issue = bool(fit_rows["workload"].isin(ISSUE_WORKLOADS).any())
    design = _design(fit_rows)
    if not has_issue:
        design = design[:, :4]
    x, _ = nnls(design, fit_rows["power_w_mean"].to_numpy(float))
    base, mem, comp, gap = (float(v) for v in x[:4])
    issue_w = float(x[4]) if has_issue else None
    if not has_issue:
        x = np.append(x, 0.0)
    capped = rows[rows["throttled"] & (rows["duty"] >= 1)]
    limit = float(df.attrs.get("power_limit_w", gpu.tdp_w))
    share = float(np.median(capped["power_w_mean"] / limit)) if len(capped) else 1.0
    idle_rows = df[df["workload"].astype(str) == "idle"]["power_w_mean"]
    idle = float(idle_rows.iloc[0]) if len(idle_rows) else gpu.idle_power_w

    def report(part: pd.DataFrame) -> dict[str, Any]:
        pred = _design(part) @ x
        err = (pred - part["power_w_mean"].to_numpy(float)) / part["power_w_mean"].to_numpy(float)
        labels = [f"{w} {s} pass{p}" for w, s, p in zip(part["workload"], part["shape"],
                                                         part["pass"] if "pass" in part else [1] * len(part),
                                                         strict=True)]
        worst = int(np.argmax(np.abs(err))) if len(err) else 0
        return {"rows": len(part), "mape_pct": round(float(np.mean(np.abs(err))) * 100, 2) if len(err) else None,
                "worst": f"{labels[worst]}: {err[worst] * 100:+.1f}%" if len(err) else None}

    test_rows = free[~free["workload"].isin(FIT_WORKLOADS)]
    fit = {"date": date, "fit_workloads": list(FIT_WORKLOADS), "fitted": report(fit_rows),
           "held_out": report(test_rows), "throttled_rows": len(capped), "limit_w": limit}
    return PowerParams(gpu=gpu.name, tdp_w=gpu.tdp_w, min_cap_w=gpu.min_power_cap_w, idle_w=round(idle, 3),
                       gap_w=round(gap, 3), base_w=round(base, 3), memory_w=round(mem, 3),
                       compute_w=round(comp, 3), limit_share=round(share, 4),
                       issue_w=None if issue_w is None else round(issue_w, 3),
                       source=f"measured: NVML on {gpu.name} ({OCCUPANCY_FILE}{', ' + date if date else ''})",
                       fit=fit)


def load_power_params(root: Path, gpu: GPUSpec) -> PowerParams | None:
    """The ``power_model.json`` of the profile folder ``root``, or None when it has none."""
    path = root / POWER_MODEL_FILE
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        p = PowerParams(**raw)
    except (ValueError, TypeError) as exc:
        raise ProfileError(f"{path}: not a power model ({exc})") from None
    if p.gpu != gpu.name:
        raise ProfileError(f"{path}: fitted on {p.gpu}, not {gpu.name}")
    return p


def derived_params(ref: PowerParams, gpu: GPUSpec) -> PowerParams:
    """``ref``'s parameters moved to ``gpu``: idle from its spec, every active term scaled by
    the ratio of the two GPUs' dynamic ranges (TDP - idle)."""
    scale = (gpu.tdp_w - gpu.idle_power_w) / (ref.tdp_w - ref.idle_w)

    def moved(w: float) -> float:
        return round(gpu.idle_power_w + (w - ref.idle_w) * scale, 3)

    return PowerParams(gpu=gpu.name, tdp_w=gpu.tdp_w, min_cap_w=gpu.min_power_cap_w, idle_w=gpu.idle_power_w,
                       gap_w=max(gpu.idle_power_w, moved(ref.gap_w)), base_w=moved(ref.base_w),
                       memory_w=round(ref.memory_w * scale, 3), compute_w=round(ref.compute_w * scale, 3),
                       limit_share=ref.limit_share,
                       issue_w=None if ref.issue_w is None else round(ref.issue_w * scale, 3),
                       source=f"derived: {ref.gpu} measured model scaled to {gpu.name}'s idle power and TDP "
                              f"(catalog spec)")


def power_params(gpu: GPUSpec) -> PowerParams:
    """Power model of ``gpu``: its profile's measured fit where one exists (shipped or under
    ``$FLEETSIM_PROFILE_DIR``), else the reference GPU's fit derived to its spec."""
    from .measured import user_profile_root

    return _power_params(gpu.model_dump_json(), str(user_profile_root()))


@lru_cache(maxsize=64)
def _power_params(gpu_json: str, user_root: str) -> PowerParams:
    gpu = GPUSpec.model_validate_json(gpu_json)
    return _with_issue(_measured_or_derived(gpu), gpu)


def _with_issue(p: PowerParams, gpu: GPUSpec) -> PowerParams:
    """``p`` with an ``issue_w``: its own, else that of a measured profile that has one, scaled
    by the two GPUs' dynamic ranges (labelled in ``source``)."""
    from fleetsim.hardware.catalog import get_gpu

    from .measured import profile_dirs

    if p.issue_w is not None:
        return p
    for name, d in sorted(profile_dirs().items()):
        other = load_power_params(d, get_gpu(name)) if (d / POWER_MODEL_FILE).exists() else None
        if other is not None and other.issue_w is not None:
            scale = (p.tdp_w - p.idle_w) / (other.tdp_w - other.idle_w)
            return replace(p, issue_w=round(other.issue_w * scale, 3),
                           source=f"{p.source}; issue_w from {name}'s expand_copy rows, scaled")
    return replace(p, issue_w=0.0)


def _measured_or_derived(gpu: GPUSpec) -> PowerParams:
    from fleetsim.hardware.catalog import get_gpu

    from .measured import profile_dirs

    dirs = profile_dirs()
    own = dirs.get(gpu.name)
    if own is not None:
        p = load_power_params(own, gpu)
        if p is not None:
            return p
    ref_dir = dirs.get(REFERENCE_GPU)
    ref = load_power_params(ref_dir, get_gpu(REFERENCE_GPU)) if ref_dir is not None else None
    if ref is None:
        raise ProfileError(f"no {POWER_MODEL_FILE} for {REFERENCE_GPU}: the power model has no reference")
    return ref if gpu.name == ref.gpu else derived_params(ref, gpu)


def read_occupancy(root: Path) -> pd.DataFrame:
    """A profile folder's ``power_occupancy.csv`` with the power limit it ran under (from
    ``power_occupancy_meta.json``) in ``attrs``, for ``fit_power_params``."""
    path = root / OCCUPANCY_FILE
    if not path.exists():
        raise ProfileError(f"{path}: not found (run calibration/bench/power_occupancy.py on the GPU)")
    df = pd.read_csv(path)
    meta_path = root / "power_occupancy_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if "power_limit_w" in meta:
        df.attrs["power_limit_w"] = float(meta["power_limit_w"])
    df.attrs["date"] = str(meta.get("date", ""))[:10]
    return df


def refit(root: Path, gpu: GPUSpec) -> PowerParams:
    """Fit ``root``'s power model from its occupancy rows (what ``power_model.json`` holds)."""
    df = read_occupancy(root)
    return fit_power_params(df, gpu, date=str(df.attrs.get("date", "")))


def op_peaks(ops: Sequence[Op], gpu: GPUSpec) -> np.ndarray:
    """Dense peak FLOP/s of each operator's dtype on ``gpu`` (bf16's where it has none)."""
    bf16 = gpu.peak_flops.get("bf16") or max(gpu.peak_flops.values())
    peaks = gpu.peak_flops
    return np.fromiter((peaks.get(getattr(op, "dtype", "bf16"), bf16) for op in ops), float, len(ops))


def kernel_power_w(params: PowerParams, gpu: GPUSpec, ops: Sequence[Op], times_s: np.ndarray) -> np.ndarray:
    """Board power (W) of each operator run back to back on its own at its tabled time under
    the default limit (each one its own window for the limiter)."""
    uc, um = utilisation(np.array([float(op.flops) for op in ops]), np.array([float(op.bytes_moved) for op in ops]),
                         np.asarray(times_s, float), op_peaks(ops, gpu), gpu)
    return np.minimum(params.demand_w(uc, um), params.settle_w(params.tdp_w))


@dataclass(frozen=True)
class PowerState:
    """A GPU's power model under a limit: ``cap_w`` (the TDP when uncapped).

    The limiter acts on board power averaged over a window longer than one kernel, so within
    an iteration short memory-bound kernels run at full clock beside throttled GEMMs: a
    kernel's power before the limiter is its demand (``kernels``), and the iteration's kernel
    energy is capped at ``limit_share x cap x kernel time`` (``limited_j``). Under a cap below
    the TDP each kernel whose demand exceeds the cap also runs at the SM clock ratio the clock
    model (``calibration.power_cap``) solves for, and its time grows by that model's time
    factor over the time it was tabled at (under the default limit)."""

    params: PowerParams

    cap_w: float

    @property
    def capped(self) -> bool:
        return self.cap_w < self.params.tdp_w

    @property
    def settle_w(self) -> float:
        """Average board power the limiter holds the kernels to."""
        return self.params.settle_w(self.cap_w)

    def gap_w(self) -> float:
        """Board power between kernels of a running engine."""
        return min(self.params.gap_w, self.settle_w)

    def clock(self) -> ClockModel:
        """The clock model of this GPU; where its limiter share was measured (NVML), that share
        replaces the Zeus-fitted headroom."""
        from .power_cap import clock_model

        cm = clock_model(self.params.gpu)
        return replace(cm, cap_headroom=1.0) if self.params.source.startswith("measured") else cm

    def kernels(self, gpu: GPUSpec, flops: np.ndarray, moved: np.ndarray, peaks: np.ndarray,
                times_s: np.ndarray, issue: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(time factor, board power W before the iteration limiter) of kernels of ``flops``
        and ``moved`` bytes each, on dtypes of ``peaks`` FLOP/s (``op_peaks``), tabled at
        ``times_s``; ``issue``: 1 for kernels bound by SM instruction issue (``issue_w``)."""
        t = np.asarray(times_s, float)
        uc, um = utilisation(flops, moved, t, peaks, gpu)
        demand = self.params.demand_w(uc, um, 0.0 if issue is None else issue)
        if not self.capped:
            return np.ones(len(t)), demand
        clock = self.clock()
        k = compute_share(flops, moved, peaks, gpu)
        tdp = self.params.tdp_w
        lim_def, lim_cap = self.params.settle_w(tdp), self.settle_w
        s_def = np.array([clock.clock_ratio(d, lim_def, tdp) for d in demand])
        s_cap = np.array([clock.clock_ratio(d, lim_cap, tdp) for d in demand])
        factor = np.array([clock.time_factor(float(ki), sc) / clock.time_factor(float(ki), sd)
                           for ki, sc, sd in zip(k, s_cap, s_def, strict=True)])
        power = np.array([clock.power_w(d, sc, tdp) for d, sc in zip(demand, s_cap, strict=True)])
        return factor, power

    def limited_j(self, kernel_j: float, kernel_s: float) -> float:
        """Kernel energy of an iteration after the limiter: at most ``settle_w`` on average."""
        return min(kernel_j, self.settle_w * kernel_s)

    def iteration_j(self, kernel_j: float, kernel_s: float, total_s: float) -> float:
        """Board energy of an iteration of ``total_s`` whose kernels ran ``kernel_s`` and drew
        ``kernel_j`` before the limiter; the rest of the time is gaps at ``gap_w``."""
        return self.limited_j(kernel_j, kernel_s) + max(total_s - kernel_s, 0.0) * self.gap_w()


def power_state(gpu: GPUSpec, power_cap_w: float | None = None, what: str = "power_cap_w") -> PowerState:
    """``gpu``'s power model under ``power_cap_w`` (None: its TDP), the cap checked against the
    GPU's limits (one-line ``ConfigError`` naming ``what``)."""
    p = power_params(gpu)
    return PowerState(p, p.check_cap(power_cap_w, what))
