"""Fit the ``hf-transformers`` and ``torch-compile`` serving profiles on the H200 ground truth.

Each fitted number is a mechanism read from ``calibration/validation/H200-SXM/engines/``
(``docs/engines_ground_truth.md``), fitted on the llama-3.1-8b rows and tested on the
qwen2.5-7b and mixtral-8x7b rows (torch.compile: fitted on two llama shapes, tested on the
other two):

* ``kernels.extra_kernels_prefill`` / ``extra_kernels_decode``: small kernels per layer the
  engine runs beyond the profile's operator graph (views that copy, masks, position ids,
  cache index updates), from the profiled kernel counts (``hf_profile.csv``): measured
  non-GEMM kernels minus the graph's non-GEMM operators, per layer, rounded;
* ``kernels.kv_expand_bytes_per_sm_cycle``: bytes (read + written) the ``repeat_kv`` copy
  kernels move per SM per clock cycle (``hf_profile_kernels.csv``, PyTorch's non-vectorized
  ``direct_copy`` elementwise kernel, bound by index arithmetic on the SMs, not by HBM): the
  graph's ``kv_expand`` bytes over the profiled time x SMs x max clock of the H200, on the
  llama decode b=8 ctx=512 rows; held out: the H100 profile rows (``kv_expand_rows``);
* ``launch.host_dispatch_s``: host seconds per kernel call, the value that minimises the
  squared log error of the eager llama rows (it only moves the host-bound ones);
* ``launch.region_host_s`` (torch.compile): host seconds of one compiled layer call, fitted
  the same way on the compiled llama rows of 128 and 1500 tokens.

The published-serving profiles (``vllm``, ``sglang``, ``trtllm``) are fitted by a coarse grid
over one or two mechanism values on the ``split == fit`` rows of
``calibration/validation/published/serving.csv`` (``SERVING_GRID``), choosing the point of least
mean absolute log error; the per-row simulations of the grid are cached in
``serving_fit_grid.csv`` beside it:

* ``vllm`` rows (vLLM 0.6.0) fit the ``vllm-0.6`` profile: ``launch.iteration_overhead_s`` and ``launch.seq_overhead_s``, the host time per
  scheduler call (constant + per sequence) the GPU waits on, paid once per
  ``--num-scheduler-steps`` decode steps (vLLM 0.6.0's CPU-bound single-step scheduler);
* ``sglang``: the same two values (what its overlap scheduler does not hide);
* ``trtllm``: ``collectives.oneshot_max_bytes``, the largest TP all-reduce its custom
  one-shot kernel runs (one NVLink latency instead of NCCL's ring steps).

The fitted values live in ``calibration/engines/serving/*.yaml`` with date ``FIT_DATE``;
``tests/test_engine_fit.py`` re-derives each one from the data and checks it equals the
YAML. ``python3 -m fleetsim.engine_fit --write`` rewrites the YAML after a data change.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import minimize_scalar

from fleetsim.calibration.engines import ENGINE_DIR, EngineProfile, Fitted, get_engine, parse_engine

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "calibration" / "validation" / "H200-SXM" / "engines"
CATALOG = ROOT / "workloads" / "catalog"
GPU = "H200-SXM"
FIT_DATE = "2026-12-04"
KV_EXPAND_FIT_DATE = "2026-12-06"
"""Date of the per-SM-cycle fit of the ``repeat_kv`` copy (it replaced a time ratio)."""
FIT_MODEL = "llama-3.1-8b"
COMPILE_FIT_TOKENS = ((1, 128), (1, 1500))
"""(batch, tokens) of the compiled prefills that fit ``region_host_s``; the others test it."""
EAGER_MODES = ("prefill_eager", "prefill_eager_last", "decode_eager")
HOST_BOUNDS_S = (1e-6, 1e-4)
REL = "calibration/validation/H200-SXM/engines"


def _config(model: str, layers: int) -> dict:
    cfg = json.loads((CATALOG / f"{model}.json").read_text())
    cfg["num_hidden_layers"] = int(layers)
    return cfg


def ground_truth(folder: Path = DATA_DIR) -> pd.DataFrame:
    """Forward rows of both engines: engine, model, layers, mode, batch, q_len, context,
    measured ``time_s`` and ``split`` (``fit``: llama / the compile fit shapes; ``test``)."""
    parts = []
    for name, engine in (("hf_forward.csv", "hf-transformers"), ("compile_forward.csv", "torch-compile")):
        df = pd.read_csv(folder / name)
        df["engine"] = engine
        parts.append(df)
    df = pd.concat(parts, ignore_index=True)
    shape = list(zip(df["batch"].astype(int), df["q_len"].astype(int), strict=True))
    compile_fit = [s in COMPILE_FIT_TOKENS for s in shape]
    df["split"] = np.where(df["engine"] == "torch-compile",
                           np.where(compile_fit, "fit", "test"),
                           np.where(df["model"] == FIT_MODEL, "fit", "test"))
    return df[["engine", "model", "layers", "mode", "batch", "q_len", "context", "time_s", "split"]]


def row_profile(profile: EngineProfile, mode: str) -> EngineProfile:
    """The profile as a row ran it: ``prefill_eager_last`` keeps only the last logits."""
    if mode == "prefill_eager_last":
        return profile.model_copy(update={"kernels": profile.kernels.model_copy(update={"logits": "last"})})
    return profile


def predict(row: pd.Series | dict, profile: EngineProfile, gpu: str = GPU) -> tuple[float, pd.DataFrame]:
    """Predicted seconds and operator table of one ground-truth row under ``profile`` on ``gpu``."""
    from fleetsim import estimate_forward
    from fleetsim.workloads.models import load_model

    spec = load_model(_config(str(row["model"]), int(row["layers"])))
    mode = str(row["mode"])
    dec = mode.startswith("decode")
    batch = (int(row["batch"]), 1, int(row["context"])) if dec else (int(row["batch"]), int(row["q_len"]))
    graphs = True if mode == "decode_graph" else (False if dec else None)
    est = estimate_forward(spec, gpu, batch, engine=row_profile(profile, mode), graphs=graphs,
                           check_context=False)
    return est.time_s, est.ops


def _fitted(value: float, fit_rows: str, test_rows: str, how: str, date: str = FIT_DATE) -> Fitted:
    return Fitted(value=float(value), source=f"fit: {how} (fleetsim/engine_fit.py)", fit_rows=fit_rows,
                  test_rows=test_rows, date=date)


def _with(profile: EngineProfile, section: str, **values: object) -> EngineProfile:
    part = getattr(profile, section).model_copy(update=values)
    return profile.model_copy(update={section: part})


def _profiled(folder: Path, impl: str, modes: tuple[str, ...]) -> pd.DataFrame:
    prof = pd.read_csv(folder / "hf_profile.csv")
    return prof[(prof["impl"] == impl) & prof["mode"].isin(modes) & (prof["model"] == FIT_MODEL)]


def fit_extra_kernels(profile: EngineProfile, impl: str, modes: tuple[str, ...], folder: Path = DATA_DIR) -> int:
    """Measured non-GEMM kernels minus the profile's non-GEMM operators, per layer, mean of
    the profiled llama rows of ``modes``, rounded to whole kernels."""
    per_layer = []
    for _, r in _profiled(folder, impl, modes).iterrows():
        _, ops = predict(r, profile)
        ours = int(ops.loc[~ops["kind"].isin(["gemm", "collective"]), "count"].sum())
        per_layer.append((int(r["attn_kernels"]) + int(r["other_kernels"]) - ours) / int(r["layers"]))
    return max(0, round(float(np.mean(per_layer))))


KV_EXPAND_FIT = "llama-3.1-8b decode b=8 ctx=512"
"""The H200 profile rows that fit ``kv_expand_bytes_per_sm_cycle``."""
KV_EXPAND_TEST = "calibration/validation/H100-SXM/engines/hf_profile_kernels.csv llama-3.1-8b decode b=4,16,64,256 ctx=1024"
"""The held-out profile rows of the copy (another GPU: H100)."""


def kv_expand_rows(profile: EngineProfile, gpu: str = GPU, folder: Path = DATA_DIR) -> pd.DataFrame:
    """One row per profiled llama decode row of ``folder`` on ``gpu``: the measured time of the
    ``repeat_kv`` copies (PyTorch's ``elementwise_kernel<128, 4, ... direct_copy ...>``, every
    call of the step), the bytes the graph's ``kv_expand`` operators move, the measured bytes
    per SM per cycle, ``profile``'s predicted copy time and its error (predicted / measured - 1)."""
    from fleetsim.hardware.catalog import get_gpu

    spec = get_gpu(gpu)
    kern = pd.read_csv(folder / "hf_profile_kernels.csv")
    out = []
    for _, r in _profiled(folder, "hf-transformers", ("decode_eager", "decode_graph")).iterrows():
        k = kern[(kern["mode"] == r["mode"]) & (kern["model"] == r["model"]) & (kern["batch"] == r["batch"])
                 & (kern["context"] == r["context"]) & kern["kernel"].str.contains("elementwise_kernel<128, 4")
                 & kern["kernel"].str.contains("direct_copy")]
        _, ops = predict({**r.to_dict(), "mode": "decode_graph"}, profile, gpu)
        exp = ops[ops["name"] == "kv_expand"]
        moved = float((exp["count"] * exp["bytes"]).sum())
        meas, pred = float(k["time_s"].sum()), float(exp["total_s"].sum())
        out.append({"gpu": gpu, "mode": r["mode"], "batch": int(r["batch"]), "context": int(r["context"]),
                    "bytes": moved, "measured_s": meas, "predicted_s": pred,
                    "bytes_per_sm_cycle": moved / (meas * spec.compute_units * spec.max_clock_hz),
                    "error": pred / meas - 1.0})
    return pd.DataFrame(out)


