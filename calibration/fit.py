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

Collectives and copies are tabulated as time over bytes per (op, group size) / direction,
linear in bytes between measured sizes (exact for a latency-bandwidth law), with a fit
``t = alpha + bytes * beta`` (least squares on relative error) outside the measured range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from fleetsim.hardware.specs import DTYPE_BYTES, GPUSpec
from scipy.optimize import nnls

from .interp import FamilyTable, group_rows, split_groups, text_codes
from .opbatch import (
    COLLECTIVE_STEPS,
    COLLECTIVE_TRAFFIC,
    attention_pairs,
    gemm_unaligned,
    pad_attention,
    pad_m,
)
from .ops import BACKWARD_BYTES_FACTOR, BACKWARD_FLOPS_FACTOR
from .profile import Profile
from .sustain import SustainedLoad

HARNESS_LAUNCHES = {"rotary": 5, "silu_mul": 2, "sample": 5, "cross_entropy": 2}
"""Kernels one call of the calibration harness's composite elementwise ops launches
(calibration/bench/memory.py: rotary = mul, neg, cat, mul, add; silu_mul = silu, mul;
sample = softmax, div, exponential_, div, argmax; cross_entropy = log_softmax, nll).
Every other measured call is one kernel."""

MIN_TOKENS_PER_EXPERT = 4.0
"""Grouped-GEMM profile points with fewer routed tokens per expert leave experts idle."""

POOLED_KERNELS = ("copy", "residual_add", "gelu", "embedding")
"""Single-pass streaming kernels whose pooled efficiency prices kernels a profile lacks."""

MEASURED, INTERP, FITTED, NONE = 0, 1, 2, 3
"""Lookup outcomes: exact measured point, inside the measured hull, efficiency taken from
the nearest measured point (outside the hull), no table at all."""


def _peak(gpu: GPUSpec, dtype: str) -> float:
    """Peak for a compute dtype; storage-only dtypes (uint8 copies) use the widest peak."""
    if dtype not in DTYPE_BYTES:
        return max(gpu.peak_flops.values())
    return gpu.flops(dtype)


def peak_flops(gpu: GPUSpec, dtypes: list[str]) -> np.ndarray:
    """Dense peak FLOP/s of ``gpu`` for each dtype in the list."""
    table = {d: _peak(gpu, d) for d in set(dtypes)}
    return np.fromiter(map(table.__getitem__, dtypes), dtype=float, count=len(dtypes))


