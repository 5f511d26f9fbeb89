"""Study: a week of diurnal load, autoscaled fleet vs a fixed fleet sized for the peak.

llama-3.1-8b on H100 (max_num_seqs 8), 1024-token prompts and 256-token answers, SLO p90 TTFT
<= 0.3 s and TPOT <= 30 ms. Steps:

1. measure one replica's capacity at the SLO with the simulator (``measure_capacity``);
2. the week: a diurnal profile (trough 0.6x, peak 4x one replica's capacity, weekends at 60%,
   10% growth per month), replayed compressed (``replay_compressed``) with a rate policy at
   90% of capacity, 60 s cold starts, 5-minute scale-down delay; the fixed fleet keeps
   ``ceil(peak / capacity)`` replicas all week;
3. check: the first day's shape (one minute per hour) fully simulated vs the compressed path.

Prints a table and saves ``week_autoscale.png`` (``--out``).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from fleetsim.hardware.cluster import load_cluster, price_per_gpu_hour
from fleetsim.sim.serving.autoscale import AutoscaleConfig
from fleetsim.workloads.profile import DAY_S, WEEK_S, DiurnalProfile, PiecewiseProfile

from fleetsim.capacity import profile_requests
from fleetsim.replay import measure_capacity, replay_compressed
from fleetsim.serving import (
    Deployment,
    EngineConfig,
    PoolDeployment,
    VllmScheduler,
    simulate_serving,
)

MODEL, WL = "llama-3.1-8b", "poisson:rate=1,isl=1024,osl=256"
SLO = {"ttft_slo_s": 0.3, "tpot_slo_s": 0.03}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="week_autoscale.png")
    args = ap.parse_args()
    dep = Deployment(pools=(PoolDeployment(gpu="H100-SXM", engine=EngineConfig(scheduler=VllmScheduler(max_num_seqs=8))),))
    cap = measure_capacity(MODEL, "1xH100", dep, WL, SLO, num_requests=400, start_rps=2.0)
    price = price_per_gpu_hour(load_cluster("8xH100")) or math.nan
    prof = DiurnalProfile(peak_rps=4 * cap, trough_rps=0.6 * cap, weekend_factor=0.6, growth_per_month=0.1)
    cfg = AutoscaleConfig(policy={"kind": "rate", "capacity_rps": cap, "target": 0.9}, min_replicas=1, max_replicas=8,
                          interval_s=60, scale_down_delay_s=300, cold_start_s=60)
    c0 = time.process_time()
    stream, _ = profile_requests(WL, prof, 0, WEEK_S, None)
    week = replay_compressed(stream.arrival_s, WEEK_S, cfg, cap, 1, price)
    week_cpu = time.process_time() - c0
    peak = float(prof.rate_rps(np.arange(0, WEEK_S, 60.0)).max())
    fixed_n = math.ceil(peak / cap)
    fixed_gh = fixed_n * WEEK_S / 3600
    print(f"replica capacity at the SLO: {cap:.3g} req/s; week: {len(stream):,} requests, compressed replay "
          f"{week_cpu:.2f} s CPU")
    print(f"{'fleet':<28}{'GPU-hours':>12}{'cost $':>10}{'mean replicas':>15}{'SLO share':>11}")
    s = week.summary
    print(f"{'autoscaled (rate policy)':<28}{s['gpu_hours']:>12.1f}{s['cost_usd']:>10.0f}{s['mean_replicas']:>15.2f}"
          f"{s['slo_attainment']:>11.3f}")
    print(f"{f'fixed, {fixed_n} replicas (peak)':<28}{fixed_gh:>12.1f}{fixed_gh * price:>10.0f}{fixed_n:>15.2f}"
          f"{1.0:>11.3f}")
    print(f"autoscaling saves {1 - s['gpu_hours'] / fixed_gh:.1%} of the GPU-hours")
    # check on the first day's shape, one minute per hour
    hours = np.arange(24) * 3600.0 + 1800.0
    day = PiecewiseProfile(interval_s=60, rates_rps=tuple(prof.rate_rps(hours).tolist()))
    dcfg = cfg.model_copy(update={"interval_s": 30.0, "scale_down_delay_s": 60.0, "cold_start_s": 20.0})
    full = simulate_serving(MODEL, "8xH100", WL, dep, duration_s=1440, load_profile=day, autoscaler=dcfg, slo=SLO)
    ds, _ = profile_requests(WL, day, 0, 1440.0, None)
    fast = replay_compressed(ds.arrival_s, 1440.0, dcfg, cap, 1)
    print(f"check, day shape in 24 min: full simulation {full.summary['gpu_hours']:.4g} GPU-h, SLO share "
          f"{full.summary['goodput_share']:.3f}; compressed {fast.summary['gpu_hours']:.4g} GPU-h, "
          f"{fast.summary['slo_attainment']:.3f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = week.intervals
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(df["start_s"] / DAY_S, df["arrivals"] / cfg.interval_s / cap, lw=0.6, label="load / replica capacity")
    ax.plot(df["start_s"] / DAY_S, df["paid_replica_s"] / cfg.interval_s, lw=1.0, label="autoscaled replicas")
    ax.axhline(fixed_n, color="k", ls="--", lw=0.8, label=f"fixed fleet ({fixed_n})")
    ax.set_xlabel("day of the week")
    ax.set_ylabel("replicas")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
