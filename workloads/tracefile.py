"""Reading and writing request traces (the parsing behind ``fleetsim.traces``).

Lives in the workloads layer because workloads themselves replay traces
(``TraceArrivals``, ``EmpiricalLength``, ``get_workload(path)``) and a layer may not
import a higher one; ``fleetsim.traces`` re-exports these functions as the public API.

Formats:

* **Azure LLM inference trace CSV** (Azure Public Dataset 2023/2024): header
  ``TIMESTAMP,ContextTokens,GeneratedTokens``; ``TIMESTAMP`` is a wall-clock datetime
  (or plain seconds); arrivals become seconds after the first timestamp.
* **fleetsim JSONL**: one JSON object per line with ``arrival_s``, ``prompt_tokens``,
  ``output_tokens`` and optionally ``req_id``, ``session_id``, ``prefix_id``,
  ``prefix_tokens``, ``system_prefix_id``, ``system_prefix_tokens``, ``client_id``,
  ``think_s``, ``adapter_id``, ``lora_rank`` (ids: ``null`` or absent = none). Unknown fields are errors.
* **fleetsim CSV**: the same field names as a CSV header.

All parsing is columnar (pandas/numpy); errors name file, line and column.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fleetsim.hardware.checks import warn_user
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.requests import COLUMNS, REQUIRED_COLUMNS, RequestStream

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MAX_TOKENS = 2.0**40
"""Largest token count or id a trace cell may hold; past it the cell is surely corrupt
(and would overflow the int64 columns)."""
_JSONL_FIELDS = ("req_id", *COLUMNS)
_ID_FIELDS = ("req_id", "session_id", "prefix_id", "system_prefix_id", "client_id", "adapter_id")
_FLOAT_FIELDS = ("arrival_s", "think_s")
# Column aliases accepted wherever a trace column is named.
COLUMN_ALIASES = {
    "contexttokens": "prompt_tokens",
    "prompt": "prompt_tokens",
    "input_tokens": "prompt_tokens",
    "isl": "prompt_tokens",
    "generatedtokens": "output_tokens",
    "output": "output_tokens",
    "osl": "output_tokens",
}


def _first_bad(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _numeric_column(
    frame: pd.DataFrame, col: str, path: Path, *, integer: bool, first_line: int = 2
) -> np.ndarray:
    """Column as numbers; the first non-numeric, fractional or negative cell is an error.

    Data row ``i`` is on line ``i + first_line`` of the file (2 for a CSV with a header).
    """
    raw = frame[col]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values)
    if bad.any():
        i = _first_bad(bad)
        raise ConfigError(
            f"{path}: line {i + first_line}, column {col!r}: not a number: {raw.iloc[i]!r}"
        )
    if not np.isfinite(values).all():
        i = _first_bad(~np.isfinite(values))
        raise ConfigError(f"{path}: line {i + first_line}, column {col!r}: not a finite number: {raw.iloc[i]!r}")
    if (values < 0).any():
        i = _first_bad(values < 0)
        raise ConfigError(f"{path}: line {i + first_line}, column {col!r}: negative value {values[i]:g}")
    if integer and (values > MAX_TOKENS).any():
        i = _first_bad(values > MAX_TOKENS)
        raise ConfigError(f"{path}: line {i + first_line}, column {col!r}: {values[i]:g} is beyond any "
                          f"model's context (at most {MAX_TOKENS:g})")
    if integer:
        frac = values != np.floor(values)
        if frac.any():
            i = _first_bad(frac)
            raise ConfigError(f"{path}: line {i + first_line}, column {col!r}: not an integer: {values[i]:g}")
        return values.astype(np.int64)
    return values


def _timestamps_s(frame: pd.DataFrame, path: Path) -> np.ndarray:
    """``TIMESTAMP`` as seconds (datetimes or plain numbers), not yet shifted to 0."""
    raw = frame["TIMESTAMP"]
    numeric = pd.to_numeric(raw, errors="coerce")
    if not numeric.isna().any():
        t = numeric.to_numpy(dtype=np.float64)
        if not np.isfinite(t).all():
            i = _first_bad(~np.isfinite(t))
            raise ConfigError(f"{path}: line {i + 2}, column 'TIMESTAMP': not a finite time: {raw.iloc[i]!r}")
        return t
    parsed = pd.to_datetime(raw, format="ISO8601", errors="coerce")
    if parsed.isna().any():
        i = _first_bad(parsed.isna().to_numpy())
        raise ConfigError(f"{path}: line {i + 2}, column 'TIMESTAMP': not a timestamp: {raw.iloc[i]!r}")
    ns = parsed.to_numpy().astype("datetime64[ns]").astype(np.int64)
    return (ns - ns.min()).astype(np.float64) * 1e-9


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, dtype=str, skipinitialspace=True, keep_default_na=False, index_col=False)
    except pd.errors.ParserWarning:
        raise ConfigError(f"{path}: a row has more fields than the header") from None
    except FileNotFoundError:
        raise ConfigError(f"trace file not found: {path}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file, expected a CSV trace") from None
    except pd.errors.ParserError as exc:
        raise ConfigError(f"{path}: not a readable CSV: {' '.join(str(exc).split())}") from None
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{path}: empty file, expected a CSV header") from None
    except OSError as exc:
        raise ConfigError(f"cannot read trace file {path}: {exc.strerror or type(exc).__name__}") from None
    if frame.empty:
        raise ConfigError(f"{path}: no requests (a header and no data rows)")
    return frame


def _sorted_with_warning(stream: RequestStream, path: Path) -> RequestStream:
    if stream.is_sorted():
        return stream
    warn_user(f"{path}: arrivals are not in time order; sorted the {len(stream)} requests by arrival "
              "time (req_id keeps the file order)")
    return stream.sorted()


def read_azure_csv(path: str | Path) -> RequestStream:
    """Read an Azure LLM inference trace CSV into a stream starting at t = 0.

    ``req_id`` is the data row number (0-based, file order), kept through the sort that
    unsorted files get (with a warning naming the file).
    """
    path = Path(path)
    frame = _read_csv(path)
    missing = [c for c in AZURE_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{path}: line 1: missing column(s) {missing}; header has {list(frame.columns)}, "
            f"expected {list(AZURE_COLUMNS)}"
        )
    t = _timestamps_s(frame, path)
    stream = RequestStream(
        arrival_s=t - (t.min() if len(t) else 0.0),
        prompt_tokens=_numeric_column(frame, "ContextTokens", path, integer=True),
        output_tokens=_numeric_column(frame, "GeneratedTokens", path, integer=True),
    )
    return _sorted_with_warning(stream, path)


def read_fleetsim_csv(path: str | Path) -> RequestStream:
    """Read a CSV whose header uses fleetsim field names (``arrival_s``, ...)."""
    path = Path(path)
    frame = _read_csv(path)
    return _sorted_with_warning(_stream_from_fields(frame, path, first_line=2), path)


def _stream_from_fields(frame: pd.DataFrame, path: Path, first_line: int) -> RequestStream:
    unknown = [c for c in frame.columns if c not in _JSONL_FIELDS]
    if unknown:
        raise ConfigError(f"{path}: unknown field {unknown[0]!r}; known: {list(_JSONL_FIELDS)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(f"{path}: missing field(s) {missing}")
    cols: dict[str, Any] = {}
    for name in frame.columns:
        if name in _ID_FIELDS:
            raw = frame[name]
            vals = pd.to_numeric(raw, errors="coerce")
            absent = raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy()
            bad = (vals.isna().to_numpy() & ~absent) | (vals.fillna(0) % 1 != 0).to_numpy()
            bad |= (vals.fillna(0).abs() > MAX_TOKENS).to_numpy()
            if bad.any():
                i = _first_bad(bad)
                raise ConfigError(
                    f"{path}: line {i + first_line}, field {name!r}: not an integer id: {raw.iloc[i]!r}"
                )
            cols[name] = vals.fillna(-1).to_numpy(dtype=np.int64)
        else:
            cols[name] = _numeric_column(
                frame, name, path, integer=name not in _FLOAT_FIELDS, first_line=first_line
            )
    req_id = cols.pop("req_id", None)
    try:
        return RequestStream(req_id=req_id, **cols)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file, read a line at a time; errors name the file."""
    try:
        with path.open(encoding="utf-8") as fh:
            lineno = 0
            try:
                for lineno, line in enumerate(fh, start=1):  # noqa: B007 - lineno used on error
                    yield lineno, line
            except UnicodeDecodeError:
                raise ConfigError(f"{path}: line {lineno + 1}: not UTF-8 text (a binary file?)") from None
    except FileNotFoundError:
        raise ConfigError(f"trace file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"trace path is a directory, expected a file: {path}") from None


def _not_json_number(v: object) -> bool:
    return v is not None and (isinstance(v, bool) or not isinstance(v, int | float))


def read_jsonl(path: str | Path) -> RequestStream:
    """Read a fleetsim JSONL trace; each line one request (blank lines skipped)."""
    path = Path(path)
    records: list[dict[str, Any]] = []
    line_of: list[int] = []
    for lineno, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ConfigError(f"{path}: line {lineno}: invalid JSON ({getattr(exc, 'msg', 'nested too deeply')})") from None
        if not isinstance(rec, dict):
            raise ConfigError(f"{path}: line {lineno}: expected a JSON object, got {type(rec).__name__}")
        for key in rec:
            if key not in _JSONL_FIELDS:
                raise ConfigError(f"{path}: line {lineno}: unknown field {key!r}; known: {list(_JSONL_FIELDS)}")
        for key in REQUIRED_COLUMNS:
            if rec.get(key) is None:
                raise ConfigError(f"{path}: line {lineno}: missing field {key!r}")
        records.append(rec)
        line_of.append(lineno)
    if not records:
        raise ConfigError(f"{path}: no requests")
    frame = pd.DataFrame.from_records(records)
    for name in frame.columns:
        values = frame[name]
        if values.dtype.kind in "iuf":  # all JSON numbers (ids may be null -> NaN)
            bad = values.isna() if name not in _ID_FIELDS else pd.Series(False, index=values.index)
        else:  # strings, booleans, lists...: find the first offender
            bad = values.map(_not_json_number)
            if name not in _ID_FIELDS:
                bad = bad | values.isna()
        if bad.any():
            i = _first_bad(bad.to_numpy())
            raise ConfigError(f"{path}: line {line_of[i]}: field {name!r}: not a number: {records[i].get(name)!r}")
        v = values.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(v).any() or (name not in _FLOAT_FIELDS and (np.abs(np.nan_to_num(v)) > MAX_TOKENS).any()):
            i = _first_bad(np.isinf(v) | (np.abs(np.nan_to_num(v)) > MAX_TOKENS))
            raise ConfigError(f"{path}: line {line_of[i]}: field {name!r}: out of range: {records[i].get(name)!r}")
        if name not in _ID_FIELDS and (v < 0).any():
            i = _first_bad(v < 0)
            raise ConfigError(f"{path}: line {line_of[i]}: field {name!r}: negative value {v[i]:g}")
        if name not in _FLOAT_FIELDS:
            finite = np.where(np.isnan(v), 0.0, v)
            if (finite != np.floor(finite)).any():
                i = _first_bad(finite != np.floor(finite))
                raise ConfigError(f"{path}: line {line_of[i]}: field {name!r}: not an integer: {v[i]:g}")
    return _sorted_with_warning(_stream_from_fields(frame, path, first_line=1), path)


def _json_column(values: np.ndarray, name: str) -> list[str]:
    """``"name": value`` strings for one column (ids < 0 become null)."""
    key = f'"{name}": '
    if name in _FLOAT_FIELDS:
        # repr is the shortest string that reads back to the same double.
        return [key + repr(v) for v in values.tolist()]
    if name in _ID_FIELDS and name != "req_id":
        return [key + ("null" if v < 0 else str(v)) for v in values.tolist()]
    return [key + str(v) for v in values.tolist()]


def write_jsonl(stream: RequestStream, path: str | Path) -> Path:
    """Write ``stream`` as fleetsim JSONL; optional fields only where they carry data.

    Floats are written with Python's shortest round-trip repr, so reading back gives
    bit-identical arrays.
    """
    path = Path(path)
    fields = ["req_id", *REQUIRED_COLUMNS]
    for name, (_, fill) in COLUMNS.items():
        if name not in REQUIRED_COLUMNS and bool((stream.column(name) != fill).any()):
            fields.append(name)
    columns = [_json_column(stream.column(f), f) for f in fields]
    lines = ["{" + ", ".join(parts) + "}" for parts in zip(*columns, strict=True)]
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return path


def load_trace(path: str | Path) -> RequestStream:
    """Read a trace, choosing the format from the extension and the first line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"trace file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"trace path is a directory, expected a file: {path}")
    try:
        with path.open("rb") as fh:
            head = fh.read(1 << 16)
    except OSError as exc:
        raise ConfigError(f"cannot read trace file {path}: {exc.strerror or type(exc).__name__}") from None
    if not head.strip():
        raise ConfigError(f"{path}: empty file, expected a JSONL or CSV trace")
    if b"\0" in head:
        raise ConfigError(f"{path}: a binary file, expected a JSONL or CSV trace")
    first = head.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()
    if path.suffix.lower() in (".jsonl", ".ndjson") or first.startswith("{"):
        return read_jsonl(path)
    header = [h.strip() for h in first.split(",")]
    if "TIMESTAMP" in header or path.name.startswith("AzureLLMInferenceTrace"):
        return read_azure_csv(path)
    if "arrival_s" in header:
        return read_fleetsim_csv(path)
    raise ConfigError(
        f"{path}: unknown trace format: expected JSONL, an Azure CSV (header "
        f"{','.join(AZURE_COLUMNS)}) or a CSV with fleetsim fields (arrival_s,...); "
        f"first line is {first[:80]!r}"
    )


@functools.lru_cache(maxsize=16)
def _load_cached(resolved: str, mtime_ns: int, size: int) -> RequestStream:
    return load_trace(resolved)


def load_trace_cached(path: str | Path) -> RequestStream:
    """``load_trace`` memoised on (path, mtime, size): workloads re-read traces often."""
    p = Path(path)
    try:
        st = p.resolve().stat()
    except FileNotFoundError:
        raise ConfigError(f"trace file not found: {path}") from None
    return _load_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


def trace_column(stream: RequestStream, column: str, what: str) -> np.ndarray:
    """A length column by fleetsim or Azure name (``ContextTokens`` = ``prompt_tokens``)."""
    name = COLUMN_ALIASES.get(column.lower(), column)
    if name not in ("prompt_tokens", "output_tokens", "prefix_tokens"):
        raise ConfigError(
            f"trace {what}: column {column!r} is not a length column; use prompt_tokens "
            f"(ContextTokens) or output_tokens (GeneratedTokens)"
        )
    return np.array(stream.column(name))
