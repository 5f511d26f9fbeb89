"""Clusters: shorthand (``8xH100``, ``2x8xA100-80GB``, ``16xH100+32xL4``), YAML files, helpers.

A cluster is pools of identical nodes joined by one scale-out fabric. Shorthand terms,
joined by ``+``:

* ``H100``          one accelerator (a node of the GPU's default system using 1 GPU)
* ``N x GPU``       N accelerators packed into full default-system nodes plus one partial
                    node for the remainder (``12xH100`` = one 8-GPU node + one 4-GPU node)
* ``N x M x GPU``   N nodes using M accelerators each (M at most the system's node size)
* ``SYSTEM``, ``N x SYSTEM``, ``N x M x SYSTEM``   the same with a catalog system

Nodes of one pool talk over their system's NIC link. The cluster's ``scale_out_link`` is the
fabric between pools; it defaults to the slowest NIC link of the pools' systems, since
traffic between pools can go no faster than the slower end.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetsim.hardware import catalog
from fleetsim.hardware.checks import plural
from fleetsim.hardware.errors import SpecError
from fleetsim.hardware.specs import ClusterSpec, LinkSpec, NodeSpec, PoolSpec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_GPUS = 10_000_000
"""Largest accelerator count a shorthand may ask for; beyond it the input is surely a typo."""

_BAD_COUNT = re.compile(r"^(?:\d+\s*[x×*]\s*)?([-+]?\d*\.\d*|[-+]\d+)\s*[x×*]", re.IGNORECASE)
"""A count that is negative, signed or fractional (``-1xH100``, ``1.5xH100``)."""

_TERM = re.compile(r"^(?:(\d+)\s*[x×*]\s*)?(?:(\d+)\s*[x×*]\s*)?(\S.*?)$", re.IGNORECASE)


# ---------------------------------------------------------------- shorthand


def _resolve(name: str, term: str) -> tuple[NodeSpec, bool]:
    """The node for a GPU or system name, and whether the name was a system."""
    if catalog.has_gpu(name):
        return catalog.default_system_for(name), False
    if catalog.has_system(name):
        return catalog.get_system(name), True
    try:
        catalog.find_part(name)
    except SpecError as exc:
        raise SpecError(f"cluster {term!r}: {exc}") from None
    raise SpecError(f"cluster {term!r}: {name!r} is a link or memory tier, not a GPU or system")


def _count(text: str | None, term: str) -> int | None:
    if text is None:
        return None
    value = int(text)
    if value <= 0:
        raise SpecError(f"cluster {term!r}: counts must be positive, got {value}")
    if value > MAX_GPUS:
        raise SpecError(f"cluster {term!r}: count {value} exceeds {MAX_GPUS}")
    return value


def _term_pools(term: str) -> list[PoolSpec]:
    bad = _BAD_COUNT.match(term)
    if bad is not None:
        raise SpecError(f"cluster {term!r}: count {bad.group(1)!r} must be a positive whole number")
    match = _TERM.match(term)
    if match is None:
        raise SpecError(f"cluster {term!r}: expected [N x] [M x] NAME, e.g. 8xH100 or 2x8xA100-80GB")
    first, second, name = match.groups()
    n = _count(first, term)
    m = _count(second, term)
    node, is_system = _resolve(name.strip(), term)
    per_node = node.gpus_per_node

    if m is not None:  # N nodes x M accelerators
        assert n is not None
        if m > per_node:
            raise SpecError(f"cluster {term!r}: a {node.name} node holds {per_node} accelerators, not {m}")
        if n * m > MAX_GPUS:
            raise SpecError(f"cluster {term!r}: {n * m} accelerators exceed {MAX_GPUS}")
        return [PoolSpec(node=node, num_nodes=n, gpus_per_node=None if m == per_node else m)]
    if is_system:  # N whole systems
        return [PoolSpec(node=node, num_nodes=n or 1)]
    return _split(node, n or 1)  # N accelerators: full nodes plus one partial node


def parse_shorthand(text: str) -> ClusterSpec:
    """Build a cluster from shorthand such as ``16xH100+32xL4`` (see the module docstring)."""
    if not isinstance(text, str):
        raise SpecError(f"cluster shorthand must be a string, got {type(text).__name__}")
    terms = [t.strip() for t in text.split("+")]
    if not text.strip() or any(not t for t in terms):
        raise SpecError(f"cluster {text!r}: empty term; expected e.g. 8xH100 or 16xH100+32xL4")
    pools: list[PoolSpec] = []
    for term in terms:
        pools.extend(_term_pools(term))
    return ClusterSpec(
        name="+".join(terms), pools=tuple(pools), scale_out_link=_default_scale_out(pools),
    )


def _default_scale_out(pools: list[PoolSpec] | tuple[PoolSpec, ...]) -> str:
    links = {p.node.nic_link for p in pools}
    return min(sorted(links), key=lambda name: catalog.get_link(name).bandwidth_bps)


# ---------------------------------------------------------------- YAML / mapping


class _PoolEntry(BaseModel):
    """One pool in a cluster file: a system or a GPU, counted in nodes or GPUs."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    system: str | None = None
    gpu: str | None = None
    num_nodes: int | None = Field(default=None, gt=0, le=MAX_GPUS)
    num_gpus: int | None = Field(default=None, gt=0, le=MAX_GPUS)
    gpus_per_node: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_of(self) -> _PoolEntry:
        if (self.system is None) == (self.gpu is None):
            raise ValueError("give exactly one of 'system' or 'gpu'")
        if (self.num_nodes is None) == (self.num_gpus is None):
            raise ValueError("give exactly one of 'num_nodes' or 'num_gpus'")
        if self.num_gpus is not None and self.gpus_per_node is not None:
            raise ValueError("'gpus_per_node' goes with 'num_nodes', not 'num_gpus'")
        return self


