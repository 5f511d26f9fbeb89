"""Batched multi-adapter LoRA with plain PyTorch ops, and host->device adapter loads.

A LoRA-adapted linear layer adds ``y += (x A_a) B_a`` for each token's adapter ``a``
(``A_a``: [h, r] shrink, ``B_a``: [r, h] expand; the scale alpha/r is folded into ``B``).
``T`` tokens of one batch use ``A`` distinct adapters (tokens split as evenly as possible).
Implementations (``impl``), all without custom kernels:

- ``bgmv_gather``: each token's adapter matrices are gathered from the stacked adapter table
  (``index_select`` on a per-token adapter index: [T, h, r] and [T, r, h] materialized), then
  ``torch.bmm`` shrink and expand: the data flow of Punica's BGMV, paying for the gathered copies;
- ``sgmv_loop``: tokens sorted by adapter, one ``torch.mm`` shrink and one ``addmm_`` expand per
  segment (2 A kernels): the data flow of SGMV as a loop;
- ``sgmv_grouped_mm``: the same segments through ``torch._grouped_mm`` (2 kernels) where torch
  has it;
- ``base_gemm``: the layer's own ``T x h x h`` bf16 GEMM, for reference.

Each application is captured in a CUDA graph with as many copies on rotating operand sets as
evict the L2 (as the next layer's weights would), and replays are timed with CUDA events:
``time_s`` (median), ``p10_s``, ``p90_s`` per application, without host launch gaps, as a
serving engine's graph-captured decode step sees them. Each implementation is checked against
an fp32 reference first (``rel_err``).

``lora_load.csv``: one adapter for all 7 projections (q, k, v, o, gate, up, down) of each of
32 llama-3.1-8b layers, copied host->device from pinned or pageable memory, as one contiguous
buffer or as its 448 tensors one by one; host wall clock around the copies and a synchronize.

``--device cpu --smoke`` runs every code path on tiny shapes; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

try:
    from fleetsim.calibration.bench.bench_io import append_row, note_skip, write_script_meta
    from fleetsim.calibration.bench.common import rotation_count, summarize
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_io import append_row, note_skip, write_script_meta  # type: ignore[no-redef]
    from common import rotation_count, summarize  # type: ignore[no-redef]

COLUMNS = ("impl", "tokens", "hidden", "rank", "adapters", "dtype", "flops", "adapter_bytes",
           "impl_bytes", "act_bytes", "sets", "rel_err", "time_s", "p10_s", "p90_s")
"""lora.csv: ``flops`` = 4 T h r (shrink + expand; 2 T h^2 for ``base_gemm``);
``adapter_bytes`` = the distinct adapters' weights, read once (2 A h r x 2 bytes);
``impl_bytes`` = adapter-weight traffic of the implementation with no cache reuse (the gather
reads the table per token, writes the copy and the bmm reads it back: 3 x 2 T h r x 2 bytes);
``act_bytes`` = x read, y read and written (3 T h x 2 bytes)."""
LOAD_COLUMNS = ("rank", "layers", "projections", "tensors", "bytes", "pinned", "layout",
                "time_s", "p10_s", "p90_s", "bytes_per_s")
LLAMA8B_PROJ = {"q": (4096, 4096), "k": (4096, 1024), "v": (4096, 1024), "o": (4096, 4096),
                "gate": (4096, 14336), "up": (4096, 14336), "down": (14336, 4096)}
"""(in, out) features of llama-3.1-8b's seven adapted projections (LoRA A: [in, r], B: [r, out])."""
IMPLS = ("bgmv_gather", "sgmv_loop", "sgmv_grouped_mm")


def segments(tokens: int, adapters: int) -> list[int]:
    """Tokens per adapter when ``tokens`` are split as evenly as possible over ``adapters``."""
    if not 1 <= adapters <= tokens:
        raise ValueError(f"need 1 <= adapters ({adapters}) <= tokens ({tokens})")
    q, rem = divmod(tokens, adapters)
    return [q + (1 if i < rem else 0) for i in range(adapters)]


def lora_costs(impl: str, tokens: int, hidden: int, rank: int, adapters: int) -> dict[str, int]:
    """FLOPs and bytes of one application (see ``COLUMNS``), bf16 (2 bytes)."""
    act = 3 * tokens * hidden * 2
    if impl == "base_gemm":
        return {"flops": 2 * tokens * hidden * hidden, "adapter_bytes": 0,
                "impl_bytes": 2 * hidden * hidden, "act_bytes": 2 * tokens * hidden * 2}
    unique = 2 * adapters * hidden * rank * 2
    per_token = 2 * tokens * hidden * rank * 2
    impl_bytes = 3 * per_token if impl == "bgmv_gather" else unique
    return {"flops": 4 * tokens * hidden * rank, "adapter_bytes": unique,
            "impl_bytes": impl_bytes, "act_bytes": act}


