"""Trace readers and writers: Azure CSV, fleetsim JSONL/CSV, format dispatch, errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from fleetsim.hardware.errors import ConfigError
from fleetsim.traces import load_trace, read_azure_csv, read_fleetsim_csv, read_jsonl, write_jsonl
from fleetsim.workloads.requests import RequestStream
from hypothesis import given, settings
from hypothesis import strategies as st

AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "azure-llm-inference-2023"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_azure_csv_times_relative_to_first(tmp_path: Path) -> None:
    p = write(tmp_path, "a.csv", AZURE + "2023-11-16 18:15:46.6805900,374,44\n"
              "2023-11-16 18:15:50.9951690,396,109\n2023-11-16 18:16:00,5,1\n")
    s = read_azure_csv(p)
    assert s.arrival_s.tolist() == pytest.approx([0.0, 4.314579, 13.31941])
    assert s.prompt_tokens.tolist() == [374, 396, 5] and s.output_tokens.tolist() == [44, 109, 1]


def test_azure_csv_unsorted_sorted_with_warning(tmp_path: Path) -> None:
    p = write(tmp_path, "u.csv", AZURE + "2023-01-01 00:00:05,1,1\n2023-01-01 00:00:01,2,2\n")
    with pytest.warns(UserWarning, match="u.csv"):
        s = read_azure_csv(p)
    assert s.arrival_s.tolist() == [0.0, 4.0] and s.prompt_tokens.tolist() == [2, 1]
    assert s.req_id.tolist() == [1, 0]  # ids are file rows


@pytest.mark.parametrize(
    "body, match",
    [
        ("TIMESTAMP,ContextTokens\n0,1\n", r"line 1: missing column\(s\) \['GeneratedTokens'\]"),
        (AZURE + "0,1,1\n1,abc,1\n", r"line 3, column 'ContextTokens': not a number: 'abc'"),
        (AZURE + "0,1,1\n1,2,-4\n", r"line 3, column 'GeneratedTokens': negative value -4"),
        (AZURE + "0,1,1\n1,2.5,4\n", r"line 3, column 'ContextTokens': not an integer"),
        (AZURE + "2023-01-01 00:00:00,1,1\nyesterday,2,2\n", r"line 3, column 'TIMESTAMP'"),
    ],
)
def test_azure_csv_errors_name_file_line_column(tmp_path: Path, body: str, match: str) -> None:
    p = write(tmp_path, "bad.csv", body)
    with pytest.raises(ConfigError, match=match) as err:
        read_azure_csv(p)
    assert "bad.csv" in str(err.value)


def test_jsonl_round_trip_bit_exact(tmp_path: Path) -> None:
    s = RequestStream(
        arrival_s=[0.0, 0.1 + 0.2, 1 / 3],
        prompt_tokens=[10, 20, 30],
        output_tokens=[1, 2, 3],
        session_id=[-1, 4, 4],
        prefix_id=[-1, 4, 4],
        prefix_tokens=[0, 5, 25],
    )
    p = write_jsonl(s, tmp_path / "s.jsonl")
    first = json.loads(p.read_text().splitlines()[0])
    assert first == {"req_id": 0, "arrival_s": 0.0, "prompt_tokens": 10, "output_tokens": 1,
                     "session_id": None, "prefix_id": None, "prefix_tokens": 0}
    assert read_jsonl(p) == s
    assert load_trace(p) == s


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 1e6, allow_nan=False), st.integers(0, 10**6), st.integers(0, 10**5)),
        min_size=1,
        max_size=30,
    )
)
def test_jsonl_round_trip_property(tmp_path_factory: pytest.TempPathFactory, rows: list) -> None:
    rows = sorted(rows, key=lambda r: r[0])
    s = RequestStream(
        arrival_s=[r[0] for r in rows], prompt_tokens=[r[1] for r in rows], output_tokens=[r[2] for r in rows]
    )
    p = write_jsonl(s, tmp_path_factory.mktemp("rt") / "x.jsonl")
    assert read_jsonl(p) == s


@pytest.mark.parametrize(
    "lines, match",
    [
        (['{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "color": 3}'], r"line 1: unknown field 'color'"),
        (['{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}', '{"arrival_s": 1, "prompt_tokens": 1}'],
         r"line 2: missing field 'output_tokens'"),
        (['{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}', "", '{"arrival_s": 1, "prompt_tokens": "x", '
          '"output_tokens": 1}'], r"line 3: field 'prompt_tokens': not a number"),
        (['{"arrival_s": 0, "prompt_tokens": -1, "output_tokens": 1}'], r"line 1: field 'prompt_tokens': negative"),
        (['{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1', ], r"line 1: invalid JSON"),
        (['[1, 2]'], r"line 1: expected a JSON object"),
    ],
)
def test_jsonl_errors_name_line_and_field(tmp_path: Path, lines: list[str], match: str) -> None:
    p = write(tmp_path, "bad.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=match):
        read_jsonl(p)


def test_fleetsim_csv_and_dispatch(tmp_path: Path) -> None:
    p = write(tmp_path, "ours.csv", "arrival_s,prompt_tokens,output_tokens,session_id\n0,5,6,\n1.5,7,8,3\n")
    s = read_fleetsim_csv(p)
    assert s.session_id.tolist() == [-1, 3] and load_trace(p) == s
    assert len(load_trace(write(tmp_path, "x.txt", AZURE + "0,1,1\n"))) == 1
    with pytest.raises(ConfigError, match="unknown trace format"):
        load_trace(write(tmp_path, "y.csv", "a,b\n1,2\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_trace(tmp_path / "missing.csv")


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared Azure trace not present at {DATA}")
def test_real_azure_conversation_trace() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the published trace is sorted: no warning
        s = load_trace(DATA / "AzureLLMInferenceTrace_conv.csv")
    assert len(s) == 19366 and s.arrival_s[0] == 0.0
    # First rows of the file: 374/44 at 18:15:46.6805900, 396/109 at 18:15:50.9951690.
    assert s.prompt_tokens[:2].tolist() == [374, 396] and s.output_tokens[:2].tolist() == [44, 109]
    assert s.arrival_s[1] == pytest.approx(4.314579, abs=1e-6)
    assert np.all(s.prompt_tokens >= 0)
