"""Efficiency tables fitted from a measured profile.

For every kernel row of a profile the *roofline efficiency*

    r = t_ideal / (t_measured - floor),   t_ideal = max(flops / peak(dtype), bytes / mem_bw)

is the share of the spec roofline the kernel achieved (peaks and bandwidth of the GPU the
profile was measured on, no derating). ``floor`` is the fixed per-kernel cost that does not
scale with work: the measured per-kernel time of an empty kernel replayed from a CUDA graph
(``launch.csv``); if some measured kernel is faster than that, half the fastest kernel
time instead, so that r stays finite.
log r is tabulated over log shape features (``interp.FamilyTable``). A time is rebuilt as
``floor + t_ideal / r``: exact at measured points, and on another GPU of the same
architecture ``t_ideal`` uses *that* GPU's spec FLOP/s and bandwidth (scaling by specs).

Collectives and copies are tabulated as log time over log bytes per (op, group size) /
direction, with a latency-bandwidth fit ``t = alpha + bytes * beta`` (least squares on
relative error) for sizes outside the measured range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from fleetsim.hardware.specs import DTYPE_BYTES, GPUSpec
from scipy.optimize import nnls

from .interp import FamilyTable
from .opbatch import COLLECTIVE_STEPS, COLLECTIVE_TRAFFIC, group_positions
from .profile import Profile

MEASURED, INTERP, FITTED, NONE = 0, 1, 2, 3
"""Lookup outcomes: exact measured point, inside the measured hull, efficiency taken from
the nearest measured point (outside the hull), no table at all."""


def _peaks(gpu: GPUSpec, dtypes: list[str]) -> np.ndarray:
    cache: dict[str, float] = {}
    out = np.empty(len(dtypes))
    for i, d in enumerate(dtypes):
        p = cache.get(d)
        if p is None:
            p = cache[d] = gpu.flops(d)
        out[i] = p
    return out


def ideal_time(gpu: GPUSpec, flops: np.ndarray, nbytes: np.ndarray, dtypes: list[str]) -> np.ndarray:
    """Spec roofline time without any efficiency derating."""
    return np.maximum(flops / _peaks(gpu, dtypes), nbytes / gpu.memory_bw_bps)


def fit_alpha_beta(nbytes: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Non-negative (alpha_s, beta_s_per_byte) minimising the relative error of alpha + beta*bytes."""
    a = np.column_stack([1.0 / t, nbytes / t])
    coef, _ = nnls(a, np.ones_like(t))
    return float(coef[0]), float(coef[1])


@dataclass
class LinkFit:
    """Per (collective, group size) or copy direction: log-time table plus alpha-beta fit."""

    table: FamilyTable
    alpha_beta: dict[tuple, tuple[float, float]] = field(default_factory=dict)


