"""Multi-GPU validation (issue 16): fleetsim's predictions against the rows that
``calibration/bench/multi/run_multi_gpu.sh`` measures, one error per row.

Ground truth, in the repo layout the runner writes:

* ``calibration/profiles/<GPU>/collective_<n>.csv``: ``op,group_size,bytes,time_s,p10_s,p90_s,mode``
  (``mode`` eager / graph / oneshot / twoshot), priced by the cost model's collective pricing
  (``CostModel.op_time`` of a ``CollectiveOp``: the profile's measured table of that group size
  where it has one, else its alpha-beta fit of the nearest measured group size, else the link
  spec's ring alpha-beta). Once the eager rows are merged into ``collective.csv``
  (``eager_collective_rows``) the own-profile prediction of those rows is a look-up of the same
  data: compare with ``profile_dir`` pointing at a profile without them (or the roofline);
* ``calibration/validation/<GPU>/multi/forward_tp.csv``: ``forward.csv``'s columns plus
  ``layers`` (the decoder layers built), predicted by ``estimate_forward(tp=N)`` (``serving``)
  and by the reference decoder's own kernel list (``reference``, as ``fleetsim.validate_forward``);
* ``.../multi/training.csv`` (DDP, ``train_bench.py --world N``) and
  ``.../multi/training_parallel.csv`` (``fsdp``, ``pp``, ``schedule`` columns), predicted by
  ``estimate_train_step`` on ``"<world>x<GPU>"`` with dp / ZeRO-3 FSDP / pipeline stages and
  schedule, the harness's recipe (bf16 autocast over fp32 weights, flash attention, no dropout;
  the pipeline's LM head untied).

Every error is ``predicted / measured - 1``. Nothing here is fitted to these rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fleetsim.calibration import get_cost_model
from fleetsim.calibration.ops import CollectiveOp
from fleetsim.estimate import estimate_forward, estimate_ops
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.errors import FleetsimError, ProfileError
from fleetsim.hardware.specs import GPUSpec
from fleetsim.validation_data import read_table
from fleetsim.workloads.models import ModelSpec, load_model
from fleetsim.workloads.parallel import Seq

__all__ = ["COLLECTIVE_COLUMNS", "FORWARD_COLUMNS", "TRAINING_COLUMNS", "collective_rows",
           "eager_collective_rows", "forward_rows", "summarize", "training_rows", "validate_multi"]

COLLECTIVE_COLUMNS = ("op", "group_size", "bytes", "time_s", "mode")
FORWARD_COLUMNS = ("model", "mode", "batch", "q_len", "context", "tp", "time_s", "layers")
TRAINING_COLUMNS = ("layers", "hidden", "heads", "ffn", "vocab", "seq_len", "micro_batch", "grad_accum",
                    "recompute", "world_size", "dp", "time_s")
COLLECTIVE_MODES = ("eager", "graph", "oneshot", "twoshot")
HARNESS_ENGINE = "torch-eager"


def _gpu(gpu: str | GPUSpec) -> GPUSpec:
    return gpu if isinstance(gpu, GPUSpec) else get_gpu(gpu)


def _err(df: pd.DataFrame) -> pd.DataFrame:
    if not df.empty:
        df["error"] = df["predicted_s"] / df["measured_s"] - 1.0
    return df


def collective_rows(path: str | Path, gpu: str | GPUSpec, cost_model: Any = None) -> pd.DataFrame:
    """One row per measured collective: measured and predicted seconds, the prediction's
    provenance, measured bus bandwidth (nccl-tests' factors) and the error."""
    path, g = Path(path), _gpu(gpu)
    df = read_table(path, COLLECTIVE_COLUMNS, ("group_size", "bytes", "time_s"), ("group_size", "bytes", "time_s"))
    cm = cost_model if cost_model is not None else get_cost_model(g)
    rows = []
    for line, r in zip(df.index + 2, df.itertuples(index=False), strict=True):
        mode, n, nb = str(r.mode), int(r.group_size), float(r.bytes)
        if mode not in COLLECTIVE_MODES:
            raise ProfileError(f"{path}: row {line}: mode {mode!r} is not one of {', '.join(COLLECTIVE_MODES)}")
        try:
            cost = cm.op_time(CollectiveOp("c", str(r.op), nb, n), g, graphs=mode == "graph")
        except (FleetsimError, KeyError) as exc:
            raise ProfileError(f"{path}: row {line}: {exc}") from None
        meas = float(r.time_s)
        rows.append({"gpu": g.name, "op": str(r.op), "mode": mode, "group_size": n, "bytes": int(nb),
                     "measured_s": meas, "predicted_s": float(cost.time_s), "source": str(cost.source),
                     "bus_gbps": nb * bus_factor(str(r.op), n) / meas / 1e9})
    return _err(pd.DataFrame(rows))


def bus_factor(op: str, n: int) -> float:
    """nccl-tests' bus-bandwidth factor (``calibration/bench/multi/points.bus_factor``)."""
    if op == "all_reduce":
        return 2.0 * (n - 1) / n
    if op == "send_recv":
        return 1.0
    return (n - 1) / n


def eager_collective_rows(paths: list[str | Path]) -> pd.DataFrame:
    """The eager rows of ``collective_<n>.csv`` files in ``collective.csv``'s columns, sorted,
    for merging into a profile (graph and symmetric-memory rows stay in their own files)."""
    parts = []
    for p in paths:
        df = read_table(Path(p), COLLECTIVE_COLUMNS + ("p10_s", "p90_s"), ("group_size", "bytes", "time_s"),
                        ("group_size", "bytes", "time_s"), keep=("mode", "eager"))
        parts.append(df[["op", "group_size", "bytes", "time_s", "p10_s", "p90_s"]])
    if not parts:
        return pd.DataFrame(columns=["op", "group_size", "bytes", "time_s", "p10_s", "p90_s"])
    return pd.concat(parts).sort_values(["op", "group_size", "bytes"]).reset_index(drop=True)


def _truncated(name: str, layers: int, cache: dict[tuple[str, int], ModelSpec]) -> ModelSpec:
    key = (name, layers)
    if key not in cache:
        spec = load_model(name)
        if not 1 <= layers <= spec.num_layers:
            raise ProfileError(f"layers {layers} outside 1..{spec.num_layers} of {name}")
        cache[key] = spec.model_copy(update={"num_layers": layers})
    return cache[key]


def forward_rows(path: str | Path, gpu: str | GPUSpec, cost_model: Any = None) -> pd.DataFrame:
    """One row per forward point and graph kind (``serving``: fleetsim's serving graph;
    ``reference``: the PyTorch reference decoder's kernels) at the row's layer count."""
    from fleetsim.validate_forward import reference_host_calls, reference_ops

    path, g = Path(path), _gpu(gpu)
    df = read_table(path, FORWARD_COLUMNS, FORWARD_COLUMNS[2:], ("batch", "q_len", "tp", "time_s", "layers"))
    cm = cost_model if cost_model is not None else get_cost_model(g)
    cache: dict[tuple[str, int], ModelSpec] = {}
    rows = []
    for line, r in zip(df.index + 2, df.itertuples(index=False), strict=True):
        b, q, ctx, tp, layers = int(r.batch), int(r.q_len), int(r.context), int(r.tp), int(r.layers)
        graphs = str(r.mode).endswith("graph")
        try:
            spec = _truncated(str(r.model), layers, cache)
            ref_ops = reference_ops(spec, b, q, ctx, tp)
            ref = estimate_ops(ref_ops, g, graphs=graphs, cost_model=cm, tp=tp,
                               host_calls=reference_host_calls(ref_ops, spec))
            srv = estimate_forward(spec, g, [Seq(q, ctx)] * b, tp=tp, graphs=graphs, cost_model=cm,
                                   check_context=False)
        except FleetsimError as exc:
            raise type(exc)(f"{path}: row {line}: {exc}") from None
        for kind, est in (("reference", ref), ("serving", srv)):
            rows.append({"gpu": g.name, "model": str(r.model), "layers": layers, "mode": str(r.mode), "batch": b,
                         "q_len": q, "context": ctx, "tp": tp, "graph": kind, "measured_s": float(r.time_s),
                         "predicted_s": float(est.time_s)})
    return _err(pd.DataFrame(rows))


def _opt(r: pd.Series, col: str, default: Any) -> Any:
    v = r.get(col, default)
    return default if v is None or (isinstance(v, float) and np.isnan(v)) else v


def training_rows(path: str | Path, gpu: str | GPUSpec, cost_model: Any = None) -> pd.DataFrame:
    """One row per completed training point (``status`` ok) of a DDP ``training.csv`` or a
    ``training_parallel.csv``: measured and simulated step time, and peak memory."""
    from fleetsim.sim.training.step import simulate_step
    from fleetsim.training import TrainEstimate, build_train_job
    from fleetsim.training_validate import megatron_gpt

    path, g = Path(path), _gpu(gpu)
    df = read_table(path, TRAINING_COLUMNS, (), [c for c in TRAINING_COLUMNS if c != "recompute"],
                    keep=("status", "ok"))
    rows = []
    for i, r in df.iterrows():
        world, dp = int(r["world_size"]), int(r["dp"])
        fsdp = bool(int(_opt(r, "fsdp", 0)))
        pp = int(_opt(r, "pp", 1))
        sched = str(_opt(r, "schedule", "")) or None
        mb, ga, seq = int(r["micro_batch"]), int(r["grad_accum"]), int(r["seq_len"])
        rec = "full" if str(r["recompute"]).strip().lower() in ("1", "true", "full") else "none"
        name = f"gpt-L{int(r['layers'])}-h{int(r['hidden'])}"
        model = megatron_gpt(name, int(r["layers"]), int(r["hidden"]), int(r["heads"]), int(r["ffn"]),
                             int(r["vocab"]), seq, tied=pp == 1)
        try:
            job = build_train_job(model, f"{world}x{g.name}", None, mb, mb * ga * dp, seq, dp=dp, pp=pp, tp=1,
                                  recompute=rec, zero=3 if fsdp else 0, fsdp=fsdp, schedule=sched,
                                  precision="amp", attention="flash", dropout=False, grad_dtype="fp32",
                                  execution="eager", engine=HARNESS_ENGINE)
            est = TrainEstimate(simulate_step(job, None, cost_model, record=False, check_memory=False))
        except FleetsimError as exc:
            raise type(exc)(f"{path}: row {int(i) + 2}: {exc}") from None
        kind = "fsdp" if fsdp else (f"pp-{sched or '1f1b'}" if pp > 1 else "ddp")
        rows.append({"gpu": g.name, "model": name, "kind": kind, "world_size": world, "dp": dp, "pp": pp,
                     "micro_batch": mb, "grad_accum": ga, "measured_s": float(r["time_s"]),
                     "predicted_s": float(est.time_s),
                     "measured_peak_gib": float(_opt(r, "peak_alloc_bytes", 0.0)) / 2**30,
                     "predicted_peak_gib": float(est.peak_allocated_bytes) / 2**30})
    return _err(pd.DataFrame(rows))


def summarize(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Points, MAPE, worst |error| and mean signed error per group of ``keys``."""
    if df.empty:
        return df
    g = df.assign(abs_err=df["error"].abs()).groupby(keys)
    return g.agg(points=("abs_err", "size"), mape=("abs_err", "mean"), max_err=("abs_err", "max"),
                 bias=("error", "mean")).reset_index()


def validate_multi(gpu: str, profile_dir: str | Path, validation_dir: str | Path,
                   cost_model: Any = None) -> dict[str, pd.DataFrame]:
    """Every multi-GPU table found for ``gpu``: ``profile_dir/<GPU>/collective_<n>.csv`` and
    ``validation_dir/<GPU>/multi/{forward_tp,training,training_parallel}.csv`` -> per-row
    tables (``collective``, ``forward``, ``training``), empty where nothing was measured."""
    g = get_gpu(gpu)
    pdir, vdir = Path(profile_dir) / g.name, Path(validation_dir) / g.name / "multi"
    out: dict[str, pd.DataFrame] = {}
    colls = sorted(pdir.glob("collective_*.csv"))
    out["collective"] = pd.concat([collective_rows(p, g, cost_model) for p in colls], ignore_index=True) \
        if colls else pd.DataFrame()
    fwd = vdir / "forward_tp.csv"
    out["forward"] = forward_rows(fwd, g, cost_model) if fwd.exists() else pd.DataFrame()
    parts = [training_rows(vdir / f, g, cost_model) for f in ("training.csv", "training_parallel.csv")
             if (vdir / f).exists()]
    out["training"] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return out
