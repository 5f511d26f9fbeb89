"""What a GPU power cap does to clock, time and power.

Under a board power limit ``L`` the power controller lowers the SM clock until the board's
draw meets the limit. With ``s`` the SM clock as a fraction of its maximum, the board power is

    P(s) = static_w + (demand_w - static_w) * s**gamma

``demand_w`` is what the work draws uncapped at full clock; ``static_w = static_share * tdp_w``
is the part that does not follow the SM clock (idle, HBM, fans). ``gamma`` carries the voltage
that falls with the clock (dynamic power ~ f V^2, so 1 < gamma < 3 on DVFS parts). The
controller limits short-window power while the work's draw fluctuates, so the average settles
at ``cap_headroom * L`` rather than at ``L``. ``s`` never falls below ``min_clock_ratio``; at
that floor the board may stay above the limit. Time follows the clock only on the
compute-bound share ``k`` of the work: ``t(s) = t(1) * (1 - k + k / s)``.

The parameters are fitted per GPU on the Zeus (NSDI '23) power-limit traces by
``fleetsim.power_fit`` and live in ``power_cap_fit.csv`` next to this module.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fleetsim.hardware.catalog import get_gpu, has_gpu
from fleetsim.hardware.errors import ConfigError, SpecError, suggest

FIT_CSV = Path(__file__).with_name("power_cap_fit.csv")
POOLED = "pooled"


def _positive(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _fraction(name: str, value: float, *, open_low: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or v > 1 or v < 0 or (open_low and v == 0):
        low = "(0" if open_low else "[0"
        raise ConfigError(f"{name} must lie in {low}, 1], got {value!r}")
    return v


@dataclass(frozen=True)
class ClockModel:
    """Clock, time and power of one GPU under a power limit (see the module docstring)."""

    gpu: str
    gamma: float
    static_share: float
    min_clock_ratio: float
    source: str
    cap_headroom: float = 1.0
    """Average board power over the limit once the cap binds (<= 1: the cap acts on peaks)."""
    k_intercept: float = 1.0
    k_slope: float = 0.0
    """Compute-bound share predicted from the uncapped draw: clip(k_intercept + k_slope * demand/tdp, 0, 1)."""

    def __post_init__(self) -> None:
        _positive("gamma", self.gamma)
        _fraction("static_share", self.static_share)
        if self.static_share >= 1:
            raise ConfigError(f"static_share must be < 1, got {self.static_share!r}")
        _fraction("min_clock_ratio", self.min_clock_ratio, open_low=True)
        _fraction("cap_headroom", self.cap_headroom, open_low=True)

    def clock_ratio(self, demand_w: float, limit_w: float, tdp_w: float) -> float:
        """SM clock / max clock where the board settles under ``limit_w``: 1 when the work's
        uncapped draw fits under the (headroom-scaled) limit, else the root of P(s) = h*L,
        never below ``min_clock_ratio``."""
        demand = _positive("demand_w", demand_w)
        limit = _positive("limit_w", limit_w) * self.cap_headroom
        static = self.static_share * _positive("tdp_w", tdp_w)
        if demand <= limit:
            return 1.0
        if limit <= static:
            return self.min_clock_ratio
        s = ((limit - static) / (demand - static)) ** (1.0 / self.gamma)
        return min(1.0, max(self.min_clock_ratio, s))

    def time_factor(self, compute_share: float, s: float) -> float:
        """Time at clock ratio ``s`` over time at full clock: 1 - k + k/s."""
        k = _fraction("compute_share", compute_share)
        ratio = _fraction("s", s, open_low=True)
        return 1.0 - k + k / ratio

    def power_w(self, demand_w: float, s: float, tdp_w: float) -> float:
        """Average board power (W) at clock ratio ``s``: static + (demand - static) * s**gamma.
        Work that draws less than the static part keeps its draw."""
        demand = _positive("demand_w", demand_w)
        ratio = _fraction("s", s, open_low=True)
        static = self.static_share * _positive("tdp_w", tdp_w)
        if demand <= static:
            return demand
        return static + (demand - static) * ratio**self.gamma

    def compute_share(self, demand_w: float, tdp_w: float) -> float:
        """Compute-bound share predicted from the uncapped draw (the fitted k(demand) rule)."""
        x = _positive("demand_w", demand_w) / _positive("tdp_w", tdp_w)
        return min(1.0, max(0.0, self.k_intercept + self.k_slope * x))


@lru_cache(maxsize=1)
def _rows() -> tuple[dict[str, str], ...]:
    with FIT_CSV.open(newline="") as fh:
        return tuple(csv.DictReader(fh))


def _model(row: dict[str, str], gpu: str, source: str) -> ClockModel:
    return ClockModel(gpu=gpu, gamma=float(row["gamma"]), static_share=float(row["static_share"]),
                      min_clock_ratio=float(row["min_clock_ratio"]), source=source,
                      cap_headroom=float(row["cap_headroom"]), k_intercept=float(row["k_intercept"]),
                      k_slope=float(row["k_slope"]))


def _fitted_source(row: dict[str, str]) -> str:
    return (f"fitted on Zeus {row['gpu']} traces ({row['zeus_file']}, {row['card']}; "
            f"{row['n_fit']} fit / {row['n_test']} held-out curves)")


def clock_model(gpu: str) -> ClockModel:
    """The clock model of ``gpu``: a Zeus GPU name (A40, V100, P100, RTX6000) or a catalog
    name. A GPU with its own Zeus fit gets that row; any other catalog GPU gets the fit pooled
    over the Zeus GPUs, which ``source`` says. An unknown name is a ``SpecError``."""
    rows = _rows()
    key = gpu.strip().lower()
    for row in rows:
        if row["gpu"] != POOLED and row["gpu"].lower() == key:
            return _model(row, row["gpu"], _fitted_source(row))
    if not has_gpu(gpu):
        names = [r["gpu"] for r in rows if r["gpu"] != POOLED]
        raise SpecError(f"unknown GPU {gpu!r} for the power-cap model" + suggest(gpu, names))
    name = get_gpu(gpu).name
    for row in rows:
        if row["catalog_gpu"] == name:
            return _model(row, name, _fitted_source(row) + f"; applied to catalog {name}")
    pooled = next(r for r in rows if r["gpu"] == POOLED)
    return _model(pooled, name, "pooled over Zeus GPUs (no fit for this GPU): " + pooled["zeus_file"])