def ideal_time(gpu: GPUSpec, flops: np.ndarray, nbytes: np.ndarray, dtypes: list[str]) -> np.ndarray:
    """Spec roofline time without any efficiency derating."""
    return np.maximum(flops / peak_flops(gpu, dtypes), nbytes / gpu.memory_bw_bps)


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
        ew = t.get("elementwise")
        self.stream_floor_s = float(ew["time_s"].min()) if ew is not None and len(ew) else self.graph_s
        self.graph_gap_s = max(0.0, self.stream_floor_s - self.graph_s)
        self.dram_efficiency = gpu.mem_bw_efficiency
        """Best streaming efficiency measured (bytes / time / spec bandwidth of elementwise
        kernels moving >= 64 MB), the DRAM share used when transferring to another GPU."""
        if ew is not None:
            big = ew[ew["bytes"] >= 64e6]
            if len(big):
                best = float((big["bytes"] / big["time_s"]).max()) / gpu.memory_bw_bps
                self.dram_efficiency = min(1.0, max(best, 0.1))
        """Per-kernel time a CUDA-graph replay saves against back-to-back stream launches:
        the fastest measured single kernel minus the graph's per-kernel time."""
        self.gemm = self._gemm(t["gemm"]) if "gemm" in t else None
        self.grouped_gemm = self._grouped_gemm(t["moe"]) if "moe" in t else None
        self.gemm_layout = self._gemm(t["gemm_layout"], key_dtypes=layout_dtypes(t["gemm_layout"])) \
            if "gemm_layout" in t else None
        """Backward-layout GEMMs (``gemm_layout.csv``), families keyed by ``layout_dtype``."""
        self.attention = self._attention(t["attention"]) if "attention" in t else None
        self.elementwise = self._elementwise(t["elementwise"]) if "elementwise" in t else None
        self.collective = self._link_table(t["collective"], ["op", "group_size"]) if "collective" in t else None
        self.sustained = SustainedLoad.from_profile(profile)
        self.host_calls = profile.host_calls()
        self.memcpy = None
        if "memcpy" in t:
            df = t["memcpy"]
            pinned = df[df["pinned"]]
            self.memcpy = self._link_table(pinned if not pinned.empty else df, ["direction"])

    def _log_r(self, flops: np.ndarray, nbytes: np.ndarray, dtypes: list[str], t: np.ndarray) -> np.ndarray:
        ideal = ideal_time(self.gpu, flops, nbytes, dtypes)
        return np.log(ideal / (t - self.floor_s))

    def _gemm(self, df: pd.DataFrame, key_dtypes: list[str] | None = None) -> FamilyTable:
        """GEMM families keyed by (dtype, alignment, batch, n, k) over log m; ``key_dtypes``
        replaces the dtype in the key only (layout tables), not in the roofline it is scaled by."""
        m, n, k, b = (df[c].to_numpy(float) for c in ("m", "n", "k", "batch"))
        dt = df["dtype"].tolist()
        eb = np.array([DTYPE_BYTES.get(d, 2.0) for d in dt])
        out_b = np.where(np.isin(np.asarray(dt), ["fp8", "int8", "fp4"]), 2.0, eb)
        nbytes = b * ((m * k + k * n) * eb + m * n * out_b)
        mp = pad_m(m)
        y = self._log_r(2.0 * mp * n * k * b, nbytes, dt, df["time_s"].to_numpy(float))
        dc = text_codes(dt if key_dtypes is None else key_dtypes)
        fam = np.column_stack([dc, gemm_unaligned(n, k, eb), b, n, k])
        return FamilyTable.build(fam, np.log(mp)[:, None], y, coord_cols=(2, 3, 4))

    def _grouped_gemm(self, df: pd.DataFrame) -> FamilyTable | None:
        """Grouped expert GEMMs (``moe.csv``, impl ``grouped_mm``) as GEMM families keyed by
        (dtype, experts, n, k) over the tokens per expert ``m = tokens * top_k / experts``.

        One grouped kernel streams every expert's weights, so its efficiency is not that of a
        single expert's small GEMM. Only points where routing touches essentially every expert
        (``m >= MIN_TOKENS_PER_EXPERT``: with uniform routing, 1 - e^-4 = 98 % of experts) are
        kept, since the operator graphs count all local experts as active."""
        g = df[(df["impl"] == "grouped_mm") & (df["n"] > 0) & (df["k"] > 0)]
        m = g["tokens"].to_numpy(float) * g["top_k"].to_numpy(float) / g["experts"].to_numpy(float)
        g = g[m >= MIN_TOKENS_PER_EXPERT]
        if g.empty:
            return None
        rows = pd.DataFrame({
            "dtype": g["dtype"].to_numpy(),
            "m": (g["tokens"] * g["top_k"] / g["experts"]).to_numpy(float),
            "n": g["n"].to_numpy(float),
            "k": g["k"].to_numpy(float),
            "batch": g["experts"].to_numpy(float),
            "time_s": g["time_s"].to_numpy(float),
        })
        return self._gemm(rows)

    def _attention(self, df: pd.DataFrame) -> FamilyTable:
        keys = [c for c in df.columns if c not in ("backend", "time_s", "p10_s", "p90_s")]
        df = df.groupby(keys, as_index=False, sort=False)["time_s"].min()
        bsz, q, kv, h, kvh, hd, vhd = (df[c].to_numpy(float) for c in (
            "batch", "q_len", "kv_len", "num_heads", "num_kv_heads", "head_dim", "v_head_dim"))
        vhd = np.where(vhd > 0, vhd, hd)
        decode = q <= 1.0
        causal = df["causal"].to_numpy(bool) & ~decode
        dt = df["dtype"].tolist()
        phase = np.where(decode, 0.0, np.where(np.abs(q - kv) < 0.5, 1.0, 2.0))
        bwd = (df["phase"].astype(str) == "backward").to_numpy() if "phase" in df.columns else \
            np.zeros(len(df), dtype=bool)
        phase = np.where(bwd, 3.0, phase)
        qp, kvp = pad_attention(phase, q, kv)
        pairs = attention_pairs(qp, kvp, causal)
        eb = np.array([DTYPE_BYTES.get(d, 2.0) for d in dt])
        flops = 2.0 * h * (hd + vhd) * bsz * pairs * np.where(bwd, BACKWARD_FLOPS_FACTOR, 1.0)
        nbytes = bsz * (q * h + kv * kvh) * (hd + vhd) * eb * np.where(bwd, BACKWARD_BYTES_FACTOR, 1.0)
        y = self._log_r(flops, nbytes, dt, df["time_s"].to_numpy(float))
        base = np.column_stack([phase, causal, hd, vhd, text_codes(dt)]).astype(float)
        fam = np.column_stack([base, h, kvh])
        fx = np.column_stack([np.log(bsz), np.log(qp), np.log(kvp)])
        table = FamilyTable.build(fam, fx, y, coord_cols=(5, 6))
        table.shift = (0, 0)  # borrow across head counts at equal batch x heads
        return table

    def _elementwise(self, df: pd.DataFrame) -> FamilyTable:
        """Tables per kernel name (features: log bytes), plus a pooled family (code 0) of
        the single-pass streaming kernels for kernels the profile lacks. A kernel's launch
        count per call comes from ``HARNESS_LAUNCHES`` (composite PyTorch calls such as the
        harness's rotary issue several kernels)."""
        nbytes = df["bytes"].to_numpy(float)
        time_s = df["time_s"].to_numpy(float)
        y = self._log_r(np.zeros_like(nbytes), nbytes, df["dtype"].tolist(), time_s)
        kern = df["kernel"].astype(str).tolist()
        codes = text_codes(kern)
        launches = np.array([float(HARNESS_LAUNCHES.get(k, 1)) for k in kern])
        pool = np.isin(np.asarray(kern), POOLED_KERNELS)
        if not pool.any():
            pool = np.ones(len(df), dtype=bool)
        fam = np.concatenate([codes, np.zeros(int(pool.sum()))])[:, None]
        lx = np.log(nbytes)[:, None]
        return FamilyTable.build(fam, np.vstack([lx, lx[pool]]), np.concatenate([y, y[pool]]),
                                 kernels=np.concatenate([launches, np.ones(int(pool.sum()))]))

    @staticmethod
    def _link_table(df: pd.DataFrame, key_cols: list[str]) -> LinkFit:
        nbytes = df["bytes"].to_numpy(float)
        t = df["time_s"].to_numpy(float)
        fam = np.column_stack([text_codes(df[c].astype(str).tolist()) if c in ("op", "direction")
                               else df[c].to_numpy(float) for c in key_cols])
        table = FamilyTable.build(fam, nbytes[:, None], t)
        fit = LinkFit(table)
        rows, inv = group_rows(fam)
        for g, idx in enumerate(split_groups(inv, len(rows))):
            fit.alpha_beta[tuple(rows[g].tolist())] = fit_alpha_beta(nbytes[idx], t[idx])
        return fit

    def link_params(self, kind: str, group: float) -> tuple[float, float] | None:
        """(effective bandwidth B/s, latency per step s) of the scale-up link, from the
        measured group size nearest to ``group`` for collective ``kind`` (ring formulas)."""
        if self.collective is None:
            return None
        code = text_codes([kind])[0]
        cands = [(abs(np.log(g) - np.log(group)), g) for (op, g) in self.collective.alpha_beta
                 if op == code and g > 1]
        if not cands:
            return None
        g = min(cands)[1]
        alpha, beta = self.collective.alpha_beta[(code, g)]
        traffic = float(COLLECTIVE_TRAFFIC[kind](np.float64(g)))
        steps = float(COLLECTIVE_STEPS[kind](np.float64(g)))
        bw = traffic / beta if beta > 0 else np.inf
        return bw, (alpha / steps if steps > 0 else alpha)


