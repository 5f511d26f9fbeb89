"""Pure-Python parts of the calibration harness, checked against hand computations (no torch)."""

from __future__ import annotations

import csv
import json

import pytest
from fleetsim.calibration.bench import grids
from fleetsim.calibration.bench.common import (
    COLUMNS,
    Budget,
    ProfileWriter,
    catalog_name_for,
    parse_only,
    quantile,
    rotation_count,
    row_key,
    summarize,
    write_meta,
)


def test_quantile_matches_hand_interpolation() -> None:
    xs = [5.0, 1.0, 4.0, 2.0, 3.0]  # sorted 1..5, positions 0..4
    assert quantile(xs, 0.5) == 3.0
    assert quantile(xs, 0.1) == pytest.approx(1.4)  # pos 0.4 -> 1 + 0.4 * (2 - 1)
    assert quantile(xs, 0.9) == pytest.approx(4.6)  # pos 3.6 -> 4 + 0.6 * (5 - 4)
    assert quantile([7.0], 0.9) == 7.0
    assert quantile([1.0, 2.0, 3.0, 10.0], 0.5) == pytest.approx(2.5)


def test_summarize_orders_median_p10_p90() -> None:
    times = [1e-3, 2e-3, 3e-3, 4e-3, 100e-3]  # one outlier
    med, p10, p90 = summarize(times)
    assert med == pytest.approx(3e-3)
    assert p10 == pytest.approx(1.4e-3)
    assert p90 == pytest.approx(4e-3 + 0.6 * 96e-3)
    assert p10 <= med <= p90


def test_quantile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        quantile([], 0.5)
    with pytest.raises(ValueError):
        quantile([1.0], 1.5)


@pytest.mark.parametrize(
    ("set_bytes", "l2", "expected"),
    [
        (8 << 20, 50 << 20, 19),      # ceil(3 * 50 / 8) = ceil(18.75)
        (50 << 20, 50 << 20, 3),      # three sets of L2 size
        (1 << 30, 50 << 20, 1),       # already far larger than L2
        (1024, 50 << 20, 64),         # capped
    ],
)
def test_rotation_count_hand_values(set_bytes: int, l2: int, expected: int) -> None:
    n = rotation_count(set_bytes, l2)
    assert n == expected
    if n < 64:  # uncapped: the rotated sets together exceed 3x L2, one fewer would not
        assert n * set_bytes >= 3 * l2
        assert n == 1 or (n - 1) * set_bytes < 3 * l2


def test_budget_with_fake_clock() -> None:
    now = [100.0]
    b = Budget(10.0, clock=lambda: now[0])
    assert b.left_s() == 10.0 and not b.exhausted()
    now[0] = 107.5
    assert b.elapsed_s() == pytest.approx(7.5)
    assert b.left_s() == pytest.approx(2.5)
    now[0] = 111.0
    assert b.left_s() == 0.0 and b.exhausted()


def test_catalog_names_and_only() -> None:
    assert catalog_name_for("NVIDIA H100 80GB HBM3") == "H100-SXM"
    assert catalog_name_for("NVIDIA H200") == "H200-SXM"
    assert catalog_name_for("NVIDIA H100 PCIe") == "H100-PCIE"
    assert parse_only("gemm, power", ("gemm", "power", "moe")) == ["gemm", "power"]
    assert parse_only(None, ("gemm", "moe")) == ["gemm", "moe"]
    with pytest.raises(ValueError, match="gemmm"):
        parse_only("gemmm", ("gemm",))


