"""Compute-bound suites: dense GEMMs (bf16/fp16/tf32/fp8), SDPA attention, MoE expert GEMMs.

GEMMs are timed as a linear layer computes them, ``y[M, N] = x[M, K] @ W[N, K]^T`` (the
"TN" layout cuBLAS gets from ``torch.nn.functional.linear``); fp8 uses
``torch._scaled_mm`` with per-tensor float32 scales and a bf16 output, as fp8 serving
engines do on Hopper. Attention goes through ``scaled_dot_product_attention`` with
torch's own backend choice (flash / cuDNN / memory-efficient), ``enable_gqa=True`` for
grouped KV heads so K and V are read once per KV head as a real engine's kernel does.
"""

from __future__ import annotations

import math
from typing import Any

try:
    from fleetsim.calibration.bench.timing import BenchContext, run_rows, time_kernel
except ImportError:
    from timing import BenchContext, run_rows, time_kernel  # type: ignore[no-redef]

PEAK_GUESS_FLOPS = {"bf16": 6.5e14, "fp16": 6.5e14, "tf32": 3.2e14, "fp8": 1.2e15}
HBM_GUESS_BPS = 3.0e12
ELEM_BYTES = {"bf16": 2, "fp16": 2, "tf32": 4, "fp8": 1}


def _torch_dtype(name: str) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "tf32": torch.float32,
            "fp8": torch.float8_e4m3fn}[name]


def roofline_guess_s(flops: float, nbytes: float, dtype: str = "bf16") -> float:
    """A-priori kernel time used only to size repetitions (not a result)."""
    return max(flops / PEAK_GUESS_FLOPS[dtype], nbytes / HBM_GUESS_BPS, 3e-6)


def _time(ctx: BenchContext, launch: Any, est_s: float) -> tuple[float, float, float]:
    """``time_kernel`` with the suites' common settings: the a-priori estimate scaled 1000x on
    a CPU, 15 ms of launches per point (5 ms with ``--quick``)."""
    if ctx.device == "cpu":
        est_s *= 1000
    return time_kernel(launch, est_s=est_s, device=ctx.device, target_s=0.015 if not ctx.quick else 0.005)


