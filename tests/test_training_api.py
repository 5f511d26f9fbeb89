"""Public API and CLI: same numbers, trace file, cost to train, parallel config forms."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest
from fleetsim.workloads.parallel import ParallelConfig

from fleetsim.cli import train as train_cli
from fleetsim.training import estimate_train_step

ARGS = dict(micro_batch=2, global_batch=16, seq_len=1024, zero=1)


def test_cli_equals_api(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = estimate_train_step("gpt2-medium", "2xH100-SXM", pp=2, dp=1, **ARGS)
    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--model", "gpt2-medium", "--cluster", "2xH100-SXM", "--pp", "2",
                              "--micro-batch", "2", "--global-batch", "16", "--seq-len", "1024", "--zero", "1",
                              "--tokens", "1e9", "--out", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "step time" in out and "MFU" in out and "GPU-hours" in out
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("metric")["value"]
    assert float(summary["step time"]) == pytest.approx(api.time_s, rel=1e-12)
    assert float(summary["MFU"]) == pytest.approx(api.mfu, rel=1e-12)
    trace = json.loads((tmp_path / "trace.json").read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == len(api.timeline)
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {"stage 0", "stage 1"}
    assert max(e["ts"] + e["dur"] for e in spans) == pytest.approx(api.time_s * 1e6, rel=1e-9)


def test_train_cost_arithmetic() -> None:
    est = estimate_train_step("gpt2-medium", "2xH200-SXM", dp=2, **ARGS)
    tokens = 3e9
    c = est.train_cost(tokens)
    steps = tokens / (16 * 1024)
    assert c["time_s"] == pytest.approx(steps * est.time_s)
    assert c["gpu_hours"] == pytest.approx(steps * est.time_s * 2 / 3600)
    assert c["cost_usd"] == pytest.approx(c["gpu_hours"] * est.gpu.price_per_hour_usd)


def test_parallel_config_object_and_dict_agree() -> None:
    a = estimate_train_step("gpt2-medium", "4xH100-SXM", ParallelConfig(tp=2, dp=2), **ARGS)
    b = estimate_train_step("gpt2-medium", "4xH100-SXM", {"tp": 2, "dp": 2}, **ARGS)
    c = estimate_train_step("gpt2-medium", "4xH100-SXM", tp=2, **ARGS)  # dp fills the rest
    assert a.time_s == b.time_s == c.time_s
    assert c.job.parallel.dp == 2


def test_breakdown_and_memory_frames() -> None:
    est = estimate_train_step("gpt2-medium", "2xH100-SXM", pp=2, dp=1, **ARGS)
    assert set(est.memory.stage) == {0, 1}
    bd = est.breakdown
    assert bd["step_s"] == est.time_s
    assert bd["mem_total_bytes"] == est.peak_memory_bytes
    assert est.peak_allocated_bytes < est.peak_memory_bytes <= est.gpu.memory_bytes
    assert set(est.timeline.stream) == {"compute", "p2p"}
    tl = est.timeline
    sends = tl[tl.stream == "p2p"]
    assert len(sends) == 2 * 8  # 8 micro-batches: activations forward, gradients back


def test_cli_execution_graph_equals_api(tmp_path: Path) -> None:
    """--execution graph reaches the simulator: same step as the API's, and no slower than
    eager (graph replay drops the host dispatch term, never adds device time)."""
    graph = estimate_train_step("gpt2-medium", "1xH100-SXM", micro_batch=1, global_batch=1, seq_len=512,
                                execution="graph")
    eager = estimate_train_step("gpt2-medium", "1xH100-SXM", micro_batch=1, global_batch=1, seq_len=512)
    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--model", "gpt2-medium", "--cluster", "1xH100-SXM", "--global-batch", "1",
                              "--seq-len", "512", "--execution", "graph", "--out", str(tmp_path)])
    assert args.func(args) == 0
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("metric")["value"]
    assert float(summary["step time"]) == pytest.approx(graph.time_s, rel=1e-12)
    assert graph.time_s < eager.time_s
    assert graph.result.engine.stages[0].host_bound_s == 0.0
