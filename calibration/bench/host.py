"""Host dispatch cost per PyTorch call type, and kernel slowdown under sustained load.

``host_dispatch.csv`` (``run_host_dispatch``): the host time one eager PyTorch call takes
to return (argument parsing, dispatcher, allocator, kernel launch), per call type of the
reference decoder and the training script. The GPU is held busy with
``torch.cuda._sleep`` while the host issues ``n`` calls back to back, so the device is
never the bottleneck and the host loop's wall time over ``n`` is the dispatch cost. The
tensors are small (16 tokens), shaped as in ``torch_models.Decoder`` (llama-3.1-8b,
GPT-2-XL sizes). Composite entries (``rope``, ``silu_mul``) are the decoder's multi-call
expressions timed as one unit; ``noop`` is the Python loop and closure call alone.

``sustained.csv`` (``run_sustained``): a kernel class timed the harness's way
(``time_kernel``: a ~15 ms burst after an idle GPU) and then run back to back for
``duration_s``; ``sustained_s`` is the median per-kernel time over the second half of the
run (``early_s``: over its first 0.5 s), with the SM clock (median of 50 ms NVML samples) and board power (energy counter)
of that window. Under a power limit the SM clock falls once the board heats to it, so a
compute-bound kernel slows down; HBM-bound kernels hardly do.
"""

from __future__ import annotations

import threading
import time
from typing import Any

try:
    from fleetsim.calibration.bench.common import Progress, quantile, summarize
    from fleetsim.calibration.bench.timing import SLEEP_CYCLES_PER_S, BenchContext, time_kernel
except ImportError:
    from common import Progress, quantile, summarize  # type: ignore[no-redef]
    from timing import SLEEP_CYCLES_PER_S, BenchContext, time_kernel  # type: ignore[no-redef]

HOST_CALLS = (
    "noop", "linear", "linear_bias", "sdpa_prefill_gqa", "sdpa_prefill", "sdpa_decode_gqa",
    "rms_norm", "layer_norm", "silu", "mul", "silu_mul", "gelu", "neg", "cat", "rope", "add",
    "index", "arange", "view", "transpose", "reshape_copy", "contiguous", "split", "chunk",
    "slice", "copy_", "permute", "argmax", "linear_autograd", "linear_backward",
)
"""Call types of host_dispatch.csv (see ``_calls`` for the exact expressions)."""

SUSTAINED_CLASSES = (
    "gemm_8192", "gemm_m2048_w1", "gemm_m512_qkv", "gemm_m64_w1", "attention_prefill",
    "attention_decode", "memory_copy",
)
"""Kernel classes of sustained.csv, from compute-bound to HBM-bound (``_sustained_workload``)."""


