"""fleetsim's current predictions against software it was not fitted on (issue 10, section 3).

Reads the Hugging Face ``transformers`` / ``torch.compile`` ground truth measured on an H200
(``calibration/validation/H200-SXM/engines/``, written by ``calibration/bench/engines/``) and
prices the same shapes with fleetsim as it stands, without changing any of its models:

* forward rows: ``fleetsim.estimate_forward(spec, "H200-SXM", batch, graphs=...)`` with the
  model's catalog config truncated to the measured ``layers``; ``batch`` is ``(b, q_len)`` for
  a prefill and ``(b, 1, context)`` for a decode step; ``graphs=True`` only for
  ``decode_graph`` (compiled prefills are priced eager: torch.compile's default mode launches
  kernels from the host as eager PyTorch does);
* training rows: ``fleetsim.estimate_train_step(config, "1xH200-SXM", micro_batch=b,
  global_batch=b, seq_len=s, recompute="full" if checkpointed else "none", engine=...)`` with
  the row's own training profile (``hf-transformers`` for the Trainer rows, ``torch-compile``
  for the compiled ones): its kernel sequence, launch mode and recipe (fp32 parameters under
  bf16 autocast, fused AdamW), which is the measured one.

Prints one table row per measurement (measured, predicted, error = predicted / measured - 1)
and the MAPE per group. Usage: ``python3 benchmarks/engines_gap.py [--dir DIR] [--csv OUT]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DIR = ROOT / "calibration" / "validation" / "H200-SXM" / "engines"
CATALOG = ROOT / "workloads" / "catalog"
GPU = "H200-SXM"
GROUPS = {
    ("prefill_eager", 0): "prefill eager (HF, all logits)",
    ("prefill_eager_last", 0): "prefill eager (HF, last logits)",
    ("decode_eager", 0): "decode eager (HF StaticCache)",
    ("decode_graph", 0): "decode graph (HF, CUDAGraph)",
    ("train", 0): "train (HF, eager)",
    ("train", 1): "train + ckpt (HF, eager)",
    ("prefill_compile", 0): "compile prefill",
    ("train_compile", 0): "compile train",
}


def config(model: str, layers: int) -> dict:
    """The catalog HF config of ``model`` with ``num_hidden_layers = layers``."""
    cfg = json.loads((CATALOG / f"{model}.json").read_text())
    cfg["num_hidden_layers"] = int(layers)
    return cfg


def predict_forward(row: pd.Series) -> float:
    from fleetsim.workloads.models import load_model

    from fleetsim import estimate_forward

    spec = load_model(config(row["model"], row["layers"]))
    if row["mode"].startswith("decode"):
        batch: tuple[int, ...] = (int(row["batch"]), 1, int(row["context"]))
    else:
        batch = (int(row["batch"]), int(row["q_len"]))
    return estimate_forward(spec, GPU, batch, graphs=row["mode"] == "decode_graph").time_s


TRAIN_ENGINES = {"hf-transformers": "hf-transformers", "torch-compile": "torch-compile"}
"""Training profile of each ``impl`` of the training CSVs."""


def predict_train(row: pd.Series) -> float:
    from fleetsim import estimate_train_step

    b, s = int(row["batch"]), int(row["seq_len"])
    est = estimate_train_step(config(row["model"], row["layers"]), f"1x{GPU}", micro_batch=b,
                              global_batch=b, seq_len=s, engine=TRAIN_ENGINES[str(row["impl"])],
                              recompute="full" if int(row["gradient_checkpointing"]) else "none",
                              record_timeline=False)
    return est.time_s


def gap_table(folder: Path = DIR) -> pd.DataFrame:
    """One row per measurement: group, shape, measured and predicted seconds, error."""
    rows = []
    for name in ("hf_forward.csv", "compile_forward.csv"):
        if not (folder / name).exists():
            continue
        for _, r in pd.read_csv(folder / name).iterrows():
            rows.append({"group": GROUPS[(r["mode"], 0)], "model": r["model"], "layers": r["layers"],
                         "mode": r["mode"], "batch": r["batch"], "tokens": r["q_len"],
                         "context": r["context"], "measured_s": r["time_s"],
                         "predicted_s": predict_forward(r)})
    for name in ("hf_train.csv", "compile_train.csv"):
        if not (folder / name).exists():
            continue
        for _, r in pd.read_csv(folder / name).iterrows():
            ckpt = int(r["gradient_checkpointing"])
            mode = "train_compile" if r["impl"] == "torch-compile" else "train"
            rows.append({"group": GROUPS[(mode, ckpt)], "model": r["model"], "layers": r["layers"],
                         "mode": mode + ("+ckpt" if ckpt else ""), "batch": r["batch"],
                         "tokens": r["seq_len"], "context": 0, "measured_s": r["time_s"],
                         "predicted_s": predict_train(r)})
    df = pd.DataFrame(rows)
    df["error"] = df["predicted_s"] / df["measured_s"] - 1.0
    return df


def kernel_split(folder: Path = DIR) -> pd.DataFrame:
    """Profiled forward rows: measured kernel launches and summed kernel time per class (GEMM,
    attention, other) next to fleetsim's operator instances and device time per kind for the
    same step (its ``ops`` table: gemm, attention, elementwise)."""
    path = folder / "hf_profile.csv"
    if not path.exists():
        return pd.DataFrame()
    from fleetsim.workloads.models import load_model

    from fleetsim import estimate_forward

    rows = []
    for _, r in pd.read_csv(path).iterrows():
        if r["mode"] == "train":
            continue
        spec = load_model(config(r["model"], r["layers"]))
        dec = str(r["mode"]).startswith("decode")
        batch = (int(r["batch"]), 1, int(r["context"])) if dec else (int(r["batch"]), int(r["q_len"]))
        ops = estimate_forward(spec, GPU, batch, graphs=r["mode"] == "decode_graph").ops
        kind_s = {str(k): float(v) for k, v in ops.groupby("kind")["total_s"].sum().items()}
        rows.append({"impl": r["impl"], "mode": r["mode"], "batch": r["batch"], "tokens": r["q_len"],
                     "context": r["context"], "kernels": r["kernels"], "fs_ops": int(ops["count"].sum()),
                     "gemm_ms": r["gemm_time_s"] * 1e3, "fs_gemm_ms": kind_s.get("gemm", 0.0) * 1e3,
                     "attn_ms": r["attn_time_s"] * 1e3, "fs_attn_ms": kind_s.get("attention", 0.0) * 1e3,
                     "other_ms": r["other_time_s"] * 1e3, "fs_elem_ms": kind_s.get("elementwise", 0.0) * 1e3,
                     "kernel_ms": r["kernel_time_s"] * 1e3, "fs_device_ms": float(ops["total_s"].sum()) * 1e3})
    return pd.DataFrame(rows)


def group_mape(df: pd.DataFrame) -> pd.DataFrame:
    """MAPE, mean signed error and row count per group, in GROUPS order."""
    order = {g: i for i, g in enumerate(GROUPS.values())}
    out = df.groupby("group").agg(rows=("error", "size"), mape=("error", lambda e: e.abs().mean()),
                                  mean_error=("error", "mean")).reset_index()
    return out.sort_values("group", key=lambda s: s.map(order)).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=str(DIR))
    ap.add_argument("--csv", default=None, help="also write the per-row table here")
    args = ap.parse_args(argv)
    df = gap_table(Path(args.dir))
    if args.csv:
        df.to_csv(args.csv, index=False)
    show = df.assign(measured_ms=df["measured_s"] * 1e3, predicted_ms=df["predicted_s"] * 1e3,
                     error_pct=df["error"] * 100)
    cols = ["model", "layers", "mode", "batch", "tokens", "context", "measured_ms", "predicted_ms",
            "error_pct"]
    with pd.option_context("display.width", 160, "display.max_rows", 500):
        for group, part in show.groupby("group", sort=False):
            print(f"\n## {group}\n")
            print(part[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        summary = group_mape(df)
        summary["mape_pct"] = summary["mape"] * 100
        summary["mean_error_pct"] = summary["mean_error"] * 100
        ks = kernel_split(Path(args.dir))
        if not ks.empty:
            print("\n## Profiled llama-3.1-8b forward rows: measured kernels vs fleetsim operators"
                  " (fs_ = fleetsim; other = every non-GEMM, non-attention kernel)\n")
            print(ks.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        print("\n## MAPE per group (error = predicted / measured - 1)\n")
        print(summary[["group", "rows", "mape_pct", "mean_error_pct"]].to_string(
            index=False, float_format=lambda v: f"{v:.1f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