def test_writer_appends_and_resume_skips(tmp_path) -> None:
    w = ProfileWriter(tmp_path, resume=False)
    row = {"dtype": "bf16", "m": 16, "n": 4096, "k": 4096, "batch": 1}
    assert not w.done("gemm", row)
    w.write("gemm", {**row, "time_s": 1.5e-5, "p10_s": 1.4e-5, "p90_s": 1.6e-5})
    assert w.done("gemm", row)
    attn = {"backend": "sdpa", "phase": "decode", "batch": 4, "q_len": 1, "kv_len": 512,
            "num_heads": 32, "num_kv_heads": 8, "head_dim": 128, "v_head_dim": 128,
            "causal": False, "dtype": "bf16"}
    w.write("attention", {**attn, "time_s": 1e-5, "p10_s": 1e-5, "p90_s": 1e-5})
    # a new writer with resume sees both rows (bools read back as "0"/"1" match)
    w2 = ProfileWriter(tmp_path, resume=True)
    assert w2.done("gemm", row) and w2.done("attention", attn)
    assert not w2.done("gemm", {**row, "m": 32})
    with (tmp_path / "gemm.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(COLUMNS["gemm"])
    assert float(rows[0]["time_s"]) == pytest.approx(1.5e-5)
    # without resume, earlier files are cleared
    w3 = ProfileWriter(tmp_path, resume=False)
    assert not w3.done("gemm", row) and not (tmp_path / "gemm.csv").exists()
    with pytest.raises(ValueError, match="lacks"):
        w3.write("gemm", row)


def test_writer_restarts_only_the_suites_it_runs(tmp_path) -> None:
    w = ProfileWriter(tmp_path, resume=False)
    row = {"dtype": "bf16", "m": 16, "n": 4096, "k": 4096, "batch": 1}
    w.write("gemm", {**row, "time_s": 1.5e-5, "p10_s": 1.4e-5, "p90_s": 1.6e-5})
    w.write("host_dispatch", {"call": "linear", "host_s": 2e-5, "p10_s": 2e-5, "p90_s": 2e-5})
    w.write("sustained", {"op_class": "gemm_8192", "shape": "8192x8192x8192", "flops": 1.1e12,
                          "bytes": 4e8, "burst_s": 1.4e-3, "early_s": 1.5e-3, "sustained_s": 1.5e-3,
                          "ratio": 1.07, "sm_clock_mhz": 1400.0, "power_w": 690.0, "duration_s": 8.0})
    # identity of the new kinds: the call / class alone, not the measured columns
    assert w.done("host_dispatch", {"call": "linear"}) and w.done("sustained", {"op_class": "gemm_8192"})
    w2 = ProfileWriter(tmp_path, resume=False, fresh=["host_dispatch"])
    assert w2.done("gemm", row) and w2.done("sustained", {"op_class": "gemm_8192"})
    assert not w2.done("host_dispatch", {"call": "linear"})
    assert not (tmp_path / "host_dispatch.csv").exists()


def test_row_key_ignores_statistics() -> None:
    a = {"op": "all_reduce", "group_size": 2, "bytes": 1024, "time_s": 1.0, "p10_s": 0.5,
         "p90_s": 2.0}
    b = {**a, "time_s": 9.0}
    assert row_key("collective", a) == row_key("collective", b) == ("all_reduce", "2", "1024")


def test_write_meta_merges_invocations(tmp_path) -> None:
    write_meta(tmp_path, {"invocation": "first", "date": "d1", "gpu_name": "X"})
    write_meta(tmp_path, {"invocation": "second --resume", "date": "d2"})
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["gpu_name"] == "X" and meta["invocation"] == "second --resume"
    assert [i["invocation"] for i in meta["invocations"]] == ["first", "second --resume"]


def test_gemm_grid_covers_model_layers_and_respects_cap() -> None:
    pairs = set(grids.model_linear_shapes())
    # llama-3.1-8b at TP1 and TP4: fused qkv, o, gate+up, down, LM head
    for tp in (1, 4):
        for nk in ((6144 // tp, 4096), (4096, 4096 // tp), (28672 // tp, 4096),
                   (4096, 14336 // tp), (128256 // tp, 4096)):
            assert nk in pairs
    assert (2304, 768) in pairs and (50257, 1600) in pairs  # gpt2 qkv, gpt2-xl LM head
    rows = grids.gemm_grid()
    assert all(2 * r["m"] * r["n"] * r["k"] <= grids.GEMM_FLOP_CAP for r in rows)
    assert all(r["n"] % 16 == 0 and r["k"] % 16 == 0 for r in rows if r["dtype"] == "fp8")
    bf16_ms = {r["m"] for r in rows if r["dtype"] == "bf16"}
    assert bf16_ms == set(grids.M_VALUES)
    keys = [(r["dtype"], r["m"], r["n"], r["k"]) for r in rows]
    assert len(keys) == len(set(keys))


def test_attention_grid_caps() -> None:
    rows = grids.attention_grid()
    for r in rows:
        if r["phase"] == "prefill":
            assert r["q_len"] == r["kv_len"] and r["batch"] * r["q_len"] <= grids.PREFILL_TOKEN_CAP
        if r["phase"] == "chunked_prefill":
            assert r["q_len"] < r["kv_len"]
        if r["phase"] == "decode":
            kv = 2 * r["batch"] * r["kv_len"] * r["num_kv_heads"] * (r["head_dim"] + r["v_head_dim"])
            assert r["q_len"] == 1 and kv <= grids.DECODE_KV_BYTES_CAP
    assert {r["num_heads"] // r["num_kv_heads"] for r in rows} >= {1, 4, 8}