def layout_dtype(dtype: str, layout: str) -> str:
    """Key text of a GEMM dtype in a non-default operand layout (``"bf16:nn"``)."""
    return f"{dtype}:{layout}"


def layout_dtypes(df: pd.DataFrame) -> list[str]:
    """Family key texts of ``gemm_layout.csv`` rows: the layout folded into the dtype."""
    return [layout_dtype(d, lay) for d, lay in zip(df["dtype"].astype(str), df["layout"].astype(str),
                                                   strict=True)]


def lookup(table: FamilyTable | None, fam_keys: np.ndarray, fam_x: np.ndarray,
           borrow_interp: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tabulated value and outcome code (MEASURED/INTERP/FITTED/NONE) for each query.

    ``fam_keys``: one key row per query (numeric, as the table was built); ``fam_x``: its
    continuous log features. A query of a measured family is MEASURED on a measured point,
    INTERP inside the family's grid, else FITTED with the value of the nearest measured
    point. A query of an unmeasured family borrows from the nearest measured families
    (``FamilyTable.borrow``): INTERP when its key coordinates lie inside the measured range
    and every borrowed value is inside its grid (and ``borrow_interp``), else FITTED.
    Also returns the kernel launches per call of each query's family (1 when borrowed).
    """
    n = len(fam_keys)
    y = np.full(n, np.nan)
    code = np.full(n, NONE, dtype=np.int8)
    kern = np.ones(n)
    if table is None or n == 0:
        return y, code, kern
    rows, inv = group_rows(fam_keys)
    for g, idx in enumerate(split_groups(inv, len(rows))):
        key = tuple(rows[g].tolist())
        x = fam_x[idx]
        hi = table.family.get(key)
        if hi is not None:
            v, inside, exact = hi(x)
            y[idx] = v
            code[idx] = np.where(exact, MEASURED, np.where(inside, INTERP, FITTED))
            kern[idx] = hi.kernels
            if not inside.all():
                y[idx[~inside]] = hi.nearest(x[~inside])
            continue
        parts, within = table.borrow(key)
        if not parts:
            continue
        acc = np.zeros(len(idx))
        all_in = np.full(len(idx), within and borrow_interp)
        for interp, w, shift in parts:
            xs = x
            if shift and table.shift is not None:
                xs = x.copy()
                xs[:, table.shift[0]] += shift
            v, inside, _ = interp(xs)
            if not inside.all():
                v[~inside] = interp.nearest(xs[~inside])
            acc += w * v
            all_in &= inside
        y[idx] = acc
        code[idx] = np.where(all_in, INTERP, FITTED)
    return y, code, kern
