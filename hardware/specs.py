"""Validated hardware specs in SI units.

One frozen pydantic model per *kind* of part (never one class per GPU model). Field names
carry their unit: ``_bytes``, ``_bps`` (bytes per second), ``_flops`` (FLOP/s), ``_w``,
``_s``, ``_hz``. Every catalog number carries a source note in ``sources``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")
"""Data types a peak FLOP/s figure can be given for (dense, no sparsity)."""

DTYPE_BYTES = {"fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "fp4": 0.5}


class Frozen(BaseModel):
    """Base for every spec: immutable, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Part(Frozen):
    """Base for catalog parts: names and aliases usable in lookups and cluster shorthand."""

    @field_validator("name", check_fields=False)
    @classmethod
    def _check_name(cls, v: str) -> str:
        # '+' separates cluster-shorthand terms, so a name holding it could never be used there.
        if not v or v != v.strip() or "+" in v:
            raise ValueError(f"name must be non-empty, without surrounding spaces or '+', got {v!r}")
        return v

    @field_validator("aliases", check_fields=False)
    @classmethod
    def _check_aliases(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for alias in v:
            if not alias or alias != alias.strip() or "+" in alias:
                raise ValueError(f"alias must be non-empty, without surrounding spaces or '+', got {alias!r}")
        return v


class LinkSpec(Part):
    """A point-to-point or fabric link. ``bandwidth_bps`` is per direction, per GPU/port."""

    name: str
    aliases: tuple[str, ...] = ()
    kind: Literal["scale_up", "scale_out", "host", "memory"]
    bandwidth_bps: float = Field(gt=0)
    latency_s: float = Field(ge=0)
    efficiency: float = Field(default=0.8, gt=0, le=1)
    """Achievable share of ``bandwidth_bps`` for large messages (bus-bandwidth efficiency)."""
    topology: Literal["switch", "mesh", "torus", "point_to_point"] = "switch"
    """How the ports are wired: through a switch (NVSwitch, IB), a full mesh of direct links
    (Infinity Fabric, Gaudi RoCE, HCCS: one peer gets ``bandwidth_bps / (n-1)``), a torus
    (TPU ICI) or one point-to-point lane bundle (PCIe, C2C)."""
    sources: dict[str, str] = {}

    @property
    def effective_bandwidth_bps(self) -> float:
        """Bandwidth a large transfer achieves: ``bandwidth_bps * efficiency``."""
        return self.bandwidth_bps * self.efficiency


class MemoryTierSpec(Part):
    """A memory tier (HBM, host DDR, CXL, NVMe) with its capacity and bandwidth."""

    name: str
    aliases: tuple[str, ...] = ()
    kind: Literal["hbm", "ddr", "cxl", "nvme"]
    capacity_bytes: float = Field(gt=0)
    bandwidth_bps: float = Field(gt=0)
    sources: dict[str, str] = {}


class GPUSpec(Part):
    """One accelerator (GPU, NPU or TPU chip).

    ``peak_flops`` holds *dense* peak FLOP/s per dtype; a dtype the part lacks is absent.
    ``mem_bw_efficiency`` and ``flops_efficiency`` are named empirical corrections used by the
    roofline fallback (achievable / peak), not magic constants in code.
    """

    name: str
    aliases: tuple[str, ...] = ()
    vendor: str
    architecture: str
    device_type: Literal["gpu", "npu", "tpu"] = "gpu"
    peak_flops: dict[str, float]
    memory_bytes: float = Field(gt=0)
    memory_bw_bps: float = Field(gt=0)
    l2_bytes: float = Field(gt=0)
    compute_units: int = Field(gt=0)
    max_clock_hz: float = Field(gt=0)
    tdp_w: float = Field(gt=0)
    idle_power_w: float = Field(gt=0)
    min_power_cap_w: float = Field(gt=0)
    scale_up_link: str
    host_link: str
    mem_bw_efficiency: float = Field(default=0.8, gt=0, le=1)
    flops_efficiency: float = Field(default=0.75, gt=0, le=1)
    kernel_overhead_s: float = Field(default=4e-6, ge=0)
    """Per-kernel fixed cost in eager mode (launch + tail), used by the roofline."""
    graph_kernel_overhead_s: float = Field(default=1.5e-6, ge=0)
    """Per-kernel fixed cost under CUDA-graph replay."""
    price_per_hour_usd: float | None = Field(default=None, gt=0)
    price_source: str | None = None
    price_date: str | None = None
    sources: dict[str, str] = {}

    @field_validator("peak_flops")
    @classmethod
    def _check_flops(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if k not in DTYPES:
                raise ValueError(f"unknown dtype {k!r} in peak_flops (known: {', '.join(DTYPES)})")
            if not x > 0:
                raise ValueError(f"peak_flops[{k!r}] must be > 0, got {x}")
        if not v:
            raise ValueError("peak_flops must list at least one dtype")
        return v

    @model_validator(mode="after")
    def _check_power(self) -> GPUSpec:
        if not self.idle_power_w < self.tdp_w:
            raise ValueError(f"idle_power_w ({self.idle_power_w}) must be < tdp_w ({self.tdp_w})")
        if not self.min_power_cap_w <= self.tdp_w:
            raise ValueError(f"min_power_cap_w ({self.min_power_cap_w}) must be <= tdp_w ({self.tdp_w})")
        return self

    def flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``; falls back to the nearest wider type the part has."""
        order = {"fp4": ["fp4", "fp8", "bf16"], "fp8": ["fp8", "bf16", "fp16"], "int8": ["int8", "fp8", "bf16"],
                 "bf16": ["bf16", "fp16"], "fp16": ["fp16", "bf16"], "tf32": ["tf32", "fp32"], "fp32": ["fp32"]}
        for d in order.get(dtype, [dtype]):
            if d in self.peak_flops:
                return self.peak_flops[d]
        from .errors import SpecError

        raise SpecError(f"GPU {self.name!r} has no peak FLOP/s for dtype {dtype!r}")


class NodeSpec(Part):
    """A system/node: accelerators, their scale-up domain, NICs and host."""

    name: str
    aliases: tuple[str, ...] = ()
    gpu: str
    gpus_per_node: int = Field(gt=0)
    scale_up_domain: int = Field(gt=0)
    """How many accelerators share the scale-up link (8 in a DGX, 72 in an NVL72 rack)."""
    scale_up_link: str
    default_for_gpu: bool = False
    """This system is what shorthand such as ``8xH100`` builds nodes from."""
    nics_per_node: int = Field(ge=0)
    nic_link: str
    host_memory_bytes: float = Field(gt=0)
    host_link: str
    nvme_bytes: float = Field(default=0.0, ge=0)
    nvme_bw_bps: float = Field(default=0.0, ge=0)
    tdp_w: float | None = Field(default=None, gt=0)
    host_power_w: float | None = Field(default=None, ge=0)
    """Average draw of everything in the node but the accelerators (CPUs, memory, NICs, fans,
    PCIe switches); None: derived from ``tdp_w`` (``hardware.cluster.node_host_power_w``)."""
    price_per_hour_usd: float | None = Field(default=None, gt=0)
    price_source: str | None = None
    price_date: str | None = None
    sources: dict[str, str] = {}

    @model_validator(mode="after")
    def _check_domain(self) -> NodeSpec:
        # A scale-up domain either splits the node evenly (NVLink-bridged pairs) or spans
        # whole nodes (a rack-scale NVLink domain); anything else has no consistent topology.
        d, g = self.scale_up_domain, self.gpus_per_node
        if not (g % d == 0 or d % g == 0):
            raise ValueError(f"scale_up_domain ({d}) must divide or be a multiple of gpus_per_node ({g})")
        return self


class PoolSpec(Frozen):
    """Identical nodes in a cluster."""

    node: NodeSpec
    num_nodes: int = Field(gt=0)
    gpus_per_node: int | None = Field(default=None, gt=0)
    """Accelerators used per node when fewer than ``node.gpus_per_node`` (e.g. ``4xH100``)."""

    @model_validator(mode="after")
    def _check_used(self) -> PoolSpec:
        if self.gpus_per_node is not None and self.gpus_per_node > self.node.gpus_per_node:
            raise ValueError(
                f"gpus_per_node ({self.gpus_per_node}) exceeds the {self.node.gpus_per_node} "
                f"accelerators of system {self.node.name!r}"
            )
        return self

    @property
    def gpus_used_per_node(self) -> int:
        """Accelerators used in each node of the pool."""
        return self.gpus_per_node or self.node.gpus_per_node

    @property
    def gpus(self) -> int:
        return self.num_nodes * self.gpus_used_per_node


class ClusterSpec(Frozen):
    """Pools of nodes (several GPU types allowed) joined by a scale-out fabric."""

    name: str
    pools: tuple[PoolSpec, ...] = Field(min_length=1)
    scale_out_link: str
    oversubscription: float = Field(default=1.0, ge=1.0)
    power_budget_w: float | None = Field(default=None, gt=0)
    pue: float = Field(default=1.0, ge=1.0)
    """Facility power usage effectiveness: facility power / IT power (1.0: IT power only)."""
    energy_price_usd_per_kwh: float | None = Field(default=None, ge=0)
    """Price of facility energy; None: ``hardware.cluster.DEFAULT_ENERGY_PRICE``."""
    price_per_hour_usd: float | None = Field(default=None, gt=0)
    sources: dict[str, str] = {}

    @property
    def num_gpus(self) -> int:
        return sum(p.gpus for p in self.pools)

    @property
    def num_nodes(self) -> int:
        return sum(p.num_nodes for p in self.pools)

    @property
    def gpu_types(self) -> tuple[str, ...]:
        """Catalog names of the accelerator types, in pool order, without repeats."""
        return tuple(dict.fromkeys(p.node.gpu for p in self.pools))

    def gpus_of(self, gpu: str) -> int:
        """Number of accelerators of type ``gpu`` (catalog name or alias)."""
        from fleetsim.hardware.catalog import get_gpu

        name = gpu if any(p.node.gpu == gpu for p in self.pools) else get_gpu(gpu).name
        return sum(p.gpus for p in self.pools if p.node.gpu == name)

    def hourly_price_usd(self) -> float:
        """``price_per_hour_usd`` when given, else the sum of catalog node/GPU prices
        (see ``fleetsim.hardware.cluster.price_per_hour``)."""
        from fleetsim.hardware.cluster import price_per_hour

        return price_per_hour(self)
