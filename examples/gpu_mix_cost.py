"""Study: H100 vs H200 vs a mixed fleet, cost per million output tokens at the SLO.

llama-3.1-8b, 1024-token prompts, 256-token answers, SLO p90 TTFT <= 0.3 s and TPOT <= 30 ms.
Each GPU type's replica capacity at the SLO is measured by the simulator; a fleet of one
replica per GPU then serves ``capacity x GPUs`` requests per second, and its cost per million
output tokens is its $/hour (catalog prices) over the output tokens it serves in an hour. The
mixed fleet (2 H100 + 2 H200) is simulated at 90% of its summed capacity to check that the
speed-weighted router keeps the SLO. Prints a table and saves ``gpu_mix_cost.png``.
"""

from __future__ import annotations

import argparse

import numpy as np
from fleetsim.hardware.cluster import load_cluster, price_per_gpu_hour
from fleetsim.workloads.defaults import get_workload

from fleetsim.replay import measure_capacity
from fleetsim.serving import (
    Deployment,
    EngineConfig,
    PoolDeployment,
    VllmScheduler,
    simulate_serving,
)

MODEL, WL, OSL = "llama-3.1-8b", "poisson:rate=1,isl=1024,osl=256", 256
SLO = {"ttft_slo_s": 0.3, "tpot_slo_s": 0.03}
ENG = EngineConfig(scheduler=VllmScheduler(max_num_seqs=8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_mix_cost.png")
    args = ap.parse_args()
    rows = []
    caps = {}
    for gpu, short in (("H100-SXM", "H100"), ("H200-SXM", "H200")):
        dep = Deployment(pools=(PoolDeployment(gpu=gpu, engine=ENG),))
        caps[gpu] = measure_capacity(MODEL, f"1x{short}", dep, WL, SLO, num_requests=400, start_rps=2.0)
        price = price_per_gpu_hour(load_cluster(f"4x{short}")) or float("nan")
        rows.append((f"4 x {short}", 4 * caps[gpu], 4 * price))
    mixed = load_cluster("2xH100+2xH200")
    rate = 2 * caps["H100-SXM"] + 2 * caps["H200-SXM"]
    dep = Deployment(pools=(PoolDeployment(gpu="H100-SXM", engine=ENG), PoolDeployment(gpu="H200-SXM", engine=ENG)))
    res = simulate_serving(MODEL, mixed, get_workload(WL).with_rate(0.9 * rate), dep, num_requests=1500, slo=SLO)
    r = res.requests
    ok = (np.nanpercentile(r["ttft_s"], 90) <= SLO["ttft_slo_s"]) and (np.nanpercentile(r["tpot_s"], 90) <= SLO["tpot_slo_s"])
    mix_price = 2 * (price_per_gpu_hour(mixed, 0) or np.nan) + 2 * (price_per_gpu_hour(mixed, 1) or np.nan)
    rows.append(("2 x H100 + 2 x H200", rate, mix_price))
    print(f"{'fleet':<22}{'req/s at SLO':>14}{'$/hour':>9}{'$/M output tokens':>19}")
    costs = []
    for name, rps, usd_h in rows:
        c = usd_h / (rps * OSL * 3600) * 1e6
        costs.append(c)
        print(f"{name:<22}{rps:>14.3g}{usd_h:>9.2f}{c:>19.3f}")
    print(f"mixed fleet simulated at 90% of its summed capacity: p90 TTFT {np.nanpercentile(r['ttft_s'], 90):.3g} s, "
          f"p90 TPOT {np.nanpercentile(r['tpot_s'], 90) * 1e3:.3g} ms -> {'meets' if ok else 'misses'} the SLO")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar([n for n, _, _ in rows], costs)
    ax.set_ylabel("$ per million output tokens")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