class _ClusterFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    name: str = "cluster"
    parts: list[str] = []
    """User part files (GPU, link, system, memory YAML) to register before resolving pools;
    relative paths are relative to the cluster file."""
    pools: list[_PoolEntry] = Field(min_length=1)
    scale_out_link: str | None = None
    oversubscription: float = Field(default=1.0, ge=1.0)
    power_budget_w: float | None = Field(default=None, gt=0)
    pue: float = Field(default=1.0, ge=1.0)
    energy_price_usd_per_kwh: float | None = Field(default=None, ge=0)
    price_per_hour_usd: float | None = Field(default=None, gt=0)
    sources: dict[str, str] = {}


def _entry_pools(entry: _PoolEntry, where: str) -> list[PoolSpec]:
    if entry.gpu is not None:
        node = catalog.default_system_for(entry.gpu)
    else:
        node = catalog.get_system(entry.system or "")
    if entry.num_gpus is not None:
        return _split(node, entry.num_gpus)
    per = entry.gpus_per_node
    if per is not None and per > node.gpus_per_node:
        raise SpecError(f"{where}: a {node.name} node holds {node.gpus_per_node} accelerators, not {per}")
    assert entry.num_nodes is not None
    return [PoolSpec(node=node, num_nodes=entry.num_nodes,
                     gpus_per_node=None if per in (None, node.gpus_per_node) else per)]


def _split(node: NodeSpec, gpus: int) -> list[PoolSpec]:
    full, rest = divmod(gpus, node.gpus_per_node)
    pools = [PoolSpec(node=node, num_nodes=full)] if full else []
    if rest:
        pools.append(PoolSpec(node=node, num_nodes=1, gpus_per_node=rest))
    return pools