def measure_gemm(ctx: BenchContext, row: dict[str, Any]) -> tuple[float, float, float] | None:
    import torch

    dt = str(row["dtype"])
    m, n, k = int(row["m"]), int(row["n"]), int(row["k"])
    if dt == "fp8" and (ctx.device == "cpu" or not hasattr(torch, "_scaled_mm")):
        return None
    eb = ELEM_BYTES[dt]
    set_bytes = (m * k + n * k) * eb
    sets = ctx.sets_for(set_bytes)
    tdt = _torch_dtype(dt)
    flat = None
    if dt != "bf16":
        need = sets * (m * k + n * k)
        flat = ctx.pool.as_dtype(tdt, max(need, min(ctx.pool.numel, 1_600_000_000)))
    groups = ctx.pool.carve([(m, k), (n, k)], sets, flat=flat)
    torch.backends.cuda.matmul.allow_tf32 = dt == "tf32"
    out_dt = torch.bfloat16 if dt == "fp8" else tdt
    c = torch.empty((m, n), dtype=out_dt, device=ctx.device)
    if dt == "fp8":
        one = torch.ones((), dtype=torch.float32, device=ctx.device)

        def launch(i: int) -> Any:
            a, w = groups[i % len(groups)]
            return torch._scaled_mm(a, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    else:
        def launch(i: int) -> Any:
            a, w = groups[i % len(groups)]
            return torch.mm(a, w.t(), out=c)
    est = roofline_guess_s(2.0 * m * n * k, set_bytes + m * n * 2, dt)
    return _time(ctx, launch, est)


def run_gemm(ctx: BenchContext, rows: list[dict[str, Any]]) -> int:
    return run_rows(ctx, "gemm", rows, lambda r: measure_gemm(ctx, r), "gemm")


def measure_gemm_layout(ctx: BenchContext, row: dict[str, Any]) -> tuple[float, float, float] | None:
    """A bf16/fp16 GEMM (m, n, k) in a backward layout: ``nn`` = ``A[m, k] @ B[k, n]`` (both
    row-major: the input gradient ``dy @ W``), ``nt`` = ``A[k, n]^T @ B[k, m]`` giving
    [n, m] (the weight gradient ``dy^T @ x``, k = tokens)."""
    import torch

    dt = str(row["dtype"])
    if dt not in ("bf16", "fp16"):
        return None
    m, n, k = int(row["m"]), int(row["n"]), int(row["k"])
    layout = str(row["layout"])
    set_bytes = (m * k + n * k) * 2
    if layout == "nn":
        groups = ctx.pool.carve([(m, k), (k, n)], ctx.sets_for(set_bytes))

        def launch(i: int) -> Any:
            a, b = groups[i % len(groups)]
            return torch.mm(a, b)
    elif layout == "nt":
        groups = ctx.pool.carve([(k, n), (k, m)], ctx.sets_for(set_bytes))

        def launch(i: int) -> Any:
            dy, x = groups[i % len(groups)]
            return torch.mm(dy.t(), x)
    else:
        raise ValueError(f"unknown GEMM layout {layout!r}")
    est = roofline_guess_s(2.0 * m * n * k, set_bytes + m * n * 2, dt)
    return _time(ctx, launch, est)


def run_gemm_layout(ctx: BenchContext, rows: list[dict[str, Any]]) -> int:
    return run_rows(ctx, "gemm_layout", rows, lambda r: measure_gemm_layout(ctx, r), "gemm_layout")


def _sdpa_call(q: Any, k: Any, v: Any, *, causal: bool, gqa: bool, mask: Any) -> Any:
    import torch.nn.functional as F  # noqa: N812

    if mask is not None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)


def attention_flops(row: dict[str, Any]) -> float:
    """QK^T and PV multiply-adds; a causal prefill does about half (q = kv)."""
    b, h, q, kv = int(row["batch"]), int(row["num_heads"]), int(row["q_len"]), int(row["kv_len"])
    d, dv = int(row["head_dim"]), int(row["v_head_dim"])
    full = 2.0 * b * h * q * kv * (d + dv)
    if row["phase"] == "prefill":
        return full / 2
    if row["phase"] == "backward":  # dQ, dK, dV, dP and the recomputed S: 2.5x the forward
        return 2.5 * full / 2
    if row["phase"] == "chunked_prefill":
        return full * (1 - q / (2 * kv))
    return full


def measure_attention(ctx: BenchContext, row: dict[str, Any]) -> tuple[float, float, float] | None:
    import torch

    b, h, hkv = int(row["batch"]), int(row["num_heads"]), int(row["num_kv_heads"])
    q_len, kv_len = int(row["q_len"]), int(row["kv_len"])
    d, dv = int(row["head_dim"]), int(row["v_head_dim"])
    shapes = [(b, h, q_len, d), (b, hkv, kv_len, d), (b, hkv, kv_len, dv)]
    set_bytes = 2 * sum(math.prod(s) for s in shapes)
    groups = ctx.pool.carve(shapes, ctx.sets_for(set_bytes))
    mask = None
    if row["phase"] == "chunked_prefill":
        from torch.nn.attention.bias import causal_lower_right

        mask = causal_lower_right(q_len, kv_len)
    causal = row["phase"] in ("prefill", "backward")
    gqa = hkv != h
    if row["phase"] == "backward":
        launch = _backward_launcher(groups, causal=causal, gqa=gqa)
    else:
        q0, k0, v0 = groups[0]
        _sdpa_call(q0, k0, v0, causal=causal, gqa=gqa, mask=mask)  # raises if unsupported

        def launch(i: int) -> Any:
            q, k, v = groups[i % len(groups)]
            return _sdpa_call(q, k, v, causal=causal, gqa=gqa, mask=mask)

    est = roofline_guess_s(attention_flops(row) * 1.6, set_bytes + b * h * q_len * dv * 2)
    del torch
    return _time(ctx, launch, est)


