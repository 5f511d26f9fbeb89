"""Training-plan speed: a 1T GPT (megatron-1t) on 3072 A100-80GB, global batch 3072 x 2048
(Narayanan et al. 2021 table 1's scale). Prints wall and CPU seconds of this process, candidates
memory-checked, simulations and the best plan: top=1 and top=10 in this process, and top=10 on
a local pool of one process per core (``executor="local"``; spawn and imports included)."""

from __future__ import annotations

import os
import time

from fleetsim.training_plans import plan_training


def main() -> None:
    print(f"cores: {os.cpu_count()}")
    for top, executor in ((1, None), (10, None), (10, "local")):
        t0, c0 = time.perf_counter(), time.process_time()
        plan = plan_training("megatron-1t", "3072xA100-SXM-80GB", global_batch=3072, seq_len=2048, top=top,
                             executor=executor)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        b = plan.best
        print(f"top={top} executor={executor or 'in-process'}: {wall:.1f} s wall ({cpu:.1f} s CPU here), "
              f"{plan.candidates} memory-feasible candidates reached, {plan.simulated} simulated; "
              f"best {b.candidate.label()}: step {b.time_s:.2f} s, MFU {b.mfu:.3f}")


if __name__ == "__main__":
    main()