def cluster_from_mapping(data: Mapping[str, Any], where: str = "cluster", text: str | None = None,
                         base_dir: Path | None = None) -> ClusterSpec:
    """Build a cluster from the file schema (name, parts, pools, scale_out_link, ...)."""
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: expected a mapping with 'pools', got {type(data).__name__}")
    try:
        spec = _ClusterFile.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(catalog.validation_message(exc, _ClusterFile, where, catalog.yaml_node(text))) from None
    _register_parts(spec.parts, where, base_dir)
    pools: list[PoolSpec] = []
    for i, entry in enumerate(spec.pools):
        try:
            pools.extend(_entry_pools(entry, f"{where}: pools[{i}]"))
        except SpecError as exc:
            msg = str(exc)
            raise SpecError(msg if msg.startswith(where) else f"{where}: pools[{i}]: {msg}") from None
    link = spec.scale_out_link
    if link is None:
        link = _default_scale_out(pools)
    else:
        try:
            link = catalog.get_link(link).name
        except SpecError as exc:
            raise SpecError(f"{where}: scale_out_link: {exc}") from None
    cluster = ClusterSpec(
        name=spec.name, pools=tuple(pools), scale_out_link=link,
        oversubscription=spec.oversubscription, power_budget_w=spec.power_budget_w, pue=spec.pue,
        energy_price_usd_per_kwh=spec.energy_price_usd_per_kwh,
        price_per_hour_usd=spec.price_per_hour_usd, sources=spec.sources,
    )
    try:
        check_power_budget(cluster)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    return cluster


def _register_parts(paths: list[str], where: str, base_dir: Path | None) -> None:
    """Register user part files: links first, then memory tiers, GPUs, systems (references
    must resolve in that order)."""
    specs = []
    for raw in paths:
        path = Path(raw)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        specs.append(catalog.load_part_file(path))
    order = {"LinkSpec": 0, "MemoryTierSpec": 1, "GPUSpec": 2, "NodeSpec": 3}
    for spec in sorted(specs, key=lambda s: order[type(s).__name__]):
        try:
            catalog.register(spec)
        except SpecError as exc:
            raise SpecError(f"{where}: parts: {exc}") from None


def load_cluster_file(path: str | Path) -> ClusterSpec:
    """Load a cluster YAML file; errors name the file, line and key."""
    data, text = catalog._read_yaml(Path(path))
    return cluster_from_mapping(data, catalog.show_path(path), text, base_dir=Path(path).parent)


def _looks_like_path(text: str) -> bool:
    if text.lower().endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        return True
    try:
        return bool(text) and Path(text).is_file()
    except (OSError, ValueError):  # names too long for the OS, embedded NUL bytes
        return False


def load_cluster(spec: str | Path | ClusterSpec | Mapping[str, Any]) -> ClusterSpec:
    """A cluster from shorthand text, a YAML path, a mapping, or an existing ``ClusterSpec``."""
    if isinstance(spec, ClusterSpec):
        return spec
    if isinstance(spec, Path):
        return load_cluster_file(spec)
    if isinstance(spec, Mapping):
        return cluster_from_mapping(spec)
    if not isinstance(spec, str):
        raise SpecError(f"cluster must be shorthand text, a path or a mapping, got {type(spec).__name__}")
    text = spec.strip()
    if _looks_like_path(text):
        return load_cluster_file(text)
    return parse_shorthand(text)


# ---------------------------------------------------------------- helpers for simulators


def _pool(cluster: ClusterSpec, pool: int) -> PoolSpec:
    if not 0 <= pool < len(cluster.pools):
        raise SpecError(f"cluster {cluster.name!r} has {len(cluster.pools)} pools; no pool {pool}")
    return cluster.pools[pool]


def link_between(cluster: ClusterSpec, same_node: bool, pool: int | None = 0) -> LinkSpec:
    """The link two accelerators talk over: inside a node of ``pool`` its scale-up link;
    between nodes of the same pool that pool's NIC link; between pools (``pool=None``) the
    cluster's scale-out fabric."""
    if pool is None:
        if same_node:
            raise SpecError("link_between: accelerators in the same node belong to one pool; give its index")
        return catalog.get_link(cluster.scale_out_link)
    node = _pool(cluster, pool).node
    return catalog.get_link(node.scale_up_link if same_node else node.nic_link)


