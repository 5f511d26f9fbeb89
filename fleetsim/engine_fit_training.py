"""Fit the ``hf-transformers`` training profile's backward kernel count on the H200 profile.

``kernels.extra_kernels_backward``: the small kernels per layer that an eager Hugging Face
training step launches beyond the operator graph of ``workloads/graph_training.py`` (each
autograd node's per-input gradient kernels, casts of gradients to the fp32 parameters, layout
copies). Read from the profiled training steps (``hf_profile.csv``: kernel launches per step,
``hf_profile_kernels.csv``: the fused AdamW launches and the ``record_function`` ranges
mirrored onto the GPU timeline, which are no forward/backward kernels): measured launches
minus the optimizer's and the ranges, minus the kernels the simulator's dispatch model counts
for the same step with the profile's graph, per layer. Fitted on the llama-3.1-8b rows (with
and without checkpointing; the recomputed forward adds no unlisted kernels), tested on the
qwen2.5-7b rows. ``tests/test_engine_fit_training.py`` re-derives it and checks the YAML.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fleetsim.calibration.engines import EngineProfile, Fitted, get_engine
from fleetsim.engine_fit import DATA_DIR, FIT_DATE, FIT_MODEL, _config

OPTIMIZER_KERNEL = "multi_tensor_apply_kernel"
"""Substring of the fused AdamW kernel's name in ``hf_profile_kernels.csv``."""
RANGE = r"[A-Za-z_.]+#[A-Za-z_.]+"
"""A ``record_function`` range mirrored onto the GPU timeline (``Optimizer.step#AdamW.step``)."""


def measured_step_kernels(folder: Path = DATA_DIR, impl: str = "hf-transformers") -> pd.DataFrame:
    """Profiled training rows with ``step_kernels``: forward/backward launches of the step
    (all launches minus the optimizer's and the mirrored ``record_function`` ranges)."""
    prof = pd.read_csv(folder / "hf_profile.csv")
    prof = prof[(prof["impl"] == impl) & (prof["mode"] == "train")].copy()
    kern = pd.read_csv(folder / "hf_profile_kernels.csv")
    keys = ["impl", "model", "layers", "mode", "batch", "q_len", "context", "gradient_checkpointing"]
    kern = kern[(kern["impl"] == impl) & (kern["mode"] == "train")]
    aside = kern[kern["kernel"].str.contains(OPTIMIZER_KERNEL, regex=False) | kern["kernel"].str.fullmatch(RANGE)]
    off = aside.groupby(keys)["calls"].sum().rename("aside").reset_index()
    prof = prof.merge(off, on=keys, how="left").fillna({"aside": 0})
    prof["step_kernels"] = prof["kernels"] - prof["aside"]
    return prof.reset_index(drop=True)


def predicted_step_kernels(row: pd.Series, profile: EngineProfile) -> int:
    """Kernels the eager dispatch model launches for the row's step (forward, recomputation,
    backward; the optimizer's host work is priced apart), one layer kind per model."""
    from fleetsim.calibration.measured import get_cost_model
    from fleetsim.hardware import catalog
    from fleetsim.sim.training.layer_ops import LayerCoster
    from fleetsim.sim.training.placement import CollectivePricer
    from fleetsim.training import build_train_job

    layers = int(row["layers"])
    job = build_train_job(_config(str(row["model"]), layers), "1xH200-SXM", micro_batch=int(row["batch"]),
                          global_batch=int(row["batch"]), seq_len=int(row["q_len"]), engine=profile,
                          recompute="full" if int(row["gradient_checkpointing"]) else "none")
    gpu = catalog.get_gpu("H200-SXM")
    cost = get_cost_model(gpu)
    coster = LayerCoster(job, gpu, cost, CollectivePricer(job, gpu, cost))
    lt = coster.layer("dense", False)
    assert lt.fwd_kernels is not None and lt.bwd_kernels is not None
    fwd, bwd = coster.edge_kernels(True, True)
    return layers * (lt.fwd_kernels.count + lt.bwd_kernels.count) + fwd.count + bwd.count


def fit_extra_backward_kernels(base: EngineProfile | None = None, folder: Path = DATA_DIR) -> int:
    """Mean over the profiled llama rows of (measured - predicted step kernels) / layers,
    with the profile's graph without extra backward kernels, rounded to whole kernels."""
    prof = base if base is not None else get_engine("hf-transformers", "training")
    prof = without_extra(prof)
    rows = measured_step_kernels(folder)
    rows = rows[rows["model"] == FIT_MODEL]
    per_layer = [(r["step_kernels"] - predicted_step_kernels(r, prof)) / int(r["layers"]) for _, r in rows.iterrows()]
    return max(0, round(float(np.mean(per_layer))))


def without_extra(profile: EngineProfile) -> EngineProfile:
    """``profile`` with no ``extra_kernels_backward``."""
    k = profile.kernels.model_copy(update={"extra_kernels_backward": None})
    return profile.model_copy(update={"kernels": k})


def fitted_extra_backward(folder: Path = DATA_DIR) -> Fitted:
    """The fitted value with its provenance, as the YAML stores it."""
    return Fitted(value=float(fit_extra_backward_kernels(folder=folder)),
                  source="fit: profiled training-step kernels minus the dispatch model's, per layer "
                         "(fleetsim/engine_fit_training.py)",
                  fit_rows="calibration/validation/H200-SXM/engines/hf_profile.csv llama-3.1-8b train rows "
                           "(2x2048, with and without checkpointing)",
                  test_rows="qwen2.5-7b train rows of hf_profile.csv (kernel counts) and hf_train.csv (step times)",
                  date=FIT_DATE)
