"""Power-by-occupancy and LoRA benchmarks (``calibration/bench/power_occupancy.py``, ``lora.py``):
their cost formulas, a CPU smoke run of every code path (needs torch), and the committed H200
measurements (``calibration/profiles/H200-SXM/{power_occupancy,lora,lora_load}.csv``).

Oracles: closed-form FLOP and byte counts (llama-3.1-8b's projections give 81,920 x r adapter
parameters per layer), the board's 700 W limit, NVIDIA's H200 datasheet ceilings (989 dense bf16
TFLOP/s, 1979 fp8, 4.8 TB/s HBM3e), PCIe Gen5 x16 at 64 GB/s per direction, energy = power x time
for back-to-back work, and duty-cycled power between idle and full-load power.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "calibration" / "bench"
PROFILE = ROOT / "calibration" / "profiles" / "H200-SXM"
TDP_W = 700.0
BF16_FLOPS, FP8_FLOPS, HBM_BPS, PCIE_BPS = 989e12, 1979e12, 4.8e12, 64e9


def _load(name: str) -> ModuleType:
    """The script as a module from its file (it runs the same way on a box without fleetsim)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


po = _load("power_occupancy")
lora = _load("lora")
nvml_sampler = _load("nvml_sampler")


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _f(row: dict[str, str], col: str) -> float:
    return float(row[col]) if row[col] != "" else math.nan


# ---- formulas -------------------------------------------------------------------------------

def test_adapter_size_is_rank_times_81920_per_layer() -> None:
    assert lora.adapter_params(1, layers=1) == 4096 * 2 * 2 + (4096 + 1024) * 2 + 3 * (4096 + 14336)
    assert lora.adapter_params(16) == 16 * 81920 * 32
    assert 2 * lora.adapter_params(128) == 671_088_640  # bytes of a rank-128 bf16 adapter


def test_segments_split_evenly_and_reject_more_adapters_than_tokens() -> None:
    for t, a in ((1, 1), (8, 4), (33, 16), (2048, 64), (7, 3)):
        seg = lora.segments(t, a)
        assert len(seg) == a and sum(seg) == t and max(seg) - min(seg) <= 1 and min(seg) >= 1
    with pytest.raises(ValueError):
        lora.segments(4, 16)


def test_lora_costs() -> None:
    c = lora.lora_costs("sgmv_loop", 128, 4096, 16, 4)
    assert c["flops"] == 4 * 128 * 4096 * 16
    assert c["adapter_bytes"] == c["impl_bytes"] == 2 * 4 * 4096 * 16 * 2
    g = lora.lora_costs("bgmv_gather", 128, 4096, 16, 4)
    assert g["impl_bytes"] == 3 * 2 * 128 * 4096 * 16 * 2 and g["flops"] == c["flops"]
    b = lora.lora_costs("base_gemm", 8, 4096, 0, 0)
    assert b["flops"] == 2 * 8 * 4096 * 4096 and b["impl_bytes"] == 2 * 4096 * 4096


def test_grid_covers_the_brief() -> None:
    rows = lora.grid(False)
    assert all(r["adapters"] <= r["tokens"] for r in rows)
    pts = {(r["tokens"], r["hidden"], r["rank"], r["adapters"]) for r in rows if r["impl"] == "sgmv_loop"}
    assert {(2048, 4096, r, 64) for r in (8, 16, 32, 64, 128)} <= pts
    assert (1, 4096, 128, 1) in pts and (4, 4096, 8, 4) not in pts
    assert {r["impl"] for r in rows} == {"base_gemm", *lora.IMPLS}
    assert len(rows) == 8 + 3 * (5 * (1 + 2 + 3 + 4 + 4 + 4) + 8)


def test_counter_slope_recovers_power_from_coarse_ticks() -> None:
    # a 500 W board whose counter ticks every 100 ms, seen by a sampler 7 ms late at most
    ticks = [(0.1 * i + 0.007 * ((i * 5) % 3) / 2, 50.0 * i) for i in range(25)]
    assert nvml_sampler.slope(ticks) == pytest.approx(500.0, rel=0.01)
    assert math.isnan(nvml_sampler.slope(ticks[:2]))


