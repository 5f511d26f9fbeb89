"""Chrome/Perfetto trace JSON: structure, ids, microsecond units, round trip."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass

import pandas as pd
import pytest
from fleetsim.hardware.errors import ConfigError
from fleetsim.traces import chrome_trace_events, read_chrome_trace, write_chrome_trace

SPANS = [
    ("replica0", "prefill", "prefill b=2", 0.0015, 0.0025, {"tokens": 512}),
    ("replica0", "decode", "decode b=8", 0.004, 1.25e-5, None),
    ("replica1", "prefill", "prefill b=1", 0.0, 0.5),
    ("replica0", "prefill", "prefill b=1", 0.01, 0.002, {"tokens": 100}),
]


def test_events_structure_and_units() -> None:
    events = chrome_trace_events(SPANS)
    x = [e for e in events if e["ph"] == "X"]
    assert len(x) == 4
    assert x[0] == {"ph": "X", "pid": 1, "tid": 1, "name": "prefill b=2", "ts": 1500.0, "dur": 2500.0,
                    "args": {"tokens": 512}}
    assert (x[1]["pid"], x[1]["tid"]) == (1, 2)  # new thread in the same process
    assert (x[2]["pid"], x[2]["tid"]) == (2, 1)
    assert (x[3]["pid"], x[3]["tid"]) == (1, 1)
    names = {(e["pid"], e.get("tid"), e["name"]): e["args"] for e in events if e["ph"] == "M"}
    assert names[(1, 0, "process_name")] == {"name": "replica0"}
    assert names[(1, 2, "thread_name")] == {"name": "decode"}


def test_file_is_valid_json_and_durations_round_trip(tmp_path) -> None:
    for name in ("t.json", "t.json.gz"):
        p = write_chrome_trace(SPANS, tmp_path / name, counters=[("replica0", "kv_used", 0.003, {"blocks": 7})],
                               metadata={"gpu": "H100"})
        opener = gzip.open if name.endswith(".gz") else open
        with opener(p, "rt") as fh:
            doc = json.load(fh)
        assert doc["otherData"] == {"gpu": "H100"}
        assert [e for e in doc["traceEvents"] if e["ph"] == "C"][0]["args"] == {"blocks": 7}
        back = read_chrome_trace(p)
        assert back["dur_s"].tolist() == pytest.approx([s[4] for s in SPANS], rel=1e-12)
        assert back["start_s"].tolist() == pytest.approx([s[3] for s in SPANS], rel=1e-12, abs=1e-15)
        assert back["process"].tolist() == [s[0] for s in SPANS]
        assert back["thread"].tolist() == [s[1] for s in SPANS]


def test_dataframe_and_objects_accepted() -> None:
    df = pd.DataFrame([s[:5] for s in SPANS], columns=["process", "thread", "name", "start_s", "dur_s"])

    @dataclass
    class Span:
        process: str
        thread: str
        name: str
        start_s: float
        dur_s: float

    a = chrome_trace_events(df)
    b = chrome_trace_events([Span(*s[:5]) for s in SPANS])
    assert [e["dur"] for e in a if e["ph"] == "X"] == [e["dur"] for e in b if e["ph"] == "X"]
    shifted = chrome_trace_events(df, time_origin_s=0.001)
    assert [e["ts"] for e in shifted if e["ph"] == "X"][0] == pytest.approx(500.0)


def test_bad_spans_are_named() -> None:
    with pytest.raises(ConfigError, match=r"span 0 \(r/t/n\).*duration"):
        chrome_trace_events([("r", "t", "n", 0.0, -1.0)])
    with pytest.raises(ConfigError, match="missing field"):
        chrome_trace_events([{"process": "r", "thread": "t", "name": "n", "start_s": 0.0}])
    with pytest.raises(ConfigError, match="lacks column"):
        chrome_trace_events(pd.DataFrame({"process": ["r"]}))