def adapter_params(rank: int, layers: int = 32, proj: dict[str, tuple[int, int]] | None = None) -> int:
    """Parameters of one LoRA adapter: ``rank x sum(in + out)`` per layer, times ``layers``."""
    p = LLAMA8B_PROJ if proj is None else proj
    return layers * rank * sum(i + o for i, o in p.values())


def grid(smoke: bool) -> list[dict[str, Any]]:
    """(impl, tokens, hidden, rank, adapters) points in run order; adapters <= tokens."""
    if smoke:
        pts = [(t, 64, r, a) for t in (1, 8, 32) for r in (8, 16) for a in (1, 4) if a <= t]
        bases = [(t, 64) for t in (1, 8, 32)]
    else:
        pts = [(t, 4096, r, a) for t in (1, 8, 32, 128, 512, 2048) for r in (8, 16, 32, 64, 128)
               for a in (1, 4, 16, 64) if a <= t]
        pts += [(t, 8192, r, a) for t in (32, 512) for r in (16, 64) for a in (4, 16)]
        bases = [(t, 4096) for t in (1, 8, 32, 128, 512, 2048)] + [(t, 8192) for t in (32, 512)]
    rows = [{"impl": "base_gemm", "tokens": t, "hidden": h, "rank": 0, "adapters": 0}
            for t, h in bases]
    rows += [{"impl": i, "tokens": t, "hidden": h, "rank": r, "adapters": a}
             for t, h, r, a in pts for i in IMPLS]
    return rows


def _apply_fn(impl: str, x: Any, y: Any, aw: Any, bw: Any, idx: Any, counts: list[int],
              offs: Any) -> Callable[[], Any]:
    """One LoRA application ``y += (x A_a) B_a`` by ``impl`` on one operand set."""
    import torch

    if impl == "bgmv_gather":
        def run() -> Any:
            ag = aw.index_select(0, idx)  # [T, h, r]
            bg = bw.index_select(0, idx)  # [T, r, h]
            t = torch.bmm(x.unsqueeze(1), ag)
            return y.add_(torch.bmm(t, bg).squeeze(1))
        return run
    if impl == "sgmv_loop":
        bounds = []
        s = 0
        for a, c in enumerate(counts):
            bounds.append((a, s, s + c))
            s += c

        def run() -> Any:
            for a, s0, s1 in bounds:
                y[s0:s1].addmm_(torch.mm(x[s0:s1], aw[a]), bw[a])
            return y
        return run
    if impl == "sgmv_grouped_mm":
        if not hasattr(torch, "_grouped_mm"):
            raise NotImplementedError("torch._grouped_mm absent in this torch")

        def run() -> Any:
            t = torch._grouped_mm(x, aw, offs=offs, out_dtype=torch.bfloat16)
            return y.add_(torch._grouped_mm(t, bw, offs=offs, out_dtype=torch.bfloat16))
        return run
    raise ValueError(f"unknown impl {impl!r}")


def _reference(x: Any, aw: Any, bw: Any, idx: Any) -> Any:
    """fp32 ``(x_j A_a) B_a`` for each token ``j`` of adapter ``a = idx[j]``, adapter by adapter."""
    import torch

    out = torch.zeros(x.shape[0], bw.shape[2], dtype=torch.float32, device=x.device)
    for a in range(aw.shape[0]):
        sel = (idx == a).nonzero().squeeze(1)
        out[sel] = x[sel].float() @ aw[a].float() @ bw[a].float()
    return out


def _time_graph(fns: list[Callable[[], Any]], dev: str, target_s: float = 0.02
                ) -> tuple[float, float, float]:
    """Median, p10, p90 seconds of one application: a graph of ``len(fns)`` applications (one per
    operand set) replayed and timed with events (CPU: host clock around the calls)."""
    import torch

    for f in fns:
        f()
    if dev != "cuda":
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for f in fns:
                f()
            times.append((time.perf_counter() - t0) / len(fns))
        return summarize(times)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    g.replay()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    g.replay()
    b.record()
    b.synchronize()
    est = max(a.elapsed_time(b) * 1e-3, 1e-6)
    reps = int(min(30, max(7, target_s / est)))
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
          for _ in range(reps)]
    torch.cuda._sleep(int(min(2e-3 + 30e-6 * reps, 0.5) * 2.0e9))
    for s, e in ev:
        s.record()
        g.replay()
        e.record()
    torch.cuda.synchronize()
    del g
    return summarize([s.elapsed_time(e) * 1e-3 / len(fns) for s, e in ev])


