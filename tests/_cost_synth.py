"""Synthetic GPUs, links and calibration profiles for the cost-model tests.

The profile times come from a known analytic *oracle*: a fixed floor plus the slower of
compute (at a smooth efficiency of the log shape) and memory (DRAM at a fixed share of
spec bandwidth in series with a GPU-independent SM-side limit), so an interpolating model
can be checked against the oracle between grid points, and a model transferred to
another GPU of the same architecture against the oracle on that GPU.
Collectives follow an exact alpha-beta law.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from fleetsim.hardware.specs import GPUSpec, LinkSpec

FLOOR_S = 2.0e-6
EAGER_S = 6.0e-6
GRAPH_S = 2.0e-6
NVL_ALPHA_STEP_S = 3.0e-6
NVL_BUSBW_BPS = 360e9


def gpu(name: str = "TestH100", bw: float = 3.35e12, arch: str = "hopper", **kw: object) -> GPUSpec:
    base: dict[str, object] = dict(
        name=name, vendor="test", architecture=arch,
        peak_flops={"bf16": 989e12, "fp8": 1979e12, "fp32": 67e12, "tf32": 494e12},
        memory_bytes=80e9, memory_bw_bps=bw, l2_bytes=50e6, compute_units=132,
        max_clock_hz=1.98e9, tdp_w=700.0, idle_power_w=70.0, min_power_cap_w=200.0,
        scale_up_link="TestNVL", host_link="TestPCIe", mem_bw_efficiency=0.8,
        flops_efficiency=0.75, kernel_overhead_s=4e-6, graph_kernel_overhead_s=1.5e-6)
    base.update(kw)
    return GPUSpec(**base)  # type: ignore[arg-type]


LINKS = {
    "TestNVL": LinkSpec(name="TestNVL", kind="scale_up", bandwidth_bps=450e9, latency_s=3e-6,
                        efficiency=0.8),
    "TestPCIe": LinkSpec(name="TestPCIe", kind="host", bandwidth_bps=64e9, latency_s=10e-6,
                         efficiency=0.8),
    "TestIB": LinkSpec(name="TestIB", kind="scale_out", bandwidth_bps=50e9, latency_s=5e-6,
                       efficiency=0.9),
}


DRAM_EFF = 0.85
"""Oracle: the share of spec bandwidth that DRAM streaming reaches on every GPU."""


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def gemm_eff(m: float, n: float, k: float) -> float:
    """Oracle GEMM compute efficiency: grows smoothly with the log of the work."""
    return 0.3 + 0.5 * _sig(0.6 * (math.log(m * n * k) - math.log(2 ** 30)))


def gemm_sm_bps(n: float, k: float) -> float:
    """Oracle SM-side streaming limit of a GEMM (GPU independent, in series with DRAM)."""
    return 4e12 + 4e12 * _sig(0.5 * (math.log(n * k) - math.log(2 ** 24)))


def attn_eff(batch: float, q: float, kv: float, heads: float) -> float:
    return 0.2 + 0.5 * _sig(0.5 * (math.log(batch * q * kv * heads) - math.log(2 ** 24)))


def attn_sm_bps(batch: float, kv: float, heads: float) -> float:
    return 5e12 * (0.3 + 0.7 * _sig(0.5 * (math.log(batch * kv * heads) - math.log(2 ** 16))))


def ew_residual_s(nbytes: float) -> float:
    return 1.5e-6 * (1.0 - math.exp(-nbytes / 1e6))


def gemm_time(spec: GPUSpec, m: float, n: float, k: float, dtype: str = "bf16") -> float:
    """Oracle GEMM: compute at a shape-dependent efficiency, or DRAM at DRAM_EFF in series
    with a GPU-independent SM-side limit, whichever is slower; plus the fixed floor."""
    b = 2.0 if dtype == "bf16" else 1.0
    nbytes = (m * k + k * n) * b + m * n * 2.0
    compute = 2 * m * n * k / (spec.flops(dtype) * gemm_eff(m, n, k))
    memory = nbytes / (spec.memory_bw_bps * DRAM_EFF) + nbytes / gemm_sm_bps(n, k)
    return FLOOR_S + max(compute, memory)


def _tile(x: float, prefill: bool) -> float:
    """Flash-attention tiles of 128: prefill lengths above one tile round up."""
    return math.ceil(x / 128) * 128 if prefill and x > 128 else x


def attn_time(spec: GPUSpec, batch: float, q: float, kv: float, h: float, kvh: float, hd: float) -> float:
    """Oracle attention; prefill work is tile-quantised (128), bytes are not."""
    pre = q > 1
    qt, kvt = _tile(q, pre), max(_tile(kv, pre), _tile(q, pre))
    pairs = qt * kvt - qt * (qt - 1) / 2.0
    flops = 2.0 * h * 2 * hd * batch * pairs
    nbytes = batch * (q * h + kv * kvh) * 2 * hd * 2.0
    compute = flops / (spec.flops("bf16") * attn_eff(batch, qt, kvt, h))
    memory = nbytes / (spec.memory_bw_bps * DRAM_EFF) + nbytes / attn_sm_bps(batch, kv, h)
    return FLOOR_S + max(compute, memory)


def ew_time(spec: GPUSpec, nbytes: float) -> float:
    return FLOOR_S + nbytes / (spec.memory_bw_bps * DRAM_EFF) + ew_residual_s(nbytes)


def allreduce_time(n: int, nbytes: float) -> float:
    return 2 * (n - 1) * NVL_ALPHA_STEP_S + 2 * (n - 1) / n * nbytes / NVL_BUSBW_BPS


M_GRID = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
NK = [(4096, 4096), (6144, 4096), (28672, 4096), (4096, 14336), (1024, 4096), (4096, 1024)]
HEADS = [(32, 8), (16, 4), (8, 2)]
BATCH = [1, 2, 4, 8, 16, 32, 64]
LENS = [128, 256, 512, 1024, 2048, 4096, 8192]
EW_BYTES = [2 ** p for p in range(12, 31, 2)]
AR_BYTES = [2 ** p for p in range(12, 31, 2)]


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow(r)


def write_profile(root: Path, spec: GPUSpec) -> Path:
    """Write an oracle profile for ``spec`` under ``root/<spec.name>`` and return the dir."""
    d = root / spec.name
    d.mkdir(parents=True, exist_ok=True)
    (d / "meta.json").write_text(json.dumps({"gpu_name": "synthetic", "catalog_gpu": spec.name}))
    rows: list[list[object]] = []
    for n, k in NK:
        for m in M_GRID:
            t = gemm_time(spec, m, n, k)
            rows.append(["bf16", m, n, k, 1, repr(t), repr(t * 0.98), repr(t * 1.02)])
    _write(d / "gemm.csv", ["dtype", "m", "n", "k", "batch", "time_s", "p10_s", "p90_s"], rows)
    rows = []
    for h, kvh in HEADS:
        for b in BATCH:
            for kv in LENS:
                t = attn_time(spec, b, 1, kv, h, kvh, 128)
                rows.append(["flash", "decode", b, 1, kv, h, kvh, 128, 128, 1, "bf16", repr(t), "", ""])
            for q in LENS:
                t = attn_time(spec, b, q, q, h, kvh, 128)
                rows.append(["flash", "prefill", b, q, q, h, kvh, 128, 128, 1, "bf16", repr(t), "", ""])
    _write(d / "attention.csv", ["backend", "phase", "batch", "q_len", "kv_len", "num_heads",
                                 "num_kv_heads", "head_dim", "v_head_dim", "causal", "dtype",
                                 "time_s", "p10_s", "p90_s"], rows)
    rows = [["rmsnorm", max(1, nb // 8192), 4096, "bf16", nb, repr(ew_time(spec, nb)), "", ""] for nb in EW_BYTES]
    _write(d / "elementwise.csv", ["kernel", "rows", "cols", "dtype", "bytes", "time_s", "p10_s", "p90_s"], rows)
    rows = [["all_reduce", g, nb, repr(allreduce_time(g, nb)), "", ""] for g in (2, 4, 8) for nb in AR_BYTES]
    _write(d / "collective.csv", ["op", "group_size", "bytes", "time_s", "p10_s", "p90_s"], rows)
    _write(d / "launch.csv", ["mode", "kernels", "time_s"],
           [["eager", 1000, repr(EAGER_S)], ["graph", 1000, repr(GRAPH_S)]])
    return d
