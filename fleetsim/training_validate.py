"""Training simulator validation: predicted versus measured, row by row.

Three sources, each row with its error ``predicted / measured - 1`` and its target:

* Korthikanti et al. 2022, table 5 (``korthikanti2022_table5.csv``): A100-SXM-80GB iteration
  times of 22B-1T GPTs, full recomputation versus sequence parallelism + selective
  recomputation, with the exact parallel configuration. Target: within 15 %.
* Korthikanti et al. 2022, fig. 1 (``korthikanti2022_fig1_memory_gib.csv``): per-GPU
  parameter + optimizer memory and activation memory. The figure counts transformer layers
  only, so a middle pipeline stage (no embedding or LM head) is compared; with pp = 1 the
  only stage includes the embeddings. Target: within 10 %.
* Our own measurements, ``<GPU>/training.csv`` under the package's ``calibration/validation``
  (GPT-2-style models on one H100, one H200 and DDP on two H200s), target within 10 %:

  - ``device_time_s``: the step's summed kernel time (``device_s``, torch.profiler) against
    the simulated step without host dispatch (``execution="graph"``): the cost model and the
    op graph, free of the host's speed, on every row;
  - ``step_time_s``: the measured step on GPU-bound rows (kernels cover at least
    ``GPU_BOUND_SHARE`` of it);
  - ``step_time_host_bound_s``: the other rows, reported without a target. Their step is
    the host's Python/autograd issue time, which is not a property of the GPU: the same
    configuration on the same GPU kind measured up to 53 % apart between two runs half an
    hour apart (``measurement_repeatability``), while the kernel time repeated within 1 %;
  - ``peak_alloc_gib``: peak allocated memory.

  An optional ``training.json`` beside it gives the recipe used
  (``precision``, ``attention``, ``dropout``, ``grad_dtype``, ``zero``, ``tied``,
  ``bucket_bytes``); the defaults are those of ``calibration/bench/train_bench.py``: amp
  (bf16 autocast over fp32 weights), SDPA flash attention, no dropout, tied LM head, DDP.

The published tables are not shipped: pass their folder (``../shared/data/published`` in a
checkout) as ``published``; ``fleetsim.validation_data.published_dir`` resolves the
``--published-dir`` flag and ``$FLEETSIM_PUBLISHED_DIR``.

Nothing here is fitted to these rows: the A100 has no measured profile, so its operators
are priced by the spec roofline of the catalog (provenance reported per row).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fleetsim.hardware.errors import FleetsimError, ProfileError
from fleetsim.sim.training.step import simulate_step, stage_memories
from fleetsim.training import TrainEstimate, build_train_job, estimate_train_step
from fleetsim.validation_data import VALIDATION_ROOT, read_table

MEASURED_ROOT = VALIDATION_ROOT
GIB = 2.0**30
TIME_TARGET_PUBLISHED = 0.15
TIME_TARGET_OURS = 0.10
MEMORY_TARGET = 0.10
GPU_BOUND_SHARE = 0.9
"""A measured step is GPU-bound when its summed kernel time is at least this share of it."""
HARNESS_ENGINE = "torch-eager"
"""The training profile of the calibration harness's own training runs (plain PyTorch DDP)."""
DDP_BUCKET_BYTES = 25.0 * 2**20
"""PyTorch DDP's default gradient bucket (``bucket_cap_mb=25``)."""

TABLE5_COLUMNS = ("model", "gpu", "gpus", "layers", "hidden", "heads", "ffn", "vocab", "seq_len",
                  "micro_batch", "global_batch", "tp", "pp", "dp", "pipeline_interleave", "dtype",
                  "recompute", "sequence_parallel", "iteration_time_s")
TABLE5_NUMERIC = ("gpus", "layers", "hidden", "heads", "ffn", "vocab", "seq_len", "micro_batch",
                  "global_batch", "tp", "pp", "dp", "pipeline_interleave", "iteration_time_s")
