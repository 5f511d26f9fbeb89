"""Per-kernel breakdown of training steps (train_kernels.csv): where a step's device time goes.

``train_bench.py`` records a step's total kernel time; this script splits it by phase and by
kernel so that a prediction can be compared operator class by operator class. For each
configuration (the ``train_bench`` GPT-2-style models) it runs a few warm-up steps, then
one step with ``torch.cuda.synchronize()`` between forward, backward and the optimizer, each
phase under its own ``torch.profiler`` (CUDA activity), and writes one row per
(configuration, phase, kernel name): launches and summed device seconds.

Usage: ``python3 calibration/bench/train_kernels.py --out DIR [--configs 350m:1:0,2.7b:2:1]``
(model:micro_batch:recompute); ``--device cpu --smoke`` exercises the code on a tiny model.
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
    from fleetsim.calibration.bench.runs import write_run_meta
    from fleetsim.calibration.bench.train_bench import CONFIGS, VOCAB, kernel_times
except ImportError:
    import torch_models as tm  # type: ignore[no-redef]
    from runs import write_run_meta  # type: ignore[no-redef]
    from train_bench import CONFIGS, VOCAB, kernel_times  # type: ignore[no-redef]

COLUMNS = ("model", "micro_batch", "recompute", "phase", "kernel", "launches", "time_s")
DEFAULT = "350m:1:0,350m:1:1,350m:8:0,1.3b:2:0,1.3b:2:1,2.7b:2:0,2.7b:2:1"


def _parse(spec: str) -> list[tuple[str, int, bool]]:
    out = []
    names = {c[0].split("-")[-1]: c[0] for c in CONFIGS}
    for item in spec.split(","):
        parts = item.strip().split(":")
        if len(parts) != 3 or parts[0] not in names:
            raise SystemExit(f"--configs item {item!r}: expected model:micro_batch:recompute with "
                             f"model in {sorted(names)}")
        out.append((names[parts[0]], int(parts[1]), parts[2] in ("1", "true", "full")))
    return out


def run(args: argparse.Namespace) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(args.device)
    out = args.out / "train_kernels.csv"
    new = not out.exists()
    fh = out.open("a", newline="")
    w = csv.writer(fh)
    if new:
        w.writerow(COLUMNS)
    cfgs = {c[0]: c for c in CONFIGS}
    built: dict[str, Any] = {}
    for name, mb, rec in _parse(args.configs):
        _, layers, hidden, heads, seq = cfgs[name]
        vocab = VOCAB
        if args.smoke:
            layers, hidden, heads, seq, vocab = 2, 64, 2, 32, 500
        if name not in built:
            built.clear()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            with torch.device(device):
                model = tm.make_train_model(layers, hidden, heads, vocab, seq)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
            built[name] = (model, opt)
        model, opt = built[name]
        model.recompute = rec
        x = torch.randint(0, vocab, (mb, seq), device=device)

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()

        for _ in range(args.warmup):
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                loss = model(x, x)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        sync()
        acts = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
        phases = {}
        with profile(activities=acts) as p:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                loss = model(x, x)
            sync()
        phases["forward"] = kernel_times(p)
        with profile(activities=acts) as p:
            loss.backward()
            sync()
        phases["backward"] = kernel_times(p)
        with profile(activities=acts) as p:
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
        phases["optimizer"] = kernel_times(p)
        for phase, ks in phases.items():
            for k, (n, t) in sorted(ks.items(), key=lambda kv: -kv[1][1]):
                w.writerow([name, mb, int(rec), phase, k, int(n), f"{t:.6g}"])
        fh.flush()
        tot = {ph: sum(v[1] for v in ks.values()) for ph, ks in phases.items()}
        print(f"[kernels] {name} mb={mb} recompute={rec}: " + ", ".join(
            f"{ph} {t * 1e3:.2f} ms" for ph, t in tot.items()), file=sys.stderr, flush=True)
    fh.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--configs", default=DEFAULT)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    run(args)
    write_run_meta(args.out, "train_kernels", argv, args.device, t0)
    print(f"train_kernels: done in {time.monotonic() - t0:.0f} s -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
