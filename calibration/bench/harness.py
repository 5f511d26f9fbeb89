"""``fleetsim calibrate``: measure one GPU's kernel times into a calibration profile.

Runs as ``fleetsim calibrate ...`` or as a plain file on a GPU box that has PyTorch but
not fleetsim's other dependencies (``python3 calibration/bench/harness.py ...``). Writes
``<out>/{gemm,attention,elementwise,moe,collective,memcpy,launch,power}.csv`` and
``meta.json`` in the format of docs/ARCHITECTURE.md, row by row, so that a run stopped by
``--budget-s`` keeps what it measured and ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

try:
    from fleetsim.calibration.bench import grids
    from fleetsim.calibration.bench.common import (
        Budget,
        ProfileWriter,
        catalog_name_for,
        collect_meta,
        parse_only,
        write_meta,
    )
except ImportError:
    import grids  # type: ignore[no-redef]
    from common import (  # type: ignore[no-redef]
        Budget,
        ProfileWriter,
        catalog_name_for,
        collect_meta,
        parse_only,
        write_meta,
    )

SUITES = ("gemm", "attention", "elementwise", "moe", "memcpy", "launch", "power", "collective",
          "host_dispatch", "sustained", "attention_dense", "attention_backward", "gemm_unaligned",
          "gemm_layout")
SHARES = {"gemm": 0.36, "attention": 0.22, "elementwise": 0.08, "moe": 0.08, "memcpy": 0.05,
          "launch": 0.02, "power": 0.06, "collective": 0.13, "host_dispatch": 0.02,
          "sustained": 0.10, "attention_dense": 0.04, "attention_backward": 0.05,
          "gemm_unaligned": 0.05, "gemm_layout": 0.08}
"""Fraction of the budget each suite may use before the next starts (unused time carries on)."""


class MissingRequirement(RuntimeError):
    """Torch or a CUDA GPU is absent; the message says which."""


def check_requirements(device: str) -> None:
    """Raise MissingRequirement naming what is missing for a calibration on ``device``."""
    try:
        import torch
    except ImportError as exc:
        raise MissingRequirement(
            "PyTorch is not installed (pip install torch); calibration needs it") from exc
    if device == "cuda" and not torch.cuda.is_available():
        raise MissingRequirement(
            "no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False); "
            "calibration must run on a machine with an NVIDIA GPU")


def default_out(catalog: str) -> Path:
    """Where a run writes when no ``--out`` is given: ``$FLEETSIM_PROFILE_DIR/<GPU>``, else
    ``./fleetsim-profiles/<GPU>``; never inside the installed package."""
    root = os.environ.get("FLEETSIM_PROFILE_DIR", "").strip()
    return Path(root).expanduser() / catalog if root else Path("fleetsim-profiles") / catalog


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default $FLEETSIM_PROFILE_DIR/<catalog GPU>, else "
                   "./fleetsim-profiles/<catalog GPU>)")
    p.add_argument("--budget-s", type=float, default=1800.0, help="wall-clock budget in seconds")
    p.add_argument("--only", default=None, help=f"comma-separated suites of {', '.join(SUITES)}")
    p.add_argument("--quick", action="store_true", help="small grids (minutes, for a first look)")
    p.add_argument("--resume", action="store_true", help="keep rows already in --out and skip them")
    p.add_argument("--catalog-gpu", default=None, help="catalog GPU name (default from device name)")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="cpu runs a smoke test of the code paths (no meaningful numbers)")
    p.add_argument("--sustained-s", type=float, default=8.0,
                   help="seconds of continuous load per class in the sustained suite")
    p.add_argument("--pool-gib", type=float, default=None, help="random operand pool size in GiB")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_calibration(args: argparse.Namespace, invocation: str) -> dict[str, Any]:
    """Run the selected suites within the budget; return a summary (rows written, skipped)."""
    check_requirements(args.device)
    import torch

    try:
        from fleetsim.calibration.bench import collective, compute, host, memory, power
        from fleetsim.calibration.bench.timing import BenchContext, RandomPool, device_props
    except ImportError:
        import collective  # type: ignore[no-redef]
        import compute  # type: ignore[no-redef]
        import host  # type: ignore[no-redef]
        import memory  # type: ignore[no-redef]
        import power  # type: ignore[no-redef]
        from timing import BenchContext, RandomPool, device_props  # type: ignore[no-redef]

    collective.set_safe_env()
    suites = parse_only(args.only, SUITES)
    props = device_props(args.device)
    catalog = args.catalog_gpu or catalog_name_for(str(props["name"]))
    out = Path(args.out) if args.out else default_out(catalog)
    print(f"writing the {catalog} profile to {out}/", flush=True)
    # a run starts over the CSVs of the suites it runs; the extra attention suites only add rows
    writer = ProfileWriter(out, resume=args.resume,
                           fresh=[s for s in suites
                                  if s not in ("attention_dense", "attention_backward", "gemm_unaligned")])
    budget = Budget(args.budget_s)
    n_gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    if args.pool_gib is not None:
        pool_bytes = int(args.pool_gib * (1 << 30))
    elif args.device == "cpu":
        pool_bytes = 64 << 20
    else:
        pool_bytes = min(7 << 30, int(props["mem_bytes"] * 0.09))
    _log(f"calibrating {props['name']} as {catalog} into {out}: suites {','.join(suites)}, "
         f"budget {args.budget_s:.0f} s, pool {pool_bytes / 2**30:.1f} GiB")
    pool = RandomPool(pool_bytes // 2, args.device)
    ctx = BenchContext(device=args.device, writer=writer, budget=budget, pool=pool, props=props,
                       quick=args.quick, log=_log)
    if args.device == "cpu":
        dtypes: tuple[str, ...] = ("bf16", "fp16", "tf32")
    else:
        dtypes = ("bf16", "fp16", "tf32", "fp8")
    plan: dict[str, Any] = {
        "gemm": lambda: compute.run_gemm(ctx, grids.gemm_grid(args.quick, dtypes)),
        "attention": lambda: compute.run_attention(ctx, grids.attention_grid(args.quick)),
        "elementwise": lambda: memory.run_elementwise(ctx, grids.elementwise_grid(args.quick)),
        "moe": lambda: compute.run_moe(ctx, grids.moe_grid(args.quick)),
        "memcpy": lambda: memory.run_memcpy(ctx, grids.memcpy_grid(args.quick)),
        "launch": lambda: memory.run_launch(ctx, grids.launch_grid(args.quick)),
        "power": lambda: power.run_power(ctx, grids.POWER_CLASSES),
        "host_dispatch": lambda: host.run_host_dispatch(ctx),
        "sustained": lambda: host.run_sustained(ctx, duration_s=args.sustained_s),
        "attention_dense": lambda: compute.run_attention(ctx, grids.attention_dense_grid()),
        "gemm_layout": lambda: compute.run_gemm_layout(ctx, grids.gemm_layout_grid(args.quick)),
        "gemm_unaligned": lambda: compute.run_gemm(ctx, grids.gemm_unaligned_grid(args.quick)),
        "attention_backward": lambda: compute.run_attention(ctx, grids.attention_backward_grid(args.quick)),
    }
    written: dict[str, int] = {}
    active = [s for s in suites if s != "collective" or n_gpus >= 2]
    share_total = sum(SHARES[s] for s in active)
    used_share = 0.0
    for suite in active:
        used_share += SHARES[suite] / share_total
        ctx.suite_deadline_s = used_share * args.budget_s
        if budget.exhausted():
            _log(f"budget exhausted before suite {suite}")
            break
        t0 = time.monotonic()
        if suite == "collective":
            del pool
            ctx.pool = None  # type: ignore[assignment]
            torch.cuda.empty_cache()
            left = max(1.0, ctx.suite_deadline_s - budget.elapsed_s())
            try:
                written[suite] = collective.run_collectives(
                    collective.collective_rows(n_gpus, args.quick), out, n_gpus, left,
                    args.resume, _log)
            except Exception as exc:  # noqa: BLE001 - a failed spawn must not lose the profile
                written[suite] = 0
                ctx.skipped.append(f"collective suite failed: {type(exc).__name__}: {exc}")
        else:
            written[suite] = plan[suite]()
        _log(f"[{suite}] {written[suite]} rows in {time.monotonic() - t0:.1f} s")
    if "collective" in suites and n_gpus < 2:
        _log("[collective] skipped: fewer than 2 GPUs visible")
    meta = collect_meta(
        catalog_gpu=catalog, invocation=invocation, torch_version=torch.__version__,
        cuda_version=str(torch.version.cuda), device_name=str(props["name"]), num_gpus=n_gpus,
        extra={"l2_bytes": props["l2_bytes"], "sm_count": props["sms"],
               "mem_bytes": props["mem_bytes"], "elapsed_s": round(budget.elapsed_s(), 1),
               "rows_written": writer.rows_written, "suites": suites, "quick": args.quick,
               "skipped_points": len(ctx.skipped)},
    )
    write_meta(out, meta)
    if ctx.skipped:
        (out / "skipped.txt").open("a").write("\n".join(ctx.skipped) + "\n")
    _log(f"done: {writer.rows_written} rows in {budget.elapsed_s():.0f} s, "
         f"{len(ctx.skipped)} points skipped; profile in {out}")
    return {"out": str(out), "written": written, "skipped": ctx.skipped}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="calibration/bench/harness.py", description=__doc__)
    add_arguments(p)
    args = p.parse_args(argv)
    invocation = "python3 calibration/bench/harness.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    try:
        run_calibration(args, invocation)
    except MissingRequirement as exc:
        print(f"calibrate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
