"""fleetsim.traces: request traces in and out, and Chrome/Perfetto timelines."""

from fleetsim.traces.chrome import chrome_trace_events, read_chrome_trace, write_chrome_trace
from fleetsim.traces.formats import (
    load_trace,
    read_azure_csv,
    read_fleetsim_csv,
    read_jsonl,
    write_jsonl,
)

__all__ = [
    "chrome_trace_events",
    "load_trace",
    "read_azure_csv",
    "read_chrome_trace",
    "read_fleetsim_csv",
    "read_jsonl",
    "write_chrome_trace",
    "write_jsonl",
]