def test_power_formulas_and_plan() -> None:
    assert po.gemm_flops_bytes(16, 4096, 4096) == (2 * 16 * 4096 * 4096, 2 * (16 * 4096 + 4096 * 4096) + 2 * 16 * 4096)
    full, _ = po.sdpa_flops_bytes(1, 8, 8, 32, 8, 128, False)
    half, _ = po.sdpa_flops_bytes(1, 8, 8, 32, 8, 128, True)
    assert full == 2 * half == 4 * 32 * 8 * 8 * 128
    _, nbytes = po.decode_stack_flops_bytes(1, 32, po.LLAMA8B_DECODE_GEMMS)
    assert 2 * 32 * 218_103_808 < nbytes < 2 * 32 * 218_103_808 * 1.001  # 8B's layer linears
    plan = po.plan(False)
    assert plan[0]["workload"] == "idle" and plan[-1]["workload"] == "idle_end"
    assert sorted(p["duty"] for p in plan if p["workload"] == "duty_gemm") == [0.25, 0.5, 0.5, 0.75]
    assert {p["workload"] for p in po.plan(True)} == {p["workload"] for p in plan}


# ---- CPU smoke of every code path (needs torch) ---------------------------------------------

def test_cpu_smoke_runs_every_path(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="torch is not installed here; the device run covers this")
    for script in ("power_occupancy", "lora"):
        proc = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--out", str(tmp_path),
                               "--device", "cpu", "--smoke"], capture_output=True, text=True,
                              timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (tmp_path / f"{script}_meta.json").exists()
    power = _read(tmp_path / "power_occupancy.csv")
    assert list(power[0]) == list(po.COLUMNS)
    assert {r["workload"] for r in power} == {p["workload"] for p in po.plan(True)}
    for r in power:
        if not r["workload"].startswith("idle"):
            assert 0 < _f(r, "p10_s") <= _f(r, "time_s") <= _f(r, "p90_s"), r
    rows = _read(tmp_path / "lora.csv")
    assert list(rows[0]) == list(lora.COLUMNS)
    skipped = (tmp_path / "skipped.txt").read_text() if (tmp_path / "skipped.txt").exists() else ""
    for impl in ("base_gemm", "bgmv_gather", "sgmv_loop", "sgmv_grouped_mm"):
        assert any(r["impl"] == impl for r in rows) or impl in skipped, impl
    assert all(_f(r, "rel_err") < 2e-2 for r in rows if r["impl"] != "base_gemm")
    load = _read(tmp_path / "lora_load.csv")
    assert {(r["pinned"], r["layout"]) for r in load} == {(p, lay) for p in ("0", "1")
                                                          for lay in ("contiguous", "per_tensor")}


# ---- the committed H200 measurements --------------------------------------------------------

needs_power = pytest.mark.skipif(not (PROFILE / "power_occupancy.csv").exists(),
                                 reason="no committed power_occupancy.csv")
needs_lora = pytest.mark.skipif(not (PROFILE / "lora.csv").exists(), reason="no committed lora.csv")


@pytest.fixture(scope="module")
def power() -> list[dict[str, str]]:
    return _read(PROFILE / "power_occupancy.csv")


