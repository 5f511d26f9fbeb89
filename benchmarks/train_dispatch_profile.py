"""Kernel counts and host dispatch cost per phase of the ``train_bench.py`` training step.

Runs on a GPU machine (not in tests). For the GPT-2-style model of
``calibration/bench/train_bench.py`` (``torch_models.make_train_model``, bf16 autocast, fused
AdamW, SDPA, optional non-reentrant checkpointing) it reports, per phase of one step
(forward, backward, optimizer step, zero_grad):

* ``kernels``: device kernels, memsets and copies launched (torch.profiler CUDA activity);
* ``host_s``: host wall time of the phase when the device work is negligible (a tiny
  sequence length, so every kernel is shorter than its launch: the phase is host-bound and
  its time is the host's dispatch cost), median of repeats, synchronised per phase;
* ``eager_launch_s``: the ``launch.csv`` microbenchmark (``x.add_(1)`` in a Python loop) on
  the same host, so that per-kernel costs can be expressed relative to it.

Usage: ``python3 benchmarks/train_dispatch_profile.py [--out DIR] [--world 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "calibration" / "bench"))


def _launch_cost(torch: Any, device: Any, k: int = 1000) -> float:
    x = torch.ones(1, device=device)
    ts = []
    for j in range(8):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(k):
            x.add_(1.0)
        torch.cuda.synchronize()
        if j >= 2:
            ts.append((time.perf_counter() - t0) / k)
    return statistics.median(ts)


def _phases(torch: Any, net: Any, opt: Any, x: Any, y: Any, reps: int) -> dict[str, float]:
    out: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": [], "zero_grad": []}
    for i in range(reps + 3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            loss = net(x, y)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        loss.backward()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        opt.step()
        torch.cuda.synchronize()
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        t4 = time.perf_counter()
        if i >= 3:
            for k, v in zip(out, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                out[k].append(v)
    return {k: statistics.median(v) for k, v in out.items()}


def _whole(torch: Any, net: Any, opt: Any, x: Any, y: Any, reps: int) -> float:
    ts = []
    for i in range(reps + 3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            loss = net(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= 3:
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _counts(torch: Any, net: Any, opt: Any, x: Any, y: Any) -> dict[str, int]:
    from torch.profiler import ProfilerActivity, profile

    counts: dict[str, int] = {}
    for phase in ("forward", "backward", "optimizer", "zero_grad"):
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            loss = net(x, y)
        torch.cuda.synchronize()
        if phase == "forward":
            opt.zero_grad(set_to_none=True)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                    loss = net(x, y)
                torch.cuda.synchronize()
        if phase == "backward":
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                loss.backward()
                torch.cuda.synchronize()
        else:
            loss.backward()
        torch.cuda.synchronize()
        if phase == "optimizer":
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                opt.step()
                torch.cuda.synchronize()
        else:
            opt.step()
        if phase == "zero_grad":
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                opt.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
        else:
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        evs = [e for e in prof.events() if str(e.device_type).endswith("CUDA")]
        counts[phase] = len(evs)
        counts[phase + "_names"] = sorted({e.name[:60] for e in evs})  # type: ignore[assignment]
    return counts


def _worker(rank: int, args: argparse.Namespace, world: int, port: int) -> None:
    os.environ.update({"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                       "NVSHMEM_DISABLE_NVLS": "1"})
    import torch
    import torch_models as tm

    device = torch.device("cuda", rank)
    torch.cuda.set_device(rank)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, device_id=device)
    res: dict[str, Any] = {"launch_eager_s": _launch_cost(torch, device), "device": torch.cuda.get_device_name(0),
                           "torch": torch.__version__, "world": world, "rows": []}
    configs = (("gpt2-350m", 24, 1024, 8, 1024), ("gpt2-1.3b", 24, 2048, 16, 1024))
    for name, layers, hidden, heads, seq in configs[:args.models]:
        with torch.device(device):
            model = tm.make_train_model(layers, hidden, heads, 50257, seq)
        net = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: N817

            net = DDP(model, device_ids=[rank])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        for rec in (False, True):
            model.recompute = rec
            for mb, s in ((1, 16), (1, seq), (2, seq), (4, seq)):
                if name != "gpt2-350m" and s == seq and mb > 1:
                    continue
                x = torch.randint(0, 50257, (mb, s), device=device)
                y = torch.randint(0, 50257, (mb, s), device=device)
                row: dict[str, Any] = {"model": name, "recompute": rec, "micro_batch": mb, "seq": s}
                row["phase_s"] = _phases(torch, net, opt, x, y, args.reps)
                row["step_s"] = _whole(torch, net, opt, x, y, args.reps)
                if s == 16 and rank == 0:
                    row["kernels"] = _counts(torch, net, opt, x, y)
                res["rows"].append(row)
                if rank == 0:
                    print(json.dumps({k: v for k, v in row.items() if k != "kernels"}), flush=True)
                    if "kernels" in row:
                        print({k: v for k, v in row["kernels"].items() if not k.endswith("_names")}, flush=True)
        del net, model, opt
        torch.cuda.empty_cache()
    if rank == 0:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"dispatch_w{world}.json").write_text(json.dumps(res, indent=1))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=os.environ.get("OUT", "out"))
    p.add_argument("--world", type=int, default=1)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--models", type=int, default=2, help="first N model configurations")
    args = p.parse_args()
    if args.world == 1:
        _worker(0, args, 1, 0)
    else:
        import socket

        import torch.multiprocessing as mp

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(_worker, args=(args, args.world, port), nprocs=args.world, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
