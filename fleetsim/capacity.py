"""Capacity studies over time: load profiles and autoscaler specs at the API edge.

``profile_requests`` turns a load profile (``workloads.profile``) and a workload's length
distributions (or a ``TenantMix``) into a request stream; ``autoscale_config`` turns an
``AutoscaleConfig``, its dict or a one-line spec (the CLI's ``--autoscale``) into the config.
The compressed long-horizon replay lives in ``fleetsim.replay``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from fleetsim.hardware.errors import ConfigError
from fleetsim.sim.serving.autoscale import AutoscaleConfig
from fleetsim.workloads.defaults import get_workload
from fleetsim.workloads.profile import (
    LoadProfile,
    Tenant,
    TenantMix,
    parse_profile,
    profiled_stream,
)
from fleetsim.workloads.requests import RequestStream

_PROFILE = TypeAdapter(LoadProfile)


def load_profile(spec: Any) -> Any:
    """A profile from a profile object, its dict, or a spec string (``diurnal:peak=..,trough=..``)."""
    if isinstance(spec, str):
        return parse_profile(spec)
    if isinstance(spec, dict):
        try:
            return _PROFILE.validate_python(spec)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise ConfigError(f"load profile: {loc}: {err['msg']}") from None
    if hasattr(spec, "rate_rps") and hasattr(spec, "arrivals"):
        return spec
    raise ConfigError(f"load_profile must be a profile, its dict or a spec string, got {type(spec).__name__}")


def tenant_mix(workload: Any) -> TenantMix:
    """``workload`` as tenants: a ``TenantMix`` as is, else one tenant with the workload's lengths."""
    if isinstance(workload, TenantMix):
        return workload
    if isinstance(workload, RequestStream):
        raise ConfigError("load_profile draws its own arrivals: give a workload (lengths) or a TenantMix, "
                          "not a RequestStream")
    wl = get_workload(workload)
    if wl.sessions is not None or wl.is_closed_loop:
        raise ConfigError(f"load_profile: workload {wl.name!r} has sessions or closed-loop clients; "
                          "give one with open-loop arrivals")
    return TenantMix(tenants=(Tenant(name=wl.name, share=1.0, prompt=wl.prompt, output=wl.output),))


def profile_requests(workload: Any, profile: Any, seed: Any, duration_s: float | None,
                     num_requests: int | None) -> tuple[RequestStream, np.ndarray]:
    """The requests of ``profile`` over ``duration_s`` with ``workload``'s lengths, and tenants."""
    if duration_s is None:
        raise ConfigError("load_profile needs duration_s (the horizon to draw arrivals for)")
    if num_requests is not None:
        raise ConfigError("load_profile sets the number of requests; give duration_s, not num_requests")
    prof = load_profile(profile)
    mix = tenant_mix(workload)
    if isinstance(seed, np.random.Generator):
        seed = np.random.SeedSequence(int(seed.integers(0, 2**63)))
    return profiled_stream(prof, mix, seed, float(duration_s))


_KEYS = {"min": "min_replicas", "max": "max_replicas", "init": "initial_replicas", "interval": "interval_s",
         "up_delay": "scale_up_delay_s", "down_delay": "scale_down_delay_s", "cold_start": "cold_start_s"}
_POLICY_KEYS = {
    "utilization": {"target": "target", "metric": "metric"},
    "queue": {"target": "target_per_replica"},
    "slo": {"ttft": "ttft_s", "tpot": "tpot_s", "percentile": "slo_percentile", "down_below": "scale_down_below"},
    "rate": {"capacity": "capacity_rps", "target": "target"},
}


def parse_autoscale(text: str) -> AutoscaleConfig:
    """``POLICY:key=value,...`` -> ``AutoscaleConfig``. Policies: ``utilization`` (target,
    metric=busy|kv), ``queue`` (target), ``slo`` (ttft, tpot, percentile, down_below), ``rate``
    (capacity, target); common keys min, max, init, interval, up_delay, down_delay,
    cold_start (seconds; default: priced from the model and the catalog). ``max`` is required."""
    head, _, rest = text.partition(":")
    kind = head.strip().lower()
    if kind not in _POLICY_KEYS:
        raise ConfigError(f"--autoscale {text!r}: unknown policy {kind!r} (known: {', '.join(_POLICY_KEYS)})")
    pol: dict[str, Any] = {"kind": kind}
    cfg: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        k, eq, v = part.partition("=")
        k = k.strip()
        if not eq or (k not in _KEYS and k not in _POLICY_KEYS[kind]):
            known = ", ".join([*_POLICY_KEYS[kind], *_KEYS])
            raise ConfigError(f"--autoscale {text!r}: bad parameter {part!r} (known: {known})")
        if k == "metric":
            pol["metric"] = v.strip()
            continue
        try:
            x = float(v)
        except ValueError:
            raise ConfigError(f"--autoscale {text!r}: {k} must be a number, got {v!r}") from None
        if not math.isfinite(x):
            raise ConfigError(f"--autoscale {text!r}: {k} must be finite, got {v!r}")
        if k in _KEYS:
            ints = k in ("min", "max", "init")
            if ints and x != int(x):
                raise ConfigError(f"--autoscale {text!r}: {k} must be a whole number, got {v!r}")
            cfg[_KEYS[k]] = int(x) if ints else x
        else:
            pol[_POLICY_KEYS[kind][k]] = x
    if "max_replicas" not in cfg:
        raise ConfigError(f"--autoscale {text!r}: give max=N (the most replicas per deployment entry)")
    return AutoscaleConfig(policy=pol, **cfg)  # type: ignore[arg-type]


def autoscale_config(value: Any) -> AutoscaleConfig:
    """An ``AutoscaleConfig`` from itself, its dict or a spec string."""
    if isinstance(value, AutoscaleConfig):
        return value
    if isinstance(value, str):
        return parse_autoscale(value)
    if isinstance(value, dict):
        return AutoscaleConfig(**value)
    raise ConfigError(f"autoscaler must be an AutoscaleConfig, its dict or a spec string, got {type(value).__name__}")


__all__ = ["autoscale_config", "load_profile", "parse_autoscale", "profile_requests", "tenant_mix"]
