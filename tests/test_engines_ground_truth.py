"""Schema, units and physical sanity of the committed engine ground truth
(``calibration/validation/H200-SXM/engines/``: HF transformers and torch.compile on an H200).

Besides column sets and finite positive seconds, the checks are oracles that a wrong unit, a
swapped column or a mislabelled row would fail: parameter counts recomputed from the catalog
configs, a decode step no faster than streaming the bf16 weights at the H200's datasheet
bandwidth, AdamW training memory at least 16 bytes per parameter, a CUDA-graph replay no slower
than the same eager step, recomputation slower and no larger in memory than no recomputation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

DIR = Path(__file__).resolve().parents[1] / "calibration" / "validation" / "H200-SXM" / "engines"
CATALOG = Path(__file__).resolve().parents[1] / "workloads" / "catalog"
H200_MEM_BYTES = 143771 * 2**20  # nvidia-smi memory.total of the measured card
H200_BW_BPS = 4.8e12  # datasheet HBM3e bandwidth: an upper bound on what a step can stream
pytestmark = pytest.mark.skipif(not (DIR / "hf_forward.csv").exists(),
                                reason=f"engine ground truth absent at {DIR}")

FORWARD_COLS = {"impl", "model", "config_layers", "layers", "mode", "batch", "q_len", "context",
                "dtype", "attn_impl", "experts_impl", "logits", "cache", "graph_method", "time_s",
                "p10_s", "p90_s", "peak_alloc_bytes", "reps"}
TRAIN_COLS = {"impl", "model", "config_layers", "layers", "mode", "batch", "seq_len", "tokens",
              "param_dtype", "compute_dtype", "optimizer", "attn_impl", "gradient_checkpointing",
              "params", "time_s", "p10_s", "p90_s", "peak_alloc_bytes", "peak_reserved_bytes", "steps"}
COMPILE_EXTRA = {"compile_scope", "compile_mode", "compile_s"}


def _csv(name: str) -> pd.DataFrame:
    return pd.read_csv(DIR / name)


def _dense_params(model: str, layers: int) -> int:
    """Parameters of a dense HF Llama/Qwen2 causal LM (untied head, RMSNorm, optional QKV bias)."""
    c = json.loads((CATALOG / f"{model}.json").read_text())
    h, ffn, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = c.get("head_dim", h // c["num_attention_heads"])
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    bias = (q + 2 * kv) if c["model_type"] == "qwen2" else 0
    per_layer = h * (q + 2 * kv) + bias + q * h + 3 * h * ffn + 2 * h
    return layers * per_layer + 2 * v * h + h


@pytest.mark.parametrize("name,cols", [("hf_forward.csv", FORWARD_COLS),
                                       ("compile_forward.csv", FORWARD_COLS | COMPILE_EXTRA),
                                       ("hf_train.csv", TRAIN_COLS),
                                       ("compile_train.csv", TRAIN_COLS | COMPILE_EXTRA)])
def test_schema_units_and_order_statistics(name: str, cols: set[str]) -> None:
    df = _csv(name)
    assert set(df.columns) == cols
    assert len(df) > 0
    for c in ("time_s", "p10_s", "p90_s"):
        assert df[c].map(math.isfinite).all() and (df[c] > 0).all(), c
    # seconds, not milliseconds: every step is between 100 us and 10 s
    assert df["time_s"].between(1e-4, 10.0).all()
    assert (df["p10_s"] <= df["time_s"]).all() and (df["time_s"] <= df["p90_s"]).all()
    assert df["peak_alloc_bytes"].between(1e9, H200_MEM_BYTES).all()
    assert (df["layers"] <= df["config_layers"]).all()
    assert set(df["attn_impl"]) == {"sdpa"}
    want_impl = "torch-compile" if name.startswith("compile") else "hf-transformers"
    assert set(df["impl"]) == {want_impl}
    if "compile_s" in df:
        assert (df["compile_s"] > 0).all()
    if "peak_reserved_bytes" in df:
        assert (df["peak_reserved_bytes"] >= df["peak_alloc_bytes"]).all()
        assert (df["peak_reserved_bytes"] <= H200_MEM_BYTES).all()


def test_forward_rows_are_labelled_consistently() -> None:
    df = pd.concat([_csv("hf_forward.csv"), _csv("compile_forward.csv")])
    dec = df[df["mode"].str.startswith("decode")]
    pre = df[~df["mode"].str.startswith("decode")]
    assert set(df["mode"]) <= {"prefill_eager", "prefill_eager_last", "decode_eager",
                               "decode_graph", "prefill_compile"}
    assert (dec["q_len"] == 1).all() and (dec["context"] > 0).all()
    assert (dec["cache"] == "StaticCache").all()
    assert (pre["context"] == 0).all() and (pre["q_len"] > 1).all()
    assert set(df.loc[df["mode"] == "prefill_eager_last", "logits"]) == {"last"}
    assert set(df.loc[df["mode"] == "decode_graph", "graph_method"]) == {"torch.cuda.CUDAGraph"}
    moe = df[df["model"] == "mixtral-8x7b"]
    assert len(moe) > 0 and (moe["layers"] < moe["config_layers"]).all()
    assert (moe["experts_impl"].astype(str) != "nan").all()


def test_decode_not_faster_than_streaming_the_weights() -> None:
    df = _csv("hf_forward.csv")
    for model in ("llama-3.1-8b", "qwen2.5-7b"):
        part = df[(df["model"] == model) & df["mode"].str.startswith("decode")]
        floor_s = 2 * _dense_params(model, int(part["layers"].iloc[0])) / H200_BW_BPS
        assert len(part) == 16
        assert (part["time_s"] >= floor_s).all(), (model, floor_s, part["time_s"].min())


def test_graph_replay_no_slower_than_eager_step() -> None:
    df = _csv("hf_forward.csv")
    key = ["model", "batch", "context"]
    eager = df[df["mode"] == "decode_eager"].set_index(key)["time_s"]
    graph = df[df["mode"] == "decode_graph"].set_index(key)["time_s"]
    both = pd.concat([eager.rename("eager"), graph.rename("graph")], axis=1).dropna()
    assert len(both) == 24
    assert (both["graph"] <= 1.05 * both["eager"]).all()


def test_prefill_grows_with_tokens() -> None:
    df = _csv("hf_forward.csv")
    df = df[df["mode"] == "prefill_eager"].assign(tok=lambda d: d["batch"] * d["q_len"])
    for _, part in df.groupby("model"):
        part = part.sort_values("tok")
        assert part["time_s"].iloc[-1] > 4 * part["time_s"].iloc[0]


def test_train_params_tokens_memory() -> None:
    df = pd.concat([_csv("hf_train.csv"), _csv("compile_train.csv")])
    assert (df["tokens"] == df["batch"] * df["seq_len"]).all()
    assert (df["mode"] == "train").all() and (df["param_dtype"] == "fp32").all()
    for _, r in df.iterrows():
        assert r["params"] == _dense_params(r["model"], int(r["layers"])), r["model"]
    # fp32 weights + fp32 grads + two fp32 AdamW moments
    assert (df["peak_alloc_bytes"] >= 16 * df["params"]).all()
    assert (df[df["tokens"] >= 4096].groupby(["model", "gradient_checkpointing"]).size() >= 1).all()


def test_recompute_costs_time_and_saves_memory() -> None:
    df = _csv("hf_train.csv")
    key = ["model", "batch", "seq_len"]
    both = df[df["gradient_checkpointing"] == 0].merge(
        df[df["gradient_checkpointing"] == 1], on=key, suffixes=("_off", "_on"))
    assert len(both) >= 4
    assert (both["time_s_on"] > both["time_s_off"]).all()
    # small steps peak in the optimizer (same state either way); large ones in the activations
    assert (both["peak_alloc_bytes_on"] <= 1.01 * both["peak_alloc_bytes_off"]).all()
    big = both[both["batch"] * both["seq_len"] >= 4096]
    assert len(big) >= 2 and (big["peak_alloc_bytes_on"] < big["peak_alloc_bytes_off"]).all()


def test_profile_split_adds_up() -> None:
    df = _csv("hf_profile.csv")
    assert len(df) > 0
    assert (df["kernels"] == df["gemm_kernels"] + df["attn_kernels"] + df["other_kernels"]).all()
    parts = df["gemm_time_s"] + df["attn_time_s"] + df["other_time_s"]
    assert ((parts - df["kernel_time_s"]).abs() <= 1e-6 + 1e-4 * df["kernel_time_s"]).all()
    assert (df["gemm_kernels"] > 0).all() and (df["kernel_time_s"] > 0).all()


def test_meta_records_versions() -> None:
    meta = json.loads((DIR / "meta.json").read_text())
    assert "H200" in meta["gpu_name"] and meta["catalog_gpu"] == "H200-SXM"
    assert meta["driver"] and meta["cuda"] and meta["python"]
    assert meta["torch"].startswith("2.") and meta["transformers"].startswith("5.")
    assert meta["attn_implementation"] == "sdpa"
    scripts = {inv["invocation"].split()[1] for inv in meta["invocations"]}
    assert scripts == {"calibration/bench/engines/hf_forward.py",
                       "calibration/bench/engines/hf_train.py"}
