"""The scenario a planner edits in the sidebar: its fields, save/load as YAML/JSON, and
uploads (HF ``config.json``, cluster YAML, request traces) validated and size-limited.

Uploads are parsed as text (JSON, YAML ``safe_load``, CSV/JSONL through
``fleetsim.traces``); nothing is ever unpickled. A trace is written to a private temporary
file only because the trace readers take paths; error messages show the upload's own name,
never a server path."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from fleetsim.hardware.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20
"""Largest ``config.json`` / cluster YAML / scenario file accepted (1 MiB)."""
MAX_TRACE_BYTES = 64 << 20
"""Largest request trace accepted (64 MiB: a 19,366-request Azure CSV is about 0.6 MiB)."""
TRACE_SUFFIXES = (".csv", ".jsonl", ".json")
WORKLOAD_KINDS = ("built-in", "spec", "trace upload")
CLUSTER_KINDS = ("shorthand", "builder", "YAML upload")
MODEL_KINDS = ("catalog", "config.json upload")


@dataclass
class Scenario:
    """Everything the views share; field names are the YAML/JSON keys (units in names)."""

    model_kind: str = "catalog"
    model: str = "llama-3.1-8b"
    model_config: dict[str, Any] | None = None
    cluster_kind: str = "shorthand"
    cluster: str = "2xH100"
    cluster_pools: list[dict[str, Any]] = field(default_factory=list)
    cluster_yaml: dict[str, Any] | None = None
    workload_kind: str = "built-in"
    workload: str = "azure-conv"
    num_requests: int = 500
    seed: int = 0
    rate_rps: float = 0.0
    ttft_slo_s: float = 0.0
    tpot_slo_s: float = 0.0
    engine: str = "vllm"
    power_cap_w: float = 0.0
    power_budget_w: float = 0.0
    objective: str = "max_goodput"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def slo(self) -> dict[str, float]:
        out = {}
        if self.ttft_slo_s > 0:
            out["ttft_slo_s"] = self.ttft_slo_s
        if self.tpot_slo_s > 0:
            out["tpot_slo_s"] = self.tpot_slo_s
        return out

    def model_source(self) -> str | dict[str, Any]:
        if self.model_kind == "config.json upload":
            if not self.model_config:
                raise ConfigError("model: upload a Hugging Face config.json first")
            return self.model_config
        return self.model

    def cluster_source(self) -> str | dict[str, Any]:
        """Shorthand text (never a path: a file on the server is not the user's to read),
        the builder's pools, or the uploaded YAML's mapping."""
        if self.cluster_kind == "YAML upload":
            if not self.cluster_yaml:
                raise ConfigError("cluster: upload a cluster YAML first")
            return self.cluster_yaml
        if self.cluster_kind == "builder":
            return builder_shorthand(self.cluster_pools)
        text = self.cluster.strip()
        if "/" in text or "\\" in text or text.lower().endswith((".yaml", ".yml", ".json")):
            raise ConfigError(f"cluster {text!r}: give shorthand such as 8xH100 (upload a YAML file "
                              "instead of naming a path)")
        return text


def builder_shorthand(pools: list[dict[str, Any]]) -> str:
    """The cluster shorthand (``8xH100+4xL4``) of the builder's pools (``gpu``, ``count``)."""
    parts = []
    for i, p in enumerate(pools):
        n, gpu = p.get("count"), str(p.get("gpu", "")).strip()
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"cluster builder pool {i + 1}: count must be a whole number >= 1, got {n!r}")
        if not gpu or any(c in gpu for c in "+x/ "):
            raise ConfigError(f"cluster builder pool {i + 1}: GPU name {gpu!r} is not a catalog name")
        parts.append(f"{n}x{gpu}")
    if not parts:
        raise ConfigError("cluster builder: add at least one pool")
    return "+".join(parts)


