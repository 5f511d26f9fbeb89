"""Failure catalog: interruption causes of large training runs and the rates they imply.

A catalog lists causes observed over an *exposure* (so many GPUs for so many hours): each
cause names the failing component (gpu, hbm, host, nic, switch, software, maintenance), the
*unit* its rate is counted per (one GPU, node, NIC, rack or the whole job) and its *blast
radius* (which nodes leave the job: none, the node, or the rack). The rate per unit-hour is
derived, never stored: ``count / (units in the exposure * hours)``. Recovery times (fault
detection, restart, node repair) and the shared checkpoint storage's bandwidths ride along.

The default catalog (``llama3-405b``, alias ``default``) is Table 5 of "The Llama 3 Herd of
Models" (section 3.3.4). ``load_failures(name | path | spec)`` resolves one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fleetsim.hardware.errors import SpecError, suggest
from fleetsim.hardware.specs import Frozen
from pydantic import Field, model_validator

FAILURES_DIR = Path(__file__).resolve().parent / "catalog" / "failures"

Component = Literal["gpu", "hbm", "host", "nic", "switch", "software", "maintenance"]
Unit = Literal["gpu", "node", "nic", "rack", "job"]
Blast = Literal["none", "node", "rack"]


class Exposure(Frozen):
    """The fleet and period a catalog's counts were observed on."""

    gpus: int = Field(gt=0)
    gpus_per_node: int = Field(gt=0)
    nics_per_node: int = Field(ge=0)
    gpus_per_rack: int = Field(gt=0)
    """GPUs behind one top-of-rack switch: a switch fault takes down this many GPUs' nodes."""
    hours: float = Field(gt=0)

    def units(self, unit: Unit) -> float:
        nodes = self.gpus / self.gpus_per_node
        return {"gpu": float(self.gpus), "node": nodes, "nic": nodes * self.nics_per_node,
                "rack": self.gpus / self.gpus_per_rack, "job": 1.0}[unit]


class FailureCause(Frozen):
    """One interruption cause: ``count`` events over the exposure, or a ``rate_per_hour`` per
    unit given directly (a user catalog); ``repair_s`` overrides the catalog's repair time."""

    name: str = Field(min_length=1)
    component: Component
    unit: Unit
    blast: Blast
    count: float | None = Field(default=None, ge=0)
    rate_per_hour: float | None = Field(default=None, ge=0)
    """Events per unit-hour (a unit is one ``unit``); exclusive with ``count``."""
    planned: bool = False
    repair_s: float | None = Field(default=None, ge=0)
    published_share: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _one_rate(self) -> FailureCause:
        if (self.count is None) == (self.rate_per_hour is None):
            raise ValueError(f"cause {self.name!r}: give exactly one of count, rate_per_hour")
        return self


class Recovery(Frozen):
    """Seconds from a fault to its detection, to a restarted job, and to a repaired node."""

    detection_s: float = Field(ge=0)
    restart_s: float = Field(ge=0)
    repair_s: float = Field(ge=0)


class Storage(Frozen):
    """Aggregate bandwidth of the shared checkpoint store (bytes/s)."""

    write_bps: float = Field(gt=0)
    read_bps: float = Field(gt=0)


class FailureCatalog(Frozen):
    name: str = Field(min_length=1)
    aliases: tuple[str, ...] = ()
    exposure: Exposure | None = None
    causes: tuple[FailureCause, ...]
    recovery: Recovery
    storage: Storage
    sources: dict[str, str] = {}

    @model_validator(mode="after")
    def _check(self) -> FailureCatalog:
        names = [c.name for c in self.causes]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"cause names must be unique, repeated: {', '.join(sorted(dup))}")
        if any(c.count is not None for c in self.causes) and self.exposure is None:
            raise ValueError("causes given as count need an exposure (gpus, hours, ...)")
        return self

    def rate_per_unit_hour(self, cause: FailureCause) -> float:
        """Events per unit-hour: the stored rate, or count / (exposure units * hours)."""
        if cause.rate_per_hour is not None:
            return cause.rate_per_hour
        assert self.exposure is not None and cause.count is not None
        return cause.count / (self.exposure.units(cause.unit) * self.exposure.hours)

    def repair_s(self, cause: FailureCause) -> float:
        return self.recovery.repair_s if cause.repair_s is None else cause.repair_s


def _files() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted(FAILURES_DIR.glob("*.yaml")):
        cat = _load_file(path)
        for key in (cat.name, *cat.aliases):
            out[key.lower()] = path
    return out


def _load_file(path: Path) -> FailureCatalog:
    from fleetsim.hardware.catalog import _read_yaml, show_path, validation_message, yaml_node
    from pydantic import ValidationError

    data, text = _read_yaml(path)
    where = show_path(path)
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return FailureCatalog.model_validate(data)
    except ValidationError as exc:
        raise SpecError(validation_message(exc, FailureCatalog, where, yaml_node(text))) from None


def load_failures(spec: str | Path | FailureCatalog) -> FailureCatalog:
    """A catalog by name or alias (``default``), YAML path, or as given."""
    if isinstance(spec, FailureCatalog):
        return spec
    if not isinstance(spec, str | Path):
        raise SpecError(f"failures must be a catalog name, a YAML path or a FailureCatalog, got {spec!r}")
    text = str(spec)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return _load_file(Path(text))
    files = _files()
    path = files.get(text.strip().lower())
    if path is None:
        raise SpecError(f"unknown failure catalog {text!r}" + suggest(text, list(files)))
    return _load_file(path)


def list_failure_catalogs() -> list[str]:
    return sorted({_load_file(p).name for p in FAILURES_DIR.glob("*.yaml")})


__all__ = ["Exposure", "FailureCatalog", "FailureCause", "Recovery", "Storage", "list_failure_catalogs",
           "load_failures"]
