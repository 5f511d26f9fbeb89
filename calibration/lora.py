"""Cost of multi-tenant LoRA: the adapter kernels of an iteration and adapter loads.

**Kernels.** One *application* is ``y += (x A_a) B_a`` for every token's adapter ``a``
(hidden ``h`` -> rank ``r`` -> ``h``) over ``T`` tokens of ``A`` distinct adapters. A model
applies LoRA to ``n_proj`` projections per layer (q, k, v, o, gate, up, down: 7 for a
llama-style model), so an iteration runs ``n_proj x layers`` applications per stage.

* Measured (``lora.csv`` in a GPU's profile, written by ``calibration/bench/lora.py``): the
  time of one application of a named kernel - ``sgmv_grouped_mm`` (two
  ``torch._grouped_mm`` calls over adapter segments, Punica SGMV-style), ``sgmv_loop``
  (one ``mm`` pair per adapter segment) or ``bgmv_gather`` (gather each token's A/B, two
  ``bmm``: Punica BGMV-style) - at grid points of (h, T, A, r). Between points the time is
  interpolated linearly in log T and log r for the segment kernels (nearly flat in both)
  and linearly in T and r for the gather (its cost grows with T x r), linearly in A (the
  measured cost is linear in A), past the last measured A extrapolated linearly, and
  clamped to the measured T and r ranges; hidden sizes between measured ones linearly. The source says ``measured`` at a
  grid point, ``interpolated`` inside the grid, ``extrapolated`` outside it.
* Roofline (any GPU without ``lora.csv``, or ``kernel="roofline"``: what fused kernels such
  as Punica's SGMV or S-LoRA's MBGMM approach): ``max(FLOPs / peak, bytes / bandwidth)``
  with ``4 T h r`` FLOPs (shrink and expand) and the bytes of the A/B matrices of the ``A``
  adapters plus the activations (x read, y read and written, the rank-``r`` intermediate
  written and read), the GPU's efficiencies applied.

The measured plain-torch kernels cost a fixed ~25-30 us (grouped) or ~8 us per adapter
(loop) however small the matrices; the roofline does not see that overhead.

**Projection shapes** (``sgmv_grouped_mm`` where the GPU has ``lora_split.csv``, written by
``calibration/bench/engines/lora_split.py``): ``lora.csv`` tabulates a square ``h x h``
projection, but a model's are not square (llama-3.1-8b: k/v 4096 -> 1024, gate/up 4096 ->
14336, down 14336 -> 4096), and the two grouped GEMMs of an application each depend on one
dimension: the shrink ``x [T, in] -> [T, r]`` on ``in``, the expand ``[T, r] -> y [T, out]``
(accumulated into ``y``) on ``out``. Each half is measured alone over dims 1024-14336
(``shrink`` / ``expand`` rows) and a projection ``in -> out`` costs ``shrink(in) +
expand(out)``, each interpolated like ``lora.csv`` (linear in dim and A, log T and log r).
Check (``apply`` rows, whole applications at llama-3.1-8b's four shapes, not used by the
pricing): the sum is within 1.6 % mean / 8.8 % worst of the whole application.

**Loads.** An adapter moves host -> GPU over the node's host link in
``2 x n_proj x layers`` tensor copies: ``latency + bytes / bandwidth + copies x per_copy``.
Where the GPU has ``lora_load.csv`` the three constants come from a least-squares fit of
those measurements (``lora_load_fit.json``: pinned fitted on ranks 8-32 and tested on
rank 64, pageable fitted on ranks 8-16 and tested on 32). Elsewhere the bandwidth is the
host link's (pinned) or the host link's times the measured pageable/pinned ratio, with the
link's latency and the measured per-copy time; the source says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from fleetsim.hardware.errors import ConfigError
from fleetsim.hardware.specs import GPUSpec, LinkSpec

KERNELS = ("sgmv_grouped_mm", "sgmv_loop", "bgmv_gather", "roofline")
LOAD_FIT_FILE = "lora_load_fit.json"
SPLIT_FILE = "lora_split.csv"
SPLIT_KERNEL = "sgmv_grouped_mm"
"""The kernel whose halves ``lora_split.csv`` measures."""



@dataclass(frozen=True)
class LoraCost:
    """Seconds of one LoRA application (or one load) and where the figure came from."""

    seconds: float
    source: str


def _bracket(grid: np.ndarray, x: float, log: bool) -> tuple[int, int, float, bool]:
    """Indices (lo, hi), weight of hi and whether ``x`` lies inside the grid (clamped)."""
    if x <= grid[0]:
        return 0, 0, 0.0, x == grid[0]
    if x >= grid[-1]:
        n = len(grid) - 1
        return n, n, 0.0, x == grid[-1]
    hi = int(np.searchsorted(grid, x))
    lo = hi - 1
    a, b, v = (np.log(grid[lo]), np.log(grid[hi]), math.log(x)) if log else (grid[lo], grid[hi], x)
    return lo, hi, float((v - a) / (b - a)), True


class LoraKernelTable:
    """Measured times of one LoRA kernel on one GPU (rows of ``lora.csv``)."""

    def __init__(self, rows: pd.DataFrame, kernel: str, where: str) -> None:
        rows = rows[rows["impl"] == kernel]
        if not len(rows):
            raise ConfigError(f"{where}: no rows of LoRA kernel {kernel!r}")
        self.kernel = kernel
        self.log_axes = kernel != "bgmv_gather"
        self.points: dict[int, dict[tuple[int, int], list[tuple[int, float]]]] = {}
        for h, t, r, a, s in rows[["hidden", "tokens", "rank", "adapters", "time_s"]].itertuples(index=False):
            self.points.setdefault(int(h), {}).setdefault((int(t), int(r)), []).append((int(a), float(s)))
        for per in self.points.values():
            for v in per.values():
                v.sort()
        self.hiddens = np.array(sorted(self.points), dtype=float)

    def _at_a(self, pts: list[tuple[int, float]], a: float) -> tuple[float, bool]:
        """Time at ``a`` adapters: linear between measured counts, linear beyond them."""
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        if len(xs) == 1:
            return ys[0], a == xs[0]
        if a <= xs[0]:
            i = 0
        elif a >= xs[-1]:
            i = len(xs) - 2
        else:
            i = int(np.searchsorted(xs, a)) - 1
        w = (a - xs[i]) / (xs[i + 1] - xs[i])
        inside = xs[0] <= a <= xs[-1]
        return max(ys[i] + w * (ys[i + 1] - ys[i]), min(ys)), inside

    def _at_h(self, h: int, t: float, a: float, r: float) -> tuple[float, bool, bool]:
        per = self.points[h]
        ts = np.array(sorted({k[0] for k in per}), dtype=float)
        tl, th, tw, t_in = _bracket(ts, t, log=self.log_axes)
        total = 0.0
        exact = True
        inside = t_in
        for ti, wt in ((tl, 1.0 - tw), (th, tw)):
            if wt == 0.0:
                continue
            tt = int(ts[ti])
            rs = np.array(sorted(k[1] for k in per if k[0] == tt), dtype=float)
            rl, rh, rw, r_in = _bracket(rs, r, log=self.log_axes)
            inside &= r_in
            for ri, wr in ((rl, 1.0 - rw), (rh, rw)):
                if wr == 0.0:
                    continue
                y, a_in = self._at_a(per[(tt, int(rs[ri]))], a)
                inside &= a_in
                exact &= any(p[0] == a for p in per[(tt, int(rs[ri]))]) and tt == t and rs[ri] == r
                total += wt * wr * y
        return total, exact, inside

    def cost(self, hidden: int, tokens: int, adapters: int, rank: int) -> LoraCost:
        """One application of this kernel (see the module docstring for the rule)."""
        hl, hh, hw, h_in = _bracket(self.hiddens, float(hidden), log=False)
        total, exact, inside = 0.0, True, h_in
        for hi, w in ((hl, 1.0 - hw), (hh, hw)):
            if w == 0.0:
                continue
            y, ex, ins = self._at_h(int(self.hiddens[hi]), float(tokens), float(adapters), float(rank))
            total += w * y
            exact &= ex and self.hiddens[hi] == hidden
            inside &= ins
        src = "measured" if exact else ("interpolated" if inside else "extrapolated")
        return LoraCost(total, f"{src} ({self.kernel}, lora.csv)")


def roofline_cost(gpu: GPUSpec, hidden: int, tokens: int, adapters: int, rank: int,
                  dtype_bytes: float = 2.0) -> LoraCost:
    """One application priced by the roofline (fused kernel, no launch overhead)."""
    flops = 4.0 * tokens * hidden * rank
    weights = adapters * 2.0 * hidden * rank * dtype_bytes
    acts = (3.0 * tokens * hidden + 2.0 * tokens * rank) * dtype_bytes
    peak = gpu.peak_flops.get("bf16", max(gpu.peak_flops.values())) * gpu.flops_efficiency
    bw = gpu.memory_bw_bps * gpu.mem_bw_efficiency
    return LoraCost(max(flops / peak, (weights + acts) / bw), "roofline (A/B bytes + activations, 4*T*h*r FLOPs)")


class LoraKernelModel:
    """Per-application LoRA time on one GPU: measured table when present, else roofline."""

    def __init__(self, gpu: GPUSpec, kernel: str, table: LoraKernelTable | None,
                 split: tuple[LoraKernelTable, LoraKernelTable] | None = None) -> None:
        if kernel not in KERNELS:
            raise ConfigError(f"LoRA kernel {kernel!r} is not one of {', '.join(KERNELS)}")
        self.gpu = gpu
        self.kernel = kernel
        self.table = table if kernel != "roofline" else None
        self.split = split if kernel == SPLIT_KERNEL and self.table is not None else None
        """(shrink, expand) tables by one dimension (``lora_split.csv``), or None."""

    def projection_cost(self, in_features: int, out_features: int, tokens: int, adapters: int,
                        rank: int) -> LoraCost:
        """One application on an ``in -> out`` projection: ``shrink(in) + expand(out)`` where
        the GPU has the split table, else the square table (or roofline) at ``in``."""
        if tokens <= 0 or adapters <= 0 or rank <= 0:
            return LoraCost(0.0, "none")
        if self.split is None:
            return self.cost(in_features, tokens, adapters, rank)
        shrink, expand = self.split
        a = shrink.cost(in_features, tokens, adapters, rank)
        b = expand.cost(out_features, tokens, adapters, rank)
        order = ("measured", "interpolated", "extrapolated")
        src = max(a.source.split(" ")[0], b.source.split(" ")[0], key=order.index)
        return LoraCost(a.seconds + b.seconds, f"{src} (shrink(in) + expand(out), {SPLIT_FILE})")

    def cost(self, hidden: int, tokens: int, adapters: int, rank: int) -> LoraCost:
        if tokens <= 0 or adapters <= 0 or rank <= 0:
            return LoraCost(0.0, "none")
        if self.table is not None:
            return self.table.cost(hidden, tokens, adapters, rank)
        return roofline_cost(self.gpu, hidden, tokens, adapters, rank)


@dataclass(frozen=True)
class LoadModel:
    """Host -> GPU adapter load: ``latency + bytes / bw + copies x per_copy``."""

    bandwidth_bps: float
    latency_s: float
    per_copy_s: float
    source: str

    def seconds(self, nbytes: float, copies: int) -> float:
        return self.latency_s + nbytes / self.bandwidth_bps + copies * self.per_copy_s


def fit_loads(rows: pd.DataFrame, pinned: bool, ranks: tuple[int, ...]) -> dict[str, float]:
    """Least-squares ``time = latency + bytes / bw`` over contiguous loads of ``ranks``,
    and the mean per-copy overhead ``(per_tensor - contiguous) / tensors`` over them."""
    sel = rows[(rows["pinned"] == int(pinned)) & rows["rank"].isin(ranks)]
    cont = sel[sel["layout"] == "contiguous"].sort_values("rank")
    per = sel[sel["layout"] == "per_tensor"].sort_values("rank")
    slope, icpt = np.polyfit(cont["bytes"].to_numpy(float), cont["time_s"].to_numpy(float), 1)
    extra = (per["time_s"].to_numpy() - cont["time_s"].to_numpy()) / per["tensors"].to_numpy()
    return {"bandwidth_bps": float(1.0 / slope), "latency_s": float(max(0.0, icpt)),
            "per_copy_s": float(extra.mean())}


@lru_cache(maxsize=8)
def _read_profile(path: str) -> tuple[pd.DataFrame | None, dict | None]:
    d = Path(path)
    table = pd.read_csv(d / "lora.csv") if (d / "lora.csv").is_file() else None
    fit = json.loads((d / LOAD_FIT_FILE).read_text()) if (d / LOAD_FIT_FILE).is_file() else None
    return table, fit


@lru_cache(maxsize=8)
def _read_split(path: str) -> pd.DataFrame | None:
    """``lora_split.csv`` of a profile folder as ``lora.csv``-style rows: ``impl`` = shrink /
    expand, ``hidden`` = the one dimension the half depends on."""
    f = Path(path) / SPLIT_FILE
    if not f.is_file():
        return None
    d = pd.read_csv(f)
    d = d[d["kind"].isin(["shrink", "expand"])].copy()
    d["hidden"] = np.where(d["kind"] == "shrink", d["in_features"], d["out_features"])
    return d.rename(columns={"kind": "impl"})


def split_tables(where: str) -> tuple[LoraKernelTable, LoraKernelTable] | None:
    """(shrink, expand) tables of the profile folder ``where``, or None without ``lora_split.csv``."""
    rows = _read_split(where) if where else None
    if rows is None:
        return None
    return LoraKernelTable(rows, "shrink", f"{where}/{SPLIT_FILE}"), LoraKernelTable(rows, "expand", f"{where}/{SPLIT_FILE}")


def _profile(gpu: GPUSpec) -> tuple[pd.DataFrame | None, dict | None, str]:
    from fleetsim.calibration.measured import profile_dirs

    d = profile_dirs().get(gpu.name)
    if d is None:
        return None, None, ""
    table, fit = _read_profile(str(d))
    return table, fit, str(d)


def kernel_model(gpu: GPUSpec, kernel: str = "sgmv_grouped_mm") -> LoraKernelModel:
    """The LoRA kernel model of ``gpu``: its measured ``lora.csv`` when it has one."""
    if kernel not in KERNELS:
        raise ConfigError(f"LoRA kernel {kernel!r} is not one of {', '.join(KERNELS)}")
    rows, _, where = _profile(gpu) if kernel != "roofline" else (None, None, "")
    table = LoraKernelTable(rows, kernel, where) if rows is not None else None
    split = split_tables(where) if kernel == SPLIT_KERNEL and table is not None else None
    return LoraKernelModel(gpu, kernel, table, split)


def load_model(gpu: GPUSpec, host: LinkSpec, pinned: bool) -> LoadModel:
    """Adapter load model of ``gpu`` behind host link ``host`` (pinned or pageable)."""
    _, fit, where = _profile(gpu)
    ref = fit if fit is not None else _reference_fit()
    key = "pinned" if pinned else "pageable"
    if fit is not None:
        f = fit[key]
        return LoadModel(f["bandwidth_bps"], f["latency_s"], f["per_copy_s"],
                         f"measured ({key}, {where}/{LOAD_FIT_FILE})")
    ratio = ref["pageable"]["bandwidth_bps"] / ref["pinned"]["bandwidth_bps"] if not pinned else 1.0
    bw = host.bandwidth_bps * host.efficiency * ratio
    how = "host link" if pinned else "host link x measured H200 pageable/pinned ratio"
    return LoadModel(bw, host.latency_s, ref[key]["per_copy_s"], f"{how} ({host.name})")


@lru_cache(maxsize=1)
def _reference_fit() -> dict:
    from fleetsim.calibration.measured import PROFILE_ROOT

    return json.loads((PROFILE_ROOT / "H200-SXM" / LOAD_FIT_FILE).read_text())


__all__ = ["KERNELS", "SPLIT_FILE", "LoadModel", "LoraCost", "LoraKernelModel", "LoraKernelTable", "fit_loads",
           "kernel_model", "load_model", "roofline_cost", "split_tables"]