def measure(row: dict[str, Any], dev: str, l2_bytes: int) -> dict[str, Any]:
    import torch

    impl, t, h, r, na = row["impl"], row["tokens"], row["hidden"], row["rank"], row["adapters"]
    costs = lora_costs(impl, t, h, r, na)
    bf = torch.bfloat16
    gen = torch.Generator(device=dev)
    gen.manual_seed(t * 1_000_003 + h * 101 + r * 7 + na)
    if impl == "base_gemm":
        sets = rotation_count(costs["impl_bytes"] + costs["act_bytes"], l2_bytes)
        ws = [torch.randn(h, h, device=dev, dtype=bf, generator=gen) for _ in range(sets)]
        x = torch.randn(t, h, device=dev, dtype=bf, generator=gen)
        outs = [torch.empty(t, h, device=dev, dtype=bf) for _ in range(sets)]
        med, p10, p90 = _time_graph([partial(torch.mm, x, w.t(), out=o)
                                     for w, o in zip(ws, outs, strict=True)], dev)
        return {**row, "dtype": "bf16", **costs, "sets": sets, "rel_err": math.nan,
                "time_s": med, "p10_s": p10, "p90_s": p90}
    counts = segments(t, na)
    sorted_idx = torch.repeat_interleave(torch.arange(na, device=dev),
                                         torch.tensor(counts, device=dev))
    perm = torch.randperm(t, device=dev, generator=gen)
    offs = torch.tensor(counts, device=dev).cumsum(0).to(torch.int32)
    sets = rotation_count(costs["adapter_bytes"] + costs["act_bytes"], l2_bytes)
    fns: list[Callable[[], Any]] = []
    rel_err = math.nan
    for j in range(sets):
        x = torch.randn(t, h, device=dev, dtype=bf, generator=gen)
        y = torch.randn(t, h, device=dev, dtype=bf, generator=gen)
        aw = torch.randn(na, h, r, device=dev, dtype=bf, generator=gen) / math.sqrt(h)
        bw = torch.randn(na, r, h, device=dev, dtype=bf, generator=gen) / math.sqrt(r)
        # bgmv takes tokens in arrival order (a shuffled adapter index); sgmv sorted by adapter
        idx = sorted_idx[perm] if impl == "bgmv_gather" else sorted_idx
        f = _apply_fn(impl, x, y, aw, bw, idx, counts, offs)
        if j == 0:  # the added term against fp32, before any timed run touches y
            y0 = y.float()
            f()
            ref = _reference(x, aw, bw, idx)
            rel_err = float((y.float() - y0 - ref).norm() / ref.norm())
        fns.append(f)
    if not rel_err < 2e-2:
        raise ArithmeticError(f"{impl} disagrees with the fp32 reference: rel_err {rel_err:.3g}")
    med, p10, p90 = _time_graph(fns, dev)
    return {**row, "dtype": "bf16", **costs, "sets": sets, "rel_err": rel_err,
            "time_s": med, "p10_s": p10, "p90_s": p90}