@needs_power
def test_power_schema_and_bounds(power: list[dict[str, str]]) -> None:
    assert list(power[0]) == list(po.COLUMNS)
    assert {r["pass"] for r in power} >= {"1"}
    for r in power:
        p = _f(r, "power_w_mean")
        assert 30 < p <= 1.1 * TDP_W, r
        assert 0 < _f(r, "sm_clock_mhz") <= 1980 and _f(r, "mem_clock_mhz") > 0, r
        assert 20 < _f(r, "temp_c") < 95, r
        if r["workload"].startswith("idle"):
            continue
        t = _f(r, "time_s")
        assert math.isfinite(t) and 0 < _f(r, "p10_s") <= t <= _f(r, "p90_s"), r
        assert int(r["calls"]) > 0 and _f(r, "energy_j_per_call") > 0, r
        if r["dtype"] == "bf16" and r["workload"] in ("gemm_bf16", "duty_gemm", "graph_decode_gemms"):
            assert _f(r, "flop_per_s") <= BF16_FLOPS, r
        if r["dtype"] == "fp8":
            assert _f(r, "flop_per_s") <= FP8_FLOPS, r
        if r["workload"] in ("copy", "add", "graph_decode_gemms", "sdpa_decode") and int(r["bytes"]) >= 64 << 20:
            assert _f(r, "bytes_per_s") <= HBM_BPS, r


@needs_power
def test_energy_per_call_is_power_times_time_when_back_to_back(power: list[dict[str, str]]) -> None:
    for r in power:
        if r["workload"].startswith(("idle", "duty")):
            continue
        assert 0.85 <= _f(r, "busy_fraction") <= 1.02, r  # graph replays leave no idle gaps
        want = _f(r, "power_w_mean") * _f(r, "time_s")
        assert _f(r, "energy_j_per_call") == pytest.approx(want, rel=0.15), r


@needs_power
def test_duty_cycle_power_is_at_least_the_linear_mix(power: list[dict[str, str]]) -> None:
    """A 20 ms period of GEMM bursts and idle gaps draws at least ``idle + b (full - idle)``
    (b: busy fraction; full: back-to-back power, held at the 700 W limit by lower clocks): the
    bursts run unthrottled and the gaps do not fall to idle power. It stays under the limit
    plus 10 % over the window and grows with the busy fraction."""
    for ps in sorted({r["pass"] for r in power}):
        rows = [r for r in power if r["pass"] == ps]
        idle = max(_f(r, "power_w_mean") for r in rows if r["workload"].startswith("idle"))
        full = next(_f(r, "power_w_mean") for r in rows
                    if r["workload"] == "gemm_bf16" and r["shape"] == "8192x8192x8192")
        duty = sorted((_f(r, "duty"), _f(r, "busy_fraction"), _f(r, "power_w_mean")) for r in rows
                      if r["workload"] == "duty_gemm" and _f(r, "period_s") == pytest.approx(0.02))
        assert len(duty) == 3
        for d, busy, w in duty:
            assert abs(busy - d) < 0.1, (d, busy)
            assert idle + busy * (full - idle) <= w <= 1.1 * TDP_W, (d, busy, w)
        ws = [w for _, _, w in duty]
        assert idle < ws[0] < ws[1] < ws[2]
        busy_rows = [r for r in rows if not r["workload"].startswith(("idle", "duty"))]
        assert all(_f(r, "power_w_mean") > idle for r in busy_rows)


@needs_power
def test_idle_power_cold_below_hot(power: list[dict[str, str]]) -> None:
    """Idle after seconds of load (clocks still up) draws more than a cold idle board."""
    idle = {(r["workload"], r["pass"]): _f(r, "power_w_mean") for r in power
            if r["workload"].startswith("idle")}
    assert idle[("idle", "1")] < idle[("idle_end", "1")]
    assert all(50 < w < 200 for w in idle.values())


@needs_power
def test_power_repeats_across_passes(power: list[dict[str, str]]) -> None:
    by: dict[tuple[str, str, str, str], dict[str, float]] = {}
    for r in power:
        if r["workload"] == "idle":  # pass 1 starts cold, pass 2 right after load
            continue
        by.setdefault((r["workload"], r["shape"], r["duty"], r["period_s"]), {})[r["pass"]] = _f(r, "power_w_mean")
    pairs = [v for v in by.values() if len(v) >= 2]
    if not pairs:
        pytest.skip("one pass only")
    for v in pairs:
        a, b = v["1"], v["2"]
        assert abs(a - b) <= 0.1 * max(a, b) + 5, v


