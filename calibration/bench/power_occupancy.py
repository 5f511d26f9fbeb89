"""Board power and energy per call by operator class and occupancy, read through NVML.

Each workload (idle; bf16 GEMMs from 8192^3 down to 1 x 4096 x 4096; an fp8 GEMM; copies and
an elementwise add of several sizes; SDPA prefill and GQA decode; a CUDA graph of a
llama-3.1-8b-shaped stack of decode GEMMs; a large GEMM at 25/50/75 % duty cycle) runs back to
back for ``--window-s`` seconds after ``--warm-s`` seconds of the same work. GPU workloads are
captured in a CUDA graph of as many calls as fill ~2 ms and replayed two at a time in flight, so
even a 5 us kernel keeps the GPU busy without launch gaps. A sampler thread reads board power,
SM and memory clocks, utilization and temperature every ``--sample-s`` seconds.

Per row: ``power_w_mean`` is the board energy counter's rate over the window
(``nvmlDeviceGetTotalEnergyConsumption``, mJ; the least-squares slope over the samples where the
counter ticked, about every 100 ms on the H200), the primary figure; ``energy_j_per_call`` is
that power times the window over the calls completed in it;
``time_s`` / ``p10_s`` / ``p90_s`` are per-call GPU times from CUDA events around each replay;
``busy_fraction`` is the events' summed time over the window (1 for back-to-back work).
``power_w_sampled_mean`` / ``power_w_p90`` come from ``nvmlDeviceGetPowerUsage`` samples and
``power_w_instant_p10`` / ``_p90`` from the ``NVML_FI_DEV_POWER_INSTANT`` field where the driver
has it. Clocks and power limits are only read, never set.

``--device cpu --smoke`` runs every code path on tiny shapes with host timing and no NVML (the
power columns stay empty); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    from fleetsim.calibration.bench.bench_io import append_row, note_skip, write_script_meta
    from fleetsim.calibration.bench.common import quantile, rotation_count, summarize
    from fleetsim.calibration.bench.nvml_sampler import Sampler, write_samples
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_io import append_row, note_skip, write_script_meta  # type: ignore[no-redef]
    from common import quantile, rotation_count, summarize  # type: ignore[no-redef]
    from nvml_sampler import Sampler, write_samples  # type: ignore[no-redef]

COLUMNS = ("workload", "shape", "dtype", "pass", "duty", "period_s", "flops", "bytes", "calls",
           "window_s", "time_s", "p10_s", "p90_s", "flop_per_s", "bytes_per_s", "busy_fraction",
           "power_w_mean", "power_w_sampled_mean", "power_w_p90", "power_w_instant_p10",
           "power_w_instant_p90", "energy_j_per_call", "sm_clock_mhz", "mem_clock_mhz",
           "gpu_util_pct", "temp_c", "samples")
"""Columns of power_occupancy.csv. ``flops``/``bytes`` are per call (minimum HBM traffic:
each operand read once, each output written once); empty cells were not measured."""

LLAMA8B_DECODE_GEMMS = ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336))
"""(N, K) of one llama-3.1-8b layer's linear layers at TP 1: fused QKV, output projection,
fused gate+up, down."""
L2_BYTES_DEFAULT = 50 << 20


def gemm_flops_bytes(m: int, n: int, k: int, in_bytes: int = 2, out_bytes: int = 2) -> tuple[int, int]:
    """FLOPs and minimum HBM bytes of ``y[m,n] = x[m,k] W[n,k]^T``."""
    return 2 * m * n * k, in_bytes * (m * k + n * k) + out_bytes * m * n


def sdpa_flops_bytes(batch: int, q_len: int, kv_len: int, heads: int, kv_heads: int, dim: int,
                     causal: bool) -> tuple[int, int]:
    """FLOPs (QK^T and PV; half of them under a causal mask with q = kv) and bytes of
    Q, K, V and the output in bf16, each once."""
    flops = 4 * batch * heads * q_len * kv_len * dim
    if causal and q_len == kv_len:
        flops //= 2
    elems = batch * (2 * heads * q_len * dim + 2 * kv_heads * kv_len * dim)
    return flops, 2 * elems


def decode_stack_flops_bytes(m: int, layers: int, shapes: tuple[tuple[int, int], ...]
                             ) -> tuple[int, int]:
    """FLOPs and weight bytes (bf16, read once) of ``layers`` x the GEMMs ``shapes`` at ``m`` rows."""
    flops = sum(2 * m * n * k for n, k in shapes) * layers
    weights = sum(2 * n * k for n, k in shapes) * layers
    acts = sum(2 * m * (n + k) for n, k in shapes) * layers
    return flops, weights + acts


def plan(smoke: bool) -> list[dict[str, Any]]:
    """The workloads in run order; ``smoke`` shrinks every shape, keeping every code path."""
    if smoke:
        g, s = 256, 64
        gemms = [(g, g, g), (16, g, g), (1, g, g)]
        return ([{"workload": "idle"}]
                + [{"workload": "gemm_bf16", "m": m, "n": n, "k": k} for m, n, k in gemms]
                + [{"workload": "gemm_fp8", "m": g, "n": g, "k": g},
                   {"workload": "copy", "nbytes": 1 << 20},
                   {"workload": "add", "numel": 1 << 16},
                   {"workload": "sdpa_prefill", "batch": 1, "seq": s},
                   {"workload": "sdpa_decode", "batch": 2, "context": s},
                   {"workload": "graph_decode_gemms", "m": 1, "layers": 2, "scale": 16},
                   {"workload": "duty_gemm", "m": g, "n": g, "k": g, "duty": 0.5, "period_s": 0.02},
                   {"workload": "expand_copy", "batch": 2, "context": s},
                   {"workload": "idle_end"}])
    big = [(8192, 8192, 8192), (4096, 4096, 4096), (1024, 4096, 4096), (256, 4096, 4096),
           (64, 4096, 4096), (16, 4096, 4096), (1, 4096, 4096), (64, 28672, 4096)]
    rows: list[dict[str, Any]] = [{"workload": "idle"}]
    rows += [{"workload": "gemm_bf16", "m": m, "n": n, "k": k} for m, n, k in big]
    rows += [{"workload": "gemm_fp8", "m": 8192, "n": 8192, "k": 8192}]
    rows += [{"workload": "copy", "nbytes": b} for b in (1 << 30, 64 << 20, 4 << 20)]
    rows += [{"workload": "add", "numel": n} for n in (1 << 28, 1 << 20)]
    rows += [{"workload": "sdpa_prefill", "batch": 1, "seq": 8192},
             {"workload": "sdpa_prefill", "batch": 1, "seq": 1024}]
    rows += [{"workload": "sdpa_decode", "batch": b, "context": 2048} for b in (1, 8, 64)]
    rows += [{"workload": "graph_decode_gemms", "m": m, "layers": 32, "scale": 1} for m in (1, 8)]
    rows += [{"workload": "duty_gemm", "m": 8192, "n": 8192, "k": 8192, "duty": d, "period_s": 0.02}
             for d in (0.25, 0.5, 0.75)]
    rows += [{"workload": "duty_gemm", "m": 8192, "n": 8192, "k": 8192, "duty": 0.5, "period_s": 0.2}]
    rows += [{"workload": "expand_copy", "batch": b, "context": 1024} for b in (16, 64)]
    rows += [{"workload": "idle_end"}]
    return rows


def _randn(shape: tuple[int, ...], dev: str, dtype: Any = None) -> Any:
    import torch

    return torch.randn(*shape, device=dev, dtype=dtype or torch.bfloat16)


def build(spec: dict[str, Any], dev: str, l2_bytes: int
          ) -> tuple[Callable[[int], Any], int, str, str, int, int]:
    """(step(i), operand sets, shape, dtype, flops, bytes) of one workload; ``step(i)`` runs one
    call on operand set ``i % sets`` (sets rotate so small operands are not L2-resident)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    w = spec["workload"]
    if w in ("gemm_bf16", "duty_gemm", "gemm_fp8"):
        m, n, k = spec["m"], spec["n"], spec["k"]
        fp8 = w == "gemm_fp8"
        flops, nbytes = gemm_flops_bytes(m, n, k, 1 if fp8 else 2, 2)
        sets = rotation_count(nbytes, l2_bytes, cap=16)
        xs = [_randn((m, k), dev) for _ in range(sets)]
        ws = [_randn((n, k), dev) for _ in range(sets)]
        outs = [torch.empty((m, n), device=dev, dtype=torch.bfloat16) for _ in range(sets)]
        if fp8:
            xs = [x.clamp(-8, 8).to(torch.float8_e4m3fn) for x in xs]
            ws = [v.clamp(-8, 8).to(torch.float8_e4m3fn) for v in ws]
            one = torch.ones((), device=dev)

            def step(i: int) -> Any:
                j = i % sets
                return torch._scaled_mm(xs[j], ws[j].t(), scale_a=one, scale_b=one,
                                        out_dtype=torch.bfloat16)
            return step, sets, f"{m}x{n}x{k}", "fp8", flops, nbytes

        def step(i: int) -> Any:
            j = i % sets
            return torch.mm(xs[j], ws[j].t(), out=outs[j])
        return step, sets, f"{m}x{n}x{k}", "bf16", flops, nbytes
    if w == "copy":
        numel = spec["nbytes"] // 2
        sets = rotation_count(2 * spec["nbytes"], l2_bytes)
        src = [_randn((numel,), dev) for _ in range(sets)]
        dst = [torch.empty_like(s) for s in src]
        return (lambda i: dst[i % sets].copy_(src[i % sets]), sets, f"{spec['nbytes']}B", "bf16",
                0, 2 * spec["nbytes"])
    if w == "expand_copy":
        # Hugging Face's repeat_kv: a grouped K cache [b, 8, ctx, 128] broadcast to 32 heads and
        # copied contiguous (a strided elementwise copy, bound by the SMs' index arithmetic)
        bsz, ctx, kvh, rep, d = spec["batch"], spec["context"], 8, 4, 128
        src_numel = bsz * kvh * ctx * d
        nbytes = 2 * src_numel * (1 + rep)
        sets = rotation_count(nbytes, l2_bytes)
        src = [_randn((bsz, kvh, ctx, d), dev) for _ in range(sets)]

        def step(i: int) -> Any:
            x = src[i % sets]
            return x[:, :, None].expand(bsz, kvh, rep, ctx, d).reshape(bsz, kvh * rep, ctx, d)
        return step, sets, f"b{bsz}_kvh{kvh}x{rep}_ctx{ctx}_d{d}", "bf16", 0, nbytes
    if w == "add":
        numel = spec["numel"]
        sets = rotation_count(6 * numel, l2_bytes)
        a = [_randn((numel,), dev) for _ in range(sets)]
        b = [_randn((numel,), dev) for _ in range(sets)]
        c = [torch.empty_like(x) for x in a]
        return (lambda i: torch.add(a[i % sets], b[i % sets], out=c[i % sets]), sets,
                f"{numel}", "bf16", numel, 6 * numel)
    if w in ("sdpa_prefill", "sdpa_decode"):
        bsz = spec["batch"]
        q_len = spec["seq"] if w == "sdpa_prefill" else 1
        kv_len = spec["seq"] if w == "sdpa_prefill" else spec["context"]
        heads, kvh, d = 32, 8, 128
        causal = w == "sdpa_prefill"
        flops, nbytes = sdpa_flops_bytes(bsz, q_len, kv_len, heads, kvh, d, causal)
        sets = rotation_count(nbytes, l2_bytes, cap=32)
        qs = [_randn((bsz, heads, q_len, d), dev) for _ in range(sets)]
        ks = [_randn((bsz, kvh, kv_len, d), dev) for _ in range(sets)]
        vs = [_randn((bsz, kvh, kv_len, d), dev) for _ in range(sets)]

        def step(i: int) -> Any:
            j = i % sets
            return F.scaled_dot_product_attention(qs[j], ks[j], vs[j], is_causal=causal,
                                                  enable_gqa=True)
        shape = f"b{bsz}_q{q_len}_kv{kv_len}_h{heads}_kvh{kvh}_d{d}"
        return step, sets, shape, "bf16", flops, nbytes
    if w == "graph_decode_gemms":
        m, layers, sc = spec["m"], spec["layers"], spec["scale"]
        shapes = tuple((n // sc, k // sc) for n, k in LLAMA8B_DECODE_GEMMS)
        flops, nbytes = decode_stack_flops_bytes(m, layers, shapes)
        weights = [[_randn((n, k), dev) for n, k in shapes] for _ in range(layers)]
        h = shapes[0][1]
        x = _randn((m, h), dev)
        outs = [torch.empty((m, n), device=dev, dtype=torch.bfloat16) for n, _ in shapes]
        ffn = shapes[3][1]

        def step(i: int) -> Any:
            for lw in weights:
                torch.mm(x, lw[0].t(), out=outs[0])
                torch.mm(x, lw[1].t(), out=outs[1])
                torch.mm(x, lw[2].t(), out=outs[2])
                torch.mm(outs[2][:, :ffn], lw[3].t(), out=outs[3])
            return outs[3]
        return step, 1, f"m{m}_layers{layers}_h{h}_ffn{ffn}", "bf16", flops, nbytes
    raise ValueError(f"unknown workload {w!r}")


class Replayer:
    """Runs calls of ``step`` as CUDA-graph replays (CPU: direct calls), timing each replay."""

    def __init__(self, step: Callable[[int], Any], sets: int, dev: str, target_s: float) -> None:
        self.dev = dev
        self.step = step
        self.sets = sets
        for i in range(max(3, sets)):
            step(i)
        self._sync()
        self.n = sets
        if dev == "cuda":
            self.graph = self._capture(self.n)
            t = self._time_replays(3)
            if t < target_s:
                reps = math.ceil(target_s / max(t, 1e-7))
                self.n = min(4096 // sets + 1, reps) * sets
                self.graph = self._capture(self.n)
        self.pending: deque[Any] = deque()
        self.durations: list[tuple[float, float]] = []  # (host time seen done, seconds)

    def _sync(self) -> None:
        import torch

        if self.dev == "cuda":
            torch.cuda.synchronize()

    def _capture(self, n: int) -> Any:
        import torch

        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(n):
                self.step(i)
        g.replay()
        torch.cuda.synchronize()
        return g

    def _time_replays(self, reps: int) -> float:
        import torch

        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            self.graph.replay()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) * 1e-3 / reps

    def enqueue(self) -> None:
        """One more replay (``n`` calls); keeps at most two replays in flight."""
        if self.dev != "cuda":
            t0 = time.perf_counter()
            for i in range(self.n):
                self.step(i)
            self.durations.append((time.perf_counter(), time.perf_counter() - t0))
            return
        import torch

        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        self.graph.replay()
        b.record()
        self.pending.append((a, b))
        while len(self.pending) > 2:
            self._retire()

    def _retire(self) -> None:
        a, b = self.pending.popleft()
        b.synchronize()
        self.durations.append((time.perf_counter(), a.elapsed_time(b) * 1e-3))

    def drain(self) -> None:
        while self.pending:
            self._retire()


def _window_power(sampler: Sampler, t0: float, t1: float, energy_j: float) -> float:
    """Counter slope over the window; the plain counter difference where too few ticks."""
    p = sampler.counter_power_w(t0, t1)
    return p if math.isfinite(p) else energy_j / (t1 - t0)


def measure(spec: dict[str, Any], dev: str, sampler: Sampler, warm_s: float, window_s: float,
            l2_bytes: int, target_s: float) -> dict[str, Any]:
    """One row: run the workload for ``warm_s`` + ``window_s`` and read the window."""
    w = spec["workload"]
    nan = math.nan
    row: dict[str, Any] = {c: nan for c in COLUMNS}
    row.update({"workload": w, "duty": spec.get("duty", 1.0 if not w.startswith("idle") else 0.0),
                "period_s": spec.get("period_s", nan)})
    if w.startswith("idle"):
        row.update({"shape": "", "dtype": "", "flops": 0, "bytes": 0, "calls": 0})
        time.sleep(warm_s)
        t0, e0 = time.perf_counter(), sampler.energy_j()
        time.sleep(window_s)
        t1, e1 = time.perf_counter(), sampler.energy_j()
        row.update({"_t0": t0, "_t1": t1, "window_s": t1 - t0, "busy_fraction": 0.0,
                    "power_w_mean": _window_power(sampler, t0, t1, e1 - e0)})
        row.update(sampler.window(t0, t1))
        return row
    step, sets, shape, dtype, flops, nbytes = build(spec, dev, l2_bytes)
    duty = spec.get("duty")
    rep = Replayer(step, sets, dev, 0.0 if duty is not None else target_s)
    row.update({"shape": shape, "dtype": dtype, "flops": flops, "bytes": nbytes})
    t_call = rep._time_replays(3) / rep.n if dev == "cuda" else nan
    start = time.perf_counter()
    t0 = e0 = nan
    i0 = 0
    while True:
        now = time.perf_counter()
        if math.isnan(t0) and now - start >= warm_s:
            t0, e0, i0 = now, sampler.energy_j(), len(rep.durations)
        if not math.isnan(t0) and now - t0 >= window_s:
            break
        if duty is None:
            rep.enqueue()
            continue
        period = spec["period_s"]
        busy = max(1, round(duty * period / max(t_call if dev == "cuda" else 1e-3, 1e-7) / rep.n))
        for _ in range(busy):
            rep.enqueue()
        rep.drain()
        left = period - (time.perf_counter() - now)
        if left > 0:
            time.sleep(left)
    t1, e1, i1 = time.perf_counter(), sampler.energy_j(), len(rep.durations)
    rep.drain()
    durs = [d for _, d in rep.durations[i0:i1]]
    calls = len(durs) * rep.n
    per_call = [d / rep.n for d in durs]
    med, p10, p90 = summarize(per_call)
    win = t1 - t0
    power = _window_power(sampler, t0, t1, e1 - e0)
    row.update({"_t0": t0, "_t1": t1, "calls": calls, "window_s": win, "time_s": med, "p10_s": p10, "p90_s": p90,
                "flop_per_s": flops / med if flops else nan, "bytes_per_s": nbytes / med,
                "busy_fraction": sum(durs) / win, "power_w_mean": power,
                "energy_j_per_call": power * win / calls if calls else nan})
    row.update(sampler.window(t0, t1))
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="calibration/bench/power_occupancy.py", description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--smoke", action="store_true", help="tiny shapes, short windows")
    p.add_argument("--budget-s", type=float, default=240.0)
    p.add_argument("--warm-s", type=float, default=None, help="seconds of the workload before the window")
    p.add_argument("--window-s", type=float, default=None, help="seconds measured per row")
    p.add_argument("--sample-s", type=float, default=0.01, help="NVML sampling interval")
    p.add_argument("--passes", type=int, default=1, help="run the whole list this many times")
    p.add_argument("--only", default=None, help="comma list of workloads to run (the idle rows always run)")
    args = p.parse_args(argv)
    argv_l = argv if argv is not None else sys.argv[1:]
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("power_occupancy: no CUDA GPU visible", file=sys.stderr)
        return 2
    warm_s = args.warm_s if args.warm_s is not None else (0.05 if args.smoke else 0.7)
    window_s = args.window_s if args.window_s is not None else (0.1 if args.smoke else 2.5)
    target_s = 2e-3
    l2 = (int(torch.cuda.get_device_properties(0).L2_cache_size) if args.device == "cuda"
          else L2_BYTES_DEFAULT)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "power_occupancy.csv"
    if path.exists():
        path.unlink()
    t_start = time.monotonic()
    sampler = Sampler(args.device, args.sample_s)
    sampler.start()
    rows = 0
    windows: list[tuple[int, float, float]] = []
    specs = plan(args.smoke)
    if args.only:
        keep = {w.strip() for w in args.only.split(",")} | {"idle", "idle_end"}
        specs = [sp for sp in specs if sp["workload"] in keep]
    est_row_s = warm_s + window_s + 0.5
    for ps in range(1, args.passes + 1):
        for spec in specs:
            if time.monotonic() - t_start + est_row_s > args.budget_s:
                note_skip(args.out, f"power {spec} pass {ps}", "budget reached")
                continue
            try:
                row = measure(spec, args.device, sampler, warm_s, window_s, l2, target_s)
            except Exception as exc:  # noqa: BLE001 - unsupported op or OOM: skip, keep the rest
                note_skip(args.out, f"power {spec}", f"{type(exc).__name__}: {exc}")
                if args.device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                continue
            row["pass"] = ps
            append_row(path, COLUMNS, row)
            windows.append((rows, row["_t0"], row["_t1"]))
            rows += 1
            print(f"[power] {row['workload']:<19} {row['shape']:<26} "
                  f"P={row['power_w_mean']:.0f} W t={row['time_s']:.3g} s "
                  f"busy={row['busy_fraction']:.2f} SM={row['sm_clock_mhz']} MHz "
                  f"T={row['temp_c']} C", file=sys.stderr, flush=True)
            gc.collect()
            if args.device == "cuda":
                torch.cuda.empty_cache()
    sampler.stop()
    if sampler.samples:
        write_samples(args.out / "power_samples.csv", sampler.samples, windows)
    extra: dict[str, Any] = {"elapsed_s": round(time.monotonic() - t_start, 1), "rows_written": rows,
                             "smoke": args.smoke, "warm_s": warm_s, "window_s": window_s,
                             "sample_interval_s": args.sample_s, "l2_bytes": l2}
    if sampler.active:
        n, h = sampler.nvml, sampler.handle
        for key, fn in (("nvml_driver", lambda: n.nvmlSystemGetDriverVersion()),
                        ("power_limit_enforced_w", lambda: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1000),
                        ("power_limit_default_w",
                         lambda: n.nvmlDeviceGetPowerManagementDefaultLimit(h) / 1000),
                        ("nvml_version", lambda: n.nvmlSystemGetNVMLVersion())):
            try:
                extra[key] = fn()
            except Exception as exc:  # noqa: BLE001
                extra[key] = f"unavailable: {type(exc).__name__}"
        ts = [s[0] for s in sampler.samples]
        extra["sample_interval_achieved_s"] = quantile([b - a for a, b in zip(ts, ts[1:], strict=False)], 0.5) if len(ts) > 2 else None
        extra["energy_counter_update_s"] = sampler.energy_update_s()
        extra["instant_power_field"] = sampler.instant_field is not None
    write_script_meta(args.out, "power_occupancy", args.device, argv_l, extra)
    print(f"power_occupancy: {rows} rows in {time.monotonic() - t_start:.0f} s -> {path}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
