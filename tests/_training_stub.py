"""A cost-model stub for the training-simulator oracles: fixed, known operator times.

Every GEMM of a transformer layer costs ``GEMM_S`` (its dgrad and wgrad too, so a layer's
backward is exactly twice its forward); attention, elementwise kernels and the LM head cost
nothing unless asked; collectives cost ``bytes / COLL_BPS`` (no latency), so communication
time is known in closed form.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from fleetsim.calibration.cost import OpCost
from fleetsim.calibration.ops import CollectiveOp, GemmOp, Op
from fleetsim.hardware.specs import GPUSpec

GEMM_S = 1e-3
COLL_BPS = 1e9


class StubCost:
    """Prices: layer GEMMs ``gemm_s`` each, collectives ``bytes / coll_bps``, rest zero."""

    def __init__(self, gemm_s: float = GEMM_S, coll_bps: float | None = COLL_BPS, head_s: float = 0.0) -> None:
        self.gemm_s, self.coll_bps, self.head_s = gemm_s, coll_bps, head_s

    def _one(self, op: Op) -> float:
        if isinstance(op, GemmOp):
            return self.head_s if op.name.startswith("lm_head") else self.gemm_s
        if isinstance(op, CollectiveOp):
            return 0.0 if self.coll_bps is None else op.bytes / self.coll_bps
        return 0.0

    def op_time(self, op: Op, gpu: GPUSpec, *, graphs: bool = False) -> OpCost:
        return OpCost(self._one(op), "measured")

    def op_times(self, ops: Sequence[Op], gpu: GPUSpec, graphs: bool = False) -> tuple[np.ndarray, list[str]]:
        return np.array([self._one(op) for op in ops], dtype=float), ["measured"] * len(ops)
