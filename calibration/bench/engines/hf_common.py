"""Shared plumbing of the engine ground-truth scripts (``hf_forward.py``, ``hf_train.py``).

These scripts time implementations that fleetsim did not write: Hugging Face ``transformers``
models built from the catalog's ``config.json`` fields with random weights, run eagerly, under a
captured CUDA graph, or ``torch.compile``'d. This module turns a catalog name into a
``transformers`` config (optionally truncated to fewer layers, or shrunk for CPU smoke runs),
builds the model on the device, times callables with CUDA events, appends CSV rows, sums
``torch.profiler`` kernel records, and writes ``meta.json`` with the library versions.

torch and transformers are imported inside functions only: the module imports on a machine with
neither (fleetsim's CI). It runs as a plain file next to the others on the device machine.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

_BENCH = Path(__file__).resolve().parents[1]
try:
    from fleetsim.calibration.bench.common import (
        catalog_name_for,
        collect_meta,
        summarize,
        write_meta,
    )
except ImportError:
    sys.path.insert(0, str(_BENCH))
    from common import (  # type: ignore[no-redef]
        catalog_name_for,
        collect_meta,
        summarize,
        write_meta,
    )

CATALOG = Path(__file__).resolve().parents[3] / "workloads" / "catalog"
ATTN_IMPL = "sdpa"
# config.json keys that describe the checkpoint rather than the architecture
_NOT_CONFIG = ("architectures", "torch_dtype", "dtype")
# shrunk widths for --tiny (CPU smoke): same structure, every code path, seconds not minutes
_TINY = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 256, "num_hidden_layers": 2,
         "num_local_experts": 4}


def catalog_fields(name: str) -> dict[str, Any]:
    """The catalog's HF ``config.json`` fields of ``name`` (``workloads/catalog/<name>.json``)."""
    fields: dict[str, Any] = json.loads((CATALOG / f"{name}.json").read_text())
    return {k: v for k, v in fields.items() if k not in _NOT_CONFIG}


def hf_config(name: str, layers: int | None = None, tiny: bool = False) -> Any:
    """A ``transformers`` config of catalog model ``name`` (``CONFIG_MAPPING[model_type]``),
    with ``num_hidden_layers = layers`` when given, shrunk widths when ``tiny``."""
    import transformers

    fields = catalog_fields(name)
    if tiny:
        fields.update({k: v for k, v in _TINY.items() if k in fields})
        for k in ("head_dim", "bos_token_id", "eos_token_id", "pad_token_id"):
            fields.pop(k, None)
    if layers is not None:
        fields["num_hidden_layers"] = layers
    cls = transformers.CONFIG_MAPPING[fields.pop("model_type")]
    return cls(**fields)


def build_model(cfg: Any, device: Any, dtype: Any) -> Any:
    """``AutoModelForCausalLM.from_config`` allocated directly on ``device`` in ``dtype``, random
    weights from the model's own ``_init_weights`` (normal, std ``initializer_range``: never zeros),
    SDPA attention."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=ATTN_IMPL)
    return model


def experts_impl(model: Any) -> str:
    """The MoE experts implementation transformers picked ('' for dense models)."""
    cfg = model.config
    if not getattr(cfg, "num_local_experts", 0):
        return ""
    return str(getattr(cfg, "_experts_implementation", "") or "")


def param_count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], Any], reps: int, warmup: int, device: Any
               ) -> tuple[float, float, float]:
    """Median, p10, p90 seconds of ``fn()``: CUDA events around each call on a GPU (the device
    waits for the host, so eager dispatch cost is inside), host clock around a call on a CPU."""
    import torch

    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        if getattr(device, "type", str(device)) != "cuda":
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            continue
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e-3)
    return summarize(times)


def warm(fn: Callable[[], Any], n: int, device: Any) -> None:
    """Call ``fn`` ``n`` times and wait for the device (lazy init, cuBLAS heuristics, autotuning)."""
    for _ in range(n):
        fn()
    sync(device)


def reset_peak(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: Any) -> tuple[int, int]:
    """``max_memory_allocated`` and ``max_memory_reserved`` since the last ``reset_peak`` (0 on CPU)."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return 0, 0
    return int(torch.cuda.max_memory_allocated(device)), int(torch.cuda.max_memory_reserved(device))


def free_memory(device: Any) -> None:
    import gc

    import torch

    gc.collect()
    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.empty_cache()


def append_row(path: Path, cols: tuple[str, ...], row: dict[str, Any]) -> None:
    """Append one row (header first if the file is new); floats to 6 significant digits."""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(cols)
        w.writerow([f"{row[c]:.6g}" if isinstance(row[c], float) else row[c] for c in cols])