@needs_lora
def test_lora_schema_formulas_and_roofline() -> None:
    rows = _read(PROFILE / "lora.csv")
    assert list(rows[0]) == list(lora.COLUMNS)
    for r in rows:
        t = _f(r, "time_s")
        assert math.isfinite(t) and 0 < _f(r, "p10_s") <= t <= _f(r, "p90_s"), r
        assert t < 1.0, r  # seconds, not milliseconds
        args = (r["impl"], int(r["tokens"]), int(r["hidden"]), int(r["rank"]), int(r["adapters"]))
        for k, v in lora.lora_costs(*args).items():
            assert int(r[k]) == v, (k, r)
        assert int(r["flops"]) / t <= BF16_FLOPS, r
        floor = (int(r["impl_bytes"]) if r["impl"] == "base_gemm" else int(r["adapter_bytes"])) / HBM_BPS
        assert t >= floor, r  # operand sets rotate past the L2: weights stream from HBM
        if r["impl"] != "base_gemm":
            assert _f(r, "rel_err") < 2e-2, r


@needs_lora
def test_lora_time_does_not_fall_with_rank() -> None:
    curves: dict[tuple[str, str, str, str], list[tuple[int, float]]] = {}
    for r in _read(PROFILE / "lora.csv"):
        if r["impl"] != "base_gemm":
            key = (r["impl"], r["tokens"], r["hidden"], r["adapters"])
            curves.setdefault(key, []).append((int(r["rank"]), _f(r, "time_s")))
    assert curves
    for key, pts in curves.items():
        pts.sort()
        for (r1, t1), (r2, t2) in zip(pts, pts[1:], strict=False):
            assert t2 >= 0.8 * t1, (key, r1, t1, r2, t2)
        assert pts[-1][1] >= 0.9 * pts[0][1], key


@needs_lora
def test_lora_load_bytes_and_pcie_bandwidth() -> None:
    rows = _read(PROFILE / "lora_load.csv")
    assert list(rows[0]) == list(lora.LOAD_COLUMNS)
    for r in rows:
        assert int(r["bytes"]) == 2 * lora.adapter_params(int(r["rank"])), r
        assert (r["layers"], r["projections"], r["tensors"]) == ("32", "7", "448"), r
        assert 0 < _f(r, "p10_s") <= _f(r, "time_s") <= _f(r, "p90_s"), r
        assert _f(r, "bytes_per_s") == pytest.approx(int(r["bytes"]) / _f(r, "time_s"), rel=1e-4)
        assert _f(r, "bytes_per_s") <= PCIE_BPS, r
    pin = {int(r["rank"]): _f(r, "time_s") for r in rows if r["pinned"] == "1" and r["layout"] == "contiguous"}
    page = {int(r["rank"]): _f(r, "time_s") for r in rows if r["pinned"] == "0" and r["layout"] == "contiguous"}
    per = {int(r["rank"]): _f(r, "time_s") for r in rows if r["pinned"] == "1" and r["layout"] == "per_tensor"}
    for rank in set(pin) & set(page):
        assert pin[rank] < page[rank], rank
    for rank in set(pin) & set(per):
        assert pin[rank] <= per[rank], rank  # 448 copies cost more than one
    top = max(pin)
    assert 2 * lora.adapter_params(top) / pin[top] > 20e9
    ranks = sorted(pin)
    for a, b in zip(ranks, ranks[1:], strict=False):
        assert pin[b] >= 0.8 * pin[a], (a, b)


@pytest.mark.skipif(not (PROFILE / "power_occupancy_meta.json").exists(), reason="no committed meta")
def test_meta_records_versions() -> None:
    for name in ("power_occupancy_meta.json", "lora_meta.json"):
        meta = json.loads((PROFILE / name).read_text())
        assert meta["gpu_name"] == "NVIDIA H200" and meta["driver"] and meta["torch"] and meta["date"]
        assert meta["smoke"] is False
