"""Serving-planner speed: llama-3.1-70b over 64 GPUs of three types (a market), with
simulation-checked SLOs for the top candidates. Prints wall and CPU seconds (this process and
its workers), simulations and the plan, in this process and on the default local process pool
(one worker per core; the pool's start is included).

    PYTHONPATH=. python3 benchmarks/bench_plan_serving.py
"""

from __future__ import annotations

import os
import resource
import time

from fleetsim.planning import plan_serving

MARKET = "H100:3.0:32,H200:3.5:16,A100-SXM-80GB:1.8:16"


def cpu_s() -> float:
    """CPU seconds of this process and its finished or pooled children so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    print(f"cores: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.1f}")
    print(f"llama-3.1-70b, market {MARKET} (64 GPUs, 3 types), 10 req/s azure-conv, TTFT p90 <= 2 s, "
          f"TPOT p90 <= 80 ms")
    for executor in (None, "local"):
        t0, c0 = time.perf_counter(), cpu_s()
        p = plan_serving("llama-3.1-70b", None, market=MARKET, rate_rps=10, ttft_s=2.0, tpot_s=0.08,
                         objective="min_cost", seed=0, executor=executor)
        res = p.search
        wall = time.perf_counter() - t0
        if executor == "local":
            from fleetsim.planner.executor import shutdown_pools

            shutdown_pools()  # the workers' CPU time is counted once they exit
        print(f"executor {executor or 'in-process'}: wall {wall:.1f} s (search {res.seconds:.1f} s), "
              f"CPU {cpu_s() - c0:.1f} s, {len(res.evaluations)} candidates simulated, "
              f"{res.simulations} simulations, {len(res.rejected)} rejected")
    for pl in res.plans:
        c = pl.checked
        print(f"  {pl.name}: {pl.gpus_by_type} ${pl.cost_per_hour:.2f}/h meets_slo={pl.meets_slo}"
              + (f" ttft_p90 {c.ttft_p90_s:.3f} s tpot_p90 {c.tpot_p90_s * 1e3:.1f} ms" if c and c.ttft_p90_s
                 and c.tpot_p90_s else ""))
    print(res.explain())


if __name__ == "__main__":
    main()