def _calls(dev: str) -> dict[str, Any]:
    """One zero-argument callable per call type, on small decoder-shaped bf16 tensors."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    bf = torch.bfloat16
    g = torch.Generator(device=dev)
    g.manual_seed(0)

    def r(*shape: int, grad: bool = False) -> Any:
        return torch.randn(*shape, device=dev, dtype=bf, generator=g).requires_grad_(grad)

    t, hid, d = 16, 4096, 128
    x = r(1, t, hid)
    w_qkv, w_g = r(6144, hid), r(1600 * 3, 1600)
    xg, bg = r(1, t, 1600), r(1600 * 3)
    q, k = r(1, 32, t, d), r(1, 8, t, d)
    qm = r(1, 25, t, 64)
    qd, kc = r(4, 32, 1, d), r(4, 8, 64, d)
    nw, nb = r(hid), r(hid)
    gu = r(1, t, 2 * 1024)
    gate, up = gu[..., :1024], gu[..., 1024:]
    cos, sin = r(t, d), r(t, d)
    table = r(128256, hid)
    tokens = torch.randint(0, 128256, (1, t), device=dev, generator=g)
    qkv = r(1, t, 6144)
    qt = q.transpose(1, 2)
    cache = r(1, 8, 64, d)
    logits = r(1, 50257)
    xa, wa = r(t, hid, grad=True), r(hid, hid, grad=True)

    def rope() -> Any:
        half = q.shape[-1] // 2
        rot = torch.cat((-q[..., half:], q[..., :half]), dim=-1)
        return q * cos + rot * sin

    return {
        "noop": lambda: None,
        "linear": lambda: F.linear(x, w_qkv),
        "linear_bias": lambda: F.linear(xg, w_g, bg),
        "sdpa_prefill_gqa": lambda: F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True),
        "sdpa_prefill": lambda: F.scaled_dot_product_attention(qm, qm, qm, is_causal=True, enable_gqa=False),
        "sdpa_decode_gqa": lambda: F.scaled_dot_product_attention(qd, kc, kc, enable_gqa=True),
        "rms_norm": lambda: F.rms_norm(x, (hid,), nw, 1e-5),
        "layer_norm": lambda: F.layer_norm(x, (hid,), nw, nb, 1e-5),
        "silu": lambda: F.silu(gate),
        "mul": lambda: gate * up,
        "silu_mul": lambda: F.silu(gate) * up,
        "gelu": lambda: F.gelu(gate, approximate="tanh"),
        "neg": lambda: -q,
        "cat": lambda: torch.cat((q, q), dim=-1),
        "rope": rope,
        "add": lambda: x + x,
        "index": lambda: table[tokens],
        "arange": lambda: torch.arange(t, device=dev),
        "view": lambda: qkv.view(1, t, 48, d),
        "transpose": lambda: q.transpose(1, 2),
        "reshape_copy": lambda: qt.reshape(1, t, 32 * d),
        "contiguous": lambda: qt.contiguous(),
        "split": lambda: qkv.split([4096, 1024, 1024], dim=-1),
        "chunk": lambda: gu.chunk(2, dim=-1),
        "slice": lambda: cache[:, :, 8:8 + t],
        "copy_": lambda: cache[:, :, 8:8 + t].copy_(k),
        "permute": lambda: qkv.permute(1, 0, 2),
        "argmax": lambda: logits.argmax(-1),
        "linear_autograd": lambda: F.linear(xa, wa),
        "linear_backward": (xa, wa),
    }


def _hold_gpu(dev: str, seconds: float) -> None:
    import torch

    if dev != "cpu":
        torch.cuda._sleep(int(min(seconds, 1.0) * SLEEP_CYCLES_PER_S))


def _sync(dev: str) -> None:
    import torch

    if dev != "cpu":
        torch.cuda.synchronize()


def measure_host_call(ctx: BenchContext, name: str, fn: Any, *, n: int = 100,
                      reps: int = 15) -> tuple[float, float, float]:
    """Host seconds per call of ``fn`` issued while the GPU is held busy: (median, p10, p90)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    dev = ctx.device
    if name == "linear_backward":
        xa, wa = fn
        grad = torch.ones(xa.shape[0], wa.shape[0], device=xa.device, dtype=xa.dtype)
        times = []
        for rep in range(reps + 2):
            outs = [F.linear(xa, wa) for _ in range(n)]
            _sync(dev)
            _hold_gpu(dev, n * 150e-6)
            t0 = time.perf_counter()
            for y in outs:
                y.backward(grad)
            t1 = time.perf_counter()
            _sync(dev)
            xa.grad = wa.grad = None
            del outs
            if rep >= 2:
                times.append((t1 - t0) / n)
        return summarize(times)
    for _ in range(20):
        fn()
    _sync(dev)
    times = []
    for _ in range(reps):
        _hold_gpu(dev, n * 150e-6)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t1 = time.perf_counter()
        _sync(dev)
        times.append((t1 - t0) / n)
    return summarize(times)


