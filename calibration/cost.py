"""The narrow cost interface: operator -> seconds, with provenance.

Every cost model (roofline, measured profile) answers with the same ``OpCost`` type; the
``source`` field says where a number came from so gaps in coverage are visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from fleetsim.hardware.specs import GPUSpec

from .ops import Op

Source = Literal["measured", "interpolated", "roofline"]
SOURCES: tuple[Source, ...] = ("measured", "interpolated", "roofline")


@dataclass(frozen=True, slots=True)
class OpCost:
    """Time of one instance of an operator (multiply by ``op.count`` for the step)."""

    time_s: float
    source: Source
    energy_j: float | None = None


@runtime_checkable
class CostModel(Protocol):
    """Anything that prices operators on a GPU."""

    def op_time(self, op: Op, gpu: GPUSpec, *, graphs: bool = False) -> OpCost:
        """Seconds for one instance of ``op`` on ``gpu`` (``graphs``: CUDA-graph replay)."""
        ...
