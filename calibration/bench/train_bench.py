"""Training step times and peak memory of GPT-2-style models (training.csv).

Ground truth for the training simulator: pre-LN GPT-2 models of ~350M to ~2.7B
parameters (``torch_models.make_train_model``), bf16 autocast over fp32 master weights,
fused AdamW, causal SDPA, with and without full per-block activation recomputation,
micro-batches 1/2/4/8 where they fit, on one GPU and with DDP over several (one process
per GPU, NCCL). A step is forward + backward + optimizer step + zero_grad; its time is
the median of ``--steps`` steps after ``--warmup`` (host clock around a synchronized
step). Peak memory is ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``
over the timed steps. Points that run out of memory are recorded with ``status=oom``.

Three more figures per point separate the host from the device, so that a prediction can be
checked part by part: ``host_s``, the median host time to issue a whole step (from its start
to ``zero_grad`` returning, before the closing synchronize); ``device_s``/``comm_s``/``kernels``,
the summed durations of one step's compute kernels, its NCCL kernels and the kernel count,
from ``torch.profiler`` (CUPTI) over one extra step; ``launch_s``, the eager launch interval of
this host at this moment (a Python loop of ``x.add_(1)``, as the harness's ``launch`` suite),
measured right before the point's steps.

Usage: ``python3 calibration/bench/train_bench.py --out DIR [--world 2] [--budget-s S]``;
``--device cpu --smoke`` exercises the code paths on a tiny model.
"""

from __future__ import annotations

import argparse
import csv
import os
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

COLUMNS = ("model", "layers", "hidden", "heads", "seq_len", "vocab", "ffn", "micro_batch",
           "grad_accum", "recompute", "world_size", "dp", "params", "status", "time_s", "p10_s",
           "p90_s", "peak_alloc_bytes", "peak_reserved_bytes", "host_s", "device_s", "comm_s",
           "kernels", "launch_s")
# (name, layers, hidden, heads, seq_len)
CONFIGS = (("gpt2-350m", 24, 1024, 8, 1024), ("gpt2-1.3b", 24, 2048, 16, 1024),
           ("gpt2-2.7b", 32, 2560, 20, 2048))
SMOKE_CONFIGS = (("smoke", 2, 64, 2, 32),)
VOCAB = 50257
MICRO_BATCHES = (1, 2, 4, 8)


