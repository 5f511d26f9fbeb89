"""NCCL collectives between the GPUs of one host, one process per GPU (collective.csv).

``bytes`` follows nccl-tests' "size": the per-rank buffer for all_reduce, all_to_all and
send_recv, the gathered (output) buffer for all_gather and the input buffer for
reduce_scatter. Bus bandwidth is then ``bytes / time_s`` times 2(n-1)/n for all_reduce,
(n-1)/n for all_gather / reduce_scatter / all_to_all and 1 for send_recv. The time of a
point is the slowest rank's median. NVLink multicast (NVLS) stays off: see
/work/.library/device/KINDS.md, a program that uses it can take a shared host down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

try:
    from fleetsim.calibration.bench.common import Budget, ProfileWriter
    from fleetsim.calibration.bench.timing import time_kernel
except ImportError:
    from common import Budget, ProfileWriter  # type: ignore[no-redef]
    from timing import time_kernel  # type: ignore[no-redef]

SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
            "NVSHMEM_DISABLE_NVLS": "1"}


def set_safe_env() -> None:
    """Force NVLink multicast off in NCCL, PyTorch symmetric memory and NVSHMEM."""
    os.environ.update(SAFE_ENV)


def _worker(rank: int, world: int, port: int, rows: list[dict[str, Any]], out_dir: str,
            time_left_s: float, resume: bool) -> None:
    set_safe_env()
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, device_id=torch.device("cuda", rank))
    budget = Budget(time_left_s)
    writer = ProfileWriter(Path(out_dir), resume=True) if rank == 0 else None
    dev = torch.device("cuda", rank)
    for row in rows:
        stop = torch.tensor([1 if budget.exhausted() else 0], device=dev)
        dist.all_reduce(stop)
        if int(stop.item()):
            break
        op, n = str(row["op"]), int(row["bytes"])
        launch = _make_launch(op, n, rank, world, dev)
        est = 20e-6 + n / 150e9
        dist.barrier()
        med, p10, p90 = time_kernel(launch, est_s=est, device="cuda", target_s=0.02,
                                    min_reps=5, max_reps=25, warmup=3)
        stats = torch.tensor([med, p10, p90], device=dev, dtype=torch.float64)
        dist.all_reduce(stats, op=dist.ReduceOp.MAX)
        if writer is not None:
            m, a, b = (float(v) for v in stats.tolist())
            writer.write("collective", {**row, "time_s": m, "p10_s": a, "p90_s": b})
        del launch
    dist.barrier()
    dist.destroy_process_group()


def _make_launch(op: str, n: int, rank: int, world: int, dev: Any) -> Any:
    """A zero-argument-index launcher of one collective on ``n`` bytes of random bf16 data."""
    import torch
    import torch.distributed as dist

    elems = max(1, n // 2)
    if op == "all_reduce":
        x = torch.randn(elems, device=dev, dtype=torch.bfloat16)
        return lambda i: dist.all_reduce(x)
    if op == "all_gather":
        part = torch.randn(max(1, elems // world), device=dev, dtype=torch.bfloat16)
        gathered = torch.empty(part.numel() * world, device=dev, dtype=torch.bfloat16)
        return lambda i: dist.all_gather_into_tensor(gathered, part)
    if op in ("reduce_scatter", "all_to_all"):
        xin = torch.randn(max(world, (elems // world) * world), device=dev, dtype=torch.bfloat16)
        if op == "all_to_all":
            out_a = torch.empty_like(xin)
            return lambda i: dist.all_to_all_single(out_a, xin)
        out_r = torch.empty(xin.numel() // world, device=dev, dtype=torch.bfloat16)
        return lambda i: dist.reduce_scatter_tensor(out_r, xin)
    if op == "send_recv":  # rank 0 sends to rank 1; other ranks idle
        x = torch.randn(elems, device=dev, dtype=torch.bfloat16)
        if rank == 0:
            return lambda i: dist.send(x, 1)
        if rank == 1:
            return lambda i: dist.recv(x, 0)
        return lambda i: None
    raise ValueError(f"unknown collective {op!r}")


def run_collectives(rows: list[dict[str, Any]], out_dir: Path, world: int, time_left_s: float,
                    resume: bool, log: Any) -> int:
    """Spawn one process per GPU and measure the rows not yet in collective.csv."""
    import socket

    import torch.multiprocessing as mp

    set_safe_env()
    writer = ProfileWriter(out_dir, resume=True)
    todo = [r for r in rows if not writer.done("collective", r)]
    if not todo:
        return 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log(f"[collective] {len(todo)} points on {world} GPUs")
    mp.spawn(_worker, args=(world, port, todo, str(out_dir), time_left_s, resume), nprocs=world,
             join=True)
    return len(todo)


def collective_rows(world: int, quick: bool) -> list[dict[str, Any]]:
    try:
        from fleetsim.calibration.bench.grids import COLLECTIVE_BYTES, COLLECTIVE_OPS
    except ImportError:
        from grids import COLLECTIVE_BYTES, COLLECTIVE_OPS  # type: ignore[no-redef]
    sizes = COLLECTIVE_BYTES[::3] if quick else COLLECTIVE_BYTES
    return [{"op": op, "group_size": world, "bytes": b} for op in COLLECTIVE_OPS for b in sizes]
