"""The hardware catalog: one YAML file per part, loaded lazily into frozen specs.

Parts live in ``hardware/catalog/{gpus,links,memory,systems}/<name>.yaml``. Names and
aliases resolve case-insensitively (``h100`` -> ``H100-SXM``). Unknown names, malformed
YAML, unknown keys and out-of-range numbers become a one-line :class:`SpecError` naming
the file, the line and the field, so a user editing a YAML file sees where it is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from fleetsim.hardware.errors import SpecError, suggest
from fleetsim.hardware.specs import GPUSpec, LinkSpec, MemoryTierSpec, NodeSpec
from pydantic import BaseModel, ValidationError

CATALOG_DIR = Path(__file__).resolve().parent / "catalog"

Spec = TypeVar("Spec", GPUSpec, LinkSpec, MemoryTierSpec, NodeSpec)

_KINDS: dict[str, tuple[str, type[BaseModel]]] = {
    "gpu": ("gpus", GPUSpec),
    "link": ("links", LinkSpec),
    "memory": ("memory", MemoryTierSpec),
    "system": ("systems", NodeSpec),
}


@dataclass
class _Table:
    """All parts of one kind: canonical name -> spec, lower-cased name/alias -> canonical."""

    kind: str
    specs: dict[str, Any] = field(default_factory=dict)
    index: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def add(self, spec: Any, path: Path | None, replace: bool = False) -> None:
        keys = [spec.name, *spec.aliases]
        old = self.specs.get(spec.name)
        if old is not None and old != spec and not replace:
            where = f"{show_path(path)}: " if path else ""
            raise SpecError(f"{where}{self.kind} {spec.name!r} is already defined differently")
        if old is not None:
            for key in (old.name, *old.aliases):
                self.index.pop(key.lower(), None)
        for key in keys:
            owner = self.index.get(key.lower())
            if owner is not None and owner != spec.name:
                where = f"{show_path(path)}: " if path else ""
                raise SpecError(
                    f"{where}{self.kind} name or alias {key!r} of {spec.name!r} is already used by {owner!r}"
                )
        self.specs[spec.name] = spec
        for key in keys:
            self.index[key.lower()] = spec.name
        if path is not None:
            self.files[spec.name] = path

    def get(self, name: str) -> Any:
        if not isinstance(name, str):
            raise SpecError(f"{self.kind} name must be a string, got {name!r}")
        canonical = self.index.get(name.strip().lower())
        if canonical is None:
            raise SpecError(f"unknown {self.kind} {name!r}" + suggest(name, self._names()))
        return self.specs[canonical]

    def _names(self) -> list[str]:
        names = list(self.specs)
        for spec in self.specs.values():
            names.extend(spec.aliases)
        return names


_TABLES: dict[str, _Table] = {}


def clear_cache() -> None:
    """Forget loaded parts (and registered user parts); the next lookup re-reads the YAML."""
    _TABLES.clear()


def _table(kind: str) -> _Table:
    table = _TABLES.get(kind)
    if table is None:
        folder, model = _KINDS[kind]
        table = _Table("memory tier" if kind == "memory" else kind)
        for path in sorted((CATALOG_DIR / folder).glob("*.yaml")):
            table.add(_load_file(path, model), path)
        _TABLES[kind] = table
    return table


# ---------------------------------------------------------------- YAML with line numbers


def show_path(path: str | Path) -> str:
    """``path`` as text for a one-line message (quoted when it holds control characters)."""
    text = str(path)
    return text if text.isprintable() else repr(text)


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def yaml_node(text: str | None) -> yaml.Node | None:
    """The composed node tree of ``text`` (its marks give line numbers), built only when an
    error needs a line; None when there is no text or it does not compose."""
    if text is None:
        return None
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def _read_yaml(path: Path) -> tuple[Any, str]:
    """Parse ``path``; returns the data and the text (for line numbers in later errors)."""
    where = show_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"file not found: {where}") from None
    except UnicodeDecodeError:
        raise SpecError(f"cannot read {where}: not a text (UTF-8) file") from None
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read {where}: {type(exc).__name__}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{where}{line}: malformed YAML: {' '.join(problem.split())}") from None
    return data, text


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at pydantic location ``loc`` (deepest node found)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if str(key.value) == str(part):
                    child = value if isinstance(value, yaml.CollectionNode) else key
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def validation_message(exc: ValidationError, model: type[BaseModel], where: str,
                       node: yaml.Node | None = None) -> str:
    """One line for the first pydantic error: ``where:line: field 'x': problem``."""
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    line = _line_of(node, loc)
    prefix = f"{where}:{line}" if line is not None else where
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        hint = suggest(str(loc[-1]), list(model.model_fields)) if len(loc) == 1 else ""
        return f"{prefix}: unknown key {dotted!r}{hint}"
    if kind == "missing":
        return f"{prefix}: missing required key {dotted!r}"
    msg = " ".join(str(err.get("msg", "invalid value")).removeprefix("Value error, ").split())
    if not loc:  # a check across fields
        return f"{prefix}: {msg}"
    value = err.get("input")
    shown = "" if isinstance(value, dict | list) else f" (got {_short(repr(value))})"
    return f"{prefix}: field {dotted!r}: {msg}{shown}"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _build(data: Any, model: type[Spec], where: str, text: str | None = None) -> Spec:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(validation_message(exc, model, where, yaml_node(text))) from None


def _load_file(path: Path, model: type[BaseModel]) -> Any:
    data, text = _read_yaml(Path(path))
    return _build(data, model, show_path(path), text)  # type: ignore[type-var]


# ---------------------------------------------------------------- public lookups


def get_gpu(name: str) -> GPUSpec:
    """The accelerator called ``name`` (or one of its aliases), case-insensitive."""
    return _table("gpu").get(name)


def get_link(name: str) -> LinkSpec:
    """The link called ``name`` (or alias)."""
    return _table("link").get(name)


def get_system(name: str) -> NodeSpec:
    """The system (node type) called ``name`` (or alias)."""
    return _table("system").get(name)


def get_memory_tier(name: str) -> MemoryTierSpec:
    """The memory tier called ``name`` (or alias)."""
    return _table("memory").get(name)


def list_gpus() -> list[GPUSpec]:
    return list(_table("gpu").specs.values())


def list_links() -> list[LinkSpec]:
    return list(_table("link").specs.values())


def list_systems() -> list[NodeSpec]:
    return list(_table("system").specs.values())


def list_memory_tiers() -> list[MemoryTierSpec]:
    return list(_table("memory").specs.values())


def source_file(kind: str, name: str) -> Path | None:
    """The YAML file a catalog part of ``kind`` (gpu/link/memory/system) was loaded from."""
    table = _table(kind)
    return table.files.get(table.get(name).name)


def find_part(name: str) -> tuple[str, Any]:
    """Resolve ``name`` in every kind: returns ``(kind, spec)``; GPUs win over systems."""
    for kind in ("gpu", "system", "link", "memory"):
        canonical = _table(kind).index.get(name.strip().lower())
        if canonical is not None:
            return kind, _table(kind).specs[canonical]
    everything: list[str] = []
    for kind in _KINDS:
        everything.extend(_table(kind)._names())
    raise SpecError(f"unknown part {name!r}" + suggest(name, everything))


def has_gpu(name: str) -> bool:
    return name.strip().lower() in _table("gpu").index


def has_system(name: str) -> bool:
    return name.strip().lower() in _table("system").index


# ---------------------------------------------------------------- user files


def load_gpu_file(path: str | Path) -> GPUSpec:
    """Validate a user GPU YAML file (same schema as the catalog) without registering it."""
    return _load_file(Path(path), GPUSpec)


def load_link_file(path: str | Path) -> LinkSpec:
    return _load_file(Path(path), LinkSpec)


def load_system_file(path: str | Path) -> NodeSpec:
    return _load_file(Path(path), NodeSpec)


def load_memory_tier_file(path: str | Path) -> MemoryTierSpec:
    return _load_file(Path(path), MemoryTierSpec)


def register(spec: GPUSpec | LinkSpec | MemoryTierSpec | NodeSpec, replace: bool = False) -> None:
    """Add a user part to the in-process catalog so names resolve to it (until clear_cache).

    A GPU or system must name links (and a GPU) that exist. Registering an identical part
    again is a no-op; a different part under a taken name or alias raises unless
    ``replace`` (which swaps out a catalog part of the same name, e.g. a re-measured H100).
    """
    kind = {GPUSpec: "gpu", LinkSpec: "link", MemoryTierSpec: "memory", NodeSpec: "system"}[type(spec)]
    if isinstance(spec, GPUSpec | NodeSpec):
        check_references([spec])
    _table(kind).add(spec, None, replace=replace)


def _kind_of(data: Any) -> str | None:
    """Which spec a parsed part file holds, from its distinguishing keys."""
    if not isinstance(data, dict):
        return None
    if "peak_flops" in data:
        return "gpu"
    if "gpus_per_node" in data or "nic_link" in data:
        return "system"
    if "capacity_bytes" in data:
        return "memory"
    if "bandwidth_bps" in data or "latency_s" in data:
        return "link"
    return None


def load_part_file(path: str | Path) -> GPUSpec | LinkSpec | MemoryTierSpec | NodeSpec:
    """Validate a user part file of any kind, telling the kind from its keys."""
    data, text = _read_yaml(Path(path))
    kind = _kind_of(data)
    if kind is None:
        raise SpecError(
            f"{show_path(path)}: cannot tell what part this is (a GPU has peak_flops, a system "
            "gpus_per_node, a link bandwidth_bps, a memory tier capacity_bytes)"
        )
    return _build(data, _KINDS[kind][1], show_path(path), text)  # type: ignore[type-var]


def check_references(specs: Iterable[GPUSpec | NodeSpec] | None = None) -> None:
    """Raise if a GPU or system names a link or GPU the catalog lacks (all parts when None)."""
    items: list[GPUSpec | NodeSpec] = list(specs) if specs is not None else [*list_gpus(), *list_systems()]
    for spec in items:
        where = f"{spec.name!r}"
        links = [spec.scale_up_link, spec.host_link]
        if isinstance(spec, NodeSpec):
            links.append(spec.nic_link)
            try:
                get_gpu(spec.gpu)
            except SpecError as exc:
                raise SpecError(f"system {where}: {exc}") from None
        for link in links:
            try:
                get_link(link)
            except SpecError as exc:
                raise SpecError(f"{where}: {exc}") from None


def default_system_for(gpu_name: str) -> NodeSpec:
    """The node shorthand such as ``8xL4`` builds: the catalog system marked
    ``default_for_gpu`` for that GPU, else a generic one generated from the GPU's links
    (8 accelerators, or 4 for a TPU, one NDR NIC per accelerator, 2 TB DDR5 host)."""
    gpu = get_gpu(gpu_name)
    for system in list_systems():
        if system.gpu == gpu.name and system.default_for_gpu:
            return system
    per_node = 4 if gpu.device_type == "tpu" else 8
    return NodeSpec(
        name=f"{gpu.name}-{per_node}x-server",
        gpu=gpu.name,
        gpus_per_node=per_node,
        scale_up_domain=per_node,
        scale_up_link=gpu.scale_up_link,
        default_for_gpu=True,
        nics_per_node=per_node,
        nic_link="InfiniBand-NDR",
        host_memory_bytes=2e12,
        host_link=gpu.host_link,
        sources={"generated": f"generic node generated for {gpu.name}: no catalog system is its default"},
    )
