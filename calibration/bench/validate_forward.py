"""Ground-truth forward-pass timings for ``fleetsim validate`` (forward.csv, ops_heldout.csv).

Times whole forward passes of plain PyTorch models with random bf16 weights
(``torch_models.Decoder``: llama-3.1-8b shapes and a GPT-2-XL-like model) at shapes that
are deliberately NOT calibration grid points: eager prefill batches and CUDA-graph decode
steps over static KV caches. Also times single GEMMs and attention calls at off-grid
shapes (ops_heldout.csv) with the same method as the calibration harness, for
per-operator error. ``--tp 2`` runs the same models Megatron-style on two GPUs.

Usage (GPU box, plain file): ``python3 calibration/bench/validate_forward.py --out DIR
[--tp 2] [--budget-s S]``; ``--device cpu --smoke`` exercises every code path on tiny shapes.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

try:
    from fleetsim.calibration.bench import torch_models as tm
    from fleetsim.calibration.bench.common import summarize
    from fleetsim.calibration.bench.runs import free_port, write_run_meta
except ImportError:
    import torch_models as tm  # type: ignore[no-redef]
    from common import summarize  # type: ignore[no-redef]
    from runs import free_port, write_run_meta  # type: ignore[no-redef]

FORWARD_COLUMNS = ("model", "mode", "batch", "q_len", "context", "tp", "time_s", "p10_s", "p90_s")
HELDOUT_COLUMNS = ("op", "dtype", "m", "n", "k", "batch", "q_len", "kv_len", "num_heads",
                   "num_kv_heads", "head_dim", "causal", "time_s", "p10_s", "p90_s")
PREFILL = ((1, 300), (1, 1500), (2, 700), (4, 1000), (1, 3000), (8, 250))
DECODE_BATCH = (3, 12, 48, 100)
DECODE_CTX = (700, 1800, 5000)
HELDOUT_GEMM = ((300, 6144, 4096), (1500, 28672, 4096), (3000, 4096, 14336), (48, 128256, 4096),
                (100, 4096, 4096), (777, 10240, 8192), (5000, 3072, 3072), (12, 5120, 5120),
                (200, 13824, 5120), (2500, 1600, 6400), (700, 4800, 1600), (24, 2048, 7168),
                (9000, 8192, 8192), (3, 14336, 4096))
# (phase, batch, q_len, kv_len, heads, kv_heads, head_dim)
HELDOUT_ATTN = (("prefill", 2, 700, 700, 32, 8, 128), ("prefill", 1, 3000, 3000, 32, 8, 128),
                ("prefill", 4, 1000, 1000, 32, 32, 128), ("prefill", 8, 250, 250, 25, 25, 64),
                ("decode", 12, 1, 1800, 32, 8, 128), ("decode", 48, 1, 5000, 32, 8, 128),
                ("decode", 100, 1, 700, 32, 8, 128), ("decode", 3, 1, 5000, 25, 25, 64),
                ("chunked_prefill", 1, 768, 3000, 32, 8, 128))


def _append(path: Path, cols: tuple[str, ...], row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(cols)
        w.writerow([f"{row[c]:.6g}" if isinstance(row[c], float) else row[c] for c in cols])


def _time_events(fn: Any, reps: int, warmup: int, device: str) -> tuple[float, float, float]:
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device == "cpu":
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            continue
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e-3)
    return summarize(times)


def _max_over_ranks(stats: tuple[float, float, float], tp: int, device: Any
                    ) -> tuple[float, float, float]:
    if tp == 1:
        return stats
    import torch
    import torch.distributed as dist

    t = torch.tensor(stats, device=device, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    a, b, c = (float(v) for v in t.tolist())
    return a, b, c


def run_model(shape: tm.ModelShape, args: argparse.Namespace, rank: int, tp: int, device: Any,
              out: Path, deadline: float, smoke: bool) -> None:
    import torch

    group = None
    model = tm.Decoder(shape, device, tp=tp, group=group)
    prefill = ((1, 30), (2, 17)) if smoke else PREFILL
    dbatch, dctx = ((2,), (40,)) if smoke else (DECODE_BATCH, DECODE_CTX)
    gen = torch.Generator(device=device)
    gen.manual_seed(1234)
    fwd = out / "forward.csv"
    for b, s in prefill:
        if time.monotonic() > deadline:
            break
        tokens = torch.randint(0, shape.vocab, (b, s), device=device, generator=gen)
        with torch.inference_mode():
            st = _time_events(lambda tokens=tokens: model.prefill(tokens), 7, 2, str(device.type))
        st = _max_over_ranks(st, tp, device)
        if rank == 0:
            _append(fwd, FORWARD_COLUMNS, {"model": shape.name, "mode": "prefill_eager", "batch": b,
                                          "q_len": s, "context": 0, "tp": tp, "time_s": st[0],
                                          "p10_s": st[1], "p90_s": st[2]})
    for b in dbatch:
        for ctx in dctx:
            if time.monotonic() > deadline:
                break
            kv_bytes = 2 * shape.layers * b * (ctx + 1) * model.hkv * shape.head_dim * 2
            if device.type == "cuda":
                free = torch.cuda.mem_get_info(device)[0]
                fits = torch.tensor([1 if kv_bytes < 0.85 * free else 0], device=device)
                if tp > 1:
                    import torch.distributed as dist

                    dist.all_reduce(fits, op=dist.ReduceOp.MIN)
                if not int(fits.item()):
                    continue
            mode, st = _decode_point(model, b, ctx, device)
            st = _max_over_ranks(st, tp, device)
            if rank == 0:
                _append(fwd, FORWARD_COLUMNS, {"model": shape.name, "mode": mode,
                                              "batch": b, "q_len": 1, "context": ctx, "tp": tp,
                                              "time_s": st[0], "p10_s": st[1], "p90_s": st[2]})
    model.layers.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _decode_point(model: tm.Decoder, b: int, ctx: int, device: Any
                  ) -> tuple[str, tuple[float, float, float]]:
    """Capture one decode step (batch b, position ctx) in a CUDA graph and time its replays.

    Returns the mode actually timed: ``decode_graph``, or ``decode_eager`` where graph
    capture failed (and on CPU smoke runs).
    """
    import torch

    cache = model.new_cache(b, ctx + 1)
    tokens = torch.randint(0, model.s.vocab, (b, 1), device=device)
    with torch.inference_mode():
        if device.type == "cpu":
            return "decode_graph", _time_events(lambda: model.decode(tokens, cache, ctx), 5, 1,
                                                "cpu")
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                model.decode(tokens, cache, ctx)
        torch.cuda.current_stream().wait_stream(s)
        try:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                model.decode(tokens, cache, ctx)
            st = _time_events(g.replay, 12, 3, "cuda")
            mode = "decode_graph"
            del g
        except RuntimeError as exc:
            print(f"graph capture failed ({str(exc)[:120]}); timing eager decode", file=sys.stderr)
            torch.cuda.synchronize()
            st = _time_events(lambda: model.decode(tokens, cache, ctx), 10, 2, "cuda")
            mode = "decode_eager"
    return mode, st


def run_heldout(out: Path, device: str, smoke: bool, deadline: float) -> None:
    """Single GEMM / attention calls at off-grid shapes, timed as the harness times them."""
    try:
        from fleetsim.calibration.bench import compute
        from fleetsim.calibration.bench.timing import BenchContext, RandomPool, device_props
    except ImportError:
        import compute  # type: ignore[no-redef]
        from timing import BenchContext, RandomPool, device_props  # type: ignore[no-redef]

    props = device_props(device)
    pool = RandomPool((64 << 20) if smoke else (3 << 30), device, seed=7)
    ctx = BenchContext(device=device, writer=None, budget=None, pool=pool, props=props,
                       quick=smoke, log=lambda m: print(m, file=sys.stderr))
    path = out / "ops_heldout.csv"
    gemms = ((30, 256, 128), (7, 384, 256)) if smoke else HELDOUT_GEMM
    for m, n, k in gemms:
        if time.monotonic() > deadline:
            return
        st = compute.measure_gemm(ctx, {"dtype": "bf16", "m": m, "n": n, "k": k, "batch": 1})
        if st:
            _append(path, HELDOUT_COLUMNS, {"op": "gemm", "dtype": "bf16", "m": m, "n": n, "k": k,
                                            "batch": 1, "q_len": 0, "kv_len": 0, "num_heads": 0,
                                            "num_kv_heads": 0, "head_dim": 0, "causal": 0,
                                            "time_s": st[0], "p10_s": st[1], "p90_s": st[2]})
    attn = (("prefill", 1, 40, 40, 4, 2, 64), ("decode", 2, 1, 50, 4, 2, 64),
            ("chunked_prefill", 1, 16, 48, 4, 2, 64)) if smoke else HELDOUT_ATTN
    for phase, b, q, kv, h, hkv, d in attn:
        if time.monotonic() > deadline:
            return
        row = {"backend": "sdpa", "phase": phase, "batch": b, "q_len": q, "kv_len": kv,
               "num_heads": h, "num_kv_heads": hkv, "head_dim": d, "v_head_dim": d,
               "causal": phase != "decode", "dtype": "bf16"}
        st = compute.measure_attention(ctx, row)
        if st:
            _append(path, HELDOUT_COLUMNS, {"op": f"attention_{phase}", "dtype": "bf16", "m": 0,
                                            "n": 0, "k": 0, "batch": b, "q_len": q, "kv_len": kv,
                                            "num_heads": h, "num_kv_heads": hkv, "head_dim": d,
                                            "causal": int(phase != "decode"), "time_s": st[0],
                                            "p10_s": st[1], "p90_s": st[2]})
    del pool


def _worker(rank: int, args: argparse.Namespace, port: int) -> None:
    import os

    os.environ.update({"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                       "NVSHMEM_DISABLE_NVLS": "1"})
    import torch
    import torch.distributed as dist

    tp = args.tp
    deadline = time.monotonic() + args.budget_s
    if args.device == "cpu":
        device = torch.device("cpu")
        if tp > 1:
            dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                    world_size=tp)
    else:
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
        if tp > 1:
            dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                    world_size=tp, device_id=device)
    out = Path(args.out)
    names = ["smoke-llama", "smoke-gpt2"] if args.smoke else args.models.split(",")
    for name in names:
        if time.monotonic() > deadline:
            break
        shape = tm.SHAPES[name]
        if shape.heads % tp or shape.kv_heads % tp:
            if rank == 0:
                print(f"skip {name} at tp={tp}: {shape.heads} heads do not split over {tp} GPUs",
                      file=sys.stderr)
            continue
        run_model(shape, args, rank, tp, device, out, deadline, args.smoke)
    if tp > 1:
        dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--budget-s", type=float, default=300.0)
    p.add_argument("--models", default="llama-3.1-8b,gpt2-xl")
    p.add_argument("--no-heldout", action="store_true")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--smoke", action="store_true", help="tiny models, exercises code paths only")
    args = p.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if args.tp == 1:
        _worker(0, args, 0)
    else:
        import torch.multiprocessing as mp

        port = free_port()
        mp.spawn(_worker, args=(args, port), nprocs=args.tp, join=True)
    if not args.no_heldout and args.tp == 1:
        left = args.budget_s - (time.monotonic() - t0)
        run_heldout(args.out, args.device, args.smoke, time.monotonic() + max(left, 20.0))
    write_run_meta(args.out, "validate_forward", argv, args.device, t0)
    print(f"validate_forward: done in {time.monotonic() - t0:.0f} s -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