def measure_load(rank: int, pinned: bool, layout: str, dev: str, layers: int,
                 proj: dict[str, tuple[int, int]], reps: int) -> dict[str, Any]:
    """Host->device copy of one adapter (all projections of all layers) from pinned or pageable
    memory, one contiguous buffer or tensor by tensor."""
    import torch

    shapes = [s for _ in range(layers) for i, o in proj.values() for s in ((i, rank), (rank, o))]
    numel = sum(a * b for a, b in shapes)
    host = torch.empty(numel, dtype=torch.bfloat16, pin_memory=pinned and dev == "cuda")
    host.copy_(torch.randn(numel, dtype=torch.bfloat16, device=dev))  # filled on the GPU: fast
    dst = torch.empty(numel, dtype=torch.bfloat16, device=dev)
    views_h, views_d, off = [], [], 0
    for a, b in shapes:
        views_h.append(host[off:off + a * b].view(a, b))
        views_d.append(dst[off:off + a * b].view(a, b))
        off += a * b
    nb = pinned and dev == "cuda"

    def once() -> float:
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if layout == "contiguous":
            dst.copy_(host, non_blocking=nb)
        else:
            for vh, vd in zip(views_h, views_d, strict=True):
                vd.copy_(vh, non_blocking=nb)
        if dev == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    once()
    med, p10, p90 = summarize([once() for _ in range(reps)])
    if not torch.equal(dst.cpu(), host):
        raise ArithmeticError("adapter copy differs from its source")
    nbytes = 2 * numel
    return {"rank": rank, "layers": layers, "projections": len(proj), "tensors": len(shapes),
            "bytes": nbytes, "pinned": int(pinned), "layout": layout, "time_s": med,
            "p10_s": p10, "p90_s": p90, "bytes_per_s": nbytes / med}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="calibration/bench/lora.py", description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--smoke", action="store_true", help="tiny shapes")
    p.add_argument("--budget-s", type=float, default=240.0)
    p.add_argument("--only", default="lora,load", help="comma list of lora, load")
    p.add_argument("--reverse", action="store_true", help="largest LoRA points first (probes)")
    args = p.parse_args(argv)
    argv_l = argv if argv is not None else sys.argv[1:]
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("lora: no CUDA GPU visible", file=sys.stderr)
        return 2
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    args.out.mkdir(parents=True, exist_ok=True)
    l2 = (int(torch.cuda.get_device_properties(0).L2_cache_size) if args.device == "cuda"
          else 4 << 20)
    t_start = time.monotonic()
    counts = {"lora": 0, "lora_load": 0}
    load_share = 0.3  # the grid needs ~30 s on an H200; the pageable rank-128 copies ~0.5 s each
    if "load" in only:
        path = args.out / "lora_load.csv"
        if path.exists():
            path.unlink()
        proj = LLAMA8B_PROJ if not args.smoke else {k: (i // 64, o // 64) for k, (i, o) in LLAMA8B_PROJ.items()}
        layers = 32 if not args.smoke else 2
        for rank in ((8, 16) if args.smoke else (8, 16, 32, 64, 128)):
            for pinned in (True, False):
                for layout in ("contiguous", "per_tensor"):
                    if time.monotonic() - t_start > load_share * args.budget_s:
                        note_skip(args.out, f"load r{rank} pinned={pinned} {layout}", "budget reached")
                        continue
                    try:
                        row = measure_load(rank, pinned, layout, args.device, layers, proj,
                                           reps=3 if args.smoke else 5)
                    except Exception as exc:  # noqa: BLE001
                        note_skip(args.out, f"load r{rank} pinned={pinned} {layout}",
                                  f"{type(exc).__name__}: {exc}")
                        continue
                    append_row(path, LOAD_COLUMNS, row)
                    counts["lora_load"] += 1
                    print(f"[load] r={rank} pinned={pinned} {layout}: {row['time_s'] * 1e3:.2f} ms "
                          f"{row['bytes_per_s'] / 1e9:.1f} GB/s", file=sys.stderr, flush=True)
    if "lora" in only:
        path = args.out / "lora.csv"
        if path.exists():
            path.unlink()
        rows = grid(args.smoke)[::-1] if args.reverse else grid(args.smoke)
        for k, row in enumerate(rows):
            if time.monotonic() - t_start > args.budget_s:
                note_skip(args.out, f"lora rows {k}..{len(rows) - 1}", "budget reached")
                break
            try:
                res = measure(row, args.device, l2)
            except Exception as exc:  # noqa: BLE001 - unsupported op, OOM, failed check: skip
                note_skip(args.out, f"lora {row}", f"{type(exc).__name__}: {exc}")
                if args.device == "cuda":
                    torch.cuda.synchronize()
                gc.collect()
                continue
            append_row(path, COLUMNS, res)
            counts["lora"] += 1
            if k % 10 == 0 or args.smoke:
                print(f"[lora] {k + 1}/{len(rows)} {row['impl']} T={row['tokens']} h={row['hidden']} "
                      f"r={row['rank']} A={row['adapters']}: {res['time_s'] * 1e6:.1f} us "
                      f"(err {res['rel_err']:.1e}) at {time.monotonic() - t_start:.0f} s",
                      file=sys.stderr, flush=True)
            if k % 20 == 19:
                gc.collect()
                if args.device == "cuda":
                    torch.cuda.empty_cache()
    write_script_meta(args.out, "lora", args.device, argv_l,
                      {"elapsed_s": round(time.monotonic() - t_start, 1), "rows_written": counts,
                       "smoke": args.smoke, "l2_bytes": l2,
                       "grouped_mm": hasattr(torch, "_grouped_mm")})
    print(f"lora: {counts} rows in {time.monotonic() - t_start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
