"""Multi-GPU measurement scripts (calibration/bench/multi) and their validator (fleetsim.validate_multi).

Pure-Python checks of point lists, schemas and budget arithmetic against hand counts; the
validator on tiny synthetic CSVs against closed forms; CPU gloo smoke runs where torch exists."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MULTI = ROOT / "calibration" / "bench" / "multi"


def _load(name: str):
    sys.path[:0] = [str(MULTI), str(MULTI.parent)]
    try:
        spec = importlib.util.spec_from_file_location(f"_multi_{name}", MULTI / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        return mod
    finally:
        del sys.path[:2]


pts = _load("points")
run_multi = _load("run_multi")


def test_collective_points_hand_count():
    rows = pts.collective_points(8)
    # 5 ops x 12 sizes x (eager, graph) + all_reduce one/two-shot at the 11 sizes <= 1 GiB
    assert len(rows) == 5 * 12 * 2 + 2 * 11
    assert min(r["bytes"] for r in rows) == 1024 and max(r["bytes"] for r in rows) == 4 << 30
    assert {r["mode"] for r in rows if r["op"] != "all_reduce"} == {"eager", "graph"}
    assert all(r["group_size"] == 8 for r in rows)
    with pytest.raises(ValueError, match="at least 2"):
        pts.collective_points(1)
    with pytest.raises(ValueError, match="unknown collective mode"):
        pts.collective_points(2, modes=("nvls",))


def test_schemas_extend_existing_ones():
    sys.path.insert(0, str(MULTI.parent))
    try:
        from fleetsim.calibration.bench.common import COLUMNS
    finally:
        sys.path.pop(0)
    assert pts.COLLECTIVE_COLUMNS == COLUMNS["collective"] + ("mode",)
    assert pts.FORWARD_COLUMNS[:-1] == ("model", "mode", "batch", "q_len", "context", "tp", "time_s", "p10_s",
                                        "p90_s")
    text = (MULTI.parent / "train_bench.py").read_text()
    for c in pts.TRAIN_COLUMNS[:-3]:
        assert f'"{c}"' in text
    assert pts.TRAIN_COLUMNS[-3:] == ("fsdp", "pp", "schedule")


def test_bus_factor_and_estimate_by_hand():
    assert pts.bus_factor("all_reduce", 8) == pytest.approx(1.75)
    assert pts.bus_factor("all_gather", 4) == pytest.approx(0.75)
    assert pts.bus_factor("send_recv", 8) == 1.0
    # 1 GiB all-reduce at 8 ranks over 300 GB/s bus: 20 us + 2^30 * 1.75 / 3e11
    assert pts.estimate_collective_s("all_reduce", 1 << 30, 8) == pytest.approx(20e-6 + 2**30 * 1.75 / 3e11)
    one = [{"op": "send_recv", "bytes": 3_000_000, "group_size": 2}]
    assert pts.collective_budget_s(one, reps=7, warmup=3) == pytest.approx(10 * (20e-6 + 1e-5) + 0.05)


def test_tp_points_and_kv_cache():
    prefill, decode = pts.tp_points()
    assert max(b for b, _ in decode) == 256 and min(b for b, _ in decode) == 1
    assert len(decode) == 9 + 4 and len(prefill) == 6
    # llama-3.1-70b, 8 layers, b=256, ctx 4096, tp 8: 2 * 8 * 256 * 4097 * 1 * 128 * 2 bytes
    assert pts.kv_cache_bytes(8, 256, 4096, 8, 128, 8) == 2 * 8 * 256 * 4097 * 128 * 2
    with pytest.raises(ValueError):
        pts.kv_cache_bytes(8, 1, 10, 8, 128, 3)


def test_train_points_and_bubble():
    f = pts.train_points("fsdp", 8)
    assert len(f) == 3 * 3 and all(r["dp"] == 8 and r["fsdp"] == 1 for r in f)
    p = pts.train_points("pp", 4)
    assert len(p) == 3 * 2 * 2 and {r["schedule"] for r in p} == {"gpipe", "1f1b"}
    assert all(r["layers"] % r["pp"] == 0 for r in p)
    assert pts.pipeline_bubble(4, 8) == pytest.approx(3 / 11)
    with pytest.raises(ValueError, match="unknown training model"):
        pts.train_points("fsdp", 2, models=("gpt-175b",))


def test_phase_budgets_sum_and_plan():
    total = 500.0
    for phases in pts.CALLS:
        b = pts.phase_budgets(list(phases), 8, total)
        runs = [x for v in b.values() for x in v]
        assert sum(s for _, s in runs) + len(runs) * pts.RUN_OVERHEAD_S <= total
        assert all(s >= pts.MIN_SHARE_S for _, s in runs)
    b = pts.phase_budgets(["coll", "tp"], 8, total)
    # 6 sub-runs: (500 - 150) s split 1:2 -> coll 350/3/3, tp 700/3/3
    assert b["coll"] == [(2, 38), (4, 38), (8, 38)] and b["tp"] == [(2, 77), (4, 77), (8, 77)]
    assert pts.sub_worlds("coll", 4) == [2, 4] and pts.sub_worlds("ddp", 2) == [2]
    with pytest.raises(ValueError, match="select fewer phases"):
        pts.phase_budgets(list(pts.PHASES), 8, total)
    plan = run_multi.plan(["coll", "pp"], 8, 500, "H200-SXM")
    assert [r.name for r in plan] == ["coll2", "coll4", "coll8", "pp2", "pp4"]
    assert all(r.timeout_s == r.budget_s + pts.GRACE_S for r in plan)
    assert plan[0].argv[-6:] == ("--out", "calibration/profiles/H200-SXM", "--world", "2", "--budget-s",
                                 str(int(plan[0].budget_s)))


def _write(path: Path, cols: tuple[str, ...], rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        w.writerows(rows)
    return path


def test_collective_validator_against_ring_alpha_beta(tmp_path):
    from fleetsim.calibration import RooflineCostModel
    from fleetsim.hardware.catalog import get_gpu

    from fleetsim.validate_multi import collective_rows, eager_collective_rows

    gpu = get_gpu("H200-SXM")
    link = RooflineCostModel().link(gpu.scale_up_link)
    n, nb = 8, 1 << 28
    ring = 2 * (n - 1) / n * nb / (link.bandwidth_bps * link.efficiency) + 2 * (n - 1) * link.latency_s
    rows = [{"op": "all_reduce", "group_size": n, "bytes": nb, "time_s": ring * 1.25, "p10_s": 0, "p90_s": 0,
             "mode": "eager"},
            {"op": "all_reduce", "group_size": n, "bytes": nb, "time_s": ring * 0.8, "p10_s": 0, "p90_s": 0,
             "mode": "graph"}]
    path = _write(tmp_path / "collective_8.csv", pts.COLLECTIVE_COLUMNS, rows)
    df = collective_rows(path, gpu, RooflineCostModel())
    assert df["error"].tolist() == pytest.approx([-0.2, 0.25])
    assert df["bus_gbps"].iloc[0] == pytest.approx(nb * 1.75 / (ring * 1.25) / 1e9)
    merged = eager_collective_rows([path])
    assert list(merged.columns) == ["op", "group_size", "bytes", "time_s", "p10_s", "p90_s"] and len(merged) == 1
    bad = _write(tmp_path / "bad.csv", pts.COLLECTIVE_COLUMNS, [{**rows[0], "mode": "nvls"}])
    from fleetsim.hardware.errors import ProfileError
    with pytest.raises(ProfileError, match="mode 'nvls'"):
        collective_rows(bad, gpu, RooflineCostModel())


def test_forward_validator_truncation_is_linear_in_layers(tmp_path):
    """A truncated model's prediction: the per-layer part scales with the layer count, so
    (t(8) - t(4)) = (t(4) - t(2)) * 2 for the same shape (layer-independent parts cancel)."""
    from fleetsim.calibration import RooflineCostModel

    from fleetsim.validate_multi import forward_rows

    rows = [{"model": "llama-3.1-70b", "mode": "decode_graph", "batch": 16, "q_len": 1, "context": 1024, "tp": 4,
             "time_s": 0.01, "p10_s": 0, "p90_s": 0, "layers": L} for L in (2, 4, 8)]
    path = _write(tmp_path / "forward_tp.csv", pts.FORWARD_COLUMNS, rows)
    df = forward_rows(path, "H200-SXM", RooflineCostModel())
    for kind in ("serving", "reference"):
        t = df[df["graph"] == kind].sort_values("layers")["predicted_s"].tolist()
        assert t[2] - t[1] == pytest.approx(2 * (t[1] - t[0]), rel=1e-6)
        assert t[0] > 0
    assert (df["error"] == df["predicted_s"] / 0.01 - 1).all()


def test_training_validator_kinds(tmp_path):
    from fleetsim.validate_multi import training_rows

    base = {"model": "gpt2-1.3b", "layers": 24, "hidden": 2048, "heads": 16, "seq_len": 1024, "vocab": 50257,
            "ffn": 8192, "micro_batch": 2, "recompute": 0, "world_size": 4, "params": 1, "status": "ok",
            "time_s": 0.5, "p10_s": 0, "p90_s": 0, "peak_alloc_bytes": 2**30, "peak_reserved_bytes": 0,
            "host_s": 0, "device_s": "", "comm_s": "", "kernels": 0, "launch_s": ""}
    rows = [{**base, "grad_accum": 1, "dp": 4, "fsdp": 1, "pp": 1, "schedule": ""},
            {**base, "grad_accum": 8, "dp": 1, "fsdp": 0, "pp": 4, "schedule": "1f1b"},
            {**base, "grad_accum": 8, "dp": 1, "fsdp": 0, "pp": 4, "schedule": "gpipe"},
            {**base, "grad_accum": 1, "dp": 4, "fsdp": 0, "pp": 1, "schedule": "", "status": "oom"}]
    df = training_rows(_write(tmp_path / "training_parallel.csv", pts.TRAIN_COLUMNS, rows), "H200-SXM")
    assert df["kind"].tolist() == ["fsdp", "pp-1f1b", "pp-gpipe"]
    assert (df["predicted_s"] > 0).all()
    assert df["error"].tolist() == pytest.approx((df["predicted_s"] / 0.5 - 1).tolist())
    # same micro-batches, same stages: 1F1B and GPipe share the bubble (p-1)/(m+p-1); times within 10 %
    t1, tg = df["predicted_s"].iloc[1], df["predicted_s"].iloc[2]
    assert abs(t1 / tg - 1) < 0.1


def _has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


@pytest.mark.skipif(not _has_torch(), reason="torch is not installed (CPU gloo smoke runs need it)")
@pytest.mark.parametrize("script,args,out", [
    ("collectives.py", ["--world", "2"], "collective_2.csv"),
    ("train_parallel.py", ["--kind", "fsdp", "--world", "2", "--steps", "1", "--warmup", "1"],
     "training_parallel.csv"),
])
def test_cpu_gloo_smoke(tmp_path, script, args, out):
    r = subprocess.run([sys.executable, str(MULTI / script), "--out", str(tmp_path), "--device", "cpu",
                        "--smoke", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with (tmp_path / out).open() as fh:
        recs = list(csv.DictReader(fh))
    assert recs and all(float(x["time_s"]) > 0 for x in recs)
