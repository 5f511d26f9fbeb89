"""NCCL collectives at 2/4/8 ranks, eager and inside CUDA graphs, and PyTorch's symmetric-memory
one-shot / two-shot all-reduce (``collective_<n>.csv``).

One process per GPU. A point's buffers are random bf16; its time is the slowest rank's median
over repetitions. ``eager`` times back-to-back NCCL calls with the harness's method
(``timing.time_kernel``: the host runs ahead of a GPU sleep, events around each launch);
``graph`` captures ``k`` calls of the collective into one ``torch.cuda.CUDAGraph`` on every
rank (``k`` sized so a replay lasts ~50 us or more) and times replays, per call = replay / k;
``oneshot`` / ``twoshot`` run ``torch.ops.symm_mem.one_shot_all_reduce`` /
``two_shot_all_reduce_`` on a symmetric-memory buffer (peer loads and stores over NVLink,
no multicast: ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1``, as ``collective.SAFE_ENV`` sets), feature-detected;
where absent or failing, the reason goes to ``skipped.txt`` once per mode.

Usage: ``python3 calibration/bench/multi/collectives.py --out DIR --world N [--budget-s S]``;
``--device cpu --smoke`` runs eager and graph-less paths at world 2 over gloo.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

try:
    from fleetsim.calibration.bench.bench_io import append_row, note_skip, write_script_meta
    from fleetsim.calibration.bench.collective import SAFE_ENV
    from fleetsim.calibration.bench.common import summarize
    from fleetsim.calibration.bench.multi import points as pts
    from fleetsim.calibration.bench.runs import free_port
except ImportError:
    import _paths  # noqa: F401
    import points as pts  # type: ignore[no-redef]
    from bench_io import append_row, note_skip, write_script_meta  # type: ignore[no-redef]
    from collective import SAFE_ENV  # type: ignore[no-redef]
    from common import summarize  # type: ignore[no-redef]
    from runs import free_port  # type: ignore[no-redef]


def _buffers(op: str, n: int, rank: int, world: int, dev: Any) -> dict[str, Any]:
    import torch

    elems = max(world, n // 2)
    if op == "all_reduce":
        return {"x": torch.randn(elems, device=dev, dtype=torch.bfloat16)}
    if op == "all_gather":
        part = torch.randn(max(1, elems // world), device=dev, dtype=torch.bfloat16)
        return {"x": part, "y": torch.empty(part.numel() * world, device=dev, dtype=torch.bfloat16)}
    if op in ("reduce_scatter", "all_to_all"):
        x = torch.randn((elems // world) * world, device=dev, dtype=torch.bfloat16)
        y = torch.empty_like(x) if op == "all_to_all" else torch.empty(x.numel() // world, device=dev,
                                                                       dtype=torch.bfloat16)
        return {"x": x, "y": y}
    if op == "send_recv":
        return {"x": torch.randn(elems, device=dev, dtype=torch.bfloat16)}
    raise ValueError(f"unknown collective {op!r}")


def nccl_call(op: str, buf: dict[str, Any], rank: int) -> Any:
    """A zero-argument function issuing one NCCL collective on ``buf`` (None on ranks that
    take no part: send_recv runs between ranks 0 and 1 only)."""
    import torch.distributed as dist

    x, y = buf["x"], buf.get("y")
    if op == "all_reduce":
        return lambda: dist.all_reduce(x)
    if op == "all_gather":
        return lambda: dist.all_gather_into_tensor(y, x)
    if op == "reduce_scatter":
        return lambda: dist.reduce_scatter_tensor(y, x)
    if op == "all_to_all":
        return lambda: dist.all_to_all_single(y, x)
    if op == "send_recv":
        if rank == 0:
            return lambda: dist.send(x, 1)
        if rank == 1:
            return lambda: dist.recv(x, 0)
        return None
    raise ValueError(f"unknown collective {op!r}")


def symm_call(mode: str, n: int, world: int, dev: Any) -> Any:
    """One-shot / two-shot all-reduce on a symmetric-memory buffer of ``n`` bytes; raises
    ``NotImplementedError`` naming what is missing when this PyTorch lacks it."""
    import torch
    import torch.distributed as dist

    try:
        import torch.distributed._symmetric_memory as symm_mem
    except ImportError as exc:
        raise NotImplementedError(f"torch.distributed._symmetric_memory absent ({exc})") from None
    name = "one_shot_all_reduce" if mode == "oneshot" else "two_shot_all_reduce_"
    ops = getattr(torch.ops, "symm_mem", None)
    if ops is None or not hasattr(ops, name):
        raise NotImplementedError(f"torch.ops.symm_mem.{name} absent in torch {torch.__version__}")
    if dev.type != "cuda":
        raise NotImplementedError("symmetric memory needs CUDA devices")
    group = dist.group.WORLD
    gname = group.group_name
    if hasattr(symm_mem, "enable_symm_mem_for_group"):
        symm_mem.enable_symm_mem_for_group(gname)
    elems = max(world, n // 2)
    buf = symm_mem.empty(elems, device=dev, dtype=torch.bfloat16)
    symm_mem.rendezvous(buf, gname)
    buf.normal_()
    fn = getattr(ops, name)
    if mode == "oneshot":
        return lambda: fn(buf, "sum", gname)
    return lambda: fn(buf, "sum", gname)


def _time_eager(call: Any, est_s: float, device: str) -> tuple[float, float, float]:
    try:
        from fleetsim.calibration.bench.timing import time_kernel
    except ImportError:
        from timing import time_kernel  # type: ignore[no-redef]
    return time_kernel(lambda i: call(), est_s=est_s, device=device, target_s=0.02, min_reps=5,
                       max_reps=25, warmup=3)


def _time_graph(call: Any, est_s: float) -> tuple[float, float, float]:
    """Capture ``k`` calls in one CUDA graph, time ``reps`` replays, per call = replay / k."""
    import torch

    k = 1 if est_s >= 50e-6 else min(20, math.ceil(50e-6 / est_s))
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            call()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(k):
            call()
    for _ in range(2):
        g.replay()
    torch.cuda.synchronize()
    reps = int(min(25, max(5, 0.02 / (est_s * k))))
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e-3 / k)
    del g
    return summarize(times)


def _measure(row: dict[str, Any], rank: int, world: int, dev: Any) -> tuple[float, float, float] | None:
    """(median, p10, p90) of this rank, or None where this rank takes no part."""
    op, n, mode = str(row["op"]), int(row["bytes"]), str(row["mode"])
    est = pts.estimate_collective_s(op, n, world)
    if mode in ("oneshot", "twoshot"):
        call = symm_call(mode, n, world, dev)
        return _time_eager(call, est, dev.type)
    buf = _buffers(op, n, rank, world, dev)
    call = nccl_call(op, buf, rank)
    if call is None:
        return None
    if mode == "graph":
        if dev.type != "cuda":
            raise NotImplementedError("CUDA graphs need CUDA devices")
        return _time_graph(call, est)
    return _time_eager(call, est, dev.type)


def _worker(rank: int, args: argparse.Namespace, port: int, todo: list[dict[str, Any]]) -> None:
    os.environ.update(SAFE_ENV)
    import torch
    import torch.distributed as dist

    world = args.world
    cuda = args.device == "cuda"
    dev = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world, device_id=dev if cuda else None)
    deadline = time.monotonic() + args.budget_s
    out = Path(args.out)
    path = out / f"collective_{world}.csv"
    failed: set[str] = set()
    for row in todo:
        stop = torch.tensor([1.0 if time.monotonic() > deadline else 0.0], device=dev)
        dist.all_reduce(stop, op=dist.ReduceOp.MAX)
        if stop.item() > 0:
            if rank == 0:
                print(f"[collectives] world {world}: budget reached", file=sys.stderr, flush=True)
            break
        mode = str(row["mode"])
        if mode in failed:
            continue
        err = ""
        try:
            st = _measure(row, rank, world, dev)
        except (RuntimeError, NotImplementedError, AttributeError, TypeError, ValueError) as exc:
            st, err = None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
        ok = torch.tensor([0.0 if err else 1.0], device=dev)
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if ok.item() < 1:
            # a mode that fails once (absent feature, capture refused) fails at every size
            failed.add(mode)
            if rank == 0:
                note_skip(out, f"collective {row['op']} {mode} world {world}",
                          err or "failed on another rank")
            dist.barrier()
            continue
        vals = torch.tensor(list(st) if st is not None else [-1.0] * 3, device=dev, dtype=torch.float64)
        dist.all_reduce(vals, op=dist.ReduceOp.MAX)
        if rank == 0:
            med, p10, p90 = (float(v) for v in vals.tolist())
            append_row(path, pts.COLLECTIVE_COLUMNS, {**row, "time_s": med, "p10_s": p10, "p90_s": p90})
        dist.barrier()
    dist.barrier()
    dist.destroy_process_group()


def done_rows(path: Path) -> set[tuple[str, str, str, str]]:
    """(op, group_size, bytes, mode) of the rows already in a collective_<n>.csv (resume)."""
    import csv

    if not path.exists():
        return set()
    with path.open(newline="") as fh:
        return {(r["op"], r["group_size"], r["bytes"], r["mode"]) for r in csv.DictReader(fh)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=240.0)
    p.add_argument("--modes", default=",".join(pts.COLLECTIVE_MODES))
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--smoke", action="store_true", help="two tiny sizes; exercises the code paths")
    args = p.parse_args(argv)
    modes = tuple(m for m in args.modes.split(",") if m)
    rows = pts.collective_points(args.world, smoke=args.smoke, modes=modes)
    args.out.mkdir(parents=True, exist_ok=True)
    have = done_rows(args.out / f"collective_{args.world}.csv")
    todo = [r for r in rows if (r["op"], str(r["group_size"]), str(r["bytes"]), r["mode"]) not in have]
    # small sizes first, so a run cut by its budget keeps the whole small-message range
    todo.sort(key=lambda r: (int(r["bytes"]), pts.COLLECTIVE_MODES.index(str(r["mode"]))))
    t0 = time.monotonic()
    os.environ.update(SAFE_ENV)
    import torch
    import torch.multiprocessing as mp

    if args.device == "cuda" and torch.cuda.device_count() < args.world:
        print(f"collectives: {args.world} ranks need {args.world} GPUs, found {torch.cuda.device_count()}",
              file=sys.stderr)
        return 2
    print(f"[collectives] world {args.world}: {len(todo)} points "
          f"(estimated {pts.collective_budget_s(todo):.0f} s)", file=sys.stderr, flush=True)
    if todo:
        mp.spawn(_worker, args=(args, free_port(), todo), nprocs=args.world, join=True)
    nccl = ".".join(str(v) for v in torch.cuda.nccl.version()) if args.device == "cuda" else ""
    write_script_meta(args.out, f"collectives_{args.world}", args.device,
                      sys.argv[1:] if argv is None else argv,
                      {"nccl": nccl, "world": args.world, "elapsed_s": round(time.monotonic() - t0, 1),
                       "safe_env": SAFE_ENV})
    return 0


if __name__ == "__main__":
    sys.exit(main())