class ProfileFit:
    """Everything the cost models read from one profile, in log-space tables."""

    def __init__(self, profile: Profile, gpu: GPUSpec) -> None:
        self.profile = profile
        self.gpu = gpu
        self.gpu_name = gpu.name
        self.architecture = gpu.architecture
        t = profile.tables
        kernel_times = [df["time_s"].to_numpy() for kind, df in t.items()
                        if kind in ("gemm", "attention", "elementwise")]
        t_min = min((float(x.min()) for x in kernel_times if len(x)), default=np.inf)
        graph = profile.launch_s("graph")
        eager = profile.launch_s("eager")
        self.graph_s = graph if graph is not None else gpu.graph_kernel_overhead_s
        self.eager_s = eager if eager is not None else gpu.kernel_overhead_s
        self.floor_s = self.graph_s if self.graph_s < t_min else 0.5 * t_min
        self.gemm = self._gemm(t["gemm"]) if "gemm" in t else None
        self.attention = self._attention(t["attention"]) if "attention" in t else None
        self.elementwise = self._elementwise(t["elementwise"]) if "elementwise" in t else None
        self.collective = self._link_table(t["collective"], ["op", "group_size"]) if "collective" in t else None
        self.memcpy = None
        if "memcpy" in t:
            df = t["memcpy"]
            pinned = df[df["pinned"]]
            self.memcpy = self._link_table(pinned if not pinned.empty else df, ["direction"])

    def _log_r(self, flops: np.ndarray, nbytes: np.ndarray, dtypes: list[str], t: np.ndarray) -> np.ndarray:
        ideal = ideal_time(self.gpu, flops, nbytes, dtypes)
        return np.log(ideal / (t - self.floor_s))

    def _gemm(self, df: pd.DataFrame) -> FamilyTable:
        m, n, k, b = (df[c].to_numpy(float) for c in ("m", "n", "k", "batch"))
        dt = df["dtype"].tolist()
        eb = np.array([DTYPE_BYTES.get(d, 2.0) for d in dt])
        out_b = np.where(np.isin(np.asarray(dt), ["fp8", "int8", "fp4"]), 2.0, eb)
        flops = 2.0 * m * n * k * b
        nbytes = b * ((m * k + k * n) * eb + m * n * out_b)
        y = self._log_r(flops, nbytes, dt, df["time_s"].to_numpy(float))
        fam = list(zip(dt, b.tolist(), n.tolist(), k.tolist(), strict=True))
        sup = [(d,) for d in dt]
        lm, ln, lk, lb = np.log(m), np.log(n), np.log(k), np.log(b)
        exact = [f + (mm,) for f, mm in zip(fam, m.tolist(), strict=True)]
        return FamilyTable.build(fam, sup, lm[:, None], np.column_stack([lm, ln, lk, lb]), y, exact, y)

    def _attention(self, df: pd.DataFrame) -> FamilyTable:
        keys = [c for c in df.columns if c not in ("backend", "time_s", "p10_s", "p90_s")]
        df = df.groupby(keys, as_index=False, sort=False)["time_s"].min()
        bsz, q, kv, h, kvh, hd, vhd = (df[c].to_numpy(float) for c in (
            "batch", "q_len", "kv_len", "num_heads", "num_kv_heads", "head_dim", "v_head_dim"))
        vhd = np.where(vhd > 0, vhd, hd)
        causal = df["causal"].to_numpy(bool)
        dt = df["dtype"].tolist()
        decode = q <= 1.0
        pairs = np.where(causal, q * kv - q * (q - 1.0) / 2.0, q * kv)
        eb = np.array([DTYPE_BYTES.get(d, 2.0) for d in dt])
        flops = 2.0 * h * (hd + vhd) * bsz * pairs
        nbytes = bsz * (q * h + kv * kvh) * (hd + vhd) * eb
        y = self._log_r(flops, nbytes, dt, df["time_s"].to_numpy(float))
        fam, sup, exact = [], [], []
        for i in range(len(df)):
            base = (bool(decode[i]), bool(causal[i]), float(hd[i]), float(vhd[i]), dt[i])
            sup.append(base)
            fam.append(base + (float(h[i]), float(kvh[i])))
            exact.append(fam[-1] + (float(bsz[i]), float(q[i]), float(kv[i])))
        fx = np.column_stack([np.log(bsz), np.log(q), np.log(kv)])
        sx = np.column_stack([fx, np.log(h), np.log(kvh)])
        return FamilyTable.build(fam, sup, fx, sx, y, exact, y)

    def _elementwise(self, df: pd.DataFrame) -> FamilyTable:
        nbytes = df["bytes"].to_numpy(float)
        dt = df["dtype"].tolist()
        y = self._log_r(np.zeros_like(nbytes), nbytes, dt, df["time_s"].to_numpy(float))
        kern = df["kernel"].tolist()
        fam = list(zip(kern, dt, strict=True))
        sup = [("*",)] * len(df)
        lx = np.log(nbytes)[:, None]
        exact = [f + (bb,) for f, bb in zip(fam, nbytes.tolist(), strict=True)]
        return FamilyTable.build(fam, sup, lx, lx, y, exact, y)

    @staticmethod
    def _link_table(df: pd.DataFrame, key_cols: list[str]) -> LinkFit:
        nbytes = df["bytes"].to_numpy(float)
        t = df["time_s"].to_numpy(float)
        fam = [tuple(x if isinstance(x, str) else float(x) for x in r)
               for r in df[key_cols].itertuples(index=False, name=None)]
        lx = np.log(nbytes)[:, None]
        exact = [f + (b,) for f, b in zip(fam, nbytes.tolist(), strict=True)]
        table = FamilyTable.build(fam, [("*",)] * len(df), lx, lx, np.log(t), exact, np.log(t))
        fit = LinkFit(table)
        for key, idx in group_positions(fam).items():
            fit.alpha_beta[key] = fit_alpha_beta(nbytes[idx], t[idx])  # type: ignore[index]
        return fit

    def link_params(self, kind: str, group: float) -> tuple[float, float] | None:
        """(effective bandwidth B/s, latency per step s) of the scale-up link, from the
        measured group size nearest to ``group`` for collective ``kind`` (ring formulas)."""
        if self.collective is None:
            return None
        cands = [(abs(np.log(g) - np.log(group)), g) for (op, g) in self.collective.alpha_beta
                 if op == kind and g > 1]
        if not cands:
            return None
        g = min(cands)[1]
        alpha, beta = self.collective.alpha_beta[(kind, g)]
        traffic = float(COLLECTIVE_TRAFFIC[kind](np.float64(g)))
        steps = float(COLLECTIVE_STEPS[kind](np.float64(g)))
        bw = traffic / beta if beta > 0 else np.inf
        return bw, (alpha / steps if steps > 0 else alpha)


