"""Request trace formats in and out: Azure LLM inference CSV, fleetsim JSONL and CSV.

The parsers live in ``fleetsim.workloads.tracefile`` (workloads replay traces, and a
lower layer may not import this one); this module is their public home.

* ``read_azure_csv(path) -> RequestStream`` - ``TIMESTAMP,ContextTokens,GeneratedTokens``;
  arrivals in seconds after the first timestamp; unsorted files are sorted with a warning.
* ``read_jsonl(path)`` / ``write_jsonl(stream, path)`` - fleetsim JSONL, one request per
  line; unknown fields are errors naming the line and field.
* ``read_fleetsim_csv(path)`` - a CSV with fleetsim field names as header.
* ``load_trace(path)`` - picks the reader from the extension and the first line.
"""

from __future__ import annotations

from fleetsim.workloads.tracefile import (
    AZURE_COLUMNS,
    load_trace,
    read_azure_csv,
    read_fleetsim_csv,
    read_jsonl,
    write_jsonl,
)

__all__ = [
    "AZURE_COLUMNS",
    "load_trace",
    "read_azure_csv",
    "read_fleetsim_csv",
    "read_jsonl",
    "write_jsonl",
]
