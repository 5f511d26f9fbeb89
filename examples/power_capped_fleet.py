"""Study: a power-capped fleet under a facility budget.

Up to 8 H100s (one llama-3.1-8b replica each) under a facility budget of 4 kW. A lower board
power limit (``EngineConfig.power_cap_w``) makes each GPU slower but lets more of them fit the
budget: GPUs allowed = ``floor(budget / (cap + host share per GPU))`` (at most 8), each
replica's capacity at the SLO measured by the simulator under that cap. The chosen fleet is
then simulated at 90% of its capacity on a cluster with ``power_budget_w`` to report its peak
facility draw against the budget. Prints a table, saves ``power_capped_fleet.png``.
"""

from __future__ import annotations

import argparse
import math

from fleetsim.hardware.cluster import host_power_w, load_cluster
from fleetsim.workloads.defaults import get_workload

from fleetsim.replay import measure_capacity
from fleetsim.serving import (
    Deployment,
    EngineConfig,
    PoolDeployment,
    VllmScheduler,
    simulate_serving,
)

MODEL, WL = "llama-3.1-8b", "poisson:rate=1,isl=1024,osl=256"
SLO = {"ttft_slo_s": 0.3, "tpot_slo_s": 0.03}
BUDGET_W = 4000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="power_capped_fleet.png")
    args = ap.parse_args()
    node = load_cluster("8xH100").pools[0].node
    host_per_gpu = host_power_w(node, 8) / 8
    rows = []
    for cap in (700.0, 500.0, 350.0):
        eng = EngineConfig(scheduler=VllmScheduler(max_num_seqs=8), power_cap_w=cap)
        dep = Deployment(pools=(PoolDeployment(gpu="H100-SXM", engine=eng),))
        c = measure_capacity(MODEL, "1xH100", dep, WL, SLO, num_requests=400, start_rps=2.0)
        n = min(8, math.floor(BUDGET_W / (cap + host_per_gpu)))
        rows.append((cap, n, c, n * c, eng))
    best = max(rows, key=lambda r: r[3])
    print(f"facility budget {BUDGET_W:g} W, host share {host_per_gpu:.0f} W per GPU")
    print(f"{'cap W':>6}{'GPUs':>6}{'req/s per GPU':>15}{'fleet req/s':>13}")
    for cap, n, c, tot, _ in rows:
        print(f"{cap:>6.0f}{n:>6}{c:>15.3g}{tot:>13.3g}")
    cap, n, c, tot, eng = best
    cl = load_cluster(f"{n}xH100").model_copy(update={"power_budget_w": BUDGET_W})
    res = simulate_serving(MODEL, cl, get_workload(WL).with_rate(0.9 * tot),
                           Deployment(pools=(PoolDeployment(gpu="H100-SXM", engine=eng),)), num_requests=1500, slo=SLO)
    s = res.summary
    print(f"best: {n} GPUs at {cap:g} W; simulated at {0.9 * tot:.3g} req/s: peak facility {s['peak_facility_power_w']:.0f} W, "
          f"over budget for {s['power_budget_exceeded_s']:.3g} s, goodput share {s['goodput_share']:.3f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar([f"{r[0]:.0f} W x {r[1]}" for r in rows], [r[3] for r in rows])
    ax.set_ylabel("fleet req/s within the SLO")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