def scenario_from_text(text: str, name: str) -> Scenario:
    """A scenario from YAML or JSON text; unknown keys and wrong types are errors naming
    the key and ``name``."""
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{name}: larger than {MAX_CONFIG_BYTES >> 20} MiB")
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not YAML/JSON ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict) and "scenario" in data:
        data = data["scenario"]
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping of scenario fields")
    known = {f.name: f for f in fields(Scenario)}
    unknown = sorted(set(map(str, data)) - set(known))
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    base = Scenario()
    out: dict[str, Any] = {}
    for k, v in data.items():
        want = type(getattr(base, k))
        if k in ("model_config", "cluster_yaml"):
            if v is not None and not isinstance(v, dict):
                raise ConfigError(f"{name}: {k} must be a mapping or null")
        elif k == "cluster_pools":
            if not isinstance(v, list) or not all(isinstance(p, dict) for p in v):
                raise ConfigError(f"{name}: cluster_pools must be a list of {{gpu, count}} mappings")
        elif want is float:
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ConfigError(f"{name}: {k} must be a number >= 0, got {v!r}")
            v = float(v)
        elif want is int:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name}: {k} must be a whole number >= 0, got {v!r}")
        elif not isinstance(v, str):
            raise ConfigError(f"{name}: {k} must be text, got {v!r}")
        out[k] = v
    for k, allowed in (("model_kind", MODEL_KINDS), ("cluster_kind", CLUSTER_KINDS),
                       ("workload_kind", WORKLOAD_KINDS)):
        if k in out and out[k] not in allowed:
            raise ConfigError(f"{name}: {k} {out[k]!r} is not one of {', '.join(allowed)}")
    return Scenario(**out)


def scenario_yaml(s: Scenario) -> str:
    return yaml.safe_dump({"scenario": s.to_dict()}, sort_keys=False)


def scenario_json(s: Scenario) -> str:
    return json.dumps({"scenario": s.to_dict()}, indent=2)


def _limit(data: bytes, name: str, limit: int) -> None:
    if len(data) > limit:
        raise ConfigError(f"{name}: {len(data) / 2**20:.1f} MiB is larger than the {limit / 2**20:g} MiB limit")
    if not data.strip():
        raise ConfigError(f"{name}: the file is empty")


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: not UTF-8 text") from None


def parse_model_config(data: bytes, name: str) -> dict[str, Any]:
    """An uploaded HF ``config.json`` as a dict, checked by ``fleetsim.load_model``."""
    _limit(data, name, MAX_CONFIG_BYTES)
    try:
        cfg = json.loads(_text(data, name))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name}: not JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{name}: expected a JSON object (a Hugging Face config.json)")
    from fleetsim import load_model

    cfg.setdefault("_name_or_path", Path(name).stem)
    load_model(cfg)
    return cfg


def parse_cluster_yaml(data: bytes, name: str) -> dict[str, Any]:
    """An uploaded cluster YAML as a mapping, checked by ``fleetsim.load_cluster``."""
    _limit(data, name, MAX_CONFIG_BYTES)
    try:
        doc = yaml.safe_load(_text(data, name))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{name}: expected a mapping (a cluster YAML with pools)")
    from fleetsim import load_cluster

    load_cluster(doc)
    return doc


def parse_trace(data: bytes, name: str) -> Any:
    """An uploaded trace (Azure CSV, fleetsim JSONL or CSV) as a ``RequestStream``.

    Replayed whole: the dashboard never cuts or loops a trace to a request count."""
    from fleetsim.workloads.tracefile import load_trace

    _limit(data, name, MAX_TRACE_BYTES)
    suffix = Path(name).suffix.lower()
    if suffix not in TRACE_SUFFIXES:
        raise ConfigError(f"{name}: a trace is .csv (Azure or fleetsim) or .jsonl, got {suffix or 'no suffix'!r}")
    fd, tmp = tempfile.mkstemp(suffix=".jsonl" if suffix == ".json" else suffix, prefix="fleetsim-upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            stream = load_trace(tmp)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(tmp, name)) from None
        except (ValueError, OSError) as exc:
            raise ConfigError(f"{name}: cannot read the trace ({type(exc).__name__})") from None
    finally:
        os.unlink(tmp)
    if not len(stream):
        raise ConfigError(f"{name}: the trace has no requests")
    return stream


def workload_for_api(s: Scenario, trace: Any) -> Any:
    """What ``simulate_serving`` takes as workload: the uploaded trace's ``RequestStream``,
    a built-in name, or a spec string (never a server path)."""
    if s.workload_kind == "trace upload":
        if trace is None:
            raise ConfigError("workload: upload a trace first (Azure CSV, fleetsim JSONL or CSV)")
        return trace
    text = s.workload.strip()
    if s.workload_kind == "built-in":
        return text
    from fleetsim.workloads.spec import parse_workload_spec

    if "/" in text or "\\" in text or text.lower().endswith((".yaml", ".yml", ".json", ".csv", ".jsonl")):
        raise ConfigError(f"workload {text!r}: give a spec such as poisson:rate=5,isl=1024,osl=256 "
                          "(upload a trace instead of naming a path)")
    return parse_workload_spec(text)