FIG1_COLUMNS = ("model", "tp", "pp", "mode", "params_and_optimizer_gib_per_gpu", "activations_gib_per_gpu")
TRAINING_COLUMNS = ("layers", "hidden", "heads", "ffn", "vocab", "seq_len", "micro_batch", "grad_accum",
                    "recompute", "world_size", "dp", "time_s")
"""Required columns of ``<GPU>/training.csv`` (optional: ``status``, ``device_s``,
``peak_alloc_bytes``); every one but ``recompute`` is a positive number."""
REPEAT_KEYS = ("model", "micro_batch", "recompute", "world_size")

COLUMNS = ["source", "gpu", "model", "config", "metric", "predicted", "measured", "error",
           "target", "within_target", "cost_source", "note"]


def megatron_gpt(name: str, layers: int, hidden: int, heads: int, ffn: int, vocab: int,
                 seq_len: int, tied: bool = True) -> dict[str, Any]:
    """A Megatron/GPT-2-style model dict (LayerNorm, GeLU, learned positions, biases)."""
    return {
        "name": name, "model_type": "megatron_gpt", "num_layers": layers, "hidden_size": hidden,
        "num_attention_heads": heads, "ffn_hidden_size": ffn, "padded_vocab_size": vocab,
        "max_position_embeddings": seq_len, "seq_length": seq_len, "normalization": "LayerNorm",
        "activation": "gelu", "position_embedding_type": "learned_absolute", "add_bias_linear": True,
        "untie_embeddings_and_output_weights": not tied,
    }


def _source_label(sources: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(sources.items()))


def _row(source: str, gpu: str, model: str, config: str, metric: str, pred: float, meas: float,
         target: float, cost_source: str, note: str = "") -> dict[str, Any]:
    err = pred / meas - 1.0
    within = bool(abs(err) <= target) if np.isfinite(target) else None
    return dict(source=source, gpu=gpu, model=model, config=config, metric=metric, predicted=pred,
                measured=meas, error=err, target=target, within_target=within,
                cost_source=cost_source, note=note)


def _inconsistent_peaks(df: pd.DataFrame) -> set[int]:
    """Rows whose measured peak memory exceeds that of the next larger micro-batch of the same
    configuration: activations only grow with the micro-batch, so such a peak holds a
    transient the step itself does not need (e.g. allocator or DDP bucket rebuild)."""
    keys = ["layers", "hidden", "seq_len", "recompute", "world_size"]
    bad: set[int] = set()
    for _, grp in df.groupby(keys):
        g = grp.sort_values("micro_batch")
        peaks = g["peak_alloc_bytes"].astype(float).tolist()
        for idx, here, nxt in zip(g.index, peaks, peaks[1:], strict=False):
            if here > nxt > 0:
                bad.add(int(idx))
    return bad


def _truthy(x: Any) -> bool:
    return str(x).strip().lower() in ("true", "1", "yes")


def _korthikanti_args(r: pd.Series, recompute: str, sp: bool) -> dict[str, Any]:
    v = int(r["pipeline_interleave"])
    return dict(
        model=megatron_gpt(str(r["model"]), int(r["layers"]), int(r["hidden"]), int(r["heads"]),
                           int(r["ffn"]), int(r["vocab"]), int(r["seq_len"])),
        cluster=f"{int(r['gpus'])}x{r['gpu']}", micro_batch=int(r["micro_batch"]),
        global_batch=int(r["global_batch"]), seq_len=int(r["seq_len"]), tp=int(r["tp"]),
        pp=int(r["pp"]), dp=int(r["dp"]), vpp=v, schedule="interleaved" if v > 1 else "1f1b",
        recompute=recompute, sequence_parallel=sp, dtype=str(r["dtype"]), attention="eager",
        dropout=True,
    )


def _table5(published: Path) -> pd.DataFrame:
    return read_table(published / "korthikanti2022_table5.csv", TABLE5_COLUMNS, TABLE5_NUMERIC,
                      TABLE5_NUMERIC)