def locate(cluster: ClusterSpec, rank: int) -> tuple[int, int, int]:
    """(pool index, node index in the pool, local index) of global accelerator ``rank``;
    ranks fill pools in order, each node's accelerators consecutively."""
    if not 0 <= rank < cluster.num_gpus:
        raise SpecError(f"rank {rank} out of range for cluster {cluster.name!r} of {cluster.num_gpus} accelerators")
    for i, pool in enumerate(cluster.pools):
        if rank < pool.gpus:
            node, local = divmod(rank, pool.gpus_used_per_node)
            return i, node, local
        rank -= pool.gpus
    raise AssertionError("unreachable")  # pragma: no cover


def link_for_ranks(cluster: ClusterSpec, a: int, b: int) -> LinkSpec:
    """The link between global ranks ``a`` and ``b``: scale-up when both sit in the same
    scale-up domain (which may span nodes, as in a TPU torus), the pool's NIC link between
    nodes of one pool, and the cluster's scale-out fabric between pools."""
    pa, na, la = locate(cluster, a)
    pb, nb, lb = locate(cluster, b)
    if pa == pb:
        node = cluster.pools[pa].node
        d, g = node.scale_up_domain, node.gpus_per_node
        same = (na // (d // g) == nb // (d // g)) if d >= g else (na == nb and la // d == lb // d)
        if same:
            return catalog.get_link(node.scale_up_link)
        if na == nb:
            return catalog.get_link(node.host_link)
        return catalog.get_link(node.nic_link)
    return catalog.get_link(cluster.scale_out_link)


def scale_out_bw_per_gpu_bps(cluster: ClusterSpec, pool: int = 0) -> float:
    """Scale-out bandwidth per accelerator (bytes/s per direction, peak): the node's NICs
    shared by the accelerators it uses, divided by the fabric's oversubscription."""
    p = _pool(cluster, pool)
    nic = catalog.get_link(p.node.nic_link).bandwidth_bps
    return p.node.nics_per_node * nic / p.gpus_used_per_node / cluster.oversubscription


def price_per_hour(cluster: ClusterSpec) -> float:
    """US dollars per hour: the cluster's own price, else per pool the node price (whole nodes)
    or the GPU price times accelerators used. Raises when a pool has no price."""
    if cluster.price_per_hour_usd is not None:
        return cluster.price_per_hour_usd
    total = 0.0
    for pool in cluster.pools:
        node = pool.node
        if node.price_per_hour_usd is not None and pool.gpus_per_node is None:
            total += node.price_per_hour_usd * pool.num_nodes
            continue
        gpu = catalog.get_gpu(node.gpu)
        if gpu.price_per_hour_usd is None:
            raise SpecError(
                f"no price for {gpu.name!r} in the catalog; set price_per_hour_usd on the cluster "
                f"{cluster.name!r}"
            )
        total += gpu.price_per_hour_usd * pool.gpus
    return total


def price_per_gpu_hour(cluster: ClusterSpec, pool: int = 0) -> float | None:
    """US dollars per accelerator-hour in ``pool``: the cluster's own price spread over its
    accelerators, else the node price per accelerator, else the GPU's catalog price; None
    when there is none. The planner and the training cost both use this."""
    if cluster.price_per_hour_usd is not None:
        return cluster.price_per_hour_usd / cluster.num_gpus
    p = _pool(cluster, pool)
    if p.node.price_per_hour_usd is not None:
        return p.node.price_per_hour_usd / p.node.gpus_per_node
    return catalog.get_gpu(p.node.gpu).price_per_hour_usd


DEFAULT_ENERGY_PRICE = 0.0806
"""US dollars per kWh used when a cluster names none: the US industrial average retail price of
electricity in 2023, 8.06 cents/kWh (EIA Electric Power Annual 2023, table 2.4)."""

HOST_SHARE_OF_NON_GPU_MAX = 0.5
"""Without a measured ``host_power_w``, a node's non-accelerator parts are taken to draw half of
their share of the node's maximum power (node ``tdp_w`` minus the accelerators' TDP); a DGX
H100 then draws 2.3 kW besides its GPUs (10.2 kW max - 8 x 700 W = 4.6 kW non-GPU maximum).
A node without ``tdp_w`` gets ``HOST_W_PER_GPU`` per accelerator."""

HOST_W_PER_GPU = 250.0
"""Non-accelerator draw per accelerator of a node with neither ``host_power_w`` nor ``tdp_w``
(a DGX H100's derived 2.3 kW over 8 GPUs, rounded down to 250 W)."""


def node_host_power_w(node: NodeSpec) -> float:
    """Average draw of a node's non-accelerator parts (W): its ``host_power_w``, else derived
    (``HOST_SHARE_OF_NON_GPU_MAX``)."""
    if node.host_power_w is not None:
        return node.host_power_w
    gpu_tdp = catalog.get_gpu(node.gpu).tdp_w * node.gpus_per_node
    if node.tdp_w is not None and node.tdp_w > gpu_tdp:
        return HOST_SHARE_OF_NON_GPU_MAX * (node.tdp_w - gpu_tdp)
    return HOST_W_PER_GPU * node.gpus_per_node


def host_power_w(node: NodeSpec, gpus: int) -> float:
    """Host draw charged to ``gpus`` accelerators of ``node`` (W): the node's host power per
    accelerator slot times ``gpus``, so a job or pool on part of a server (``1xH100``) pays its
    slice and full nodes pay the whole host."""
    return node_host_power_w(node) * gpus / node.gpus_per_node


def energy_price(cluster: ClusterSpec) -> float:
    """US dollars per kWh of facility energy for ``cluster``."""
    p = cluster.energy_price_usd_per_kwh
    return DEFAULT_ENERGY_PRICE if p is None else p


def idle_power_w(cluster: ClusterSpec) -> float:
    """Facility draw of the cluster with every accelerator idle (W): accelerators' idle power
    plus each node's host power, times the PUE."""
    it = sum(catalog.get_gpu(p.node.gpu).idle_power_w * p.gpus + host_power_w(p.node, p.gpus)
             for p in cluster.pools)
    return it * cluster.pue


def check_power_budget(cluster: ClusterSpec, what: str = "power_budget_w") -> None:
    """``SpecError`` naming ``what`` when the cluster's budget is below its idle draw."""
    budget = cluster.power_budget_w
    if budget is None:
        return
    idle = idle_power_w(cluster)
    if budget < idle:
        raise SpecError(f"{what}={budget:g} W is below the cluster's idle draw of {idle:,.0f} W "
                        f"(accelerators idle, node hosts, PUE {cluster.pue:g})")


def gpu_power_w(cluster: ClusterSpec) -> float:
    """Sum of the accelerators' TDP in watts (the power a full-load cluster's GPUs draw at most)."""
    return sum(catalog.get_gpu(p.node.gpu).tdp_w * p.gpus for p in cluster.pools)


def describe(cluster: ClusterSpec) -> str:
    """One line per pool, for logs and the CLI."""
    lines = [f"{cluster.name}: {plural(cluster.num_gpus, 'accelerator')} in {plural(cluster.num_nodes, 'node')}, "
             f"scale-out {cluster.scale_out_link} (oversubscription {cluster.oversubscription:g})"]
    for p in cluster.pools:
        lines.append(f"  {p.num_nodes} x {p.node.name} using {p.gpus_used_per_node}/{p.node.gpus_per_node} "
                     f"{p.node.gpu} ({p.gpus} total)")
    return "\n".join(lines)
