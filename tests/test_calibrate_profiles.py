"""The committed GPU measurements: schema per docs/ARCHITECTURE.md and physical sanity.

Oracles: the column table in ARCHITECTURE.md (parsed here, independently of the harness's
``COLUMNS``), NVIDIA datasheet ceilings (H100 SXM: 989 dense bf16 TFLOP/s, 1979 fp8,
495 tf32, 3.35 TB/s HBM3; H200: same compute, 4.8 TB/s HBM3e; NVLink 4 at 450 GB/s per
direction; PCIe Gen5 x16 at 64 GB/s per direction), and closed-form parameter counts.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
from fleetsim.calibration.bench.common import COLUMNS, META_FIELDS

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "calibration" / "profiles"
VALIDATION = ROOT / "calibration" / "validation"
GPUS = sorted(p.name for p in PROFILES.iterdir() if (p / "meta.json").exists()) if PROFILES.exists() else []
DATASHEET = {
    "H100-SXM": {"bf16": 989e12, "fp8": 1979e12, "tf32": 495e12, "hbm_bps": 3.35e12},
    "H200-SXM": {"bf16": 989e12, "fp8": 1979e12, "tf32": 495e12, "hbm_bps": 4.8e12},
}


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _arch_columns() -> dict[str, list[str]]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## Calibration profile format", 1)[1].split("\n## ", 1)[0]
    out = {}
    for m in re.finditer(r"^\| `(\w+)\.(csv|json)` \| (.+?) \|$", section, re.M):
        cols = [c.strip() for c in re.findall(r"`([^`]+)`", m.group(3))]
        if m.group(2) == "csv":
            out[m.group(1)] = [c.strip() for c in cols[0].split(",")]
        else:
            out["meta"] = cols
    return out


def test_harness_columns_equal_architecture_table() -> None:
    arch = _arch_columns()
    for kind, cols in COLUMNS.items():
        assert list(cols) == arch[kind], kind
    assert list(META_FIELDS) == arch["meta"]




@pytest.mark.parametrize("gpu", GPUS)
def test_profile_files_schema_and_finite_times(gpu: str) -> None:
    arch = _arch_columns()
    d = PROFILES / gpu
    meta = json.loads((d / "meta.json").read_text())
    for field in arch["meta"]:
        assert field in meta, field
    assert meta["catalog_gpu"] == gpu and meta["driver"] and meta["torch"]
    for kind in ("gemm", "attention", "elementwise", "moe", "memcpy", "launch", "power"):
        rows = _read(d / f"{kind}.csv")
        assert rows, kind
        assert list(rows[0]) == arch[kind]
        for r in rows:
            for c in ("time_s", "p10_s", "p90_s", "power_w_mean", "duration_s"):
                if c in r:
                    v = float(r[c])
                    assert math.isfinite(v) and v > 0, (kind, r)
            if "p10_s" in r:
                assert float(r["p10_s"]) <= float(r["time_s"]) <= float(r["p90_s"]), (kind, r)


@pytest.mark.parametrize("gpu", GPUS)
def test_gemm_rates_below_datasheet_and_monotone(gpu: str) -> None:
    rows = _read(PROFILES / gpu / "gemm.csv")
    best: dict[str, float] = {}
    by_shape: dict[tuple[str, int, int], list[tuple[int, float]]] = {}
    for r in rows:
        m, n, k, t = int(r["m"]), int(r["n"]), int(r["k"]), float(r["time_s"])
        rate = 2.0 * m * n * k / t
        best[r["dtype"]] = max(best.get(r["dtype"], 0.0), rate)
        by_shape.setdefault((r["dtype"], n, k), []).append((m, t))
    sheet = DATASHEET[gpu]
    assert 0.6 * sheet["bf16"] < best["bf16"] <= sheet["bf16"]
    assert 0.6 * sheet["bf16"] < best["fp16"] <= sheet["bf16"]
    assert 0.5 * sheet["fp8"] < best["fp8"] <= sheet["fp8"]
    assert best["tf32"] <= sheet["tf32"]
    for key, pts in by_shape.items():
        pts.sort()
        for (m1, t1), (m2, t2) in zip(pts, pts[1:], strict=False):
            assert t2 >= t1 / 2, (key, m1, m2)  # more rows never more than 2x faster


@pytest.mark.parametrize("gpu", GPUS)
def test_memory_bound_rates_below_hbm(gpu: str) -> None:
    hbm = DATASHEET[gpu]["hbm_bps"]
    copies = [r for r in _read(PROFILES / gpu / "elementwise.csv") if r["kernel"] == "copy"]
    big = max(copies, key=lambda r: int(r["cols"]))
    bw = int(big["bytes"]) / float(big["time_s"])
    assert 0.55 * hbm < bw <= hbm
    for r in _read(PROFILES / gpu / "attention.csv"):
        if r["phase"] == "decode":
            kv_bytes = (2 * int(r["batch"]) * int(r["kv_len"]) * int(r["num_kv_heads"])
                        * (int(r["head_dim"]) + int(r["v_head_dim"])))
            assert kv_bytes / float(r["time_s"]) <= hbm, r
    for r in _read(PROFILES / gpu / "memcpy.csv"):
        if r["pinned"] == "1" and int(r["bytes"]) >= 1 << 26:
            assert 20e9 < int(r["bytes"]) / float(r["time_s"]) <= 64e9, r


@pytest.mark.parametrize("gpu", GPUS)
def test_launch_and_power(gpu: str) -> None:
    launch = {(r["mode"], r["kernels"]): float(r["time_s"]) for r in _read(PROFILES / gpu / "launch.csv")}
    assert launch[("graph", "1000")] < launch[("eager", "1000")]
    assert 0.5e-6 < launch[("eager", "1000")] < 50e-6
    meta = json.loads((PROFILES / gpu / "meta.json").read_text())
    power = {r["op_class"]: float(r["power_w_mean"]) for r in _read(PROFILES / gpu / "power.csv")}
    assert power["idle"] < power["memory_copy"] and power["idle"] < power["gemm_bf16"]
    for w in power.values():
        assert 30 < w <= 1.06 * float(meta["power_limit_w"])


def test_collectives_below_nvlink_and_h200_decode_faster() -> None:
    path = PROFILES / "H200-SXM" / "collective.csv"
    if not path.exists():
        pytest.skip("no multi-GPU collective profile")
    for r in _read(path):
        n = int(r["group_size"])
        algbw = int(r["bytes"]) / float(r["time_s"])
        factor = {"all_reduce": 2 * (n - 1) / n, "send_recv": 1.0}.get(r["op"], (n - 1) / n)
        assert algbw * factor <= 450e9, r  # bus bandwidth within one NVLink-4 direction
    if "H100-SXM" not in GPUS:
        return

    def decode(gpu: str) -> dict[tuple[str, str, str], float]:
        return {(r["batch"], r["kv_len"], r["num_kv_heads"]): float(r["time_s"])
                for r in _read(PROFILES / gpu / "attention.csv") if r["phase"] == "decode"}

    h100, h200 = decode("H100-SXM"), decode("H200-SXM")
    big = [k for k in h100 if int(k[0]) * int(k[1]) >= 1 << 20 and k in h200]
    assert big
    for k in big:  # KV-streaming decode follows HBM bandwidth (4.8 vs 3.35 TB/s)
        assert h200[k] < h100[k], k


def _gpt2_params(layers: int, h: int, vocab: int, seq: int) -> int:
    return layers * (12 * h * h + 13 * h) + vocab * h + seq * h + 2 * h


@pytest.mark.parametrize("gpu", sorted(p.name for p in VALIDATION.iterdir() if p.name != "published")
                         if VALIDATION.exists() else [])
def test_validation_files(gpu: str) -> None:
    d = VALIDATION / gpu
    fwd = _read(d / "forward.csv")
    assert list(fwd[0]) == ["model", "mode", "batch", "q_len", "context", "tp", "time_s",
                            "p10_s", "p90_s"]
    assert {r["mode"] for r in fwd} >= {"prefill_eager", "decode_graph"}
    for r in fwd:
        assert float(r["p10_s"]) <= float(r["time_s"]) <= float(r["p90_s"])
    # decode at fixed batch gets slower with context (more KV to stream)
    dec = {(r["model"], r["tp"], int(r["batch"]), int(r["context"])): float(r["time_s"])
           for r in fwd if r["mode"] == "decode_graph"}
    for (model, tp, b, c), t in dec.items():
        longer = [dec[k] for k in dec if k[:3] == (model, tp, b) and k[3] > c]
        assert all(t2 > 0.98 * t for t2 in longer)
    train = _read(d / "training.csv")
    by = {}
    for r in train:
        assert int(r["params"]) == _gpt2_params(int(r["layers"]), int(r["hidden"]),
                                                int(r["vocab"]), int(r["seq_len"]))
        if r["status"] == "ok":
            assert float(r["time_s"]) > 0
            assert int(r["peak_reserved_bytes"]) >= int(r["peak_alloc_bytes"]) > 0
            by[(r["model"], r["micro_batch"], r["world_size"], r["recompute"])] = r
    for (model, mb, world, rec), r in by.items():
        if rec == "1" and (model, mb, world, "0") in by:
            plain = by[(model, mb, world, "0")]
            assert int(r["peak_alloc_bytes"]) <= 1.01 * int(plain["peak_alloc_bytes"])
            assert float(r["time_s"]) >= 0.9 * float(plain["time_s"])
    held = _read(d / "ops_heldout.csv")
    assert {r["op"] for r in held} >= {"gemm", "attention_prefill", "attention_decode"}