def korthikanti_table5_rows(published: Path) -> pd.DataFrame:
    """Iteration time rows of Korthikanti et al. 2022 table 5 (``published``: the folder)."""
    df = _table5(published)
    rows = []
    for _, r in df.iterrows():
        sp = _truthy(r["sequence_parallel"])
        est = estimate_train_step(**_korthikanti_args(r, str(r["recompute"]), sp), record_timeline=False)
        cfg = (f"tp{r['tp']} pp{r['pp']} dp{r['dp']} v{r['pipeline_interleave']} "
               f"b{r['micro_batch']} B{r['global_batch']} {r['recompute']}{' +sp' if sp else ''}")
        rows.append(_row("korthikanti2022_table5", str(r["gpu"]), str(r["model"]), cfg, "iteration_time_s",
                         est.time_s, float(r["iteration_time_s"]), TIME_TARGET_PUBLISHED,
                         _source_label(est.sources)))
    return pd.DataFrame(rows, columns=COLUMNS)


def korthikanti_fig1_rows(published: Path) -> pd.DataFrame:
    """Memory rows of Korthikanti et al. 2022 fig. 1 (configs from table 5)."""
    fig_path = published / "korthikanti2022_fig1_memory_gib.csv"
    fig = read_table(fig_path, FIG1_COLUMNS, FIG1_COLUMNS[1:3] + FIG1_COLUMNS[4:], FIG1_COLUMNS[1:3])
    tab = _table5(published).drop_duplicates("model").set_index("model")
    rows = []
    for i, f in fig.iterrows():
        if f["model"] not in tab.index:
            raise ProfileError(f"{fig_path}: row {int(i) + 2}: model {f['model']!r} is not in "
                               "korthikanti2022_table5.csv")
        r = tab.loc[f["model"]]
        r = r.copy()
        r["model"] = f["model"]
        r["tp"], r["pp"] = int(f["tp"]), int(f["pp"])
        selective = str(f["mode"]) != "none"
        job = build_train_job(**_korthikanti_args(r, "selective" if selective else "none", selective))
        mem = stage_memories(job)
        mid = mem[len(mem) // 2]
        first = mem[0]
        cfg = f"tp{f['tp']} pp{f['pp']} {f['mode']}"
        src = "formula"
        rows.append(_row("korthikanti2022_fig1", str(r["gpu"]), str(f["model"]), cfg, "params_and_optimizer_gib",
                         mid.params_and_optimizer_bytes / GIB, float(f["params_and_optimizer_gib_per_gpu"]),
                         MEMORY_TARGET, src))
        rows.append(_row("korthikanti2022_fig1", str(r["gpu"]), str(f["model"]), cfg, "activations_gib",
                         first.activations_bytes / GIB, float(f["activations_gib_per_gpu"]), MEMORY_TARGET, src))
    return pd.DataFrame(rows, columns=COLUMNS)


def measured_files(root: Path = MEASURED_ROOT, gpus: set[str] | None = None) -> list[Path]:
    """Every ``<GPU>/training.csv`` under ``root`` (only those GPUs' when ``gpus`` is given)."""
    files = sorted(root.glob("*/training.csv")) if root.is_dir() else []
    return [f for f in files if gpus is None or f.parent.name in gpus]


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (UnicodeDecodeError, OSError):
        raise ProfileError(f"{path}: cannot read as a text JSON file") from None
    if not isinstance(meta, dict):
        raise ProfileError(f"{path}: expected a JSON object")
    return meta


def _read_training(path: Path) -> pd.DataFrame:
    """A ``training.csv``'s completed points (``status`` ok: out-of-memory points carry no time)."""
    return read_table(path, TRAINING_COLUMNS, (), [c for c in TRAINING_COLUMNS if c != "recompute"],
                      keep=("status", "ok"))


def our_rows(root: Path = MEASURED_ROOT, cost_model: Any = None, *, kernel_factor: float | None = None,
             comm_slowdown: float | None = None, select: Any = None,
             gpus: set[str] | None = None) -> pd.DataFrame:
    """Rows of our own GPU measurements (device time, step time and peak allocated memory,
    see the module doc); ``cost_model`` overrides the GPU's default (its measured profile
    when there is one); ``kernel_factor`` and ``comm_slowdown`` override the simulator's
    (None: the harness profile's; for sensitivity and the ``comm_slowdown`` fit); ``select`` (gpu name, measured row) ->
    bool keeps only some rows; ``gpus`` keeps only those GPUs' folders."""
    rows = []
    for path in measured_files(root, gpus):
        gpu = path.parent.name
        meta = _read_meta(path.with_suffix(".json"))
        df = _read_training(path)
        odd = _inconsistent_peaks(df) if "peak_alloc_bytes" in df.columns else set()
        for i, r in df.iterrows():
            if select is not None and not select(gpu, r):
                continue
            world = int(r["world_size"])
            dp = int(r["dp"])
            name = f"gpt-L{int(r['layers'])}-h{int(r['hidden'])}"
            model = megatron_gpt(name, int(r["layers"]), int(r["hidden"]), int(r["heads"]), int(r["ffn"]),
                                 int(r["vocab"]), int(r["seq_len"]), tied=bool(meta.get("tied", True)))
            rec = str(r["recompute"]) if str(r["recompute"]) in ("none", "selective", "full") else (
                "full" if _truthy(r["recompute"]) else "none")
            mb, ga = int(r["micro_batch"]), int(r["grad_accum"])
            cfg = f"b{mb} ga{ga} s{int(r['seq_len'])} dp{dp} {rec}"
            device_s = float(r["device_s"]) if "device_s" in r.index and np.isfinite(
                float(r.get("device_s", np.nan))) else None
            ests = {}
            try:
                for execution in ((meta.get("execution", "eager"), "graph") if device_s else
                                  (meta.get("execution", "eager"),)):
                    job = build_train_job(
                        model, f"{world}x{gpu}", None, mb, mb * ga * dp, int(r["seq_len"]), dp=dp,
                        recompute=rec, zero=int(meta.get("zero", 0)), precision=meta.get("precision", "amp"),
                        attention=meta.get("attention", "flash"), dropout=bool(meta.get("dropout", False)),
                        grad_dtype=meta.get("grad_dtype", "fp32"), dtype=meta.get("dtype", "bf16"),
                        grad_bucket_bytes=float(meta.get("bucket_bytes", DDP_BUCKET_BYTES)),
                        execution=execution, engine=HARNESS_ENGINE,
                    )
                    ests[execution] = TrainEstimate(simulate_step(
                        job, None, cost_model, record=False, check_memory=False,
                        comm_slowdown=comm_slowdown, kernel_factor=kernel_factor))
            except FleetsimError as exc:
                raise type(exc)(f"{path}: row {int(i) + 2}: {exc}") from None
            est = ests[meta.get("execution", "eager")]
            src = _source_label(est.sources)
            meas_t = float(r["time_s"])
            if device_s is not None:
                rows.append(_row("measured", gpu, name, cfg, "device_time_s", ests["graph"].time_s, device_s,
                                 TIME_TARGET_OURS, src))
            if device_s is None or device_s >= GPU_BOUND_SHARE * meas_t:
                rows.append(_row("measured", gpu, name, cfg, "step_time_s", est.time_s, meas_t,
                                 TIME_TARGET_OURS, src))
            else:
                rows.append(_row("measured", gpu, name, cfg, "step_time_host_bound_s", est.time_s, meas_t,
                                 float("nan"), src, f"host-bound: kernels {device_s / meas_t:.0%} of the step"))
            if float(r.get("peak_alloc_bytes", 0) or 0) > 0:
                note = "measured peak above the next larger micro-batch's" if i in odd else ""
                rows.append(_row("measured", gpu, name, cfg, "peak_alloc_gib", est.peak_allocated_bytes / GIB,
                                 float(r["peak_alloc_bytes"]) / GIB, MEMORY_TARGET, src, note))
    return pd.DataFrame(rows, columns=COLUMNS)


def published_gpus(published: Path) -> set[str]:
    """GPU names of the published table 5 rows."""
    return set(_table5(published)["gpu"].astype(str))


def validation_rows(published: Path | None = None, measured_root: Path = MEASURED_ROOT,
                    gpus: set[str] | None = None) -> pd.DataFrame:
    """All validation rows: Korthikanti table 5 and fig. 1 (when ``published`` is given) and
    our own measurements under ``measured_root``; ``gpus`` keeps only those GPUs' rows."""
    parts = []
    if published is not None and (gpus is None or published_gpus(published) & gpus):
        parts += [korthikanti_table5_rows(published), korthikanti_fig1_rows(published)]
    parts.append(our_rows(measured_root, gpus=gpus))
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)