def fit_kv_expand_rate(profile: EngineProfile, folder: Path = DATA_DIR) -> float:
    """Bytes per SM per cycle of the ``repeat_kv`` copy: the mean over the profiled llama
    decode rows (eager and graph, b=8 ctx=512) of the graph's ``kv_expand`` bytes over the
    measured copy time x the GPU's SMs x max clock."""
    return float(kv_expand_rows(profile, GPU, folder)["bytes_per_sm_cycle"].mean())


def _argmin(loss: Callable[[float], float], bounds: tuple[float, float]) -> float:
    res = minimize_scalar(loss, bounds=bounds, method="bounded", options={"xatol": 1e-12, "maxiter": 500})
    return float(res.x)


def _log_loss(rows: pd.DataFrame, make: Callable[[float], EngineProfile]) -> Callable[[float], float]:
    def loss(x: float) -> float:
        prof = make(x)
        return float(sum(np.log(predict(r, prof)[0] / r["time_s"]) ** 2 for _, r in rows.iterrows()))
    return loss


def fit_hf(base: EngineProfile, folder: Path = DATA_DIR) -> EngineProfile:
    """``hf-transformers`` with every fitted value (see the module docstring)."""
    gt = ground_truth(folder)
    fit_rows = "llama-3.1-8b rows of hf_forward.csv"
    test_rows = "qwen2.5-7b and mixtral-8x7b rows of hf_forward.csv"
    plain = _with(base, "kernels", extra_kernels_prefill=None, extra_kernels_decode=None,
                  kv_expand_bytes_per_sm_cycle=None)
    rate = fit_kv_expand_rate(plain, folder)
    ek_pre = fit_extra_kernels(plain, "hf-transformers", ("prefill_eager", "prefill_eager_last"), folder)
    ek_dec = fit_extra_kernels(plain, "hf-transformers", ("decode_eager", "decode_graph"), folder)
    prof_rows = f"{REL}/hf_profile.csv llama-3.1-8b"
    prof = _with(plain, "kernels",
                 kv_expand_bytes_per_sm_cycle=_fitted(
                     rate, f"{REL}/hf_profile_kernels.csv {KV_EXPAND_FIT}", f"{KV_EXPAND_TEST}; {test_rows}",
                     "repeat_kv direct_copy bytes moved / (kernel time x SMs x max clock)", KV_EXPAND_FIT_DATE),
                 extra_kernels_prefill=_fitted(ek_pre, f"{prof_rows} prefill rows", test_rows,
                                               "profiled non-GEMM kernels minus graph operators per layer"),
                 extra_kernels_decode=_fitted(ek_dec, f"{prof_rows} decode rows", test_rows,
                                              "profiled non-GEMM kernels minus graph operators per layer"))
    eager = gt[(gt["engine"] == "hf-transformers") & (gt["split"] == "fit") & gt["mode"].isin(EAGER_MODES)]
    host = _argmin(_log_loss(eager, lambda x: _with(prof, "launch", host_dispatch_s=Fitted(
        value=x, source="default: trial"))), HOST_BOUNDS_S)
    return _with(prof, "launch", host_dispatch_s=_fitted(
        host, f"{fit_rows}, eager modes", test_rows, "host seconds per kernel call, least squares of log time"))


