"""Chrome / Perfetto timeline traces (the JSON "Trace Event Format").

Both simulators describe what happened as spans: *process* (a replica, a rank, a GPU),
*thread* (a stream within it: prefill, decode, compute, comm), a *name*, a start time
and a duration in seconds, plus free-form ``args``. ``chrome_trace_events`` turns them
into ``traceEvents``: one complete event (``ph: "X"``) per span with ``ts``/``dur`` in
microseconds, one ``pid`` per process and one ``tid`` per thread (numbered in order of
first appearance), and metadata events naming them, so ``chrome://tracing`` or
https://ui.perfetto.dev shows labelled rows. Counters (``ph: "C"``, e.g. KV-cache
occupancy over time) are optional.

Spans may be given as dicts/tuples/dataclasses with fields ``process, thread, name,
start_s, dur_s[, args]`` (optionally ``cat``), or as a DataFrame with those columns.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from fleetsim.hardware.errors import ConfigError

SPAN_FIELDS = ("process", "thread", "name", "start_s", "dur_s", "args")
COUNTER_FIELDS = ("process", "name", "time_s", "values")
_US_PER_S = 1e6


def _as_records(items: Any, fields: tuple[str, ...], what: str) -> list[dict[str, Any]]:
    """Normalise a DataFrame / iterable of mappings, tuples or objects to dicts."""
    if items is None:
        return []
    if isinstance(items, pd.DataFrame):
        missing = [f for f in fields[:-1] if f not in items.columns]
        if missing:
            raise ConfigError(f"{what} table lacks column(s) {missing}; needs {list(fields)}")
        return items.to_dict("records")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if isinstance(item, Mapping):
            rec = dict(item)
        elif isinstance(item, tuple | list):
            if not len(fields) - 1 <= len(item) <= len(fields):
                raise ConfigError(f"{what} {i}: expected {list(fields)}, got {len(item)} values")
            rec = dict(zip(fields, item, strict=False))
        else:
            rec = {f: getattr(item, f) for f in fields if hasattr(item, f)}
        missing = [f for f in fields[:-1] if f not in rec]
        if missing:
            raise ConfigError(f"{what} {i}: missing field(s) {missing}")
        out.append(rec)
    return out


def _jsonable(args: Any) -> dict[str, Any]:
    if args is None or (isinstance(args, float) and math.isnan(args)):
        return {}
    if not isinstance(args, Mapping):
        return {"value": args}
    out: dict[str, Any] = {}
    for k, v in args.items():
        if hasattr(v, "item") and callable(v.item):  # numpy scalar -> Python number
            v = v.item()
        out[str(k)] = v if isinstance(v, str | int | float | bool | type(None)) else str(v)
    return out


class _Ids:
    """Numbers processes and threads in order of first appearance."""

    def __init__(self) -> None:
        self.pids: dict[Any, int] = {}
        self.tids: dict[tuple[int, Any], int] = {}

    def pid(self, process: Any) -> int:
        if process not in self.pids:
            self.pids[process] = len(self.pids) + 1
        return self.pids[process]

    def tid(self, pid: int, thread: Any) -> int:
        key = (pid, thread)
        if key not in self.tids:
            self.tids[key] = sum(1 for p, _ in self.tids if p == pid) + 1
        return self.tids[key]


def chrome_trace_events(
    spans: Any,
    counters: Any = None,
    *,
    time_origin_s: float = 0.0,
) -> list[dict[str, Any]]:
    """Trace events for ``spans`` (and ``counters``), times relative to ``time_origin_s``.

    Each span becomes ``{"ph": "X", "pid", "tid", "name", "ts", "dur", "args"}`` with ``ts``
    and ``dur`` in microseconds; metadata events (``ph: "M"``) name every process and
    thread. A span with a negative or non-finite start or duration is an error naming it.
    """
    ids = _Ids()
    events: list[dict[str, Any]] = []
    for i, s in enumerate(_as_records(spans, SPAN_FIELDS, "span")):
        start, dur = float(s["start_s"]), float(s["dur_s"])
        if not (math.isfinite(start) and math.isfinite(dur)) or dur < 0:
            raise ConfigError(
                f"span {i} ({s['process']}/{s['thread']}/{s['name']}): start_s={start}, "
                f"dur_s={dur}: times must be finite and the duration >= 0"
            )
        pid = ids.pid(s["process"])
        ev: dict[str, Any] = {
            "ph": "X",
            "pid": pid,
            "tid": ids.tid(pid, s["thread"]),
            "name": str(s["name"]),
            "ts": (start - time_origin_s) * _US_PER_S,
            "dur": dur * _US_PER_S,
            "args": _jsonable(s.get("args")),
        }
        if s.get("cat") is not None:
            ev["cat"] = str(s["cat"])
        events.append(ev)
    for i, c in enumerate(_as_records(counters, COUNTER_FIELDS, "counter")):
        t = float(c["time_s"])
        if not math.isfinite(t):
            raise ConfigError(f"counter {i} ({c['process']}/{c['name']}): time_s={t} is not finite")
        values = c.get("values")
        events.append(
            {
                "ph": "C",
                "pid": ids.pid(c["process"]),
                "name": str(c["name"]),
                "ts": (t - time_origin_s) * _US_PER_S,
                "args": _jsonable(values),
            }
        )
    meta: list[dict[str, Any]] = []
    for process, pid in ids.pids.items():
        meta.append({"ph": "M", "pid": pid, "tid": 0, "name": "process_name", "args": {"name": str(process)}})
        meta.append({"ph": "M", "pid": pid, "tid": 0, "name": "process_sort_index", "args": {"sort_index": pid}})
    for (pid, thread), tid in ids.tids.items():
        meta.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": str(thread)}})
        meta.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": tid}})
    return meta + events


def write_chrome_trace(
    spans: Any,
    path: str | Path,
    counters: Any = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    time_origin_s: float = 0.0,
) -> Path:
    """Write a Chrome/Perfetto JSON trace (gzip-compressed when ``path`` ends in ``.gz``, with
    header time 0 so one input gives the same bytes)."""
    path = Path(path)
    doc: dict[str, Any] = {
        "traceEvents": chrome_trace_events(spans, counters, time_origin_s=time_origin_s),
        "displayTimeUnit": "ms",
    }
    if metadata:
        doc["otherData"] = _jsonable(metadata)
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    try:
        if path.suffix == ".gz":
            path.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
        else:
            path.write_text(text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the trace ({exc.strerror or type(exc).__name__})") from None
    return path


def read_chrome_trace(path: str | Path) -> pd.DataFrame:
    """Spans of a trace written by ``write_chrome_trace``, back in seconds (for checks, plots)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable Chrome trace: {exc}") from None
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    pnames = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e["name"] == "process_name"}
    tnames = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e["name"] == "thread_name"
    }
    rows = [
        {
            "process": pnames.get(e["pid"], e["pid"]),
            "thread": tnames.get((e["pid"], e["tid"]), e["tid"]),
            "name": e["name"],
            "start_s": e["ts"] / _US_PER_S,
            "dur_s": e["dur"] / _US_PER_S,
            "args": e.get("args", {}),
        }
        for e in events
        if e.get("ph") == "X"
    ]
    return pd.DataFrame(rows, columns=list(SPAN_FIELDS))


def spans_from_iterable(items: Iterable[Any]) -> list[dict[str, Any]]:
    """Validate and normalise spans to dicts (useful before building a DataFrame)."""
    return _as_records(items, SPAN_FIELDS, "span")