def is_ddp_fit_row(gpu: str, r: pd.Series) -> bool:
    """The rows the training profiles' ``comm_slowdown`` is fitted on: DDP over two GPUs, the largest (2.7B) model,
    whose steps are GPU-bound at every micro-batch."""
    return int(r["world_size"]) > 1 and int(r["hidden"]) >= 2560


def _geo_ratio(df: pd.DataFrame) -> float:
    t = df[df["metric"] == "step_time_s"]
    return float(np.exp(np.mean(np.log(t["measured"] / t["predicted"]))))


def _bisect(f: Any, lo: float, hi: float, iters: int = 30) -> float:
    """Root of the increasing function ``f`` on [lo, hi]."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def fit_comm_slowdown(root: Path = MEASURED_ROOT) -> float:
    """The compute slowdown under overlapped communication making the geometric mean of
    measured/predicted step time 1 over ``is_ddp_fit_row`` rows."""
    return _bisect(lambda s: 1.0 - _geo_ratio(our_rows(root, comm_slowdown=s, select=is_ddp_fit_row)),
                   0.0, 5.0, 20)


def measurement_repeatability(root: Path = MEASURED_ROOT, gpus: set[str] | None = None) -> pd.DataFrame:
    """Same configurations measured twice on one GPU kind: ``<GPU>/training.csv`` against the
    later run in ``<GPU>/repeat/training.csv`` (another machine of the kind, about half an
    hour later). Per row: both step times, both summed kernel times, their relative
    differences, and whether the first run was GPU-bound (``GPU_BOUND_SHARE``)."""
    out = []
    keys = list(REPEAT_KEYS)
    cols = (*REPEAT_KEYS, "time_s", "device_s")
    for path in sorted(root.glob("*/repeat/training.csv")) if root.is_dir() else []:
        if gpus is not None and path.parent.parent.name not in gpus:
            continue
        first_path = path.parent.parent / "training.csv"
        if not first_path.is_file():
            raise ProfileError(f"{path}: repeat run without the first run {first_path}")
        first, again = (read_table(p, cols, ("time_s", "device_s"), ("time_s", "device_s"),
                                   keep=("status", "ok")) for p in (first_path, path))
        m = first.merge(again, on=keys, suffixes=("_1", "_2"))
        for r in m.itertuples(index=False):
            d = r._asdict()
            out.append({"gpu": path.parent.parent.name, **{k: d[k] for k in keys},
                        "step_1_s": d["time_s_1"], "step_2_s": d["time_s_2"],
                        "step_diff": d["time_s_2"] / d["time_s_1"] - 1.0,
                        "kernels_1_s": d["device_s_1"], "kernels_2_s": d["device_s_2"],
                        "kernel_diff": d["device_s_2"] / d["device_s_1"] - 1.0,
                        "gpu_bound": d["device_s_1"] >= GPU_BOUND_SHARE * d["time_s_1"]})
    return pd.DataFrame(out)
