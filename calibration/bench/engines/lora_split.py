"""The two halves of a grouped LoRA application at rectangular shapes (lora_split.csv).

``calibration/bench/lora.py`` times one application ``y += (x A) B`` at a square ``h x h``
projection. A model's projections are not square (llama-3.1-8b: k/v 4096 -> 1024, gate/up
4096 -> 14336, down 14336 -> 4096), and each half of ``sgmv_grouped_mm`` depends on one
dimension only: the shrink ``t = grouped_mm(x [T, in], A [n, in, r])`` on ``in``, the expand
``y += grouped_mm(t [T, r], B [n, r, out])`` on ``out``. This script times each half alone
(``kind`` = ``shrink`` / ``expand``, ``dim`` = in or out features) and whole applications at
llama-3.1-8b's four projection shapes (``kind`` = ``apply``, ``in_features`` / ``out_features``)
for the differential check ``shrink(in) + expand(out) ~ apply(in, out)``.

Same method as ``lora.py``: tokens sorted by adapter in ``n`` near-equal segments, each point
captured in a CUDA graph over enough operand sets to evict the L2, replays timed with events;
``time_s`` (median), ``p10_s``, ``p90_s`` per call.

Usage: ``python3 calibration/bench/engines/lora_split.py --out DIR --budget-s 120``.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path
from typing import Any

try:
    from fleetsim.calibration.bench import lora as bl
    from fleetsim.calibration.bench.bench_io import append_row, note_skip, write_script_meta
    from fleetsim.calibration.bench.common import rotation_count
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import lora as bl  # type: ignore[no-redef]
    from bench_io import append_row, note_skip, write_script_meta  # type: ignore[no-redef]
    from common import rotation_count  # type: ignore[no-redef]

COLUMNS = ("kind", "tokens", "in_features", "out_features", "rank", "adapters", "dtype", "sets",
           "time_s", "p10_s", "p90_s")
DIMS = (1024, 2048, 4096, 8192, 14336)
APPLY_SHAPES = ((4096, 4096), (4096, 1024), (4096, 14336), (14336, 4096))
TOKENS = (1, 8, 32, 128, 512)
ADAPTERS = (1, 4, 16, 64)
RANKS = (16, 64)


def grid() -> list[dict[str, Any]]:
    pts = [(t, r, a) for t in TOKENS for r in RANKS for a in ADAPTERS if a <= t]
    rows = []
    for t, r, a in pts:
        for d in DIMS:
            rows.append({"kind": "shrink", "tokens": t, "in_features": d, "out_features": 0, "rank": r, "adapters": a})
            rows.append({"kind": "expand", "tokens": t, "in_features": 0, "out_features": d, "rank": r, "adapters": a})
        for i, o in APPLY_SHAPES:
            rows.append({"kind": "apply", "tokens": t, "in_features": i, "out_features": o, "rank": r, "adapters": a})
    return rows


def measure(row: dict[str, Any], l2: int) -> dict[str, Any]:
    import torch

    kind, t, i, o, r, n = (row[k] for k in ("kind", "tokens", "in_features", "out_features", "rank", "adapters"))
    bf = torch.bfloat16
    dev = "cuda"
    counts = bl.segments(t, n)
    offs = torch.tensor(counts, device=dev).cumsum(0).to(torch.int32)
    w_bytes = n * r * (i + o) * 2
    act = t * (i + 2 * o + 2 * r) * 2
    sets = rotation_count(w_bytes + act, l2)
    fns = []
    for _ in range(sets):
        a = torch.randn(n, i, r, device=dev, dtype=bf) / math.sqrt(max(i, 1)) if i else None
        b = torch.randn(n, r, o, device=dev, dtype=bf) / math.sqrt(r) if o else None
        x = torch.randn(t, i, device=dev, dtype=bf) if i else None
        tr = torch.randn(t, r, device=dev, dtype=bf)
        y = torch.zeros(t, o, device=dev, dtype=bf) if o else None
        if kind == "shrink":
            def f(x: Any = x, a: Any = a) -> Any:
                return torch._grouped_mm(x, a, offs=offs, out_dtype=bf)
        elif kind == "expand":
            def f(tr: Any = tr, b: Any = b, y: Any = y) -> Any:  # type: ignore[misc]
                return y.add_(torch._grouped_mm(tr, b, offs=offs, out_dtype=bf))
        else:
            f = bl._apply_fn("sgmv_grouped_mm", x, y, a, b, None, counts, offs)
        fns.append(f)
    med, p10, p90 = bl._time_graph(fns, dev)
    return {**row, "dtype": "bf16", "sets": sets, "time_s": med, "p10_s": p10, "p90_s": p90}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget-s", type=float, default=120.0)
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available() or not hasattr(torch, "_grouped_mm"):
        print("lora_split: needs a CUDA GPU and torch._grouped_mm", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "lora_split.csv"
    if path.exists():
        path.unlink()
    l2 = int(torch.cuda.get_device_properties(0).L2_cache_size)
    t0 = time.monotonic()
    rows = grid()
    n = 0
    for k, row in enumerate(rows):
        if time.monotonic() - t0 > args.budget_s:
            note_skip(args.out, f"lora_split rows {k}..{len(rows) - 1}", "budget reached")
            break
        try:
            res = measure(row, l2)
        except Exception as exc:  # noqa: BLE001 - a failed point is a finding to record
            note_skip(args.out, f"lora_split {row}", f"{type(exc).__name__}: {exc}")
            torch.cuda.synchronize()
            continue
        append_row(path, COLUMNS, res)
        n += 1
        if k % 40 == 0:
            print(f"[split] {k + 1}/{len(rows)} {row}: {res['time_s'] * 1e6:.1f} us at {time.monotonic() - t0:.0f} s",
                  file=sys.stderr, flush=True)
            gc.collect()
            torch.cuda.empty_cache()
    write_script_meta(args.out, "lora_split", "cuda", sys.argv[1:] if argv is None else argv,
                      {"elapsed_s": round(time.monotonic() - t0, 1), "rows_written": n, "l2_bytes": l2})
    print(f"lora_split: {n} rows in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
