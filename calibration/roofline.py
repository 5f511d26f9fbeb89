"""Roofline cost model: operator time from spec FLOP/s and bandwidth, optionally with
efficiencies fitted from a measured profile of the same architecture.

Kernels (GEMM, attention, elementwise, device copies):

* spec only:  ``t = max(flops / (peak(dtype) * flops_efficiency), bytes / (mem_bw *
  mem_bw_efficiency)) + overhead``, the overhead being ``gpu.kernel_overhead_s`` in eager
  mode and ``gpu.graph_kernel_overhead_s`` under CUDA graphs (named spec corrections).
* fitted (``fit`` given, same architecture as the target GPU): ``t_gpu = floor + t_ideal /
  r`` where ``t_ideal`` is the *target's* roofline without derating and r the achieved share of
  the roofline measured for the nearest shape on the profile's GPU (``fit.ProfileFit``);
  under CUDA graphs the kernel costs ``t_gpu``, in eager mode ``max(t_gpu, eager launch
  cost)``: the host issues one launch per measured eager interval and the GPU cannot run a
  kernel before it is launched.

Collectives use the latency-bandwidth (alpha-beta) model of ring algorithms on the link of
the operator's tier: all-reduce ``2(n-1)/n * bytes / (bw * eff) + 2(n-1) * latency``,
all-gather / reduce-scatter / all-to-all ``(n-1)/n * bytes / (bw * eff) + (n-1) *
latency``, send/recv ``bytes / (bw * eff) + latency``, broadcast (tree) ``bytes / (bw * eff)
+ ceil(log2 n) * latency``. Host copies use the host link the same way.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from operator import itemgetter

import numpy as np
from fleetsim.hardware.errors import ConfigError, SpecError
from fleetsim.hardware.specs import DTYPE_BYTES, GPUSpec, LinkSpec

from .columns import OpColumns, price_columns
from .cost import OpCost, Source
from .fit import FITTED, INTERP, MEASURED, NONE, ProfileFit, layout_dtype, lookup, peak_flops
from .interp import text_code, text_codes
from .opbatch import (
    COLLECTIVE_STEPS,
    COLLECTIVE_TRAFFIC,
    AttentionArrays,
    CollectiveArrays,
    ElementwiseArrays,
    GemmArrays,
    MemcpyArrays,
    attention_arrays,
    attention_pairs,
    collective_arrays,
    elementwise_arrays,
    gemm_arrays,
    gemm_unaligned,
    group_positions,
    memcpy_arrays,
    pad_attention,
    pad_m,
    split_by_kind,
)
from .ops import (
    BACKWARD_FLOPS_FACTOR,
    AttentionOp,
    CollectiveOp,
    ElementwiseOp,
    GemmOp,
    MemcpyOp,
    Op,
)
from .sustain import host_seconds, serving_calls

KERNEL_SAME = {"sampling": "sample", "add": "residual_add"}
"""Graph kernel names -> profile kernel names of the same operation."""
KERNEL_SIMILAR = {"add_rmsnorm": "rmsnorm", "add_layernorm": "layernorm", "reshape_and_cache": "copy",
                  "bias_dropout_add": "residual_add", "dropout": "residual_add"}
"""Graph kernels the profile lacks -> a measured kernel with the same access pattern per byte
(its efficiency is used; provenance roofline)."""

_first = itemgetter(0)
_second = itemgetter(1)

CACHE_LIMIT = 2_000_000
"""Cached operator costs per (GPU, mode) before the cache is cleared."""

BORROW_DTYPE = "bf16"
"""Dtype whose GEMM efficiency tables stand in for a dtype the profile did not measure."""


def transfer_body(fit: ProfileFit, gpu: GPUSpec, work: np.ndarray, nbytes: np.ndarray,
                  dtypes: list[str], r: np.ndarray) -> np.ndarray:
    """Kernel body time on ``gpu`` from the efficiency ``r`` measured on the profile's GPU.

    The body time on the profile's GPU is ``t = t_ideal / r``. A memory-bound kernel's time
    is split in series into DRAM time (its bytes at the best streaming efficiency measured
    on that GPU, ``fit.dram_efficiency``) and a residual (SM-side issue, latency, tails)
    that does not depend on DRAM bandwidth; only the DRAM share scales with the target's
    spec bandwidth. A compute-bound kernel scales with the peak FLOP/s ratio. (On H100 ->
    H200 this reproduces the measured 1.22x speed-up of weight-streaming GEMMs, where
    scaling the whole time by the 1.43x bandwidth ratio over-predicts it.)
    """
    src = fit.gpu
    p_src = peak_flops(src, dtypes)
    t_src = np.maximum(work / p_src, nbytes / src.memory_bw_bps) / r
    mem_bound = nbytes / src.memory_bw_bps >= work / p_src
    dram_src = nbytes / (src.memory_bw_bps * fit.dram_efficiency)
    residual = np.maximum(t_src - dram_src, 0.0)
    mem = residual + (t_src - residual) * (src.memory_bw_bps / gpu.memory_bw_bps)
    comp = t_src * (p_src / peak_flops(gpu, dtypes))
    return np.where(mem_bound, mem, comp)


class RooflineCostModel:
    """Spec roofline, with efficiencies fitted from ``fit`` when its GPU shares the target's
    architecture. ``links`` overrides catalog link look-ups (name -> LinkSpec)."""

    measured_gpu: str | None = None
    """GPU whose measurements may be reported as measured/interpolated (None: never)."""

    def __init__(self, fit: ProfileFit | None = None, *, links: Mapping[str, LinkSpec] | None = None) -> None:
        self.fit = fit
        self.links = dict(links or {})
        self._caches: dict[tuple[int, bool], tuple[GPUSpec, dict[Op, tuple[float, Source]]]] = {}

    # -- public interface -------------------------------------------------------------
    def op_time(self, op: Op, gpu: GPUSpec, *, graphs: bool = False) -> OpCost:
        """Seconds for one instance of ``op`` on ``gpu`` with its provenance."""
        t, s = self.op_times([op], gpu, graphs=graphs)
        return OpCost(float(t[0]), s[0])  # type: ignore[arg-type]

    def op_times(self, ops: Sequence[Op], gpu: GPUSpec, graphs: bool = False
                 ) -> tuple[np.ndarray, list[Source]]:
        """Times (s, one instance each) and sources of many operators, vectorised and cached."""
        cache = self._cache(gpu, graphs)
        gc_on = gc.isenabled()
        gc.disable()  # many short-lived tuples, no cycles: collector passes only cost time
        try:
            return self._op_times(ops, gpu, graphs, cache)
        finally:
            if gc_on:
                gc.enable()

    def _op_times(self, ops: Sequence[Op], gpu: GPUSpec, graphs: bool,
                  cache: dict[Op, tuple[float, Source]]) -> tuple[np.ndarray, list[Source]]:
        hits = list(map(cache.get, ops)) if cache else None
        if hits is None or None in hits:
            miss = ops if hits is None else [op for op, h in zip(ops, hits, strict=True) if h is None]
            uniq = list(dict.fromkeys(miss))
            t, src = self.price(uniq, gpu, graphs=graphs)
            if len(cache) + len(uniq) > CACHE_LIMIT:
                cache.clear()
            cache.update(zip(uniq, zip(t.tolist(), src, strict=True), strict=True))
            hits = list(map(cache.get, ops))
        times = np.fromiter(map(_first, hits), dtype=np.float64, count=len(hits))  # type: ignore[arg-type]
        return times, list(map(_second, hits))  # type: ignore[arg-type]

    def host_launch_s(self, gpu: GPUSpec) -> float:
        """Host time to issue one eager kernel launch: the profile's measured eager launch
        interval when its GPU shares ``gpu``'s architecture, else ``gpu.kernel_overhead_s``."""
        fit = self._fit_for(gpu)
        return fit.eager_s if fit is not None else gpu.kernel_overhead_s

    def price_columns(self, cols: OpColumns, gpu: GPUSpec, *, graphs: bool = False,
                      mode: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Columnar batch pricing (``columns.price_columns``): per kind, seconds and sources
        of shape arrays, no operator objects, no cache."""
        return price_columns(self, cols, gpu, graphs=graphs, mode=mode)

    def sustained_ratios(self, ops: Sequence[Op], gpu: GPUSpec) -> np.ndarray:
        """Sustained/burst time ratio of each operator under continuous whole-model load
        (``sustain.SustainedLoad``): the profile's measured ratios when its GPU shares
        ``gpu``'s architecture and it has a ``sustained.csv``, else 1."""
        fit = self._fit_for(gpu)
        if fit is None or fit.sustained is None:
            return np.ones(len(ops))
        return fit.sustained.ratios(ops)

    def host_times(self, ops: Sequence[Op], gpu: GPUSpec,
                   calls: Sequence[Sequence[str] | None] | None = None) -> list[float]:
        """Host seconds to issue each operator in eager mode. With the profile's
        ``host_dispatch.csv`` (same architecture), the sum of the measured dispatch times of
        its PyTorch calls (``calls``, default ``sustain.serving_calls``; a call the table
        lacks costs one eager launch interval, an empty tuple nothing); an operator without
        a call list costs its kernel launches x the eager launch interval."""
        eager = self.host_launch_s(gpu)
        per_launch = [eager * n for n in self.launches(ops, gpu)]
        fit = self._fit_for(gpu)
        table = fit.host_calls if fit is not None else {}
        if not table and calls is None:
            return per_launch
        cs = list(calls) if calls is not None else [serving_calls(op) for op in ops]
        return host_seconds(cs, table, eager, per_launch)

    def clear_cache(self) -> None:
        self._caches.clear()

    def link(self, name: str) -> LinkSpec:
        """LinkSpec by name: the ``links`` given to the constructor, else the catalog."""
        spec = self.links.get(name)
        if spec is not None:
            return spec
        try:
            from fleetsim.hardware.catalog import get_link
        except ImportError as exc:  # pragma: no cover - catalog is part of the package
            raise SpecError(f"link {name!r}: hardware catalog unavailable ({exc})") from None
        spec = get_link(name)
        self.links[name] = spec
        return spec

    # -- pricing without cache --------------------------------------------------------
    def stream_times(self, ops: Sequence[Op], gpu: GPUSpec) -> tuple[np.ndarray, list[Source]]:
        """Device time of each operator launched back to back on a stream with the host
        ahead (how the calibration harness times kernels): no launch stalls, no CUDA-graph
        saving. Uncached."""
        return self.price(ops, gpu, mode="stream")

    def price(self, ops: Sequence[Op], gpu: GPUSpec, *, graphs: bool = False, mode: str | None = None
              ) -> tuple[np.ndarray, list[Source]]:
        """Price ``ops`` without the cache (each kind vectorised). ``mode``: "eager",
        "graph" or "stream" (default from ``graphs``)."""
        mode = mode if mode is not None else ("graph" if graphs else "eager")
        times = np.empty(len(ops))
        codes = np.empty(len(ops), dtype=np.int8)
        for kind, (pos, group) in split_by_kind(ops).items():
            if kind is GemmOp:
                t, c = self._gemm(gemm_arrays(group), gpu, mode)  # type: ignore[arg-type]
            elif kind is AttentionOp:
                t, c = self._attention(attention_arrays(group), gpu, mode)  # type: ignore[arg-type]
            elif kind is ElementwiseOp:
                t, c = self._elementwise(elementwise_arrays(group), gpu, mode)  # type: ignore[arg-type]
            elif kind is CollectiveOp:
                t, c = self._collective(collective_arrays(group), gpu)  # type: ignore[arg-type]
            elif kind is MemcpyOp:
                t, c = self._memcpy(memcpy_arrays(group), gpu, mode != "eager")  # type: ignore[arg-type]
            else:
                raise ConfigError(f"cannot price operator of type {kind.__name__}")
            p = np.asarray(pos)
            times[p] = t
            codes[p] = c
        measured_ok = self.measured_gpu is not None and self.measured_gpu == gpu.name
        names: dict[int, Source] = {MEASURED: "measured", INTERP: "interpolated",
                                    FITTED: "roofline", NONE: "roofline"}
        if not measured_ok:
            names = {k: "roofline" for k in names}
        lut = np.array([names[MEASURED], names[INTERP], names[FITTED], names[NONE]], dtype=object)
        return times, lut[codes].tolist()

    # -- helpers ----------------------------------------------------------------------
    def _cache(self, gpu: GPUSpec, graphs: bool) -> dict[Op, tuple[float, Source]]:
        key = (id(gpu), bool(graphs))
        entry = self._caches.get(key)
        if entry is None or entry[0] is not gpu:
            entry = (gpu, {})
            self._caches[key] = entry
        return entry[1]

    def _fit_for(self, gpu: GPUSpec) -> ProfileFit | None:
        fit = self.fit
        if fit is None or fit.architecture != gpu.architecture:
            return None
        return fit

    def _kernels(self, gpu: GPUSpec, mode: str, flops: np.ndarray, nbytes: np.ndarray,
                 dtypes: list[str], log_r: np.ndarray, code: np.ndarray,
                 flops_peak_dtypes: list[str] | None = None, kern: np.ndarray | None = None,
                 tile_flops: np.ndarray | None = None) -> np.ndarray:
        """Kernel times from tabulated efficiencies where present, spec roofline elsewhere."""
        peak_dt = flops_peak_dtypes if flops_peak_dtypes is not None else dtypes
        peaks = peak_flops(gpu, peak_dt)
        fit = self._fit_for(gpu)
        spec = np.maximum(flops / (peaks * gpu.flops_efficiency),
                          nbytes / (gpu.memory_bw_bps * gpu.mem_bw_efficiency))
        spec = spec + (gpu.kernel_overhead_s if mode == "eager" else gpu.graph_kernel_overhead_s)
        if fit is None:
            return spec
        work = tile_flops if tile_flops is not None else flops
        r = np.exp(np.where(code == NONE, 0.0, log_r))
        if fit.gpu_name == gpu.name:
            body = np.maximum(work / peaks, nbytes / gpu.memory_bw_bps) / r
        else:
            body = transfer_body(fit, gpu, work, nbytes, peak_dt, r)
        fitted = fit.floor_s + body
        k = kern if kern is not None else 1.0
        if mode == "graph":
            fitted = np.maximum(fitted - fit.graph_gap_s * k, fit.graph_s * k)
        elif mode == "eager":
            fitted = np.maximum(fitted, fit.eager_s * k)
        return np.where(code == NONE, spec, fitted)

    def _gemm(self, a: GemmArrays, gpu: GPUSpec, mode: str) -> tuple[np.ndarray, np.ndarray]:
        fit = self._fit_for(gpu)
        n = len(a.dtype)
        mp = pad_m(a.m)
        if fit is None or fit.gemm is None:
            log_r, code = np.zeros(n), np.full(n, NONE, dtype=np.int8)
        else:
            eb = np.array([DTYPE_BYTES.get(d, 2.0) for d in a.dtype])
            fam = np.column_stack([text_codes(a.dtype), gemm_unaligned(a.n, a.k, eb), a.batch, a.n, a.k])
            log_r, code, _ = lookup(fit.gemm, fam, np.log(mp)[:, None])
            grouped = np.flatnonzero(a.batch > 1)
            if fit.grouped_gemm is not None and len(grouped):
                self._grouped(fit, fam, mp, grouped, log_r, code)
            self._borrow_dtype(fit, a, fam, mp, log_r, code)
            if a.layout is not None and fit.gemm_layout is not None:
                self._layout(fit, a, fam, mp, log_r, code)
        tile = 2.0 * mp * a.n * a.k * a.batch
        return self._kernels(gpu, mode, a.flops, a.bytes, a.dtype, log_r, code, tile_flops=tile), code

    @staticmethod
    def _grouped(fit: ProfileFit, fam: np.ndarray, mp: np.ndarray, grouped: np.ndarray,
                 log_r: np.ndarray, code: np.ndarray) -> None:
        """Grouped expert GEMMs take the efficiency of the measured grouped kernels: of their
        own dtype where the profile has grouped points of it, else of ``BORROW_DTYPE``'s
        (provenance ``roofline``); one grouped kernel streams every expert's weights, so one
        expert's small-GEMM efficiency (the dense lookup) is far off (docs/cost_model.md)."""
        assert fit.grouped_gemm is not None
        x = np.log(mp[grouped])[:, None]
        g_r, g_code, _ = lookup(fit.grouped_gemm, fam[grouped], x)
        ok = g_code != NONE
        log_r[grouped[ok]] = g_r[ok]
        code[grouped[ok]] = g_code[ok]
        rest = ~ok
        if rest.any():
            alt = fam[grouped[rest]].copy()
            alt[:, 0] = text_codes([BORROW_DTYPE])[0]
            b_r, b_code, _ = lookup(fit.grouped_gemm, alt, x[rest])
            found = b_code != NONE
            log_r[grouped[rest][found]] = b_r[found]
            code[grouped[rest][found]] = FITTED

    @staticmethod
    def _layout(fit: ProfileFit, a: GemmArrays, fam: np.ndarray, mp: np.ndarray,
                log_r: np.ndarray, code: np.ndarray) -> None:
        """Backward-layout GEMMs ("nn" input gradients, "nt" weight gradients) take the
        efficiency of the measured kernels of their own layout where the profile's
        ``gemm_layout.csv`` has the family (measured or interpolated); elsewhere the "tn"
        look-up stands."""
        assert fit.gemm_layout is not None and a.layout is not None
        idx = np.flatnonzero(np.array([x != "tn" for x in a.layout]))
        alt = fam[idx].copy()
        alt[:, 0] = text_codes([layout_dtype(a.dtype[i], a.layout[i]) for i in idx])
        r, c, _ = lookup(fit.gemm_layout, alt, np.log(mp[idx])[:, None])
        ok = (c == MEASURED) | (c == INTERP)
        log_r[idx[ok]] = r[ok]
        code[idx[ok]] = c[ok]

    @staticmethod
    def _borrow_dtype(fit: ProfileFit, a: GemmArrays, fam: np.ndarray, mp: np.ndarray,
                      log_r: np.ndarray, code: np.ndarray) -> None:
        """GEMMs of a dtype the profile has no table for take the efficiency of the same shape
        in ``BORROW_DTYPE`` (r is the share of the dtype's own roofline). On the committed
        profiles, pricing fp16 GEMMs from the bf16 table alone gives a median error of 3 %,
        tf32 6 %, fp8 14 % (fp8 kernels reach a smaller share of their peak: 18 % fast on
        average). Provenance stays ``roofline``."""
        miss = np.flatnonzero((code == NONE) & (np.asarray(a.dtype) != BORROW_DTYPE))
        if not len(miss):
            return
        alt = fam[miss].copy()
        alt[:, 0] = text_codes([BORROW_DTYPE])[0]
        r, c, _ = lookup(fit.gemm, alt, np.log(mp[miss])[:, None])
        found = c != NONE
        log_r[miss[found]] = r[found]
        code[miss[found]] = FITTED

    def _attention(self, a: AttentionArrays, gpu: GPUSpec, mode: str) -> tuple[np.ndarray, np.ndarray]:
        fit = self._fit_for(gpu)
        n = len(a.dtype)
        qp, kvp = pad_attention(a.phase, a.q_eq, a.kv_eq)
        if fit is None or fit.attention is None:
            log_r, code = np.zeros(n), np.full(n, NONE, dtype=np.int8)
        else:
            base = np.column_stack([a.phase, np.asarray(a.causal, dtype=float), a.head_dim,
                                    a.v_head_dim, text_codes(a.dtype)])
            fam = np.column_stack([base, a.heads, a.kv_heads])
            fx = np.column_stack([np.log(a.batch), np.log(qp), np.log(kvp)])
            log_r, code, _ = lookup(fit.attention, fam, fx)
        tile = 2.0 * a.heads * (a.head_dim + a.v_head_dim) * a.batch * attention_pairs(
            qp, kvp, np.asarray(a.causal, dtype=bool)) * np.where(a.phase == 3.0, BACKWARD_FLOPS_FACTOR, 1.0)
        return self._kernels(gpu, mode, a.flops, a.bytes, a.dtype, log_r, code, tile_flops=tile), code

    def _elementwise_lookup(self, a: ElementwiseArrays, fit: ProfileFit
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(a.kernel)
        nbytes = np.maximum(a.bytes, 1.0)
        kernels = [KERNEL_SAME.get(k, k) for k in a.kernel]
        similar = np.fromiter((k in KERNEL_SIMILAR for k in kernels), dtype=bool, count=n)
        kernels = [KERNEL_SIMILAR.get(k, k) for k in kernels]
        fam = text_codes(kernels)[:, None]
        lx = np.log(nbytes)[:, None]
        log_r, code, kern = lookup(fit.elementwise, fam, lx)
        code[similar & (code != NONE)] = FITTED
        other = np.flatnonzero(code == NONE)
        if other.size:  # a kernel the profile lacks: pooled streaming-kernel efficiency
            y2, c2, k2 = lookup(fit.elementwise, np.zeros((other.size, 1)), lx[other])
            log_r[other], kern[other] = y2, k2
            code[other] = np.where(c2 == NONE, NONE, FITTED)
        return log_r, code, kern

    def _elementwise(self, a: ElementwiseArrays, gpu: GPUSpec, mode: str) -> tuple[np.ndarray, np.ndarray]:
        fit = self._fit_for(gpu)
        n = len(a.dtype)
        nbytes = np.maximum(a.bytes, 1.0)
        if fit is None or fit.elementwise is None:
            log_r, code, kern = np.zeros(n), np.full(n, NONE, dtype=np.int8), np.ones(n)
        else:
            log_r, code, kern = self._elementwise_lookup(a, fit)
        vec = ["fp32" if "fp32" in gpu.peak_flops else d for d in a.dtype]
        return self._kernels(gpu, mode, a.flops, nbytes, a.dtype, log_r, code, vec, kern), code

    def launches(self, ops: Sequence[Op], gpu: GPUSpec) -> list[int]:
        """Kernel launches the host issues per call of each operator: the measured launch
        count of a profiled elementwise kernel (composite PyTorch ops issue several), else 1."""
        out = [1] * len(ops)
        fit = self._fit_for(gpu)
        if fit is None or fit.elementwise is None:
            return out
        pos = [i for i, op in enumerate(ops) if isinstance(op, ElementwiseOp)]
        if pos:
            _, code, kern = self._elementwise_lookup(elementwise_arrays([ops[i] for i in pos]), fit)  # type: ignore[misc]
            for i, c, k in zip(pos, code, kern, strict=True):
                out[i] = int(k) if c != NONE else 1
        return out

    def _alpha_beta(self, kind: str, n: np.ndarray, nbytes: np.ndarray, bw_bps: float,
                    latency_s: float) -> np.ndarray:
        traffic = COLLECTIVE_TRAFFIC[kind](n)
        steps = COLLECTIVE_STEPS[kind](n)
        return traffic * nbytes / bw_bps + steps * latency_s

    def _collective(self, a: CollectiveArrays, gpu: GPUSpec) -> tuple[np.ndarray, np.ndarray]:
        t = np.zeros(len(a.kind))
        code = np.full(len(a.kind), NONE, dtype=np.int8)
        fit = self._fit_for(gpu)
        keys: list[tuple[str, float, str, str | None]] = list(
            zip(a.kind, a.group.tolist(), a.tier, a.link, strict=True))
        for idx in group_positions(keys).values():
            kind, n, tier, link = keys[int(idx[0])]
            if kind not in COLLECTIVE_TRAFFIC:
                raise ConfigError(f"unknown collective kind {kind!r}")
            if n <= 1:
                continue
            if link is None:
                if tier == "scale_out":
                    raise ConfigError(f"collective {kind} on tier scale_out needs op.link (a LinkSpec name)")
                link = gpu.scale_up_link if tier == "scale_up" else gpu.host_link
            nb = a.bytes[idx]
            spec = self.link(link)
            if fit is not None and fit.collective is not None and tier == "scale_up" and \
                    self._same_link(spec, fit.gpu.scale_up_link):
                t[idx], code[idx] = self._fitted_link(fit.collective, (text_code(kind), float(n)), nb,
                                                       fit.link_params(kind, n), kind, n)
                if np.all(code[idx] != NONE):
                    continue
            sel = idx[code[idx] == NONE]
            t[sel] = self._alpha_beta(kind, np.full(sel.size, n), a.bytes[sel],
                                      spec.bandwidth_bps * spec.efficiency, spec.latency_s)
        return t, code

    def _same_link(self, spec: LinkSpec, name: str) -> bool:
        try:
            other = self.link(name)
        except SpecError:
            return False
        return other.name == spec.name

    def _fitted_link(self, table, key: tuple, nb: np.ndarray, params: tuple[float, float] | None,
                     kind: str, n: float) -> tuple[np.ndarray, np.ndarray]:
        """Tabulated time inside the measured range, alpha-beta fit outside it."""
        k = len(nb)
        keys = np.tile(np.asarray(key, dtype=float), (k, 1))
        t, code, _ = lookup(table.table, keys, nb[:, None])
        out = code == FITTED
        if key in table.alpha_beta:
            alpha, beta = table.alpha_beta[key]
            t[out] = alpha + beta * nb[out]
        elif params is not None:
            t = self._alpha_beta(kind, np.full(k, n), nb, params[0], params[1])
            code = np.full(k, FITTED, dtype=np.int8)
        else:
            code[code == FITTED] = NONE
        return t, code

    def _memcpy(self, a: MemcpyArrays, gpu: GPUSpec, graphs: bool) -> tuple[np.ndarray, np.ndarray]:
        t = np.zeros(len(a.direction))
        code = np.full(len(a.direction), NONE, dtype=np.int8)
        fit = self._fit_for(gpu)
        for direction, idx in group_positions(a.direction).items():
            nb = a.bytes[idx]
            if fit is not None and fit.memcpy is not None and direction != "d2d" and \
                    fit.gpu.host_link == gpu.host_link:
                key = (text_code(str(direction)),)
                if key in fit.memcpy.alpha_beta:
                    t[idx], code[idx] = self._fitted_link(fit.memcpy, key, nb, None, "send_recv", 2.0)
                    continue
            if direction == "d2d":
                t[idx] = 2.0 * nb / (gpu.memory_bw_bps * gpu.mem_bw_efficiency) + \
                    (gpu.graph_kernel_overhead_s if graphs else gpu.kernel_overhead_s)
            else:
                spec = self.link(gpu.host_link)
                t[idx] = nb / (spec.bandwidth_bps * spec.efficiency) + spec.latency_s
        return t, code
