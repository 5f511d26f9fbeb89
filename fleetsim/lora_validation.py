"""Multi-tenant LoRA pricing against a whole model's decode step (held out).

``calibration/validation/<GPU>/engines/hf_lora.csv`` (``calibration/bench/engines/hf_lora.py``):
a Hugging Face llama-3.1-8b decode step (bf16, 32 layers, context 512, CUDA graph) at batch
``b`` without LoRA and with LoRA on q, k, v, o, gate, up and down of every layer (forward hooks,
``torch._grouped_mm`` over adapter-sorted segments), ``n`` distinct adapters of rank ``r``.

Each row is predicted as the serving engine prices it:

* base step: ``estimate_forward(..., engine="hf-transformers", graphs=True)`` (the HF
  graph-decode estimate that ``fleetsim.validate_engines`` checks);
* LoRA: ``sim.serving.lora.kernel_seconds`` with the GPU's ``sgmv_grouped_mm`` kernel model,
  ``n_proj x layers`` applications over ``T = b`` tokens of ``n`` adapters at rank ``r``, and
  the model's projection shapes (``workloads.lora.projection_shapes``): ``pricing = "shapes"``;
  the square ``h x h`` pricing (every projection priced as ``lora.csv``'s ``hidden``) is kept
  as ``pricing = "square"`` for comparison.

Nothing is fitted on these rows: ``lora.csv`` and ``lora_split.csv`` are kernel
micro-benchmarks, the HF profile is fitted on the H200's forward rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fleetsim.calibration.measured import VALIDATION_ROOT

LORA_FILE = "hf_lora.csv"
ENGINE = "hf-transformers"
KERNEL = "sgmv_grouped_mm"
PRICINGS = ("shapes", "square")


def lora_files(root: Path = VALIDATION_ROOT) -> dict[str, Path]:
    """Catalog GPU name -> its committed ``hf_lora.csv``."""
    return {p.parents[1].name: p for p in sorted(root.glob(f"*/engines/{LORA_FILE}"))}


def lora_rows(root: Path = VALIDATION_ROOT) -> pd.DataFrame:
    """One row per measured point and pricing: measured and predicted step seconds without
    and with LoRA, the added seconds (delta) and the errors (predicted / measured - 1)."""
    from fleetsim import estimate_forward
    from fleetsim.calibration.lora import kernel_model
    from fleetsim.engine_fit import _config
    from fleetsim.hardware.catalog import get_gpu
    from fleetsim.sim.serving.lora import kernel_seconds
    from fleetsim.workloads.lora import adapter_params_per_rank, projection_shapes
    from fleetsim.workloads.models import load_model

    out = []
    for gpu_name, path in lora_files(root).items():
        gpu = get_gpu(gpu_name)
        kernel = kernel_model(gpu, KERNEL)
        df = pd.read_csv(path)
        specs: dict[tuple[str, int], object] = {}
        for r in df.itertuples():
            key = (str(r.model), int(r.layers))
            if key not in specs:
                specs[key] = load_model(_config(*key))
            spec = specs[key]
            base = estimate_forward(spec, gpu_name, (int(r.batch), 1, int(r.context)), engine=ENGINE, graphs=True,
                                    check_context=False).time_s
            apps = adapter_params_per_rank(spec)[1] * spec.num_layers  # type: ignore[attr-defined]
            for pricing in PRICINGS:
                proj = projection_shapes(spec) if pricing == "shapes" else ()  # type: ignore[arg-type]
                delta = kernel_seconds(kernel, spec.hidden_size, apps, int(r.batch), int(r.adapters),  # type: ignore[attr-defined]
                                       int(r.rank), proj)
                out.append({"gpu": gpu_name, "pricing": pricing, "batch": int(r.batch), "rank": int(r.rank),
                            "adapters": int(r.adapters), "base_s": float(r.base_time_s), "pred_base_s": base,
                            "delta_s": float(r.delta_s), "pred_delta_s": delta, "time_s": float(r.time_s),
                            "pred_time_s": base + delta})
    res = pd.DataFrame(out)
    if res.empty:
        return res
    res["delta_err"] = res["pred_delta_s"] / res["delta_s"] - 1.0
    res["time_err"] = res["pred_time_s"] / res["time_s"] - 1.0
    return res


def lora_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per GPU and pricing: rows, measured and predicted mean added ms per step (and per token
    at batch 1), MAPE of the added time and of the whole step with LoRA, worst delta row."""
    out = []
    for (gpu, pricing), g in rows.groupby(["gpu", "pricing"], sort=False):
        worst = g.loc[g["delta_err"].abs().idxmax()]
        b1 = g[g["batch"] == 1]
        out.append({"gpu": gpu, "pricing": pricing, "rows": len(g),
                    "delta_ms_mean": 1e3 * float(g["delta_s"].mean()),
                    "pred_delta_ms_mean": 1e3 * float(g["pred_delta_s"].mean()),
                    "b1_delta_ms": 1e3 * float(b1["delta_s"].mean()) if len(b1) else np.nan,
                    "b1_pred_delta_ms": 1e3 * float(b1["pred_delta_s"].mean()) if len(b1) else np.nan,
                    "delta_mape_pct": 100 * float(g["delta_err"].abs().mean()),
                    "time_mape_pct": 100 * float(g["time_err"].abs().mean()),
                    "worst_delta": f"b={worst['batch']} n={worst['adapters']} r={worst['rank']}: "
                                   f"{worst['delta_err'] * 100:+.1f}%"})
    return pd.DataFrame(out)


__all__ = ["LORA_FILE", "PRICINGS", "lora_files", "lora_rows", "lora_summary"]
