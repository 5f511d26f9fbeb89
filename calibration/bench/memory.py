"""Memory-bound suites: normalization/activation/rotary/gather/sampling kernels, fused AdamW,
device copies (elementwise.csv), host<->device copies (memcpy.csv), launch cost (launch.csv).

Kernels run as eager PyTorch composes them (``F.rms_norm``, ``F.silu(g) * u``, the
rotate-half rotary form), which is what a plain PyTorch model executes; fused engine
kernels move the same minimum bytes in fewer launches. The ``bytes`` column is that
minimum (each input read once, each output written once), so ``bytes / time_s`` is the
effective bandwidth the cost model scales with.
"""

from __future__ import annotations

import time
from typing import Any

try:
    from fleetsim.calibration.bench.common import summarize
    from fleetsim.calibration.bench.timing import BenchContext, run_rows, sync, time_kernel
except ImportError:
    from common import summarize  # type: ignore[no-redef]
    from timing import BenchContext, run_rows, sync, time_kernel  # type: ignore[no-redef]

HBM_GUESS_BPS = 2.5e12


def elementwise_bytes(kernel: str, rows: int, cols: int) -> int:
    """Minimum bytes moved by one invocation (bf16 activations, fp32 optimizer state)."""
    rc = rows * cols
    table = {
        "rmsnorm": 2 * rc * 2 + cols * 2,
        "layernorm": 2 * rc * 2 + 2 * cols * 2,
        "silu_mul": 3 * rc * 2,            # read gate and up, write product
        "gelu": 2 * rc * 2,
        "rotary": 2 * rc * 2 + 2 * rows * 128 * 2,
        "residual_add": 3 * rc * 2,
        "embedding": 2 * rc * 2 + rows * 8,
        "argmax": rc * 2 + rows * 8,
        "sample": rc * 2 + rows * 8,
        "cross_entropy": rc * 2 + rows * 8 + 4,
        "adamw_fused": 28 * cols,          # fp32 param r/w, grad r, exp_avg r/w, exp_avg_sq r/w
        "copy": 2 * cols,                  # uint8 bytes read + written
    }
    return table[kernel]


