"""Fuzzed workload spec strings and trace files: a one-line FleetsimError, or requests with
finite, non-negative, sorted arrivals that simulate to a result passing the invariants."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from _fuzz import FUZZ, NUMBERS, assert_serving_ok, known_cases, outcome
from fleetsim.traces import load_trace
from fleetsim.workloads.defaults import get_workload
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fleetsim.serving import simulate_serving

KNOWN: dict[str, object] = {}
"""Signature -> failing input of open bugs found here (see tests/_fuzz.py)."""
FOUND: dict[str, object] = {
    "RuntimeError@workloads/defaults.py:get_workload": ("spec", "~nosuchuser-h9"),
    "OverflowError@workloads/sessions.py:expand_sessions": ("spec", "azure-code:system=1000000000000000000000000000000"),
    "UnicodeDecodeError@workloads/tracefile.py:load_trace": ("csv", b"\xaf"),
    "OverflowError@workloads/lengths.py:sample": ("spec", "poisson:rate=5,isl=9223372036854775296,osl=1"),
}
"""Fixed bugs the fuzzers found: each input must now give a one-line error or requests."""

HEADS = ["poisson", "gamma", "constant", "closed", "azure-conv", "azure-code", "trace", "bogus", ""]
KEYS = ["rate", "cv", "clients", "think", "think_cv", "ramp", "isl", "osl", "turns", "system", "turn_think",
        "max_context", "open_turns", "scale", "path", "zz"]
VAL = st.one_of(NUMBERS.map(str), st.sampled_from(["fixed(8)", "uniform(1,16)", "uniform(16,1)", "lognormal(64,1.0,1,128)",
                                                   "lognormal(0,0)", "fixed(-1)", "azure-conv", "", "(", "1,2"]))
SPEC = st.builds(lambda h, kv: h + (":" + ",".join(f"{k}={v}" for k, v in kv) if kv else ""),
                 st.sampled_from(HEADS), st.lists(st.tuples(st.sampled_from(KEYS), VAL), max_size=4))
"""Any head with any keys and values: mostly errors."""
GOOD_VAL = {"rate": st.sampled_from(["5", "50", "0.5", "1e-3", "1e9"]), "cv": st.sampled_from(["0.5", "1", "4"]),
            "clients": st.sampled_from(["1", "3", "8"]), "think": st.sampled_from(["0", "0.1", "5"]),
            "ramp": st.sampled_from(["0", "1"]), "isl": st.sampled_from(["1", "16", "uniform(1,64)", "lognormal(32,1.0,1,128)"]),
            "osl": st.sampled_from(["1", "4", "fixed(3)", "uniform(1,8)"]), "turns": st.sampled_from(["1", "2", "uniform(1,3)"]),
            "system": st.sampled_from(["0", "16"]), "turn_think": st.sampled_from(["0", "1"])}
NEEDS = {"poisson": ("rate", "isl", "osl"), "gamma": ("rate", "cv", "isl", "osl"), "constant": ("rate", "isl", "osl"),
         "closed": ("clients", "isl", "osl", "think", "ramp")}
SESSION = ("turns", "system", "turn_think")


def _well_formed(head: str) -> st.SearchStrategy[str]:
    need = st.fixed_dictionaries({k: GOOD_VAL[k] for k in NEEDS[head]},
                                 optional={k: GOOD_VAL[k] for k in SESSION})
    odd = st.dictionaries(st.sampled_from(NEEDS[head]), VAL, max_size=1)
    return st.builds(lambda a, b: f"{head}:" + ",".join(f"{k}={v}" for k, v in {**a, **b}.items()),
                     need, st.one_of(st.just({}), st.just({}), odd))


WELL_FORMED = st.sampled_from(sorted(NEEDS)).flatmap(_well_formed)
"""Every key a process knows, with plausible values (some odd): mostly simulates."""


def _requests(spec: Any) -> Any:
    wl = get_workload(spec)
    return wl.generate(0, num_requests=12)


def _check_stream(reqs: Any) -> None:
    a = np.asarray(reqs.arrival_s, float)
    assert np.all(np.isfinite(a)) and np.all(a >= 0) and np.all(np.diff(a) >= 0)
    assert np.all(np.asarray(reqs.prompt_tokens) >= 0) and np.all(np.asarray(reqs.output_tokens) >= 0)


@FUZZ
@given(spec=st.one_of(SPEC, st.text(max_size=30)))
@example(spec="poisson:rate=5,isl=16,osl=4")
@example(spec="poisson:rate=nan,isl=16,osl=4")
@example(spec="closed:clients=0,isl=16,osl=4")
def test_spec_string(spec: str) -> None:
    reqs = outcome(lambda: _requests(spec), KNOWN, spec)
    if reqs is not None and len(reqs):
        _check_stream(reqs)


@settings(FUZZ, max_examples=20)
@given(spec=st.one_of(WELL_FORMED, WELL_FORMED, WELL_FORMED, SPEC))
@example(spec="poisson:rate=50,isl=uniform(1,64),osl=fixed(3)")
@example(spec="closed:clients=3,think=0,isl=16,osl=2,turns=2")
def test_spec_simulates(spec: str) -> None:
    res = outcome(lambda: simulate_serving("gpt2", "1xH100", spec, num_requests=8, seed=1), KNOWN, spec)
    if res is not None:
        assert_serving_ok(res)


ROW = st.fixed_dictionaries({}, optional={
    "arrival_s": NUMBERS, "prompt_tokens": NUMBERS, "output_tokens": NUMBERS, "req_id": NUMBERS,
    "session_id": st.one_of(st.none(), NUMBERS), "think_s": NUMBERS, "bogus": NUMBERS})
GOOD_ROW = st.fixed_dictionaries({"arrival_s": st.floats(0, 100), "prompt_tokens": st.integers(1, 200),
                                  "output_tokens": st.integers(1, 20)})
ROWS = st.lists(st.one_of(GOOD_ROW, GOOD_ROW, ROW), max_size=8)


def _csv(rows: list[dict[str, Any]], header: list[str]) -> bytes:
    lines = [",".join(header)] + [",".join(str(r.get(k, "")) for k in header) for r in rows]
    return ("\n".join(lines) + "\n").encode()


TRACE = st.one_of(
    ROWS.map(lambda rows: ("jsonl", "\n".join(json.dumps(r) for r in rows).encode())),
    st.tuples(ROWS, st.lists(st.sampled_from(["arrival_s", "prompt_tokens", "output_tokens", "req_id", "x"]),
                             min_size=1, max_size=4, unique=True)).map(lambda t: ("csv", _csv(*t))),
    st.lists(st.tuples(st.sampled_from(["2024-05-10 00:00:01", "0.5", "x", "-1", "nan", ""]), NUMBERS, NUMBERS),
             max_size=5).map(lambda rows: ("csv", ("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
                 f"{a},{b},{c}\n" for a, b, c in rows)).encode())),
    st.tuples(st.sampled_from(["csv", "jsonl"]), st.binary(max_size=40)),
)


@pytest.mark.filterwarnings("ignore:.*not in time order")
@FUZZ
@given(trace=TRACE)
@example(trace=("jsonl", b""))
@example(trace=("csv", b"arrival_s,prompt_tokens,output_tokens\n5,10,2\n1,10,2\n"))
@example(trace=("jsonl", b'{"arrival_s": NaN, "prompt_tokens": 1, "output_tokens": 1}'))
@example(trace=("csv", b"arrival_s,prompt_tokens,output_tokens\n0,1e30,2\n"))
def test_trace_file(tmp_path_factory: Any, trace: tuple[str, bytes]) -> None:
    ext, data = trace
    path = tmp_path_factory.mktemp("tr") / f"trace.{ext}"
    path.write_bytes(data)
    reqs = outcome(lambda: load_trace(path), KNOWN, trace)
    if reqs is not None and len(reqs):
        _check_stream(reqs)
        res = outcome(lambda: simulate_serving("gpt2", "1xH100", str(path), seed=0), KNOWN, trace)
        if res is not None:
            assert_serving_ok(res)


@pytest.mark.filterwarnings("ignore:.*not in time order")
@pytest.mark.parametrize("sig,case", known_cases(KNOWN, FOUND))
def test_known_bug_regressions(sig: str, case: tuple[str, Any], tmp_path: Any) -> None:
    """Each input must give a one-line FleetsimError or requests (xfail until fixed)."""
    kind, data = case
    if kind == "spec":
        reqs = outcome(lambda: _requests(data))
    else:
        path = tmp_path / f"trace.{kind}"
        path.write_bytes(data)
        reqs = outcome(lambda: load_trace(path))
    if reqs is not None and len(reqs):
        _check_stream(reqs)