def run_host_dispatch(ctx: BenchContext, calls: tuple[str, ...] = HOST_CALLS) -> int:
    """Measure every call type not yet in host_dispatch.csv; returns rows written."""
    table = _calls(ctx.device)
    todo = [c for c in calls if not ctx.writer.done("host_dispatch", {"call": c})]
    prog = Progress("host_dispatch", len(todo))
    n = 0
    for c in todo:
        if ctx.out_of_time():
            break
        try:
            med, p10, p90 = measure_host_call(ctx, c, table[c])
        except (RuntimeError, ValueError, TypeError) as exc:
            ctx.skipped.append(f"host_dispatch {c}: {type(exc).__name__}: {str(exc)[:120]}")
            prog.step()
            continue
        ctx.writer.write("host_dispatch", {"call": c, "host_s": med, "p10_s": p10, "p90_s": p90})
        n += 1
        prog.step()
    return n


def _sustained_workload(ctx: BenchContext, cls: str) -> tuple[Any, float, float, str]:
    """(launch(i), flops, bytes, shape) of one kernel of ``cls``, operands rotated past L2."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    small = ctx.device == "cpu"
    gemms = {"gemm_8192": (8192, 8192, 8192), "gemm_m2048_w1": (2048, 28672, 4096),
             "gemm_m512_qkv": (512, 6144, 4096), "gemm_m64_w1": (64, 28672, 4096)}
    if cls in gemms:
        m, nn_, k = (64, 64, 64) if small else gemms[cls]
        nbytes = 2 * (m * k + nn_ * k + m * nn_)
        sets = ctx.pool.carve([(m, k), (nn_, k)], ctx.sets_for(nbytes))
        return (lambda i: torch.mm(sets[i % len(sets)][0], sets[i % len(sets)][1].t()),
                2.0 * m * nn_ * k, float(nbytes), f"{m}x{nn_}x{k}")
    if cls == "attention_prefill":
        b, s = (1, 64) if small else (4, 1024)
        sets = ctx.pool.carve([(b, 32, s, 128), (b, 8, s, 128), (b, 8, s, 128)], 2)
        fl = 4.0 * b * 32 * s * s * 128 / 2
        by = 2.0 * b * s * 128 * (32 * 2 + 8 * 2)
        def prefill(i: int) -> Any:
            q, k, v = sets[i % len(sets)]
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return prefill, fl, by, f"b{b} s{s} h32/8 d128"
    if cls == "attention_decode":
        b, s = (2, 64) if small else (64, 4096)
        by = 2.0 * b * s * 8 * 128 * 2
        sets = ctx.pool.carve([(b, 32, 1, 128), (b, 8, s, 128), (b, 8, s, 128)], ctx.sets_for(int(by)))
        def decode(i: int) -> Any:
            q, k, v = sets[i % len(sets)]
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return decode, 4.0 * b * 32 * s * 128, by, f"b{b} kv{s} h32/8 d128"
    if cls == "memory_copy":
        nb = (1 << 20) if small else (256 << 20)
        src = ctx.pool.data[: nb // 2]
        dst = torch.empty_like(src)
        return (lambda i: dst.copy_(src)), 0.0, 2.0 * nb, f"{nb} B"
    raise ValueError(f"unknown sustained class {cls!r}")


class _Sampler:
    """SM clock and power every 50 ms through NVML (no-op without pynvml or on CPU)."""

    def __init__(self, dev: str) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self.h: Any = None
        self._stop = threading.Event()
        if dev == "cpu":
            return
        try:
            import pynvml
            import torch

            pynvml.nvmlInit()
            self.nv = pynvml
            self.h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        except Exception:  # noqa: BLE001 - NVML missing or refused: clocks stay NaN
            self.h = None

    def energy_mj(self) -> float:
        return float(self.nv.nvmlDeviceGetTotalEnergyConsumption(self.h)) if self.h else float("nan")

    def _run(self) -> None:
        while not self._stop.is_set():
            p = self.nv.nvmlDeviceGetPowerUsage(self.h) / 1000.0
            clk = float(self.nv.nvmlDeviceGetClockInfo(self.h, self.nv.NVML_CLOCK_SM))
            self.samples.append((time.perf_counter(), p, clk))
            time.sleep(0.05)

    def __enter__(self) -> _Sampler:
        if self.h is not None:
            self._th = threading.Thread(target=self._run, daemon=True)
            self._th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.h is not None:
            self._th.join()

    def clock_between(self, t0: float, t1: float) -> float:
        xs = [s[2] for s in self.samples if t0 <= s[0] <= t1]
        return quantile(xs, 0.5) if xs else float("nan")


def measure_sustained(ctx: BenchContext, cls: str, duration_s: float = 8.0) -> dict[str, Any]:
    """Burst (harness) time and steady-state time of one kernel class under continuous load."""
    import torch

    dev = ctx.device
    launch, flops, nbytes, shape = _sustained_workload(ctx, cls)
    est = max(flops / 700e12, nbytes / 3.0e12, 5e-6)
    time.sleep(0.0 if dev == "cpu" else 1.0)  # let the board cool from the previous class
    burst, _, _ = time_kernel(launch, est_s=est, device=dev)
    per_chunk = max(1, int(0.02 / burst))
    chunks: list[tuple[float, Any, Any]] = []
    counter = 0
    with _Sampler(dev) as smp:
        t_start = time.perf_counter()
        e0 = t_e0 = None
        pending: list[Any] = []
        while time.perf_counter() - t_start < duration_s:
            if dev == "cpu":
                t0 = time.perf_counter()
                for _ in range(per_chunk):
                    launch(counter)
                    counter += 1
                chunks.append((time.perf_counter() - t_start, t0, time.perf_counter()))
                continue
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(per_chunk):
                launch(counter)
                counter += 1
            b.record()
            chunks.append((time.perf_counter() - t_start, a, b))
            pending.append(b)
            if len(pending) > 2:  # keep two chunks queued: the GPU never waits for the host
                pending.pop(0).synchronize()
            if e0 is None and time.perf_counter() - t_start >= duration_s / 2:
                e0, t_e0 = smp.energy_mj(), time.perf_counter()
        _sync(dev)
        t_e1, e1 = time.perf_counter(), smp.energy_mj()
    late = [c for c in chunks if c[0] >= duration_s / 2] or chunks
    if dev == "cpu":
        per = [(c2 - c1) / per_chunk for _, c1, c2 in late]
    else:
        per = [a.elapsed_time(b) * 1e-3 / per_chunk for _, a, b in late]
    sustained = quantile(per, 0.5)
    early = [c for c in chunks if c[0] < 0.5] or chunks[:1]
    if dev == "cpu":
        early_s = quantile([(c2 - c1) / per_chunk for _, c1, c2 in early], 0.5)
    else:
        early_s = quantile([a.elapsed_time(b) * 1e-3 / per_chunk for _, a, b in early], 0.5)
    power = ((e1 - e0) / 1000.0 / (t_e1 - t_e0)) if e0 is not None and t_e0 else float("nan")
    clk = smp.clock_between(t_e0 or t_start, t_e1)
    return {"op_class": cls, "shape": shape, "flops": flops, "bytes": nbytes, "burst_s": burst,
            "early_s": early_s, "sustained_s": sustained, "ratio": sustained / burst, "sm_clock_mhz": clk,
            "power_w": power, "duration_s": time.perf_counter() - t_start}


def run_sustained(ctx: BenchContext, classes: tuple[str, ...] = SUSTAINED_CLASSES,
                  duration_s: float = 8.0) -> int:
    n = 0
    for cls in classes:
        if ctx.writer.done("sustained", {"op_class": cls}) or ctx.out_of_time():
            continue
        try:
            row = measure_sustained(ctx, cls, 0.3 if ctx.device == "cpu" else duration_s)
        except (RuntimeError, ValueError, MemoryError) as exc:
            ctx.skipped.append(f"sustained {cls}: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        ctx.writer.write("sustained", row)
        ctx.log(f"[sustained] {cls}: burst {row['burst_s'] * 1e6:.1f} us, sustained "
                f"{row['sustained_s'] * 1e6:.1f} us (x{row['ratio']:.3f}), SM {row['sm_clock_mhz']:.0f} MHz, "
                f"{row['power_w']:.0f} W")
        n += 1
    return n
