"""Board power of whole HF transformers iterations (``calibration/bench/engines/hf_power.py``):
the point list against the issue's brief, the budget arithmetic by hand, a CPU smoke of every
code path (needs torch), and the committed H200 measurements
(``calibration/validation/H200-SXM/engines/hf_power.csv``) when present.

Oracles for the measurements: the enforced power limit, energy per iteration from the energy
counter against the mean of the separately sampled power-usage readings times the iteration, idle below any load, a decode step no faster than streaming the bf16 weights at the
H200's datasheet 4.8 TB/s, and the same iterations' times in hf_forward.csv / hf_train.csv
(measured by other scripts in other runs).
"""

from __future__ import annotations

import argparse
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
ENGINES = ROOT / "calibration" / "bench" / "engines"
_FOUND = sorted((ROOT / "calibration" / "validation").glob("*/engines/hf_power.csv"),
                key=lambda p: p.parents[1].name != "H200-SXM")
DATA = _FOUND[0].parent if _FOUND else ROOT / "calibration" / "validation" / "H200-SXM" / "engines"
"""The committed measurements (the H200's when there, else the first GPU with some)."""
MEM_BW_BPS = {"H200-SXM": 4.8e12, "H100-SXM": 3.35e12}[DATA.parent.name]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_hf_power", ENGINES / "hf_power.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


hp = _load()


