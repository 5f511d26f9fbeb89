"""Forward-pass and per-operator validation: predicted versus measured, per point.

Ground truth is ``<GPU>/`` under the package's ``calibration/validation`` or a folder
given as ``validation_root`` (written by
``calibration/bench/validate_forward.py``, see docs/calibration.md):

* ``forward.csv``: ``model,mode,batch,q_len,context,tp,time_s,p10_s,p90_s`` — whole
  forward passes of plain PyTorch decoders (``mode`` prefill_eager, decode_graph or
  decode_eager) at shapes that are not calibration grid points;
* ``ops_heldout.csv``: ``op,dtype,m,n,k,batch,q_len,kv_len,num_heads,num_kv_heads,
  head_dim,causal,time_s,p10_s,p90_s`` — single GEMM / attention calls off the grid.

Each forward point is predicted twice: ``serving`` prices fleetsim's serving graph
(``estimate_forward``: fused kernels as a serving engine runs them), ``reference`` prices
the kernel sequence of the PyTorch reference decoder itself (``reference_ops``: unfused
rotary, separate residual adds, the attention-output copy, last-position logits) with the
same cost model and the same eager pipeline. The reference prediction measures the cost
model; the gap between the two is the price of the reference implementation's unfused
kernels. Every point is predicted with the GPU's own profile (``own``) and, where another
profile of the same architecture exists, from that profile scaled by specs (``cross``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fleetsim.calibration import MeasuredCostModel, RooflineCostModel, get_cost_model, profile_dirs
from fleetsim.calibration.measured import VALIDATION_ROOT
from fleetsim.calibration.ops import AttentionOp, CollectiveOp, ElementwiseOp, GemmOp, Op
from fleetsim.estimate import estimate_forward, estimate_ops
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.errors import FleetsimError, ProfileError
from fleetsim.hardware.specs import GPUSpec
from fleetsim.validation_data import read_table
from fleetsim.workloads.models import ModelSpec, load_model
from fleetsim.workloads.parallel import Seq

__all__ = ["VALIDATION_ROOT", "forward_rows", "heldout_rows", "reference_ops", "summarize_forward",
           "summarize_heldout", "write_csv"]

FORWARD_COLUMNS = ("model", "mode", "batch", "q_len", "context", "tp", "time_s")
HELDOUT_COLUMNS = ("op", "dtype", "m", "n", "k", "batch", "q_len", "kv_len", "num_heads",
                   "num_kv_heads", "head_dim", "causal", "time_s")
TARGETS = {"ops": 0.05, "forward": 0.05, "cross": 0.15}
"""Targets: median per-operator error, whole-forward MAPE (own profile), cross-GPU MAPE."""


def _gpu_filter(gpus: list[str] | None) -> set[str] | None:
    """Catalog names of the requested GPUs (aliases resolve; unknown names raise SpecError)."""
    return None if not gpus else {get_gpu(g).name for g in gpus}


def _read(path: Path, cols: tuple[str, ...]) -> pd.DataFrame:
    """A forward.csv / ops_heldout.csv: every column after the text ones a finite number,
    ``time_s`` and ``batch`` positive."""
    text = {"model", "mode", "op", "dtype"}
    return read_table(path, cols, [c for c in cols if c not in text], ("time_s", "batch"))


def _gpu_dirs(root: Path, name: str, wanted: set[str] | None) -> list[tuple[Path, GPUSpec]]:
    """(folder, catalog spec) of each ``<GPU>/`` under ``root`` holding ``name``."""
    out = []
    for gdir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if wanted is not None and gdir.name not in wanted or not (gdir / name).exists():
            continue
        try:
            out.append((gdir, get_gpu(gdir.name)))
        except FleetsimError as exc:
            raise ProfileError(f"{gdir / name}: folder {gdir.name!r} is not a catalog GPU name ({exc})") from None
    return out


def _elementwise(name: str, kernel: str, rows: int, cols: int, nbytes: float, count: int) -> ElementwiseOp:
    return ElementwiseOp(name, kernel, rows * cols, float(nbytes), 0.0, "bf16", count)


def reference_ops(model: ModelSpec, batch: int, q_len: int, context: int, tp: int = 1) -> list[Op]:
    """PyTorch calls of ``calibration/bench/torch_models.Decoder`` for one forward
    (prefill: ``context`` 0, ``q_len`` tokens; decode: one token on ``context`` cached
    ones), in order, one operator per call. Byte counts follow the calibration harness's
    kernels; how many kernels a composite call launches comes from the profile."""
    H, L = model.hidden_size, model.num_layers  # noqa: N806
    d = model.head_dim
    h, hkv = model.num_heads // tp, model.num_kv_heads // tp
    ffn = model.intermediate_size // tp
    llama = model.norm == "rmsnorm"
    decode = q_len == 1 and context > 0
    T = batch * q_len  # noqa: N806
    norm = "rmsnorm" if llama else "layernorm"
    norm_b = lambda rows: 2 * rows * H * 2 + (1 if llama else 2) * H * 2  # noqa: E731
    ops: list[Op] = [_elementwise("embedding", "embedding", T, H, 2 * T * H * 2 + T * 8, 1)]
    if not llama:
        ops += [_elementwise("pos_embedding", "embedding", q_len, H, 2 * q_len * H * 2 + q_len * 8, 1),
                _elementwise("pos_add", "residual_add", T, H, 3 * T * H * 2, 1)]
    ops += [_elementwise("norm1", norm, T, H, norm_b(T), L), GemmOp("qkv", T, (h + 2 * hkv) * d, H, count=L)]
    if llama:
        ops += [_elementwise("rope_cos", "embedding", q_len, d, 2 * q_len * d * 2 + q_len * 8, L),
                _elementwise("rope_sin", "embedding", q_len, d, 2 * q_len * d * 2 + q_len * 8, L),
                _elementwise("rope_q", "rotary", T, h * d, 2 * T * h * d * 2 + 2 * T * 128 * 2, L),
                _elementwise("rope_k", "rotary", T, hkv * d, 2 * T * hkv * d * 2 + 2 * T * 128 * 2, L)]
    if decode:
        kv = context + 1
        ops += [_elementwise("cache_write_k", "copy", T, hkv * d, 2 * T * hkv * d * 2, L),
                _elementwise("cache_write_v", "copy", T, hkv * d, 2 * T * hkv * d * 2, L),
                AttentionOp("attn", (1,) * batch, (kv,) * batch, h, hkv, d, d, causal=False, count=L)]
    else:
        ops += [AttentionOp("attn", (q_len,) * batch, (q_len,) * batch, h, hkv, d, d, count=L),
                _elementwise("attn_out_copy", "copy", T, h * d, 2 * T * h * d * 2, L)]
    ops.append(GemmOp("o_proj", T, H, h * d, count=L))
    if tp > 1:
        ops.append(CollectiveOp("allreduce_attn", "all_reduce", T * H * 2.0, tp, count=L))
    ops += [_elementwise("residual1", "residual_add", T, H, 3 * T * H * 2, L),
            _elementwise("norm2", norm, T, H, norm_b(T), L),
            GemmOp("w1", T, (2 if llama else 1) * ffn, H, count=L)]
    if llama:
        ops.append(_elementwise("silu_mul", "silu_mul", T, ffn, 3 * T * ffn * 2, L))
    else:
        ops.append(_elementwise("gelu", "gelu", T, ffn, 2 * T * ffn * 2, L))
    ops.append(GemmOp("w2", T, H, ffn, count=L))
    if tp > 1:
        ops.append(CollectiveOp("allreduce_mlp", "all_reduce", T * H * 2.0, tp, count=L))
    ops.append(_elementwise("residual2", "residual_add", T, H, 3 * T * H * 2, L))
    vocab_local = -(-model.vocab_size // tp)
    ops += [_elementwise("final_norm", norm, batch, H, norm_b(batch), 1),
            GemmOp("lm_head", batch, vocab_local, H)]
    if tp > 1:
        ops += [CollectiveOp("logits_gather", "all_gather", batch * vocab_local * tp * 2.0, tp),
                _elementwise("logits_permute", "copy", batch, vocab_local * tp, 2 * batch * vocab_local * tp * 2, 1)]
    ops.append(_elementwise("argmax", "argmax", batch, model.vocab_size,
                            batch * model.vocab_size * 2 + batch * 8, 1))
    return ops


def _host_calls(llama: bool) -> dict[str, tuple[str, ...]]:
    lin = "linear" if llama else "linear_bias"
    norm = "rms_norm" if llama else "layer_norm"
    view_t = ("view", "transpose")
    return {
        "embedding": ("arange", "index"), "pos_embedding": ("index",), "pos_add": ("add",),
        "norm1": (norm,), "qkv": (lin, "split") + view_t * 3, "rope_cos": ("index",),
        "rope_sin": ("index",), "rope_q": ("rope",), "rope_k": ("rope",),
        "cache_write_k": ("slice", "copy_"), "cache_write_v": ("slice", "copy_"),
        "attn": ("sdpa_prefill_gqa" if llama else "sdpa_prefill", "transpose", "reshape_copy"),
        "attn_out_copy": (), "o_proj": (lin,), "residual1": ("add",), "norm2": (norm,),
        "w1": ("linear", "chunk") if llama else (lin,), "silu_mul": ("silu_mul",),
        "gelu": ("gelu",), "w2": (lin,), "residual2": ("add",), "final_norm": ("slice", norm),
        "lm_head": ("linear",), "logits_permute": ("view", "permute", "reshape_copy"),
        "argmax": ("argmax",),
    }


HOST_CALLS = _host_calls(True)
"""PyTorch calls the reference decoder (torch_models.Decoder) makes per operator, views
included, as host_dispatch.csv call names: qkv = linear, split, 3 x (view, transpose);
rotary = the rotate-half expression (``rope``: 2 slices, neg, cat, 2 mul, add); attention =
SDPA plus the output transpose and reshape; w1 = linear + chunk (llama); the cache write =
slice + copy_; embedding = positions + gather. GPT-2 uses linear with bias, layer_norm and
MHA SDPA (``_host_calls(False)``). Each operator's host time is the sum of its calls'
measured dispatch times (``RooflineCostModel.host_times``)."""


def reference_host_calls(ops: list[Op], model: ModelSpec) -> list[tuple[str, ...]]:
    """PyTorch calls per reference operator (collectives: none, their launch is in their time)."""
    llama = model.norm == "rmsnorm"
    table = _host_calls(llama)
    out: list[tuple[str, ...]] = []
    for op in ops:
        if isinstance(op, CollectiveOp):
            out.append(())
        elif isinstance(op, AttentionOp) and op.phase == "decode":
            out.append(("sdpa_decode_gqa" if llama else "sdpa_decode_gqa", "transpose", "reshape_copy"))
        else:
            out.append(table.get(op.name, ("noop",)))
    return out


@dataclass
class _Predictor:
    label: str
    model: RooflineCostModel


def _predictors(gpu: GPUSpec, profile_root: Path | None) -> list[_Predictor]:
    """``own`` (the GPU's profile, else whatever get_cost_model picks) and ``cross`` (each
    other same-architecture profile, as a fitted roofline)."""
    own = get_cost_model(gpu, profile_root)
    out = [_Predictor("own" if isinstance(own, MeasuredCostModel) else "no-profile", own)]
    for name, path in profile_dirs(profile_root).items():
        if name == gpu.name:
            continue
        try:
            other = get_gpu(name)
        except ValueError:
            continue
        if other.architecture != gpu.architecture:
            continue
        measured = MeasuredCostModel(path, other)
        out.append(_Predictor(f"cross:{name}", RooflineCostModel(measured.fit)))
    return out


def forward_rows(validation_root: str | Path | None = None, profile_root: str | Path | None = None,
                 gpus: list[str] | None = None) -> pd.DataFrame:
    """One row per (GPU, forward point, predictor, graph kind): measured vs predicted."""
    root = Path(validation_root) if validation_root is not None else VALIDATION_ROOT
    proot = Path(profile_root) if profile_root is not None else None
    rows: list[dict[str, object]] = []
    wanted = _gpu_filter(gpus)
    for gdir, gpu in _gpu_dirs(root, "forward.csv", wanted):
        df = _read(gdir / "forward.csv", FORWARD_COLUMNS)
        preds = _predictors(gpu, proot)
        models: dict[str, ModelSpec] = {}
        for line, rec in zip(df.index + 2, df.itertuples(index=False), strict=True):
            name = str(rec.model)
            if name not in models:
                try:
                    models[name] = load_model(name)
                except FleetsimError as exc:
                    raise type(exc)(f"{gdir / 'forward.csv'}: row {line}: {exc}") from None
            mspec = models[name]
            b, q, ctx, tp = int(rec.batch), int(rec.q_len), int(rec.context), int(rec.tp)
            graphs = str(rec.mode).endswith("graph")
            batch = [Seq(q, ctx)] * b
            for p in preds:
                ref_ops = reference_ops(mspec, b, q, ctx, tp)
                ref = estimate_ops(ref_ops, gpu, graphs=graphs, cost_model=p.model, tp=tp,
                                   host_calls=reference_host_calls(ref_ops, mspec))
                srv = estimate_forward(mspec, gpu, batch, tp=tp, graphs=graphs, cost_model=p.model,
                                       check_context=False)  # benchmark shapes may pass the context
                for kind, est in (("reference", ref), ("serving", srv)):
                    rows.append({"gpu": gpu.name, "model": name, "mode": rec.mode, "batch": b,
                                 "q_len": q, "context": ctx, "tp": tp, "predictor": p.label,
                                 "graph": kind, "measured_s": float(rec.time_s),
                                 "predicted_s": est.time_s,
                                 "measured_share": est.source_share["measured"] + est.source_share["interpolated"]})
    out = pd.DataFrame(rows)
    if not out.empty:
        out["error"] = out["predicted_s"] / out["measured_s"] - 1.0
    return out


def heldout_rows(validation_root: str | Path | None = None, profile_root: str | Path | None = None,
                 gpus: list[str] | None = None) -> pd.DataFrame:
    """One row per held-out operator and predictor (device time of back-to-back launches,
    as the harness times it: ``stream_times``)."""
    root = Path(validation_root) if validation_root is not None else VALIDATION_ROOT
    proot = Path(profile_root) if profile_root is not None else None
    rows: list[dict[str, object]] = []
    wanted = _gpu_filter(gpus)
    for gdir, gpu in _gpu_dirs(root, "ops_heldout.csv", wanted):
        path = gdir / "ops_heldout.csv"
        df = _read(path, HELDOUT_COLUMNS)
        ops: list[Op] = []
        for line, r in zip(df.index + 2, df.itertuples(index=False), strict=True):
            kind = str(r.op)
            try:
                if kind == "gemm":
                    ops.append(GemmOp("gemm", int(r.m), int(r.n), int(r.k), str(r.dtype), int(r.batch)))
                elif kind.startswith("attention"):
                    b, q, kv = int(r.batch), int(r.q_len), int(r.kv_len)
                    ops.append(AttentionOp(kind, (q,) * b, (kv,) * b, int(r.num_heads), int(r.num_kv_heads),
                                           int(r.head_dim), int(r.head_dim), causal=bool(int(r.causal)),
                                           dtype=str(r.dtype), kv_dtype=str(r.dtype)))
                else:
                    raise ProfileError(f"unknown op {kind!r} (expected gemm or attention*)")
            except (FleetsimError, ValueError) as exc:
                raise ProfileError(f"{path}: row {line}: {exc}") from None
        for p in _predictors(gpu, proot):
            t, src = p.model.stream_times(ops, gpu)
            for r, op, ti, si in zip(df.itertuples(index=False), ops, t, src, strict=True):
                shape = (f"{op.m}x{op.n}x{op.k}" if isinstance(op, GemmOp) else
                         f"b{len(op.q_lens)} q{op.q_lens[0]} kv{op.kv_lens[0]} h{op.num_heads}/{op.num_kv_heads} d{op.head_dim}")  # type: ignore[union-attr]
                rows.append({"gpu": gpu.name, "op": str(r.op), "shape": shape, "predictor": p.label,
                             "measured_s": float(r.time_s), "predicted_s": float(ti), "source": si})
    out = pd.DataFrame(rows)
    if not out.empty:
        out["error"] = out["predicted_s"] / out["measured_s"] - 1.0
    return out


def summarize_forward(df: pd.DataFrame) -> pd.DataFrame:
    """MAPE and worst error per (GPU, predictor, graph kind, mode)."""
    if df.empty:
        return df
    g = df.assign(abs_err=df["error"].abs()).groupby(["gpu", "predictor", "graph", "mode"])
    return g.agg(points=("abs_err", "size"), mape=("abs_err", "mean"), max_err=("abs_err", "max"),
                 bias=("error", "mean")).reset_index()


def summarize_heldout(df: pd.DataFrame) -> pd.DataFrame:
    """Median and worst absolute error per (GPU, predictor, operator kind)."""
    if df.empty:
        return df
    kind = df["op"].str.replace(r"_.*", "", regex=True)
    g = df.assign(abs_err=df["error"].abs(), kind=kind).groupby(["gpu", "predictor", "kind"])
    return g.agg(points=("abs_err", "size"), median_err=("abs_err", "median"),
                 max_err=("abs_err", "max")).reset_index()


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    """Save a validation table (the caller decides where)."""
    df.to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL)
