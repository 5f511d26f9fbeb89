"""Speed of the serving simulator: requests simulated per second, wall time, peak memory.

1. The whole Azure LLM inference 2023 conversation trace (one hour) on one llama-3.1-8b
   replica on one H100 (target: < 10 s wall on one core).
2. 10^6 requests drawn from the built-in ``azure-conv`` workload over 64 replicas
   (64 x H100 in 8 nodes, one llama-3.1-8b replica per GPU; target: < 5 min, < 2 GB).
3. Fast path (closed-form decode runs) against the iteration-by-iteration path on a
   smaller scenario: speed-up and the largest relative difference of any request's TTFT/E2E.

Usage: python benchmarks/bench_serving.py [--requests N] [--skip-large] [--gpu H100]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from fleetsim.serving import Deployment, EngineConfig, PoolDeployment, simulate_serving

REPO = Path(__file__).resolve().parents[1]
AZURE_CONV = REPO.parent / "shared" / "data" / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_conv.csv"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def timed(label: str, **kw) -> object:
    t0, c0 = time.perf_counter(), time.process_time()
    res = simulate_serving(**kw)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = res.summary["num_requests"]
    s = res.summary
    print(f"{label}: {n} requests in {wall:.2f} s wall ({cpu:.2f} s CPU) = {n / wall:,.0f} requests/s; "
          f"peak RSS {peak_rss_gb():.2f} GB")
    print(f"    ttft p50/p99 {s['ttft_p50_s'] * 1e3:.1f}/{s['ttft_p99_s'] * 1e3:.1f} ms, tpot p50 "
          f"{s['tpot_p50_s'] * 1e3:.2f} ms, e2e p99 {s['e2e_p99_s']:.2f} s, "
          f"{s['output_tokens_per_s']:,.0f} output tok/s, utilization {s['mean_utilization']:.2f}, "
          f"overloaded {s['overloaded']}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1_000_000, help="size of the large run")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--only-large", action="store_true")
    ap.add_argument("--skip-medium", action="store_true", help="skip the 4-replica fast/slow comparison")
    ap.add_argument("--gpu", default="H100")
    args = ap.parse_args()
    model = "llama-3.1-8b"

    if args.only_large:
        pass
    elif AZURE_CONV.is_file():
        fast = timed("azure-conv trace, 1 x " + args.gpu, model=model, cluster=f"1x{args.gpu}",
                     workload=str(AZURE_CONV))
        dep = Deployment(pools=(PoolDeployment(gpu=args.gpu, replicas=1,
                                               engine=EngineConfig(fast_forward=False)),))
        slow = timed("azure-conv trace, 1 x " + args.gpu + ", per-iteration path", model=model,
                     cluster=f"1x{args.gpu}", workload=str(AZURE_CONV), deployment=dep)
        a, b = fast.requests, slow.requests  # type: ignore[attr-defined]
        diff = max(float(np.nanmax(np.abs(a[c] - b[c]) / np.abs(b[c]))) for c in ("ttft_s", "e2e_s"))
        print(f"    fast vs slow path: largest relative TTFT/E2E difference {diff:.2e}")
    else:
        print(f"skipped the Azure trace: {AZURE_CONV} not found")

    wl = "poisson:rate=40,isl=lognormal(1000,1.0,1,8192),osl=lognormal(200,1.0,1,2048)"
    out = {}
    for ff in (() if args.only_large or args.skip_medium else (True, False)):
        dep = Deployment(pools=(PoolDeployment(gpu=args.gpu, replicas=4, engine=EngineConfig(fast_forward=ff)),))
        out[ff] = timed(f"fast_forward={ff}, 4 replicas", model=model, cluster=f"4x{args.gpu}", workload=wl,
                        deployment=dep, num_requests=20_000, seed=1)
    if out:
        a, b = out[True].requests, out[False].requests  # type: ignore[attr-defined]
        diff = max(float(np.nanmax(np.abs(a[c] - b[c]) / np.abs(b[c]))) for c in ("ttft_s", "e2e_s"))
        print(f"    fast vs slow path: largest relative TTFT/E2E difference {diff:.2e}")

    if not args.skip_large:
        rate = 64 * 5.4
        timed(f"{args.requests:,} requests, azure-conv at {rate:.0f} req/s, 64 replicas", model=model,
              cluster=f"64x{args.gpu}", workload=f"azure-conv:rate={rate}", num_requests=args.requests,
              seed=0)


if __name__ == "__main__":
    main()