def _read(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _f(row: dict[str, str], key: str) -> float:
    return float(row[key]) if row[key] != "" else math.nan


# ---- the plan and the budget (no torch) ------------------------------------------------------

def test_plan_covers_the_brief() -> None:
    pts = hp.plan(False)
    assert pts[0].phase == "idle_start" and pts[-1].phase == "idle_end"
    llama = [p for p in pts if p.model == "llama-3.1-8b"]
    assert {(p.batch, p.ctx) for p in llama if p.phase == "decode"} == {
        (b, 1024) for b in (1, 4, 16, 64, 256)}
    assert all(p.layers is None for p in llama if p.phase != "train")
    assert all(p.q == 1 for p in llama if p.phase == "decode")
    assert {(p.batch, p.q) for p in llama if p.phase == "prefill"} == {(1, 8192), (4, 2048), (1, 512)}
    assert {(p.batch, p.seq_len, p.ckpt, p.layers) for p in llama if p.phase == "train"} == {
        (b, 4096, ck, 8) for b in (1, 2) for ck in (False, True)}
    assert {p.model for p in pts if p.optional} == {"qwen2.5-7b"}
    assert not any(p.optional for p in llama)
    first_train = min(i for i, p in enumerate(pts) if p.phase == "train")
    assert all(p.phase in ("train", "idle_end") for p in pts[first_train:])
    assert {(p.phase, p.model) for p in hp.plan(True)} == {(p.phase, p.model) for p in pts}


def test_rows_name_mode_phase_and_tokens() -> None:
    dec = hp.Point("decode", "llama-3.1-8b", None, 64, 1, 1024)
    row = hp.base_row(dec, "cuda", 32, 32)
    assert tuple(row) == hp.COLUMNS
    assert (row["mode"], row["tokens"], row["seq_len"], row["ctx"]) == ("graph", 64, 0, 1024)
    assert hp.base_row(dec, "cpu", 2, 2)["mode"] == "eager"  # no CUDA graphs on a CPU
    tr = hp.Point("train", "llama-3.1-8b", 8, 2, 4096, ckpt=True)
    row = hp.base_row(tr, "cuda", 32, 8)
    assert (row["mode"], row["seq_len"], row["tokens"], row["gradient_checkpointing"]) == (
        "train", 4096, 8192, 1)
    idle = hp.base_row(hp.Point("idle_end"), "cuda", 0, 0)
    assert (idle["mode"], idle["impl"], idle["tokens"]) == ("idle", "", 0)
    assert math.isnan(idle["power_w_mean"])


def test_budget_reserves_the_required_points_after_an_optional_one() -> None:
    args = argparse.Namespace(smoke=False, window_s=2.5, warm_s=1.0, idle_s=2.0)
    pts = hp.plan(False)
    i = next(k for k, p in enumerate(pts) if p.optional)
    # four training points of 1 + 2.5 + 6 s, two model builds (without, with recomputation)
    assert hp.required_after_s(pts[i:], args) == pytest.approx(4 * 9.5 + 2 * 25.0)
    same = hp.model_key(pts[1])
    assert hp.estimate_s(pts[2], args, same) == pytest.approx(9.5)
    assert hp.estimate_s(pts[2], args, None) == pytest.approx(34.5)
    assert hp.estimate_s(pts[0], args, None) == pytest.approx(2.5)


# ---- CPU smoke of every code path (needs torch) ---------------------------------------------

def test_cpu_smoke_writes_every_phase(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="torch is not installed here; the device run covers this")
    pytest.importorskip("transformers", reason="transformers is not installed here")
    proc = subprocess.run([sys.executable, str(ENGINES / "hf_power.py"), "--out", str(tmp_path),
                           "--device", "cpu", "--smoke"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _read(tmp_path / "hf_power.csv")
    assert list(rows[0]) == list(hp.COLUMNS)
    skipped = (tmp_path / "skipped.txt").read_text() if (tmp_path / "skipped.txt").exists() else ""
    assert skipped == ""
    assert [(r["phase"], r["model"]) for r in rows] == [(p.phase, p.model) for p in hp.plan(True)]
    for r in rows:
        assert r["power_w_mean"] == "" and r["power_limit_w"] == "", r  # no NVML on a CPU
        if r["mode"] == "idle":
            assert _f(r, "window_s") >= 0.1 and r["iterations"] == "0", r
            continue
        n, t, win = int(r["iterations"]), _f(r, "time_s"), _f(r, "window_s")
        assert n >= 3 and 0 < _f(r, "p10_s") <= _f(r, "p90_s"), r
        assert t == pytest.approx(win / n, rel=1e-4), r
        assert 0.5 < _f(r, "busy_fraction") <= 1.0 + 1e-6, r
    meta = json.loads((tmp_path / "hf_power_meta.json").read_text())
    assert meta["smoke"] is True and meta["rows_written"] == len(rows) and meta["torch"]


# ---- the committed measurements --------------------------------------------------------

needs_data = pytest.mark.skipif(not (DATA / "hf_power.csv").exists(),
                                reason=f"no committed hf_power.csv at {DATA}")


@pytest.fixture(scope="module")
def power() -> list[dict[str, str]]:
    return _read(DATA / "hf_power.csv")


@needs_data
def test_power_schema_limits_and_energy(power: list[dict[str, str]]) -> None:
    assert list(power[0]) == list(hp.COLUMNS)
    idle = [r for r in power if r["mode"] == "idle"]
    assert {r["phase"] for r in idle} == {"idle_start", "idle_end"}
    idle_w = max(_f(r, "power_w_mean") for r in idle)
    for r in power:
        p, limit = _f(r, "power_w_mean"), _f(r, "power_limit_w")
        assert 30 < p <= 1.1 * limit, r
        if r["mode"] == "idle":
            continue
        assert p > idle_w, r
        n, t = int(r["iterations"]), _f(r, "time_s")
        assert n >= 3 and 0 < _f(r, "p10_s") <= _f(r, "p90_s") and _f(r, "window_s") >= 1.5, r
        # the energy counter's figure against the power-usage samples' mean (another NVML reading)
        assert _f(r, "energy_j_per_iter") == pytest.approx(_f(r, "power_w_sampled_mean") * t,
                                                           rel=0.1), r
        assert 0.5 < _f(r, "busy_fraction") <= 1.02, r


@needs_data
def test_decode_no_faster_than_the_weights_stream(power: list[dict[str, str]]) -> None:
    for r in power:
        if r["phase"] != "decode":
            continue
        weights = 2 * float(_params(r["model"], int(r["layers"])))
        assert _f(r, "time_s") >= weights / MEM_BW_BPS, r


def _params(model: str, layers: int) -> int:
    """Parameters of a dense HF Llama/Qwen2 causal LM (untied head), from the catalog."""
    c = json.loads((ROOT / "workloads" / "catalog" / f"{model}.json").read_text())
    h, ffn, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = c.get("head_dim", h // c["num_attention_heads"])
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    bias = (q + 2 * kv) if c["model_type"] == "qwen2" else 0
    return layers * (h * (q + 2 * kv) + bias + q * h + 3 * h * ffn + 2 * h) + 2 * v * h + h


@needs_data
@pytest.mark.skipif(not (DATA / "hf_forward.csv").exists(), reason=f"no timing-script rows beside {DATA}")
def test_times_agree_with_the_timing_scripts(power: list[dict[str, str]]) -> None:
    """A graph decode step at ctx 1024 lies between hf_forward's at ctx 512 and 2048; a training
    step within 15 % of hf_train's at the same shape (other runs, CUDA events per call)."""
    fwd: dict[tuple[str, int, int], float] = {
        (r["model"], int(r["batch"]), int(r["context"])): float(r["time_s"])
        for r in _read(DATA / "hf_forward.csv") if r["mode"] == "decode_graph"}
    train = {(r["model"], int(r["batch"]), int(r["seq_len"]), int(r["gradient_checkpointing"])):
             float(r["time_s"]) for r in _read(DATA / "hf_train.csv")}
    checked = 0
    for r in power:
        if r["phase"] == "decode" and int(r["ctx"]) == 1024:
            lo, hi = (fwd.get((r["model"], int(r["batch"]), c)) for c in (512, 2048))
            if lo is not None and hi is not None:
                assert 0.9 * lo <= _f(r, "time_s") <= 1.1 * hi, r
                checked += 1
        if r["phase"] == "train":
            ref = train.get((r["model"], int(r["batch"]), int(r["seq_len"]),
                             int(r["gradient_checkpointing"])))
            if ref is not None:
                assert _f(r, "time_s") == pytest.approx(ref, rel=0.15), r
                checked += 1
    assert checked >= 3


@pytest.mark.skipif(not (DATA / "hf_power_meta.json").exists(), reason="no committed meta")
def test_meta_records_versions_and_limit() -> None:
    meta = json.loads((DATA / "hf_power_meta.json").read_text())
    assert meta["catalog_gpu"] == DATA.parent.name and meta["gpu_name"].startswith("NVIDIA") and meta["driver"] and meta["torch"] and meta["date"]
    assert meta["transformers"] and meta["smoke"] is False
    assert float(meta["power_limit_enforced_w"]) > 0