def fit_compile(base: EngineProfile, hf: EngineProfile, folder: Path = DATA_DIR) -> EngineProfile:
    """``torch-compile`` with its fitted values; the eager parts outside the compiled layers
    (embedding, final norm, LM head) dispatch at ``hf``'s fitted host time per call."""
    gt = ground_truth(folder)
    rows = gt[gt["engine"] == "torch-compile"]
    shapes = ", ".join(f"({b}, {s})" for b, s in COMPILE_FIT_TOKENS)
    test = "compile_forward.csv llama-3.1-8b (4, 1024) and (8, 2048)"
    plain = _with(base, "kernels", extra_kernels_prefill=None)
    ek = fit_extra_kernels(plain, "torch-compile", ("prefill_compile",), folder)
    assert isinstance(hf.launch.host_dispatch_s, Fitted)
    prof = _with(plain, "kernels", extra_kernels_prefill=_fitted(
        ek, f"{REL}/hf_profile.csv llama-3.1-8b prefill_compile rows", test,
        "profiled non-GEMM kernels minus graph operators per layer"))
    prof = _with(prof, "launch", host_dispatch_s=hf.launch.host_dispatch_s)
    fit = rows[rows["split"] == "fit"]
    region = _argmin(_log_loss(fit, lambda x: _with(prof, "launch", region_host_s=Fitted(
        value=x, source="default: trial"))), (1e-6, 2e-3))
    return _with(prof, "launch", region_host_s=_fitted(
        region, f"compile_forward.csv llama-3.1-8b {shapes}", test,
        "host seconds per compiled layer call, least squares of log time"))