def _append(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(COLUMNS)
        w.writerow([f"{row[c]:.6g}" if isinstance(row[c], float) else row[c] for c in COLUMNS])


def _bench_one(model: Any, opt: Any, mb: int, seq: int, vocab: int, device: Any, steps: int,
               warmup: int) -> tuple[tuple[float, float, float], int, int, float]:
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(mb * 1000 + seq)
    x = torch.randint(0, vocab, (mb, seq), device=device, generator=gen)
    y = torch.randint(0, vocab, (mb, seq), device=device, generator=gen)
    cuda = device.type == "cuda"
    times, hosts = [], []
    for i in range(warmup + steps):
        if i == warmup and cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t_host = time.perf_counter() - t0
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            hosts.append(t_host)
    alloc = torch.cuda.max_memory_allocated(device) if cuda else 0
    reserved = torch.cuda.max_memory_reserved(device) if cuda else 0
    return summarize(times), int(alloc), int(reserved), summarize(hosts)[0]


def _profile_step(model: Any, opt: Any, mb: int, seq: int, vocab: int, device: Any
                  ) -> tuple[float, float, int]:
    """(compute kernel seconds, NCCL kernel seconds, kernel count) of one step under
    torch.profiler; (nan, nan, 0) where CUDA activity cannot be profiled."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    if device.type != "cuda":
        return float("nan"), float("nan"), 0
    x = torch.randint(0, vocab, (mb, seq), device=device)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
    comp = comm = 0.0
    n = 0
    for name, (launches, secs) in kernel_times(prof).items():
        n += launches
        if "nccl" in name.lower():
            comm += secs
        else:
            comp += secs
    return comp, comm, n


def kernel_times(prof: Any) -> dict[str, tuple[int, float]]:
    """Per CUDA kernel name (first 160 characters) of a finished ``torch.profiler`` run:
    launches and summed device seconds."""
    import torch

    acc: dict[str, tuple[int, float]] = {}
    for ev in prof.events():
        if getattr(ev, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        n, t = acc.get(ev.name[:160], (0, 0.0))
        acc[ev.name[:160]] = (n + 1, t + float(ev.time_range.elapsed_us()) * 1e-6)
    return acc


def _launch_interval(device: Any, n: int = 2000) -> float:
    """Seconds per eager ``x.add_(1)`` launch on this host right now."""
    import torch

    x = torch.zeros(1, device=device)
    for _ in range(200):
        x.add_(1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        x.add_(1)
    dt = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.synchronize()
    return dt / n


def _worker(rank: int, args: argparse.Namespace, world: int, port: int,
            allowed: list[tuple[str, int, bool]] | None) -> None:
    os.environ.update({"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                       "NVSHMEM_DISABLE_NVLS": "1"})
    import torch
    import torch.distributed as dist

    deadline = time.monotonic() + args.budget_s
    cuda = args.device == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(rank)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo",
                                init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, device_id=device if cuda else None)
    out = Path(args.out) / "training.csv"
    configs = SMOKE_CONFIGS if args.smoke else tuple(
        c for c in CONFIGS if not args.models or c[0] in args.models.split(","))
    mbs = (1, 2) if args.smoke else MICRO_BATCHES
    for name, layers, hidden, heads, seq in configs:
        if time.monotonic() > deadline:
            break
        with torch.device(device):
            model = tm.make_train_model(layers, hidden, heads, VOCAB if not args.smoke else 500, seq)
        vocab = VOCAB if not args.smoke else 500
        params = sum(p.numel() for p in model.parameters())
        net = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: N817

            net = DDP(model, device_ids=[rank] if cuda else None)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
        for recompute in (False, True):
            model.recompute = recompute
            for mb in mbs:
                if time.monotonic() > deadline:
                    break
                if allowed is not None and (name, mb, recompute) not in allowed:
                    continue
                status, st, alloc, res = "ok", (float("nan"),) * 3, 0, 0
                host = dev = comm = float("nan")
                kernels = 0
                launch = _launch_interval(device)
                try:
                    st, alloc, res, host = _bench_one(net, opt, mb, seq, vocab, device, args.steps,
                                                      args.warmup)
                    if args.profile:
                        dev, comm, kernels = _profile_step(net, opt, mb, seq, vocab, device)
                except torch.cuda.OutOfMemoryError:
                    status = "oom"
                    opt.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
                if world > 1:
                    t = torch.tensor(list(st) + [alloc, res, host, dev, comm, kernels, launch],
                                     device=device, dtype=torch.float64)
                    dist.all_reduce(t, op=dist.ReduceOp.MAX)
                    vals = t.tolist()
                    st, alloc, res = tuple(vals[:3]), int(vals[3]), int(vals[4])
                    host, dev, comm, kernels, launch = vals[5], vals[6], vals[7], int(vals[8]), vals[9]
                if rank == 0:
                    _append(out, {"model": name, "layers": layers, "hidden": hidden,
                                  "heads": heads, "seq_len": seq, "vocab": vocab,
                                  "ffn": 4 * hidden, "micro_batch": mb, "grad_accum": 1,
                                  "recompute": int(recompute), "world_size": world, "dp": world,
                                  "params": params, "status": status, "time_s": float(st[0]),
                                  "p10_s": float(st[1]), "p90_s": float(st[2]),
                                  "peak_alloc_bytes": alloc, "peak_reserved_bytes": res,
                                  "host_s": float(host), "device_s": float(dev),
                                  "comm_s": float(comm), "kernels": kernels,
                                  "launch_s": float(launch)})
                    print(f"[train] {name} mb={mb} recompute={recompute} world={world}: "
                          f"{status} {st[0]:.4f} s (host {host:.4f}, kernels {dev:.4f}, "
                          f"launch {launch * 1e6:.1f} us), peak {alloc / 2**30:.1f} GiB",
                          file=sys.stderr, flush=True)
                if status == "oom":
                    break
        del net, model, opt
        if cuda:
            torch.cuda.empty_cache()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--world", type=int, default=1, help="DDP processes (GPUs); 1 = single GPU")
    p.add_argument("--budget-s", type=float, default=300.0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="skip the torch.profiler step (device_s, comm_s, kernels)")
    p.add_argument("--only-ok-from", type=Path, default=None,
                   help="training.csv of a single-GPU run: run only its status=ok points (DDP)")
    p.add_argument("--models", default="",
                   help="comma-separated model names to run (default: all of CONFIGS)")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    unknown = set(filter(None, args.models.split(","))) - {c[0] for c in CONFIGS}
    if unknown:
        p.error(f"--models: unknown {sorted(unknown)}; known: {[c[0] for c in CONFIGS]}")

    args.out.mkdir(parents=True, exist_ok=True)
    allowed = None
    if args.only_ok_from is not None and args.only_ok_from.exists():
        with args.only_ok_from.open() as fh:
            allowed = [(r["model"], int(r["micro_batch"]), r["recompute"] == "1")
                       for r in csv.DictReader(fh) if r["status"] == "ok" and r["world_size"] == "1"]
    t0 = time.monotonic()
    if args.world == 1:
        _worker(0, args, 1, 0, allowed)
    else:
        import torch.multiprocessing as mp

        port = free_port()
        mp.spawn(_worker, args=(args, args.world, port, allowed), nprocs=args.world, join=True)
    write_run_meta(args.out, "train_bench", argv, args.device, t0)
    print(f"train_bench: done in {time.monotonic() - t0:.0f} s -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
