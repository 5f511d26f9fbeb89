"""The narrow cost interface: operator -> seconds, with provenance.

Every cost model (roofline, measured profile) answers with the same ``OpCost`` type; the
``source`` field says where a number came from so gaps in coverage are visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from fleetsim.hardware.specs import GPUSpec, LinkSpec

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


@runtime_checkable
class IterationCostModel(CostModel, Protocol):
    """What iteration pricing (``sim.iteration``) uses: kernel times per launch mode,
    back-to-back stream times, host dispatch per eager call, sustained-load ratios and
    the links that price collectives. ``RooflineCostModel`` and ``MeasuredCostModel``
    implement it."""

    def op_times(self, ops: Sequence[Op], gpu: GPUSpec, graphs: bool = False
                 ) -> tuple[np.ndarray, list[Source]]:
        """Seconds of one instance of each operator and its provenance."""
        ...

    def price(self, ops: Sequence[Op], gpu: GPUSpec, *, graphs: bool = False, mode: str | None = None
              ) -> tuple[np.ndarray, list[Source]]:
        """``op_times`` without the cache (``mode``: "eager", "graph" or "stream")."""
        ...

    def stream_times(self, ops: Sequence[Op], gpu: GPUSpec) -> tuple[np.ndarray, list[Source]]:
        """Device seconds of each operator launched back to back with the host ahead."""
        ...

    def host_launch_s(self, gpu: GPUSpec) -> float:
        """Host seconds of one bare eager kernel launch."""
        ...

    def host_times(self, ops: Sequence[Op], gpu: GPUSpec,
                   calls: Sequence[Sequence[str] | None] | None = None) -> list[float]:
        """Host seconds to issue each operator eagerly (its PyTorch calls)."""
        ...

    def sustained_ratios(self, ops: Sequence[Op], gpu: GPUSpec) -> np.ndarray:
        """Sustained/burst time ratio of each operator under continuous load."""
        ...

    def link(self, name: str) -> LinkSpec:
        """A link spec by name (collective pricing)."""
        ...
