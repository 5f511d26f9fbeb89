"""Training steps with FSDP2 (ZeRO-3) and with pipeline parallelism (GPipe, 1F1B)
(``training_parallel.csv``).

Models are GPT-2-style (``torch_models.make_train_model``: pre-LN, GELU 4h MLP, learned
positions), bf16 autocast over fp32 weights, fused AdamW, as ``train_bench.py``:

* ``--kind fsdp``: every block and the root wrapped by ``torch.distributed.fsdp.fully_shard``
  (FSDP2) over all ranks, parameters, gradients and optimizer state sharded (ZeRO-3); fp32
  all-gathers and reduce-scatters (no mixed-precision policy), tied LM head;
* ``--kind pp``: ``world`` stages of equal block counts (stage 0 holds the embeddings, the last
  the final norm and an untied LM head with the loss), ``torch.distributed.pipelining``
  ``ScheduleGPipe`` / ``Schedule1F1B`` over ``grad_accum`` micro-batches of ``micro_batch``
  sequences per step; no data parallelism.

A step is the schedule (or forward + backward) + optimizer step + zero_grad; its time is the
slowest rank's median over ``--steps`` steps after ``--warmup``, each step started after a
barrier. Peak memory is the largest rank's ``max_memory_allocated``. Points that run out of
memory are written with ``status=oom``; a feature this PyTorch lacks is written to
``skipped.txt``.

Usage: ``python3 calibration/bench/multi/train_parallel.py --out DIR --kind fsdp|pp --world N``;
``--device cpu --smoke`` runs a tiny model at world 2 over gloo.
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
    from fleetsim.calibration.bench.bench_io import append_row, note_skip, write_script_meta
    from fleetsim.calibration.bench.collective import SAFE_ENV
    from fleetsim.calibration.bench.common import summarize
    from fleetsim.calibration.bench.multi import points as pts
    from fleetsim.calibration.bench.runs import free_port
except ImportError:
    import _paths  # noqa: F401
    import points as pts  # type: ignore[no-redef]
    import torch_models as tm  # type: ignore[no-redef]
    from bench_io import append_row, note_skip, write_script_meta  # type: ignore[no-redef]
    from collective import SAFE_ENV  # type: ignore[no-redef]
    from common import summarize  # type: ignore[no-redef]
    from runs import free_port  # type: ignore[no-redef]


def _fsdp_setup(pt: dict[str, Any], vocab: int, dev: Any, world: int) -> tuple[Any, Any, Any]:
    """(callable step body, optimizer, params) of an FSDP2-sharded model."""
    import torch

    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
    except ImportError as exc:
        raise NotImplementedError(f"FSDP2 fully_shard absent ({exc})") from None
    with torch.device(dev):
        model = tm.make_train_model(pt["layers"], pt["hidden"], pt["heads"], vocab, pt["seq_len"])
    mesh = init_device_mesh(dev.type, (world,))
    for blk in model.blocks:
        fully_shard(blk, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    gen = torch.Generator(device=dev)
    gen.manual_seed(7)
    x = torch.randint(0, vocab, (pt["micro_batch"], pt["seq_len"]), device=dev, generator=gen)

    def body() -> None:
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
            loss = model(x, x)
        loss.backward()

    return body, opt, model


def _stage_module(pt: dict[str, Any], vocab: int, stage: int, stages: int, dev: Any) -> Any:
    """Stage ``stage`` of ``stages``: its share of the blocks, plus the embeddings (first)
    or final norm and untied LM head (last). Outputs hidden states; the last outputs logits."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F  # noqa: N812

    per = pt["layers"] // stages
    with torch.device(dev):
        gpt = tm.make_train_model(per, pt["hidden"], pt["heads"], vocab if stage == 0 else 8, pt["seq_len"])
        head = nn.Linear(pt["hidden"], vocab, bias=False) if stage == stages - 1 else None

    class Stage(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = gpt.blocks
            self.first, self.last = stage == 0, stage == stages - 1
            if self.first:
                self.wte, self.wpe = gpt.wte, gpt.wpe
            if self.last:
                self.ln_f, self.head = gpt.ln_f, head

        def forward(self, x: Any) -> Any:
            if self.first:
                x = self.wte(x) + self.wpe(torch.arange(x.shape[1], device=x.device))
            for blk in self.blocks:
                x = blk(x)
            if self.last:
                return self.head(self.ln_f(x))  # type: ignore[misc]
            return x

    del F
    return Stage()


def _pp_setup(pt: dict[str, Any], vocab: int, dev: Any, rank: int, world: int) -> tuple[Any, Any, Any]:
    import torch
    import torch.nn.functional as F  # noqa: N812

    try:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
    except ImportError as exc:
        raise NotImplementedError(f"torch.distributed.pipelining absent ({exc})") from None
    mod = _stage_module(pt, vocab, rank, world, dev)
    m, mb, seq = pt["grad_accum"], pt["micro_batch"], pt["seq_len"]
    stage = PipelineStage(mod, rank, world, dev)

    def loss_fn(logits: Any, target: Any) -> Any:
        return F.cross_entropy(logits.float().reshape(-1, vocab), target.reshape(-1))

    cls = Schedule1F1B if pt["schedule"] == "1f1b" else ScheduleGPipe
    sched = cls(stage, n_microbatches=m, loss_fn=loss_fn)
    opt = torch.optim.AdamW(mod.parameters(), lr=1e-4, fused=dev.type == "cuda")
    gen = torch.Generator(device=dev)
    gen.manual_seed(7)
    x = torch.randint(0, vocab, (m * mb, seq), device=dev, generator=gen)

    def body() -> None:
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
            if rank == 0:
                sched.step(x)
            elif rank == world - 1:
                sched.step(target=x)
            else:
                sched.step()

    return body, opt, mod


def _run_point(kind: str, pt: dict[str, Any], vocab: int, dev: Any, rank: int, world: int,
               steps: int, warmup: int) -> tuple[tuple[float, float, float], int, int, float, int]:
    """(time stats, peak alloc, peak reserved, host issue time, params of this rank)."""
    import torch
    import torch.distributed as dist

    body, opt, model = (_fsdp_setup(pt, vocab, dev, world) if kind == "fsdp"
                        else _pp_setup(pt, vocab, dev, rank, world))
    cuda = dev.type == "cuda"
    times, hosts = [], []
    for i in range(warmup + steps):
        if i == warmup and cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
        dist.barrier()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        body()
        opt.step()
        opt.zero_grad(set_to_none=True)
        host = time.perf_counter() - t0
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            hosts.append(host)
    params = sum(p.numel() for p in model.parameters())
    alloc = torch.cuda.max_memory_allocated(dev) if cuda else 0
    res = torch.cuda.max_memory_reserved(dev) if cuda else 0
    return summarize(times), int(alloc), int(res), summarize(hosts)[0], int(params)


def _worker(rank: int, args: argparse.Namespace, port: int) -> None:
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
    vocab = 500 if args.smoke else pts.TRAIN_VOCAB
    models = tuple(m for m in args.models.split(",") if m)
    oom_at: dict[tuple[str, str], int] = {}
    for pt in pts.train_points(args.kind, world, smoke=args.smoke, models=models):
        flag = torch.tensor([1 if time.monotonic() > deadline else 0], device=dev)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if int(flag.item()):
            break
        key = (pt["model"], pt["schedule"])
        if key in oom_at and pt["micro_batch"] * pt["grad_accum"] >= oom_at[key]:
            continue
        status, err = "ok", ""
        st, alloc, res, host, params = (float("nan"),) * 3, 0, 0, float("nan"), 0
        try:
            st, alloc, res, host, params = _run_point(args.kind, pt, vocab, dev, rank, world, args.steps,
                                                      args.warmup)
        except torch.cuda.OutOfMemoryError:
            status = "oom"
        except (NotImplementedError, RuntimeError, ValueError, TypeError) as exc:
            status, err = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if cuda:
            torch.cuda.empty_cache()
        codes = {"ok": 0, "oom": 1, "error": 2}
        t = torch.tensor([codes[status], *st, alloc, res, host], device=dev, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        total = torch.tensor([params], device=dev, dtype=torch.float64)
        dist.all_reduce(total)
        v = t.tolist()
        status = {0: "ok", 1: "oom", 2: "error"}[int(v[0])]
        if status == "error":
            if rank == 0:
                note_skip(out, f"train_parallel {args.kind} {pt}", err or "failed on another rank")
            break  # a missing feature or a broken schedule fails every point alike
        if status == "oom":
            oom_at[key] = pt["micro_batch"] * pt["grad_accum"]
        if rank == 0:
            # FSDP2 parameters are DTensors whose numel is the unsharded size on every rank
            params_all = int(total.item()) // (world if args.kind == "fsdp" else 1)
            row = {**pt, "vocab": vocab, "ffn": 4 * pt["hidden"], "recompute": 0, "world_size": world,
                   "params": params_all, "status": status, "time_s": v[1], "p10_s": v[2], "p90_s": v[3],
                   "peak_alloc_bytes": int(v[4]), "peak_reserved_bytes": int(v[5]), "host_s": v[6],
                   "device_s": float("nan"), "comm_s": float("nan"), "kernels": 0, "launch_s": float("nan")}
            append_row(out / "training_parallel.csv", pts.TRAIN_COLUMNS, row)
            print(f"[train_parallel] {args.kind} {pt['model']} mb={pt['micro_batch']} m={pt['grad_accum']} "
                  f"{pt['schedule']} world={world}: {status} {v[1]:.4f} s, peak {v[4] / 2**30:.1f} GiB",
                  file=sys.stderr, flush=True)
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--kind", required=True, choices=("fsdp", "pp"))
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=240.0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--models", default="", help=f"comma-separated subset of {', '.join(pts.TRAIN_MODELS)}")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    try:
        pts.train_points(args.kind, args.world, smoke=args.smoke,
                         models=tuple(m for m in args.models.split(",") if m))
    except ValueError as exc:
        p.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.update(SAFE_ENV)
    import torch.multiprocessing as mp

    t0 = time.monotonic()
    mp.spawn(_worker, args=(args, free_port()), nprocs=args.world, join=True)
    write_script_meta(args.out, f"train_parallel_{args.kind}_{args.world}", args.device,
                      sys.argv[1:] if argv is None else argv,
                      {"kind": args.kind, "world": args.world, "steps": args.steps, "warmup": args.warmup,
                       "elapsed_s": round(time.monotonic() - t0, 1),
                       "recipe": "bf16 autocast over fp32 weights, fused AdamW, SDPA, no dropout; "
                                 "fsdp: fp32 collectives, tied head; pp: untied head"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
