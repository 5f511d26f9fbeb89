"""Tensor-parallel forward passes of an 8B- and a 70B-shaped decoder at TP = 2/4/8
(``forward_tp.csv``).

The model is ``torch_models.Decoder`` (random bf16 weights, Megatron-style tensor parallelism:
column-parallel QKV and gate/up, row-parallel output and down projections each followed by an
NCCL all-reduce, vocab-parallel LM head and an all-gather of the logits). The 70B shape
(llama-3.1-70b: hidden 8192, 64 heads, 8 KV heads, FFN 28672) is built with
``points.TP_MODELS`` layers only; the row's ``layers`` column says how many. Prefill passes are
eager; each decode step is captured in a CUDA graph, its all-reduces included, and replayed
(``validate_forward._decode_point``). Times are the slowest rank's median.

Usage: ``python3 calibration/bench/multi/tp_forward.py --out DIR --tp N [--budget-s S]``;
``--device cpu --smoke`` runs tiny shapes at TP 2 over gloo.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

try:
    from fleetsim.calibration.bench import torch_models as tm
    from fleetsim.calibration.bench import validate_forward as vf
    from fleetsim.calibration.bench.bench_io import append_row, note_skip, write_script_meta
    from fleetsim.calibration.bench.collective import SAFE_ENV
    from fleetsim.calibration.bench.multi import points as pts
    from fleetsim.calibration.bench.runs import free_port
except ImportError:
    import _paths  # noqa: F401
    import points as pts  # type: ignore[no-redef]
    import torch_models as tm  # type: ignore[no-redef]
    import validate_forward as vf  # type: ignore[no-redef]
    from bench_io import append_row, note_skip, write_script_meta  # type: ignore[no-redef]
    from collective import SAFE_ENV  # type: ignore[no-redef]
    from runs import free_port  # type: ignore[no-redef]

LLAMA_70B = tm.ModelShape("llama-3.1-70b", 80, 8192, 64, 8, 28672, 128256, "llama")
SMOKE_70B = tm.ModelShape("smoke-70b-like", 2, 256, 8, 2, 512, 1000, "llama")


def shapes(smoke: bool, names: list[str]) -> list[tm.ModelShape]:
    """The model shapes to build, with their truncated layer counts (``points.TP_MODELS``)."""
    from dataclasses import replace

    if smoke:
        return [tm.SMOKE, SMOKE_70B]
    full = {"llama-3.1-8b": tm.LLAMA_8B, "llama-3.1-70b": LLAMA_70B}
    bad = [n for n in names if n not in full]
    if bad:
        raise ValueError(f"unknown model(s) {bad}; known: {', '.join(full)}")
    return [replace(full[n], layers=pts.TP_MODELS[n]) for n in names]


def _row(shape: tm.ModelShape, mode: str, b: int, q: int, ctx: int, tp: int,
         st: tuple[float, float, float]) -> dict[str, Any]:
    return {"model": shape.name, "mode": mode, "batch": b, "q_len": q, "context": ctx, "tp": tp,
            "time_s": st[0], "p10_s": st[1], "p90_s": st[2], "layers": shape.layers}


def _all_ok(flag: bool, dev: Any) -> bool:
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(int(t.item()))


def run_shape(shape: tm.ModelShape, rank: int, tp: int, dev: Any, out: Path, deadline: float,
              smoke: bool) -> None:
    import torch

    prefill, decode = pts.tp_points(smoke=smoke)
    model = tm.Decoder(shape, dev, tp=tp)
    path = out / "forward_tp.csv"
    gen = torch.Generator(device=dev)
    gen.manual_seed(1234)
    for b, s in prefill:
        if not _all_ok(time.monotonic() < deadline, dev):
            return
        tokens = torch.randint(0, shape.vocab, (b, s), device=dev, generator=gen)
        err = ""
        try:
            with torch.inference_mode():
                st = vf._time_events(lambda tokens=tokens: model.prefill(tokens), 7, 2, dev.type)
        except torch.cuda.OutOfMemoryError as exc:
            err, st = f"out of memory ({str(exc)[:80]})", (0.0, 0.0, 0.0)
            torch.cuda.empty_cache()
        if not _all_ok(not err, dev):
            if rank == 0:
                note_skip(out, f"tp_forward {shape.name} prefill b{b} s{s} tp{tp}", err or "failed on another rank")
            continue
        st = vf._max_over_ranks(st, tp, dev)
        if rank == 0:
            append_row(path, pts.FORWARD_COLUMNS, _row(shape, "prefill_eager", b, s, 0, tp, st))
    for b, ctx in decode:
        if not _all_ok(time.monotonic() < deadline, dev):
            return
        need = pts.kv_cache_bytes(shape.layers, b, ctx, shape.kv_heads, shape.head_dim, tp)
        fits = dev.type != "cuda" or need < 0.85 * torch.cuda.mem_get_info(dev)[0]
        if not _all_ok(fits, dev):
            if rank == 0:
                note_skip(out, f"tp_forward {shape.name} decode b{b} ctx{ctx} tp{tp}",
                          f"KV cache of {need / 2**30:.1f} GiB does not fit")
            continue
        mode, st = vf._decode_point(model, b, ctx, dev)
        st = vf._max_over_ranks(st, tp, dev)
        if rank == 0:
            append_row(path, pts.FORWARD_COLUMNS, _row(shape, mode, b, 1, ctx, tp, st))
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def _worker(rank: int, args: argparse.Namespace, port: int) -> None:
    os.environ.update(SAFE_ENV)
    import torch
    import torch.distributed as dist

    cuda = args.device == "cuda"
    dev = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=args.tp, device_id=dev if cuda else None)
    deadline = time.monotonic() + args.budget_s
    out = Path(args.out)
    for shape in shapes(args.smoke, args.models.split(",")):
        if shape.heads % args.tp or shape.kv_heads % args.tp:
            if rank == 0:
                note_skip(out, f"tp_forward {shape.name} tp{args.tp}", "heads do not split")
            continue
        run_shape(shape, rank, args.tp, dev, out, deadline, args.smoke)
        if cuda:
            torch.cuda.empty_cache()
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tp", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=240.0)
    p.add_argument("--models", default=",".join(pts.TP_MODELS))
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    if args.tp < 2:
        p.error("--tp must be at least 2 (one-GPU forwards: calibration/bench/validate_forward.py)")
    shapes(args.smoke, args.models.split(","))  # unknown names fail before any process starts
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.update(SAFE_ENV)
    import torch.multiprocessing as mp

    t0 = time.monotonic()
    mp.spawn(_worker, args=(args, free_port()), nprocs=args.tp, join=True)
    write_script_meta(args.out, f"tp_forward_{args.tp}", args.device, sys.argv[1:] if argv is None else argv,
                      {"tp": args.tp, "layers": pts.TP_MODELS, "elapsed_s": round(time.monotonic() - t0, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