def fitted_profiles(folder: Path = DATA_DIR) -> dict[str, EngineProfile]:
    """Both profiles re-fitted from the data, keyed by name."""
    hf = fit_hf(get_engine("hf-transformers"), folder)
    return {"hf-transformers": hf, "torch-compile": fit_compile(get_engine("torch-compile"), hf, folder)}


SERVING_GRID: dict[str, dict[str, tuple[float, ...]]] = {
    "vllm": {"iteration_overhead_s": (0.0, 5e-3, 10e-3, 15e-3, 20e-3),
             "seq_overhead_s": (0.0, 100e-6, 200e-6, 300e-6, 400e-6)},
    "sglang": {"iteration_overhead_s": (0.0, 2e-3, 4e-3, 8e-3), "seq_overhead_s": (0.0, 25e-6, 50e-6)},
    "trtllm": {"oneshot_max_bytes": (0.0, 262144.0, 1048576.0, 4194304.0)},
}
"""Grid of each published-serving engine's mechanism values (0 bytes: NCCL only)."""
SERVING_PROFILES = {"vllm": "vllm-0.6", "sglang": "sglang", "trtllm": "trtllm"}
"""Profile each engine's published rows fit (every published vLLM row is vLLM 0.6.0)."""
SERVING_GRID_FILE = "serving_fit_grid.csv"
PUBLISHED_REL = "calibration/validation/published/serving.csv"
_SECTION = {"iteration_overhead_s": "launch", "seq_overhead_s": "launch", "oneshot_max_bytes": "collectives"}
_HOW = {"iteration_overhead_s": "host seconds per scheduler call, grid least mean |log error|",
        "seq_overhead_s": "host seconds per sequence per scheduler call, grid least mean |log error|",
        "oneshot_max_bytes": "largest one-shot TP all-reduce (bytes), grid least mean |log error|"}


def serving_fit_rows(engine: str) -> pd.DataFrame:
    """The published throughput/TPOT rows of ``engine`` (both splits), with their CSV line."""
    from fleetsim.published_engines import serving_table
    from fleetsim.validate_engines import THROUGHPUT, TPOT

    pub = serving_table()
    pub = pub.assign(line=pub.index + 2)
    return pub[(pub["engine"] == engine) & pub["metric"].isin(THROUGHPUT + tuple(TPOT))]


def _lines(rows: pd.DataFrame) -> str:
    return f"{PUBLISHED_REL} lines " + ",".join(str(int(x)) for x in rows["line"])


def serving_trial(base: EngineProfile, values: dict[str, float], fit_rows: str = "",
                  test_rows: str = "") -> EngineProfile:
    """``base`` with the grid ``values`` set (as fitted values when ``fit_rows`` is given)."""
    prof = base
    for key, v in values.items():
        f = (_fitted(v, fit_rows, test_rows, _HOW[key]) if fit_rows
             else Fitted(value=float(v), source="default: grid trial"))
        if key == "oneshot_max_bytes":
            prof = _with(prof, "collectives", tp_allreduce="custom_oneshot" if v > 0 else "nccl",
                         oneshot_max_bytes=f if v > 0 else None)
        else:
            prof = _with(prof, _SECTION[key], **{key: f})
    return prof