def _backward_launcher(groups: list[Any], *, causal: bool, gqa: bool) -> Any:
    """``launch(i)`` running only SDPA's backward kernels: the forward of each operand set is
    recorded once (graph retained), each launch asks autograd for dQ, dK, dV."""
    import torch

    graphs = []
    for q, k, v in groups[:2]:  # two sets alternate: the saved tensors already double memory
        q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
        out = _sdpa_call(q, k, v, causal=causal, gqa=gqa, mask=None)
        graphs.append((out, (q, k, v), torch.randn_like(out)))

    def launch(i: int) -> Any:
        out, inputs, grad = graphs[i % len(graphs)]
        return torch.autograd.grad(out, inputs, grad, retain_graph=True)
    launch(0)  # raises if unsupported
    return launch


def run_attention(ctx: BenchContext, rows: list[dict[str, Any]]) -> int:
    return run_rows(ctx, "attention", rows, lambda r: measure_attention(ctx, r), "attention")


def _route_counts(tokens: int, experts: int, top_k: int, seed: int) -> list[int]:
    """Tokens per expert for uniform random top-k routing (each token picks top_k distinct experts)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    picks = np.argsort(rng.random((tokens, experts)), axis=1)[:, :top_k]
    counts = np.bincount(picks.ravel(), minlength=experts)
    return [int(c) for c in counts]


def measure_moe(ctx: BenchContext, row: dict[str, Any]) -> tuple[float, float, float] | None:
    import torch

    t, e, topk = int(row["tokens"]), int(row["experts"]), int(row["top_k"])
    impl = str(row["impl"])
    if impl == "routing":
        hidden = 4096
        logits = torch.randn(t, e, device=ctx.device, dtype=torch.bfloat16)
        x = ctx.pool.carve([(t, hidden)], 1)[0][0]

        def launch_r(i: int) -> Any:
            probs = torch.softmax(logits.float(), dim=-1)
            w, idx = torch.topk(probs, topk, dim=-1)
            order = torch.argsort(idx.flatten(), stable=True)
            return x.index_select(0, order // topk), w

        est = 40e-6 + t * hidden * 2 * topk / HBM_GUESS_BPS
        return time_kernel(launch_r, est_s=est * (1000 if ctx.device == "cpu" else 1),
                           device=ctx.device, target_s=0.01)
    n, k = int(row["n"]), int(row["k"])
    counts = _route_counts(t, e, topk, seed=t * 131 + e)
    rows_total = sum(counts)
    x, w = ctx.pool.carve([(rows_total, k), (e, n, k)], 1)[0]
    if impl == "grouped_mm":
        if ctx.device == "cpu" or not hasattr(torch, "_grouped_mm"):
            return None
        offs = torch.tensor(counts, device=ctx.device, dtype=torch.int32).cumsum(0).to(torch.int32)
        wt = w.transpose(-2, -1)

        def launch(i: int) -> Any:
            return torch._grouped_mm(x, wt, offs=offs, out_dtype=torch.bfloat16)
    else:
        bounds = []
        start = 0
        for j, c in enumerate(counts):
            if c:
                bounds.append((j, start, start + c))
            start += c

        def launch(i: int) -> Any:
            return [torch.mm(x[s:s2], w[j].t()) for j, s, s2 in bounds]
    launch(0)
    active = sum(1 for c in counts if c)
    est = roofline_guess_s(2.0 * rows_total * n * k, 2 * (active * n * k + rows_total * (n + k)))
    if impl == "loop":
        est += 5e-6 * active
    return _time(ctx, launch, est)


def run_moe(ctx: BenchContext, rows: list[dict[str, Any]]) -> int:
    return run_rows(ctx, "moe", rows, lambda r: measure_moe(ctx, r), "moe")
