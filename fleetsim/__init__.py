"""fleetsim: performance simulator and planner for LLM training and serving on GPU clusters.

The public API is re-exported here lazily (PEP 562) so that importing a lower layer such as
``fleetsim.hardware`` does not pull in the simulator and planner.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__version__ = "0.1.0"

# In a source checkout the subpackages sit beside this folder (``hardware/``, ``sim/``, ...)
# and are installed as ``fleetsim.hardware``, ``fleetsim.sim``, ... When Python picks up this
# folder from the checkout itself (``python3 -m fleetsim`` run in the repository root puts the
# root first on sys.path), let the package search the root too, so the checkout resolves
# exactly like an installed copy. An installed copy has no such siblings.
_ROOT = Path(__file__).resolve().parent.parent
if (_ROOT / "pyproject.toml").is_file() and (_ROOT / "hardware" / "__init__.py").is_file():
    if str(_ROOT) not in __path__:
        __path__.append(str(_ROOT))

_EXPORTS: dict[str, str] = {
    # hardware
    "get_gpu": "fleetsim.hardware.catalog",
    "get_link": "fleetsim.hardware.catalog",
    "get_system": "fleetsim.hardware.catalog",
    "load_cluster": "fleetsim.hardware.cluster",
    "GPUSpec": "fleetsim.hardware.specs",
    "ClusterSpec": "fleetsim.hardware.specs",
    "FleetsimError": "fleetsim.hardware.errors",
    "InfeasibleError": "fleetsim.hardware.errors",
    # models and operators
    "load_model": "fleetsim.workloads.models",
    "ModelSpec": "fleetsim.workloads.models",
    "Seq": "fleetsim.workloads.parallel",
    "Parallel": "fleetsim.workloads.parallel",
    "ParallelConfig": "fleetsim.workloads.parallel",
    # estimates, simulation, planning
    "estimate_forward": "fleetsim.estimate",
    "get_cost_model": "fleetsim.estimate",
    "simulate_serving": "fleetsim.serving",
    "estimate_train_step": "fleetsim.training",
    "plan_serving": "fleetsim.planning",
    "plan_training": "fleetsim.training_plans",
    "get_workload": "fleetsim.workloads.defaults",
    # result invariants
    "check_serving_result": "fleetsim.sim.check",
    "check_train_estimate": "fleetsim.sim.check",
    "InvariantError": "fleetsim.hardware.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fleetsim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