def _make_launch(ctx: BenchContext, kernel: str, r: int, c: int) -> tuple[Any, int]:
    import torch
    import torch.nn.functional as F  # noqa: N812

    dev = ctx.device
    nbytes = elementwise_bytes(kernel, r, c)
    sets = ctx.sets_for(nbytes)
    if kernel in ("rmsnorm", "layernorm", "gelu"):
        xs = [g[0] for g in ctx.pool.carve([(r, c)], sets)]
        w = torch.randn(c, device=dev, dtype=torch.bfloat16)
        b = torch.randn(c, device=dev, dtype=torch.bfloat16)
        if kernel == "rmsnorm":
            return (lambda i: F.rms_norm(xs[i % len(xs)], (c,), w, 1e-5)), nbytes
        if kernel == "layernorm":
            return (lambda i: F.layer_norm(xs[i % len(xs)], (c,), w, b, 1e-5)), nbytes
        return (lambda i: F.gelu(xs[i % len(xs)], approximate="tanh")), nbytes
    if kernel == "silu_mul":
        xs = [g[0] for g in ctx.pool.carve([(r, 2 * c)], sets)]
        return (lambda i: F.silu(xs[i % len(xs)][:, :c]) * xs[i % len(xs)][:, c:]), nbytes
    if kernel == "rotary":
        d = 128
        groups = ctx.pool.carve([(r, c // d, d), (r, 1, d), (r, 1, d)], sets)

        def rot(i: int) -> Any:
            x, cos, sin = groups[i % len(groups)]
            x1, x2 = x[..., : d // 2], x[..., d // 2:]
            return x * cos + torch.cat((-x2, x1), dim=-1) * sin
        return rot, nbytes
    if kernel == "residual_add":
        groups = ctx.pool.carve([(r, c), (r, c)], sets)
        return (lambda i: groups[i % len(groups)][0] + groups[i % len(groups)][1]), nbytes
    if kernel == "embedding":
        table = ctx.pool.carve([(128256, c)], 1)[0][0]
        gen = torch.Generator(device=dev)
        gen.manual_seed(r * 7 + c)
        ids = [torch.randint(0, 128256, (r,), device=dev, generator=gen) for _ in range(8)]
        return (lambda i: F.embedding(ids[i % 8], table)), nbytes
    if kernel in ("argmax", "sample", "cross_entropy"):
        xs = [g[0] for g in ctx.pool.carve([(r, c)], sets)]
        tgt = torch.randint(0, c, (r,), device=dev)
        if kernel == "argmax":
            return (lambda i: xs[i % len(xs)].argmax(-1)), nbytes
        if kernel == "cross_entropy":
            return (lambda i: F.cross_entropy(xs[i % len(xs)], tgt)), nbytes

        def sample(i: int) -> Any:
            probs = torch.softmax(xs[i % len(xs)].float() / 0.8, dim=-1)
            race = torch.empty_like(probs).exponential_()
            return (probs / race).argmax(-1)
        return sample, nbytes
    if kernel == "adamw_fused":
        p = torch.nn.Parameter(torch.randn(c, device=dev, dtype=torch.float32))
        p.grad = torch.randn(c, device=dev, dtype=torch.float32)
        opt = torch.optim.AdamW([p], lr=1e-4, fused=dev != "cpu")
        return (lambda i: opt.step()), nbytes
    if kernel == "copy":
        src = torch.randint(1, 255, (c,), device=dev, dtype=torch.uint8)
        dst = torch.empty_like(src)
        return (lambda i: dst.copy_(src)), nbytes
    raise ValueError(f"unknown elementwise kernel {kernel!r}")


def measure_elementwise(ctx: BenchContext, row: dict[str, Any]) -> tuple[float, float, float] | None:
    kernel, r, c = str(row["kernel"]), int(row["rows"]), int(row["cols"])
    launch, nbytes = _make_launch(ctx, kernel, r, c)
    row["bytes"] = nbytes
    est = nbytes / HBM_GUESS_BPS + (8e-6 if kernel in ("rotary", "sample", "silu_mul") else 3e-6)
    if ctx.device == "cpu":
        est *= 100
    return time_kernel(launch, est_s=est, device=ctx.device, target_s=0.01)


def run_elementwise(ctx: BenchContext, rows: list[dict[str, Any]]) -> int:
    for r in rows:
        r.setdefault("bytes", elementwise_bytes(str(r["kernel"]), int(r["rows"]), int(r["cols"])))
    return run_rows(ctx, "elementwise", rows, lambda r: measure_elementwise(ctx, r), "elementwise")


def measure_memcpy(ctx: BenchContext, row: dict[str, Any]) -> tuple[float, float, float] | None:
    """Host wall clock around copy + synchronize: what a blocking transfer costs end to end."""
    import torch

    n, pinned, d2h = int(row["bytes"]), bool(row["pinned"]), row["direction"] == "d2h"
    if ctx.device == "cpu" and pinned:
        return None
    host = torch.randint(1, 255, (n,), dtype=torch.uint8, pin_memory=pinned)
    dev = torch.randint(1, 255, (n,), dtype=torch.uint8, device=ctx.device)
    est = n / (20e9 if pinned else 6e9) + 10e-6
    reps = int(min(20, max(5, 0.05 / est)))
    times = []
    for j in range(reps + 2):
        sync(ctx.device)
        t0 = time.perf_counter()
        if d2h:
            host.copy_(dev, non_blocking=pinned)
        else:
            dev.copy_(host, non_blocking=pinned)
        sync(ctx.device)
        if j >= 2:
            times.append(time.perf_counter() - t0)
    return summarize(times)


def run_memcpy(ctx: BenchContext, rows: list[dict[str, Any]]) -> int:
    return run_rows(ctx, "memcpy", rows, lambda r: measure_memcpy(ctx, r), "memcpy")


def measure_launch(ctx: BenchContext, row: dict[str, Any]) -> float:
    """Per-kernel time of ``kernels`` back-to-back tiny launches, eager or one graph replay.

    Eager: host wall clock over the loop plus a final synchronize, divided by the count
    (the launch rate a Python host sustains). Graph: one replay of a captured graph of the
    same launches, divided likewise.
    """
    import torch

    k = int(row["kernels"])
    x = torch.ones(1, device=ctx.device)
    graph = None
    if row["mode"] == "graph":
        if ctx.device == "cpu":
            return float("nan")
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                x.add_(1.0)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(k):
                x.add_(1.0)
    times = []
    for j in range(8):
        sync(ctx.device)
        t0 = time.perf_counter()
        if graph is not None:
            graph.replay()
        else:
            for _ in range(k):
                x.add_(1.0)
        sync(ctx.device)
        if j >= 2:
            times.append((time.perf_counter() - t0) / k)
    return summarize(times)[0]


def run_launch(ctx: BenchContext, rows: list[dict[str, Any]]) -> int:
    n = 0
    for row in rows:
        if ctx.writer.done("launch", row) or ctx.out_of_time():
            continue
        t = measure_launch(ctx, row)
        if t == t:  # not NaN
            ctx.writer.write("launch", {**row, "time_s": t})
            n += 1
    return n
