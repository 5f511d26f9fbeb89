"""Serving-planner speed: llama-3.1-70b over 64 GPUs of three types (a market), with
simulation-checked SLOs for the top candidates. Prints wall time, simulations and the plan.

    PYTHONPATH=. python3 benchmarks/bench_plan_serving.py
"""

from __future__ import annotations

import time

from fleetsim.planning import plan_serving

MARKET = "H100:3.0:32,H200:3.5:16,A100-SXM-80GB:1.8:16"


def main() -> None:
    t0 = time.perf_counter()
    p = plan_serving("llama-3.1-70b", None, market=MARKET, rate_rps=10, ttft_s=2.0, tpot_s=0.08,
                     objective="min_cost", seed=0)
    res = p.search
    wall = time.perf_counter() - t0
    print(f"llama-3.1-70b, market {MARKET} (64 GPUs, 3 types), 10 req/s azure-conv, TTFT p90 <= 2 s, "
          f"TPOT p90 <= 80 ms")
    print(f"wall {wall:.1f} s (search {res.seconds:.1f} s), {len(res.evaluations)} candidates simulated, "
          f"{res.simulations} simulations, {len(res.rejected)} rejected")
    for pl in res.plans:
        c = pl.checked
        print(f"  {pl.name}: {pl.gpus_by_type} ${pl.cost_per_hour:.2f}/h meets_slo={pl.meets_slo}"
              + (f" ttft_p90 {c.ttft_p90_s:.3f} s tpot_p90 {c.tpot_p90_s * 1e3:.1f} ms" if c and c.ttft_p90_s
                 and c.tpot_p90_s else ""))
    print(res.explain())


if __name__ == "__main__":
    main()
