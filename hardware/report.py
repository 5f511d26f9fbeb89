"""Catalog summaries in human units, shared by the CLI and the dashboard.

Specs stay in SI units; this module only converts at the edge (TFLOP/s, GB, TB/s, us) so
that every front end shows the same figures.
"""

from __future__ import annotations

from typing import Any

from fleetsim.hardware import catalog
from fleetsim.hardware.errors import SpecError
from fleetsim.hardware.specs import GPUSpec, LinkSpec, MemoryTierSpec, NodeSpec

KINDS = ("gpus", "links", "systems", "memory")


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def gpu_row(g: GPUSpec) -> dict[str, Any]:
    f = g.peak_flops
    return {
        "name": g.name,
        "vendor": g.vendor,
        "type": g.device_type,
        "bf16_tflops": _r(f.get("bf16", f.get("fp16", 0.0)) / 1e12),
        "fp8_tflops": _r(f["fp8"] / 1e12) if "fp8" in f else None,
        "fp4_tflops": _r(f["fp4"] / 1e12) if "fp4" in f else None,
        "memory_gb": _r(g.memory_bytes / 1e9),
        "mem_bw_tbps": _r(g.memory_bw_bps / 1e12, 2),
        "tdp_w": _r(g.tdp_w, 0),
        "scale_up": g.scale_up_link,
        "usd_per_hour": g.price_per_hour_usd,
    }


def link_row(lk: LinkSpec) -> dict[str, Any]:
    return {
        "name": lk.name,
        "kind": lk.kind,
        "gbps_per_dir": _r(lk.bandwidth_bps / 1e9),
        "latency_us": _r(lk.latency_s * 1e6, 2),
        "efficiency": lk.efficiency,
        "topology": lk.topology,
    }


def system_row(s: NodeSpec) -> dict[str, Any]:
    return {
        "name": s.name,
        "gpu": s.gpu,
        "gpus_per_node": s.gpus_per_node,
        "scale_up_domain": s.scale_up_domain,
        "scale_up": s.scale_up_link,
        "nics": f"{s.nics_per_node}x {s.nic_link}",
        "host_mem_tb": _r(s.host_memory_bytes / 1e12, 2),
        "default": "yes" if s.default_for_gpu else "",
    }


def memory_row(m: MemoryTierSpec) -> dict[str, Any]:
    return {
        "name": m.name,
        "kind": m.kind,
        "capacity_gb": _r(m.capacity_bytes / 1e9),
        "bandwidth_gbps": _r(m.bandwidth_bps / 1e9),
    }


def catalog_rows(kind: str) -> list[dict[str, Any]]:
    """One row per catalog part of ``kind`` (gpus, links, systems, memory), in human units."""
    if kind == "gpus":
        return [gpu_row(g) for g in catalog.list_gpus()]
    if kind == "links":
        return [link_row(lk) for lk in catalog.list_links()]
    if kind == "systems":
        return [system_row(s) for s in catalog.list_systems()]
    if kind == "memory":
        return [memory_row(m) for m in catalog.list_memory_tiers()]
    raise SpecError(f"unknown catalog kind {kind!r} (known: {', '.join(KINDS)})")


_UNITS = {"_flops": (1e12, "TFLOP/s"), "_bytes": (1e9, "GB"), "_bps": (1e9, "GB/s"),
          "_hz": (1e9, "GHz"), "_s": (1e-6, "us"), "_w": (1.0, "W")}


def human(field: str, value: Any) -> str:
    """``value`` of ``field`` with its SI value and a human unit, e.g. ``3.35e+12 (3350 GB/s)``."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={human(field, v)}" for k, v in value.items())
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)
    suffix = "_flops" if field == "peak_flops" else next((u for u in _UNITS if field.endswith(u)), None)
    if suffix is None:
        return f"{value:g}"
    scale, unit = _UNITS[suffix]
    if suffix in ("_bytes", "_bps"):
        prefix = "T" if value >= 1e12 else "G" if value >= 1e9 else "M"
        scale = {"T": 1e12, "G": 1e9, "M": 1e6}[prefix]
        unit = prefix + unit[1:]
    return f"{value:.6g} ({value / scale:.4g} {unit})"


def part_fields(name: str) -> tuple[str, Any, list[tuple[str, str]], dict[str, str]]:
    """(kind, spec, [(field, human value)], sources) for any part name or alias."""
    kind, spec = catalog.find_part(name)
    data = spec.model_dump()
    sources = data.pop("sources", {})
    rows = [(k, human(k, v)) for k, v in data.items()]
    return kind, spec, rows, sources
