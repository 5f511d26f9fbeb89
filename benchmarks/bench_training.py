"""Speed of the training-step simulator: a 1T-parameter GPT on 3072 A100s (Narayanan et al.
2021 table 1: tp 8, pp 64, dp 6, global batch 3072, micro-batch 1 -> 512 micro-batches per
pipeline), plus smaller configurations. Prints wall time per estimate (best of N).

    python benchmarks/bench_training.py
"""

from __future__ import annotations

import time

from fleetsim.training import estimate_train_step
from fleetsim.training_validate import megatron_gpt

ONE_T = megatron_gpt("gpt-1T", 128, 25600, 160, 4 * 25600, 51200, 2048)
CASES = [
    ("1T GPT, 3072x A100, tp8 pp64 dp6, 1F1B, m=512", dict(
        model=ONE_T, cluster="3072xA100-80GB", tp=8, pp=64, dp=6, micro_batch=1, global_batch=3072,
        seq_len=2048, recompute="selective", sequence_parallel=True, zero=1, schedule="1f1b")),
    ("1T GPT, 3072x A100, tp8 pp64 dp6, interleaved v=2", dict(
        model=ONE_T, cluster="3072xA100-80GB", tp=8, pp=64, dp=6, vpp=2, micro_batch=1, global_batch=3072,
        seq_len=2048, recompute="selective", sequence_parallel=True, zero=1, schedule="interleaved")),
    ("GPT-3 175B, 1024x H100, tp8 pp8 dp16", dict(
        model="gpt3-175b", cluster="1024xH100-SXM", tp=8, pp=8, dp=16, micro_batch=1, global_batch=1536,
        seq_len=2048, recompute="selective", sequence_parallel=True, zero=1)),
    ("GPT-2 350M, 1x H100, amp, eager (host-bound)", dict(
        model=megatron_gpt("gpt2-350m", 24, 1024, 8, 4096, 50257, 1024), cluster="1xH100-SXM",
        micro_batch=1, global_batch=1, seq_len=1024, precision="amp", execution="eager")),
    ("GPT-2 350M, 1x H100, amp, CUDA graph", dict(
        model=megatron_gpt("gpt2-350m", 24, 1024, 8, 4096, 50257, 1024), cluster="1xH100-SXM",
        micro_batch=1, global_batch=1, seq_len=1024, precision="amp", execution="graph")),
    ("Llama-3.1-8B, 8x H100, FSDP", dict(
        model="llama-3.1-8b", cluster="8xH100-SXM", dp=8, fsdp=True, micro_batch=2, global_batch=64,
        seq_len=4096, recompute="full")),
]


def bench(kwargs: dict, reps: int = 3, record: bool = False) -> tuple[float, float, object]:
    """Best wall and process-CPU seconds over ``reps`` estimates (CPU time is robust to
    other load on a shared machine)."""
    best = best_cpu = float("inf")
    est = None
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        est = estimate_train_step(**kwargs, record_timeline=record)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best, best_cpu, est


def main() -> None:
    print(f"{'case':52s} {'wall_s':>8s} {'cpu_s':>7s} {'+timeline':>9s} {'step_s':>8s} {'MFU':>6s} {'bubble':>7s}")
    for name, kw in CASES:
        wall, cpu, est = bench(kw)
        wall_tl, _, _ = bench(kw, reps=1, record=True)
        print(f"{name:52s} {wall:8.3f} {cpu:7.3f} {wall_tl:9.3f} {est.time_s:8.2f} {est.mfu:6.3f} "  # type: ignore[attr-defined]
              f"{est.bubble_fraction:7.4f}")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
