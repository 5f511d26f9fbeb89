"""Training-plan speed: a 1T GPT (megatron-1t) on 3072 A100-80GB, global batch 3072 x 2048
(Narayanan et al. 2021 table 1's scale). Prints wall seconds, candidates, simulations, best plan."""

from __future__ import annotations

import os
import time

from fleetsim.plan_training import plan_training


def main() -> None:
    print(f"cores: {os.cpu_count()}")
    for top in (1, 10):
        t0 = time.perf_counter()
        plan = plan_training("megatron-1t", "3072xA100-SXM-80GB", global_batch=3072, seq_len=2048, top=top)
        wall = time.perf_counter() - t0
        b = plan.best
        print(f"top={top}: {wall:.1f} s wall, {plan.candidates} memory-feasible candidates, "
              f"{plan.simulated} simulated; best {b.candidate.label()}: step {b.time_s:.2f} s, MFU {b.mfu:.3f}")


if __name__ == "__main__":
    main()
