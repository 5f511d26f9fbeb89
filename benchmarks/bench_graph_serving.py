"""Speed of serving_step_ops, the call the serving simulator makes every iteration.

Prints microseconds per call for decode-heavy batches whose token count repeats (cache hits
on the token-dependent ops) and for batches with a fresh token count every call.
Run: python benchmarks/bench_graph_serving.py
"""

from __future__ import annotations

import time

import numpy as np
from fleetsim.workloads.graph import serving_step_ops
from fleetsim.workloads.models import load_model
from fleetsim.workloads.parallel import ParallelConfig, Seq


def bench(name: str, par: ParallelConfig, batch_size: int, fresh: bool, n: int = 2000) -> float:
    m = load_model(name)
    rng = np.random.default_rng(0)
    ctx = rng.integers(100, 4000, size=batch_size)
    batches = []
    for i in range(n):
        b = [Seq(1, int(c) + i) for c in ctx]
        if fresh:
            b.append(Seq(1 + (i % 4096), 0))
        batches.append(b)
    serving_step_ops(m, batches[0], par)
    t0 = time.perf_counter()
    for b in batches:
        serving_step_ops(m, b, par)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    cases = [
        ("llama-3.1-8b", ParallelConfig(), 64),
        ("llama-3.1-70b", ParallelConfig(tp=4), 128),
        ("deepseek-v3", ParallelConfig(tp=8, ep=8), 128),
        ("gemma-2-9b", ParallelConfig(), 64),
    ]
    print(f"{'model':16s} {'parallel':18s} {'seqs':>5s} {'repeat T us':>12s} {'fresh T us':>11s}")
    for name, par, bs in cases:
        rep = bench(name, par, bs, fresh=False)
        fr = bench(name, par, bs, fresh=True, n=500)
        p = f"tp={par.tp} ep={par.ep}"
        print(f"{name:16s} {p:18s} {bs:5d} {rep:12.1f} {fr:11.1f}")


if __name__ == "__main__":
    main()
