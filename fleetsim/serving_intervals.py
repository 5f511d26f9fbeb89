"""80% intervals of a serving simulation's latencies, by scaling iteration times.

Every iteration of a replica is priced by one cost model, so an error of the cost model
moves all of them together: iteration times ``x k`` with ``k`` in
``[exp(q10), exp(q90)]`` of the GPU's interval class (``calibration.intervals``;
``prefill_eager`` for TTFT, ``decode_graph`` for TPOT). Without queueing a request's TTFT and
TPOT are sums of iteration times and scale by exactly ``k``; with queueing (load near
capacity) a slower engine also waits longer, so the scaled range understates the upper end.
The output rate of an open-loop workload below capacity is the arrival rate and does not
scale; the capacity does (``1 / k``). ``tests/test_intervals_sim.py`` re-simulates a tiny
scenario with scaled iteration times and compares.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["latency_intervals"]


def latency_intervals(result: Any) -> dict[str, tuple[float, float]]:
    """(p10, p90) of ``ttft_p50_s`` and ``tpot_p50_s`` of a ``ServingResult`` (the first pool's GPU)."""
    from fleetsim.calibration import MeasuredCostModel, get_cost_model
    from fleetsim.calibration.intervals import load_table
    from fleetsim.hardware.catalog import get_gpu

    gpu = get_gpu(str(result.replicas["gpu"].iloc[0]))
    own = isinstance(get_cost_model(gpu), MeasuredCostModel)
    table = load_table()
    out = {}
    for key, cls in (("ttft_p50_s", "prefill_eager"), ("tpot_p50_s", "decode_graph")):
        lo, hi = table.log_bounds(gpu.name, cls, own_profile=own)
        v = float(result.summary.get(key, math.nan))
        out[key] = (v * math.exp(lo), v * math.exp(hi))
    return out
