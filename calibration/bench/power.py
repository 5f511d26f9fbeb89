"""Board power per operation class, read through NVML while a ~2 s loop of that class runs.

Mean power is the board energy counter's difference over the loop's measured window
divided by its length (``nvmlDeviceGetTotalEnergyConsumption``, millijoules), which is
exact where the instantaneous reading is a 1-second moving average; the p90 and the SM
clock come from samples every 20 ms. Clocks and power limits are only read, never set.
"""

from __future__ import annotations

import threading
import time
from typing import Any

try:
    from fleetsim.calibration.bench.common import quantile
    from fleetsim.calibration.bench.timing import BenchContext
except ImportError:
    from common import quantile  # type: ignore[no-redef]
    from timing import BenchContext  # type: ignore[no-redef]


def _workload(ctx: BenchContext, op_class: str) -> Any:
    import torch
    import torch.nn.functional as F  # noqa: N812

    dev = ctx.device
    if op_class == "idle":
        return None
    if op_class in ("gemm_bf16", "gemm_fp8"):
        a, w = ctx.pool.carve([(8192, 8192), (8192, 8192)], 1)[0]
        if op_class == "gemm_fp8":
            a8, w8 = a.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
            one = torch.ones((), device=dev)
            return lambda: torch._scaled_mm(a8, w8.t(), scale_a=one, scale_b=one,
                                            out_dtype=torch.bfloat16)
        return lambda: torch.mm(a, w.t())
    if op_class == "attention_prefill":
        q, k, v = ctx.pool.carve([(4, 32, 4096, 128), (4, 8, 4096, 128), (4, 8, 4096, 128)], 1)[0]
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    if op_class == "attention_decode":
        q, k, v = ctx.pool.carve([(64, 32, 1, 128), (64, 8, 8192, 128), (64, 8, 8192, 128)], 1)[0]
        return lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    if op_class == "memory_copy":
        src = ctx.pool.data[: 1 << 30]
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)
    raise ValueError(f"unknown power class {op_class!r}")


def measure_power(ctx: BenchContext, op_class: str, *, duration_s: float = 2.0,
                  settle_s: float = 0.7) -> dict[str, Any] | None:
    import torch

    try:
        import pynvml
    except ImportError:
        ctx.skipped.append("power: pynvml (nvidia-ml-py) not importable")
        return None
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    fn = _workload(ctx, op_class)
    samples: list[tuple[float, float, float]] = []
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            p = pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0
            clk = pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)
            samples.append((time.perf_counter(), p, float(clk)))
            time.sleep(0.02)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    t_start = time.perf_counter()
    window: list[tuple[float, float]] = []
    while True:
        now = time.perf_counter()
        if not window and now - t_start >= settle_s:
            torch.cuda.synchronize()
            window.append((time.perf_counter(), pynvml.nvmlDeviceGetTotalEnergyConsumption(h)))
        if now - t_start >= settle_s + duration_s:
            break
        if fn is None:
            time.sleep(0.05)
        else:
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    window.append((time.perf_counter(), pynvml.nvmlDeviceGetTotalEnergyConsumption(h)))
    stop.set()
    th.join()
    (t0, e0), (t1, e1) = window[0], window[-1]
    in_win = [s for s in samples if t0 <= s[0] <= t1] or samples
    mean_w = (e1 - e0) / 1000.0 / (t1 - t0)
    return {"op_class": op_class, "power_w_mean": mean_w,
            "power_w_p90": quantile([s[1] for s in in_win], 0.9),
            "sm_clock_mhz": quantile([s[2] for s in in_win], 0.5), "duration_s": t1 - t0}


def run_power(ctx: BenchContext, classes: tuple[str, ...]) -> int:
    if ctx.device == "cpu":
        return 0
    n = 0
    for c in classes:
        row = {"op_class": c}
        if ctx.writer.done("power", row) or ctx.out_of_time():
            continue
        try:
            res = measure_power(ctx, c)
        except Exception as exc:  # noqa: BLE001 - NVML errors vary by driver; skip the class
            ctx.skipped.append(f"power {c}: {type(exc).__name__}: {exc}")
            res = None
        if res is not None:
            ctx.writer.write("power", res)
            n += 1
            ctx.log(f"[power] {c}: {res['power_w_mean']:.0f} W mean, SM {res['sm_clock_mhz']:.0f} MHz")
    return n
