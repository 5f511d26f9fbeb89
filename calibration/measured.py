"""Measured cost model: operator times from a GPU's calibration profile.

For the GPU the profile was measured on, a query that hits a measured shape is
``measured``; one inside the convex hull of the measured shapes of its family is
``interpolated`` (log efficiency linear in log shape features, see ``fit.py``); anything
else is priced by the roofline with the efficiency of the nearest measured shape and is
reported as ``roofline``. An interpolant is never extrapolated. Any other GPU of the same
architecture is priced by that fitted roofline scaled by its own spec FLOP/s and bandwidth
(provenance ``roofline``); a GPU of another architecture gets the plain spec roofline.

``get_cost_model(gpu)`` picks: the GPU's own profile if one exists under the profile root,
else a roofline fitted from a profile of the same architecture (the one whose memory
bandwidth is nearest the target's), else the spec roofline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from fleetsim.hardware.errors import ProfileError, SpecError
from fleetsim.hardware.specs import GPUSpec, LinkSpec

from .cost import OpCost
from .fit import ProfileFit
from .ops import Op
from .power import PowerParams, kernel_power_w, load_power_params
from .profile import Profile, load_profile
from .roofline import RooflineCostModel

PROFILE_ROOT = Path(__file__).resolve().parent / "profiles"
"""Profiles shipped with the package: ``profiles/<catalog GPU name>/``."""
VALIDATION_ROOT = Path(__file__).resolve().parent / "validation"
"""Validation ground truth shipped with the package: ``validation/<catalog GPU name>/``."""


def _catalog_gpu(name: str) -> GPUSpec:
    from fleetsim.hardware.catalog import get_gpu

    return get_gpu(name)


class MeasuredCostModel(RooflineCostModel):
    """Cost model backed by one measured profile (a directory or a loaded ``Profile``).

    ``gpu`` is the spec of the GPU the profile was measured on; by default it is looked up
    in the catalog under the profile's ``catalog_gpu``.
    """

    def __init__(self, profile: str | Path | Profile, gpu: GPUSpec | None = None, *,
                 links: Mapping[str, LinkSpec] | None = None) -> None:
        prof = profile if isinstance(profile, Profile) else load_profile(profile)
        spec = gpu if gpu is not None else _catalog_gpu(prof.gpu_name)
        super().__init__(ProfileFit(prof, spec), links=links)
        self.profile = prof
        self.measured_gpu = spec.name
        self.power: PowerParams | None = load_power_params(prof.root, spec)

    def op_time(self, op: Op, gpu: GPUSpec, *, graphs: bool = False) -> OpCost:
        """Seconds (and, on the profiled GPU with a power table, joules) of one instance."""
        cost = super().op_time(op, gpu, graphs=graphs)
        if self.power is None or gpu.name != self.measured_gpu:
            return cost
        return OpCost(cost.time_s, cost.source, float(kernel_power_w(self.power, gpu, [op], np.array([cost.time_s]))[0])
                      * cost.time_s)

    def op_energies(self, ops: Sequence[Op], gpu: GPUSpec, graphs: bool = False) -> np.ndarray | None:
        """Energy (J) of one instance of each operator (its occupancy power x time, see
        ``calibration.power``), or None when ``gpu`` is not the profiled GPU or the profile has
        no ``power_model.json``."""
        if self.power is None or gpu.name != self.measured_gpu:
            return None
        t, _ = self.op_times(ops, gpu, graphs=graphs)
        return kernel_power_w(self.power, gpu, ops, t) * t

    def __repr__(self) -> str:
        return f"MeasuredCostModel({str(self.profile.root)!r}, gpu={self.measured_gpu!r})"


PROFILE_ENV = "FLEETSIM_PROFILE_DIR"
"""Environment variable naming a folder of the user's own profiles (``<GPU>/*.csv``, as
``fleetsim calibrate`` writes them); they are used beside the shipped ones and win over a
shipped profile of the same GPU."""


def user_profile_root() -> Path | None:
    """The folder ``$FLEETSIM_PROFILE_DIR`` names, or None when it is unset or empty."""
    text = os.environ.get(PROFILE_ENV, "").strip()
    return Path(text).expanduser() if text else None


def _dirs_under(base: Path) -> dict[str, Path]:
    return {d.name: d for d in sorted(base.iterdir()) if d.is_dir() and any(d.glob("*.csv"))}


def profile_dirs(root: str | Path | None = None) -> dict[str, Path]:
    """Catalog GPU name -> profile directory, for every profile under ``root``; by default
    the package's profiles, overridden per GPU by those under ``$FLEETSIM_PROFILE_DIR``.
    A folder that is given must be an existing directory (``ProfileError`` naming it)."""
    if root is not None:
        if not Path(root).is_dir():
            what = "does not exist" if not Path(root).exists() else "is not a directory"
            raise ProfileError(f"profile root {str(root)!r} {what}")
        return _dirs_under(Path(root))
    out = _dirs_under(PROFILE_ROOT) if PROFILE_ROOT.is_dir() else {}
    user = user_profile_root()
    if user is not None:
        if not user.is_dir():
            what = "does not exist" if not user.exists() else "is not a directory"
            raise ProfileError(f"${PROFILE_ENV}={str(user)!r} {what}")
        out.update(_dirs_under(user))
    return out


@lru_cache(maxsize=16)
def _load_measured(path: str, gpu_json: str | None) -> MeasuredCostModel:
    spec = GPUSpec.model_validate_json(gpu_json) if gpu_json else None
    return MeasuredCostModel(path, spec)


def get_cost_model(gpu: GPUSpec | str, profile_root: str | Path | None = None, *,
                   profile_gpus: Mapping[str, GPUSpec] | None = None) -> RooflineCostModel:
    """The best cost model available for ``gpu`` (a spec or a catalog name).

    ``profile_gpus`` gives specs for profiled GPUs that are not in the catalog (tests);
    otherwise profiled GPUs are looked up in the catalog. Loaded profiles are cached.
    """
    spec = _catalog_gpu(gpu) if isinstance(gpu, str) else gpu
    if not isinstance(spec, GPUSpec):
        raise SpecError(f"get_cost_model: gpu must be a GPU name or a GPUSpec, got {type(gpu).__name__} {gpu!r:.60}")
    dirs = profile_dirs(profile_root)
    names = {spec.name, *spec.aliases}
    extra = dict(profile_gpus or {})

    def spec_of(name: str) -> GPUSpec | None:
        if name in extra:
            return extra[name]
        if name == spec.name:
            return spec
        try:
            return _catalog_gpu(name)
        except (SpecError, ImportError):
            return None

    for name, path in dirs.items():
        if name in names:
            return _load_measured(str(path), spec.model_dump_json())
    best: tuple[float, str, GPUSpec] | None = None
    for name, path in dirs.items():
        other = spec_of(name)
        if other is None or other.architecture != spec.architecture:
            continue
        dist = abs(other.memory_bw_bps / spec.memory_bw_bps - 1.0)
        if best is None or dist < best[0]:
            best = (dist, str(path), other)
    if best is not None:
        return _fitted_roofline(best[1], best[2].model_dump_json())
    return RooflineCostModel()


@lru_cache(maxsize=16)
def _fitted_roofline(path: str, gpu_json: str) -> RooflineCostModel:
    """One shared fitted roofline per profile, so its cache survives repeated look-ups."""
    measured = _load_measured(path, gpu_json)
    return RooflineCostModel(measured.fit, links=measured.links)