def _grid_points(engine: str) -> list[dict[str, float]]:
    import itertools

    grid = SERVING_GRID[engine]
    return [dict(zip(grid, vals, strict=True)) for vals in itertools.product(*grid.values())]


def _simulate_point(args: tuple[str, dict[str, float], list[int]]) -> list[dict]:
    from fleetsim.validate_engines import simulate_published

    engine, point, lines = args
    rows = serving_fit_rows(engine).set_index("line")
    prof = serving_trial(get_engine(SERVING_PROFILES[engine]), point)
    return [{"engine": engine, **{k: point.get(k, np.nan) for k in _SECTION}, "line": ln,
             "predicted": simulate_published(rows.loc[ln], prof)} for ln in lines]


def serving_grid(engines: tuple[str, ...] = ("vllm", "sglang", "trtllm"), processes: int = 2) -> pd.DataFrame:
    """Simulated value of every ``split == fit`` row at every grid point (minutes)."""
    from multiprocessing import Pool

    jobs = []
    for e in engines:
        lines = serving_fit_rows(e).query("split == 'fit'")["line"].astype(int).tolist()
        jobs += [(e, p, lines) for p in _grid_points(e)]
    with Pool(processes) as pool:
        parts = pool.map(_simulate_point, jobs)
    return pd.DataFrame([r for part in parts for r in part])


def choose_serving(engine: str, grid: pd.DataFrame) -> dict[str, float]:
    """The grid point of least mean |log(predicted / measured)| over the fit rows."""
    rows = serving_fit_rows(engine).set_index("line")
    g = grid[grid["engine"] == engine].copy()
    g["err"] = np.abs(np.log(g["predicted"].to_numpy() / rows.loc[g["line"], "value"].to_numpy()))
    keys = list(SERVING_GRID[engine])
    loss = g.groupby(keys)["err"].mean()
    best = loss.idxmin()
    best = best if isinstance(best, tuple) else (best,)
    return {k: float(v) for k, v in zip(keys, best, strict=True)}


def fit_serving(engine: str, grid: pd.DataFrame) -> EngineProfile:
    """The shipped profile of ``engine``'s rows with its grid-chosen mechanism values as
    fitted values."""
    rows = serving_fit_rows(engine)
    return serving_trial(get_engine(SERVING_PROFILES[engine]), choose_serving(engine, grid),
                         _lines(rows[rows["split"] == "fit"]), _lines(rows[rows["split"] == "test"]))


def serving_grid_path() -> Path:
    from fleetsim.published_engines import PUBLISHED_ROOT

    return PUBLISHED_ROOT / SERVING_GRID_FILE


def write_yaml(profile: EngineProfile, directory: Path = ENGINE_DIR / "serving") -> Path:
    """Write ``profile`` to its catalog YAML (checked to load back equal)."""
    path = directory / f"{profile.name}.yaml"
    data = profile.model_dump(mode="json", exclude_defaults=True)
    text = yaml.safe_dump(data, sort_keys=False, width=100)
    if parse_engine(yaml.safe_load(text), str(path)) != profile:
        raise ValueError(f"{path}: the written profile does not load back equal")
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the catalog YAML with the fitted values")
    ap.add_argument("--serving-grid", action="store_true",
                    help="re-simulate the published-serving grid (minutes) and rewrite its cache CSV")
    args = ap.parse_args(argv)
    from fleetsim.calibration.engines import fitted_values

    if args.serving_grid:
        serving_grid().to_csv(serving_grid_path(), index=False, float_format="%.6g")
    grid = pd.read_csv(serving_grid_path())
    profiles = fitted_profiles()
    profiles.update({SERVING_PROFILES[e]: fit_serving(e, grid) for e in SERVING_GRID})
    for name, prof in profiles.items():
        for key, f in fitted_values(prof):
            if f.source.startswith("fit:"):
                print(f"{name}  {key} = {f.value:.6g}   fit: {f.fit_rows} | test: {f.test_rows}")
        if args.write and prof != get_engine(name):
            print(f"wrote {write_yaml(prof)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
