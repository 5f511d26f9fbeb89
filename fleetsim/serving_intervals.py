"""80% intervals of a serving simulation's latencies, by scaling iteration times.

Every iteration of a replica is priced by one cost model, so an error of the cost model
moves all of them together: iteration times ``x k`` with ``k`` in
``[exp(q10), exp(q90)]`` of the GPU's interval class (``calibration.intervals``; the prefill
class for TTFT, the decode class for TPOT, ``decode_graph`` when the engine captures CUDA
graphs as vLLM does). Without queueing a request's TTFT and
TPOT are sums of iteration times and scale by exactly ``k``; with queueing (load near
capacity) a slower engine also waits longer, so the scaled range understates the upper end.
The output rate of an open-loop workload below capacity is the arrival rate and does not
scale; the capacity does (``1 / k``). ``tests/test_intervals_sim.py`` re-simulates a tiny
scenario with scaled iteration times and compares. The summary of a ``ServingResult`` carries
these ends as ``ttft_p50_s_p10`` / ``_p90`` and ``tpot_p50_s_p10`` / ``_p90``
(``sim.serving.results.interval_keys``, which prices them).
"""

from __future__ import annotations

from typing import Any

__all__ = ["latency_intervals"]


def latency_intervals(result: Any) -> dict[str, tuple[float, float]]:
    """(p10, p90) of ``ttft_p50_s`` and ``tpot_p50_s`` of a ``ServingResult``, read from its summary."""
    s = result.summary
    return {key: (float(s[f"{key}_p10"]), float(s[f"{key}_p90"])) for key in ("ttft_p50_s", "tpot_p50_s")}
