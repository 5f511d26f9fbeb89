"""Speed and memory figures for request streams and trace I/O.

Prints: Azure CSV read time (the 19,366-row conversation trace, if ../shared is present),
time to generate 1e6 requests (built-in ``azure-conv``, and with multi-turn sessions),
time to iterate them as ``Request`` objects, JSONL write/read of 1e5 requests, and the
stream's memory. Best of 3 runs, wall-clock seconds on this machine.

Run: ``python benchmarks/bench_workloads.py``
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetsim.traces import read_azure_csv, read_jsonl, write_jsonl
from fleetsim.workloads.defaults import get_workload

REPO = Path(__file__).resolve().parents[1]
CONV = REPO.parent / "shared" / "data" / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_conv.csv"


def best_of(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    if CONV.is_file():
        t, s = best_of(lambda: read_azure_csv(CONV))
        print(f"read Azure conv CSV ({len(s)} rows):           {t * 1e3:8.1f} ms")
    else:
        print(f"read Azure conv CSV: skipped ({CONV} not found)")
    conv = get_workload("azure-conv")
    t, big = best_of(lambda: conv.generate(0, num_requests=1_000_000))
    print(f"generate 1e6 requests (azure-conv):            {t * 1e3:8.1f} ms")
    print(f"  stream memory:                               {big.nbytes / 2**20:8.1f} MiB")
    chat = get_workload(
        "azure-conv:turns=uniform(1,8),isl=lognormal(150,1.0),system=800,turn_think=30,max_context=32768"
    )
    t, _ = best_of(lambda: chat.generate(0, num_requests=1_000_000))
    print(f"generate 1e6 requests (multi-turn sessions):   {t * 1e3:8.1f} ms")
    t, n = best_of(lambda: sum(1 for _ in big), repeats=1)
    print(f"iterate 1e6 Request objects:                   {t * 1e3:8.1f} ms")
    small = big.head(100_000)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.jsonl"
        t, _ = best_of(lambda: write_jsonl(small, p))
        print(f"write JSONL, 1e5 requests:                     {t * 1e3:8.1f} ms")
        t, _ = best_of(lambda: read_jsonl(p))
        print(f"read JSONL, 1e5 requests:                      {t * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
