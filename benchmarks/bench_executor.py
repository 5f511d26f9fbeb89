"""Candidates evaluated per second by each executor, for a cheap analytic evaluation.

Each candidate is one ``estimate_forward`` of a decode step (llama-3.1-8b on an H100, vLLM
profile) over TP in {1, 2, 4, 8} x batch in {1..256}; the same list is timed in-process,
on a local pool of 2 workers, and on a local Ray runtime of 2 CPUs when Ray is installed.
Pool and Ray start-up are timed separately from the evaluation. Every executor's results
must equal the in-process list. Run: ``python3 benchmarks/bench_executor.py [N]``.
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


def timed(label: str, run: object, items: list, expected: list | None) -> list:
    t0 = time.perf_counter()
    out = run(decode_step_s, items)  # type: ignore[operator]
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
    expected = timed("local, 1 worker (inline)", LocalExecutor(1).map, items, None)
    timed("local, 2 workers (+spawn)", LocalExecutor(2).map, items, expected)
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
        timed("ray, 2 CPUs (warm)", ex.map, items, expected)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
