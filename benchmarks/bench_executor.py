"""Candidates evaluated per second by each executor, analytic and simulated.

Analytic: each candidate is one ``estimate_forward`` of a decode step (llama-3.1-8b on an
H100, vLLM profile) over TP in {1, 2, 4, 8} x batch in {1..256}. Simulated: each candidate is
one capacity search of the serving planner (``planner.serving.capacity.capacity``: bracketing
and bisection over fast-forward simulations) of llama-3.2-1b on an H100 over TP in {1, 2} x
``max_num_seqs`` in {16, 32, 64, 128} x 2 seeds. Each list is timed in-process, on the local
pool of 2 workers (the planner's default; its start is included), and on a local Ray runtime
of 2 CPUs when Ray is installed (start-up timed apart). Every executor's results must equal
the in-process list. Run: ``python3 benchmarks/bench_executor.py [N]``.
"""

from __future__ import annotations

import importlib.util
import sys
import time

from fleetsim.planner.executor import LocalExecutor, RayExecutor, ray_runtime_env


def decode_step_s(shape: tuple[int, int, int]) -> float:
    from fleetsim.estimate import estimate_forward

    tp, batch, context = shape
    return estimate_forward("llama-3.1-8b", "H100-SXM", (batch, 1, context), tp=tp, engine="vllm").time_s


def shapes(n: int) -> list[tuple[int, int, int]]:
    grid = [(tp, b, c) for tp in (1, 2, 4, 8) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256)
            for c in (512, 1024, 2048, 4096)]
    return [grid[i % len(grid)][:2] + (grid[i % len(grid)][2] + i // len(grid),) for i in range(n)]


def capacity_jobs() -> list:
    import math

    from fleetsim.hardware.cluster import load_cluster
    from fleetsim.planner.serving.capacity import Bucket, CapacityJob, engine_config
    from fleetsim.planner.serving.records import Knobs, Slo
    from fleetsim.workloads.defaults import get_workload
    from fleetsim.workloads.models import load_model

    model, cl, wl = load_model("llama-3.2-1b"), load_cluster("8xH100"), get_workload("azure-conv")
    jobs = []
    for tp in (1, 2):
        for seqs in (16, 32, 64, 128):
            for seed in (0, 1):
                k = Knobs(pool=0, gpu="H100-SXM", tp=tp, pp=1, ep=1, max_num_seqs=seqs, max_num_batched_tokens=8192)
                jobs.append(CapacityJob(model=model, cluster=cl, knobs=k, engine=engine_config(k, "vllm", "bf16", "bf16"),
                                        workload=wl, buckets=(Bucket("all", 0.0, math.inf, 1.0),),
                                        slo=Slo(ttft_s=0.5, tpot_s=0.03), start_rps=10.0, seed=seed, requests=100,
                                        steps=4))
    return jobs


def timed(label: str, run: object, items: list, expected: list | None, fn: object = decode_step_s) -> list:
    t0 = time.perf_counter()
    out = run(fn, items)  # type: ignore[operator]
    dt = time.perf_counter() - t0
    if expected is not None and out != expected:
        raise SystemExit(f"{label}: results differ from in-process")
    print(f"{label:<28} {len(items):>6} candidates {dt:8.2f} s {len(items) / dt:10.1f} /s")
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    items = shapes(n)
    warm = [(1, 1, 512)]
    LocalExecutor(1).map(decode_step_s, warm)
    from fleetsim.planner.executor import shutdown_pools, start_method
    from fleetsim.planner.serving.capacity import capacity

    jobs = capacity_jobs()
    print(f"analytic: estimate_forward; simulated: capacity searches; local pool start: {start_method()}")
    expected = timed("analytic, in-process", LocalExecutor(1).map, items, None)
    sim_expected = timed("simulated, in-process", LocalExecutor(1).map, jobs, None, capacity)
    shutdown_pools()
    timed("analytic, local 2 (+start)", LocalExecutor(2).map, items, expected)
    timed("simulated, local 2", LocalExecutor(2).map, jobs, sim_expected, capacity)
    if importlib.util.find_spec("ray") is None:
        print("ray: not installed (pip install 'fleetsim[ray]')")
        return
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=ray_runtime_env())
    ex = RayExecutor()
    ex.map(decode_step_s, warm * 4)
    print(f"ray start-up and worker warm-up {time.perf_counter() - t0:.2f} s")
    try:
        timed("analytic, ray 2 CPUs (warm)", ex.map, items, expected)
        timed("simulated, ray 2 CPUs", ex.map, jobs, sim_expected, capacity)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
