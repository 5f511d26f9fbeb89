"""Hardware catalog figures: cold catalog load time and cluster-shorthand parse rate.

Run: ``python benchmarks/bench_hardware.py``. Prints seconds and operations per second.
"""

from __future__ import annotations

import time

from fleetsim.hardware import catalog
from fleetsim.hardware.cluster import link_for_ranks, load_cluster


def main() -> None:
    t0 = time.perf_counter()
    catalog.clear_cache()
    n_parts = len(catalog.list_gpus()) + len(catalog.list_links()) + len(catalog.list_systems()) + len(
        catalog.list_memory_tiers())
    cold_s = time.perf_counter() - t0
    print(f"cold catalog load: {n_parts} parts in {cold_s * 1e3:.1f} ms")

    texts = ["8xH100", "64xH100", "2x8xA100-80GB", "16xH100+32xL4", "12xH100", "DGX-H100", "144xGB200"]
    reps = 2000
    t0 = time.perf_counter()
    for _ in range(reps):
        for text in texts:
            load_cluster(text)
    dt = time.perf_counter() - t0
    print(f"shorthand parse: {reps * len(texts) / dt:,.0f} clusters/s ({dt / (reps * len(texts)) * 1e6:.1f} us each)")

    c = load_cluster("1024xH100")
    t0 = time.perf_counter()
    n = 0
    for a in range(0, 1024, 7):
        for b in range(0, 1024, 13):
            link_for_ranks(c, a, b)
            n += 1
    dt = time.perf_counter() - t0
    print(f"rank-pair link lookup: {n / dt:,.0f} pairs/s")


if __name__ == "__main__":
    main()