def note_skip(out: Path, what: str, reason: str) -> None:
    """A point that could not be measured (OOM, capture failure): one line in skipped.txt."""
    line = f"{what}: {reason.splitlines()[0][:300] if reason else '?'}"
    print(f"SKIP {line}", file=sys.stderr)
    with (out / "skipped.txt").open("a") as fh:
        fh.write(line + "\n")


PROFILE_COLUMNS = ("impl", "model", "layers", "mode", "batch", "q_len", "context",
                   "gradient_checkpointing", "kernels", "kernel_time_s", "gemm_kernels",
                   "gemm_time_s", "attn_kernels", "attn_time_s", "other_kernels", "other_time_s")
KERNEL_COLUMNS = ("impl", "model", "layers", "mode", "batch", "q_len", "context",
                  "gradient_checkpointing", "kernel", "calls", "time_s")
_ATTN = ("flash", "fmha", "attention", "attn", "sdpa")
_GEMM = ("gemm", "nvjet", "cutlass", "xmma", "cublas", "matmul", "splitk", "grouped_mm", "_mm_")


def kernel_class(name: str) -> str:
    """'attn', 'gemm' or 'other' from a CUDA kernel's name."""
    low = name.lower()
    if any(k in low for k in _ATTN):
        return "attn"
    if any(k in low for k in _GEMM):
        return "gemm"
    return "other"


def profile_kernels(fn: Callable[[], Any], device: Any) -> dict[str, tuple[int, float]]:
    """Launch count and summed device seconds per kernel name over one ``fn()`` under
    ``torch.profiler`` (CUPTI). Empty on CPU."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    if getattr(device, "type", str(device)) != "cuda":
        fn()
        return {}
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    acc: dict[str, tuple[int, float]] = {}
    for ev in prof.events():
        if getattr(ev, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        if getattr(ev, "is_user_annotation", False) or ev.name.startswith("Optimizer."):
            continue  # record_function ranges mirrored on the GPU timeline, not kernels
        n, t = acc.get(ev.name[:160], (0, 0.0))
        acc[ev.name[:160]] = (n + 1, t + float(ev.time_range.elapsed_us()) * 1e-6)
    return acc


def write_profile(out: Path, key: dict[str, Any], kernels: dict[str, tuple[int, float]],
                  top: int = 12) -> None:
    """One ``hf_profile.csv`` row (kernel count and time, split gemm / attention / other) and the
    ``top`` kernels by time in ``hf_profile_kernels.csv``."""
    counts = {c: 0 for c in ("gemm", "attn", "other")}
    times = {c: 0.0 for c in counts}
    for name, (n, t) in kernels.items():
        counts[kernel_class(name)] += n
        times[kernel_class(name)] += t
    row = dict(key)
    row.update(kernels=sum(n for n, _ in kernels.values()),
               kernel_time_s=float(sum(t for _, t in kernels.values())))
    for c in counts:
        row[f"{c}_kernels"], row[f"{c}_time_s"] = counts[c], float(times[c])
    append_row(out / "hf_profile.csv", PROFILE_COLUMNS, row)
    for name, (n, t) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]:
        append_row(out / "hf_profile_kernels.csv", KERNEL_COLUMNS,
                   {**key, "kernel": name[:120], "calls": n, "time_s": float(t)})


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose kernels and Python code are being timed."""
    vers: dict[str, str] = {}
    for mod in ("torch", "transformers", "triton", "peft", "accelerate"):
        try:
            vers[mod] = str(__import__(mod).__version__)
        except Exception:  # noqa: BLE001 - absent or broken: record it as such
            vers[mod] = "absent"
    return vers


def write_engine_meta(out: Path, script: str, argv: list[str], device: Any, t0: float,
                      extra: dict[str, object]) -> None:
    """meta.json: GPU, driver, CUDA, torch, transformers (and triton/peft/accelerate) versions,
    the invocation and its duration; merged with earlier invocations in the same folder."""
    import torch

    cuda = getattr(device, "type", str(device)) == "cuda"
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    vers = library_versions()
    meta = collect_meta(catalog_gpu=catalog_name_for(name),
                        invocation=f"python3 calibration/bench/engines/{script}.py " + " ".join(argv),
                        torch_version=torch.__version__, cuda_version=str(torch.version.cuda),
                        device_name=name, num_gpus=torch.cuda.device_count() if cuda else 0,
                        extra={"elapsed_s": round(time.monotonic() - t0, 1), "script": script,
                               "transformers": vers["transformers"], "triton": vers["triton"],
                               "peft": vers["peft"], "accelerate": vers["accelerate"],
                               "attn_implementation": ATTN_IMPL, **extra})
    write_meta(out, meta)


def finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def shapes_within(deadline: float, shapes: Iterable[Any]) -> Iterable[Any]:
    """Yield shapes until the wall-clock ``deadline`` (time.monotonic) passes."""
    for s in shapes:
        if time.monotonic() > deadline:
            print(f"budget spent; stopping before {s}", file=sys.stderr)
            return
        yield s
