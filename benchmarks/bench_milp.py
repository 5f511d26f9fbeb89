"""Solve times of the planner's integer programs (build + solve + tie-break, wall seconds).

Run: ``python benchmarks/bench_milp.py``. The GPU mix is 3 GPU types x 10 deployment options
each x 5 request-size buckets (target: under 1 s), with availability per type; the power-cap
program has 8 pools x 6 caps; the disaggregated one 3 types x 10 prefill and 10 decode
options. Instances come from one seeded generator (illustrative numbers, not measurements:
the planner feeds simulator-derived capacities). Each figure is the median of 5 solves, per
solver that is installed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
from fleetsim.planner.milp import (
    Bucket,
    CapProblem,
    Deployment,
    DisaggProblem,
    MixProblem,
    plan_caps,
    plan_disaggregated,
    plan_mix,
)
from fleetsim.planner.solver import highs_available

# per-GPU $/h, relative speed and W at full power (illustrative)
TYPES = {"H100": (4.0, 1.0, 700.0), "A100": (2.0, 0.45, 400.0), "L4": (0.8, 0.12, 72.0)}
BUCKETS = {"xs": 40.0, "s": 25.0, "m": 12.0, "l": 5.0, "xl": 1.5}  # load, requests/s
SIZE = {"xs": 1.0, "s": 2.0, "m": 4.0, "l": 8.0, "xl": 16.0}  # relative cost of a request


def mix_problem(rng: np.random.Generator, objective: str = "min_cost") -> MixProblem:
    deps = []
    for gpu, (price, speed, watts) in TYPES.items():
        for k in range(10):
            g = int(rng.choice([1, 2, 4, 8]))
            eff = float(rng.uniform(0.6, 1.0))
            caps = {b: round(30.0 * speed * g ** 0.9 * eff / s, 3) for b, s in SIZE.items()
                    if not (g == 1 and s >= 8 and speed < 0.5)}  # small replicas miss long SLOs
            deps.append(Deployment(id=f"{gpu}-{k}", gpu=gpu, gpus_per_replica=g,
                                   price_per_hour=price * g, power_w=watts * g * float(rng.uniform(0.7, 1.0)),
                                   capacity_rps=caps))
    return MixProblem(buckets=[Bucket(name=b, load_rps=v) for b, v in BUCKETS.items()],
                      deployments=deps, objective=objective,
                      availability={"H100": 4, "A100": 8, "L4": 16})


def cap_problem(rng: np.random.Generator) -> CapProblem:
    pools = []
    for p in range(8):
        caps = np.linspace(300.0, 700.0, 6)
        pools.append({"name": f"pool{p}", "gpu": "H100", "replicas": int(rng.integers(2, 9)),
                      "options": [{"cap_w": float(c), "goodput_rps": float(10.0 * (c / 700.0) ** 0.4),
                                   "power_w": float(c * rng.uniform(0.85, 1.0))} for c in caps]})
    full = sum(q["replicas"] * 700.0 for q in pools)
    return CapProblem(pools=pools, power_budget_w=0.7 * full)


def disagg_problem(rng: np.random.Generator) -> DisaggProblem:
    pre, dec = [], []
    for gpu, (price, speed, watts) in TYPES.items():
        for k in range(10):
            g = int(rng.choice([1, 2, 4, 8]))
            pre.append({"id": f"p-{gpu}-{k}", "gpu": gpu, "gpus_per_replica": g,
                        "prompt_tokens_per_s": 30000.0 * speed * g * float(rng.uniform(0.6, 1.0)),
                        "price_per_hour": price * g, "power_w": watts * g})
            dec.append({"id": f"d-{gpu}-{k}", "gpu": gpu, "gpus_per_replica": g,
                        "output_tokens_per_s": 2500.0 * speed ** 0.5 * g * float(rng.uniform(0.6, 1.0)),
                        "price_per_hour": price * g, "power_w": watts * g * 0.8})
    return DisaggProblem(prefill=pre, decode=dec, prompt_tokens_per_s=400000.0,
                         output_tokens_per_s=60000.0, availability={"H100": 32, "A100": 32, "L4": 64})


def timed(fn: Callable[[], object], reps: int = 5) -> tuple[float, object]:
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    solvers = ["highs", "cbc"] if highs_available() else ["cbc"]
    rng = np.random.default_rng(0)
    mixes = {o: mix_problem(np.random.default_rng(0), o)
             for o in ("min_cost", "min_gpus", "min_energy", "max_goodput")}
    caps, dis = cap_problem(rng), disagg_problem(rng)
    for s in solvers:
        for o, p in mixes.items():
            dt, plan = timed(lambda p=p, s=s: plan_mix(p, solver=s))
            print(f"mix 3 types x 10 options x 5 buckets, {o:<11} {s:<5}: {dt * 1e3:7.1f} ms  "
                  f"objective {plan.objective:.6g}  replicas {plan.replicas}")  # type: ignore[attr-defined]
        dt, cp = timed(lambda s=s: plan_caps(caps, solver=s))
        print(f"caps 8 pools x 6 caps, max_goodput {s:<5}: {dt * 1e3:7.1f} ms  objective "
              f"{cp.objective:.6g}")  # type: ignore[attr-defined]
        dt, dp = timed(lambda s=s: plan_disaggregated(dis, solver=s))
        print(f"xPyD 3 types x 10+10 options, min_cost {s:<5}: {dt * 1e3:7.1f} ms  "
              f"prefill {dp.prefill} decode {dp.decode} $/h {dp.cost_per_hour:.4g}")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
