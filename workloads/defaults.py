"""Built-in serving workloads and ``get_workload``, the one entry point that resolves them.

Built-ins (``workloads/defaults/*.yaml``, fitted by ``benchmarks/fit_default_workloads.py``
from the Azure LLM inference trace 2023; the files hold fitted numbers, not trace rows):

* ``azure-conv`` (alias ``conversation``, ``conv``) - chat: Gamma arrivals at 5.53 req/s
  with CV 1.07, prompt median 1020 tokens, output median 129 tokens.
* ``azure-code`` (alias ``code``) - coding assistant: Gamma arrivals at 2.57 req/s with
  CV 2.08, prompt median 1469 tokens, output median 13 tokens.

``get_workload`` accepts a ``Workload``, a dict (validated as one), a built-in name, a
path to a trace (replayed row by row) or to a workload YAML/JSON, or a spec string such
as ``gamma:rate=5,cv=2,isl=lognormal(1000,1.0),osl=256`` (grammar in
``fleetsim.workloads.spec`` and docs/workloads.md).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml
from fleetsim.hardware.checks import validation_line
from fleetsim.hardware.errors import ConfigError, suggest
from fleetsim.workloads.arrivals import TraceArrivals
from fleetsim.workloads.lengths import TraceLength
from fleetsim.workloads.workload import Workload
from pydantic import ValidationError

DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"
BUILTINS = {"azure-conv": "azure_conv.yaml", "azure-code": "azure_code.yaml"}
ALIASES = {
    "conversation": "azure-conv",
    "conv": "azure-conv",
    "chat": "azure-conv",
    "azure_conv": "azure-conv",
    "code": "azure-code",
    "coding": "azure-code",
    "azure_code": "azure-code",
}


def list_workloads() -> list[str]:
    """Names of the built-in workloads (aliases not included)."""
    return sorted(BUILTINS)


def canonical_name(name: str) -> str | None:
    """The built-in name ``name`` refers to (case-insensitive, aliases), or None."""
    key = name.strip().lower()
    if key in BUILTINS:
        return key
    return ALIASES.get(key)


@functools.cache
def _builtin_document(name: str) -> dict[str, Any]:
    path = DEFAULTS_DIR / BUILTINS[name]
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:  # pragma: no cover - packaging error
        raise ConfigError(f"built-in workload file {path} unreadable: {exc}") from None
    if not isinstance(doc, dict) or "workload" not in doc:
        raise ConfigError(f"built-in workload file {path}: no 'workload' section")
    return doc


def builtin_fit_info(name: str) -> dict[str, Any]:
    """The ``fit`` section of a built-in: date, source, trace statistics, fitted numbers."""
    canon = canonical_name(name)
    if canon is None:
        raise ConfigError(f"unknown built-in workload {name!r}{suggest(name, [*BUILTINS, *ALIASES])}")
    return dict(_builtin_document(canon)["fit"])


def load_builtin(name: str) -> Workload:
    """A built-in workload by name or alias."""
    canon = canonical_name(name)
    if canon is None:
        raise ConfigError(
            f"unknown workload {name!r}{suggest(name, [*BUILTINS, *ALIASES])}; "
            f"built-ins: {', '.join(list_workloads())}"
        )
    return _validate(_builtin_document(canon)["workload"], f"built-in workload {canon}")


def _validate(data: Any, what: str) -> Workload:
    try:
        return Workload.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_line(exc, what)) from None


def trace_workload(path: str | Path, time_scale: float = 1.0) -> Workload:
    """Replay a trace file row by row: its arrivals (scaled) with each row's own lengths."""
    p = Path(path)
    return Workload(
        name=p.stem,
        description=f"replay of {p}",
        arrivals=TraceArrivals(path=p, time_scale=time_scale),
        prompt=TraceLength(path=p, column="prompt_tokens"),
        output=TraceLength(path=p, column="output_tokens"),
    )


def load_workload_file(path: str | Path) -> Workload:
    """A workload from YAML or JSON (either the Workload fields or a ``workload:`` section)."""
    p = Path(path)
    try:
        text = p.read_text()
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot read workload file: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and "workload" in data:
        data = data["workload"]
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of workload fields")
    return _validate(data, str(p))


def get_workload(spec: Workload | dict[str, Any] | str | Path) -> Workload:
    """Resolve a workload from an object, a dict, a built-in name, a file path or a spec string."""
    if isinstance(spec, Workload):
        return spec
    if isinstance(spec, dict):
        return _validate(spec, "workload")
    if not isinstance(spec, str | Path):
        raise ConfigError(f"workload must be a name, path, spec string or Workload, got {type(spec).__name__}")
    text = str(spec).strip()
    if not text:
        raise ConfigError("empty workload spec")
    if canonical_name(text) is not None:
        return load_builtin(text)
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # '~user' for a user this machine does not have
        path = Path(text)
    if path.is_file():
        if path.suffix.lower() in (".yaml", ".yml", ".json"):
            return load_workload_file(path)
        return trace_workload(path)
    from fleetsim.workloads.spec import parse_workload_spec  # spec.py imports this module

    return parse_workload_spec(text)
