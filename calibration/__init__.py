"""fleetsim.calibration: operator records, cost models and measured profiles.

``get_cost_model(gpu)`` returns the best model available for a GPU: its own measured
profile, else a roofline fitted from a profile of the same architecture, else the spec
roofline. Every model answers ``op_time(op, gpu, graphs=...) -> OpCost`` and the batched
``op_times(ops, gpu, graphs=...) -> (seconds array, sources)``; shape arrays
(``OpColumns``) are priced by ``price_columns``.
"""

from __future__ import annotations

from .columns import OpColumns, attention_columns, columns_of, elementwise_columns, gemm_columns
from .cost import SOURCES, CostModel, OpCost
from .measured import MeasuredCostModel, get_cost_model, profile_dirs
from .power import PowerParams, power_params
from .profile import Profile, load_profile
from .roofline import RooflineCostModel

__all__ = [
    "SOURCES", "CostModel", "OpCost", "MeasuredCostModel", "RooflineCostModel", "Profile", "PowerParams", "power_params",
    "get_cost_model", "load_profile", "profile_dirs", "OpColumns", "attention_columns", "columns_of",
    "elementwise_columns", "gemm_columns",
]