def lookup(table: FamilyTable | None, fam_keys: list[tuple], sup_keys: list[tuple],
           fam_x: np.ndarray, sup_x: np.ndarray, exact_keys: list[tuple],
           super_interp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Tabulated value and outcome code (MEASURED/INTERP/FITTED/NONE) for each query.

    Order of preference: exact measured point; inside the hull of the query's own family;
    inside the hull of its super-family (counted as FITTED when ``super_interp`` is False,
    i.e. when the super-family mixes kernels that differ in ways the features do not
    capture); value at the nearest point of the family, else of the super-family.
    """
    n = len(fam_keys)
    y = np.full(n, np.nan)
    code = np.full(n, NONE, dtype=np.int8)
    if table is None or n == 0:
        return y, code
    ex = table.exact
    for i, key in enumerate(exact_keys):
        v = ex.get(key)
        if v is not None:
            y[i] = v
            code[i] = MEASURED
    for key, idx in group_positions(fam_keys).items():
        idx = idx[code[idx] == NONE]
        hi = table.family.get(key)  # type: ignore[call-overload]
        if hi is None or idx.size == 0:
            continue
        v, inside = hi(fam_x[idx])
        y[idx[inside]] = v[inside]
        code[idx[inside]] = INTERP
    rest = np.flatnonzero(code == NONE)
    if rest.size:
        for key, idx in group_positions([sup_keys[i] for i in rest]).items():
            idx = rest[idx]
            hi = table.super.get(key)  # type: ignore[call-overload]
            if hi is None:
                continue
            v, inside = hi(sup_x[idx])
            y[idx[inside]] = v[inside]
            code[idx[inside]] = INTERP if super_interp else FITTED
    rest = np.flatnonzero(code == NONE)
    if rest.size:
        for key, idx in group_positions([(fam_keys[i], sup_keys[i]) for i in rest]).items():
            idx = rest[idx]
            fam_key, sup_key = key  # type: ignore[misc]
            hi = table.family.get(fam_key)
            x = fam_x
            if hi is None:
                hi, x = table.super.get(sup_key), sup_x
            if hi is None:
                continue
            y[idx] = hi.nearest(x[idx])
            code[idx] = FITTED
    return y, code
