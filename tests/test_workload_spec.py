"""The one-line spec grammar and get_workload dispatch."""

from __future__ import annotations

import pytest
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.arrivals import (
    ClosedLoopClients,
    GammaArrivals,
    PoissonArrivals,
    TraceArrivals,
)
from fleetsim.workloads.defaults import get_workload, list_workloads, load_builtin
from fleetsim.workloads.lengths import FixedLength, LognormalLength, QuantileLength, UniformLength
from fleetsim.workloads.workload import Workload


def test_poisson_fixed_lengths() -> None:
    w = get_workload("poisson:rate=5,isl=1024,osl=256")
    assert w.arrivals == PoissonArrivals(rate_rps=5)
    assert w.prompt == FixedLength(tokens=1024) and w.output == FixedLength(tokens=256)
    assert w.sessions is None


def test_gamma_with_distributions_and_builtin_lengths() -> None:
    w = get_workload("gamma:rate=5,cv=2,isl=lognormal(1000,1.0,1,8192),osl=azure-conv")
    assert w.arrivals == GammaArrivals(rate_rps=5, cv=2)
    assert w.prompt == LognormalLength(median=1000, sigma=1.0, min=1, max=8192)
    assert w.output == load_builtin("azure-conv").output
    k = get_workload("gamma:rate=1,cv=1,isl=lognormal(median=300, sigma=0.5),osl=uniform(1, 9)")
    assert k.prompt == LognormalLength(median=300, sigma=0.5) and k.output == UniformLength(low=1, high=9)


def test_closed_loop_and_sessions() -> None:
    w = get_workload("closed:clients=32,think=0.5,think_cv=1,isl=2048,osl=128")
    assert w.arrivals == ClosedLoopClients(num_clients=32, think_time_s=0.5, think_cv=1.0)
    s = get_workload("poisson:rate=0.5,isl=200,osl=300,turns=uniform(2,8),system=1000,turn_think=20")
    assert s.sessions is not None
    assert s.sessions.turns == UniformLength(low=2, high=8)
    assert s.sessions.system_prompt_tokens == 1000 and s.sessions.think_time_s == 20


def test_builtin_names_aliases_and_overrides() -> None:
    assert list_workloads() == ["azure-code", "azure-conv"]
    assert get_workload("conversation") == get_workload("azure-conv") == get_workload("AZURE-CONV")
    assert get_workload("code").name == "azure-code"
    fast = get_workload("azure-code:rate=10,osl=64")
    assert isinstance(fast.arrivals, GammaArrivals) and fast.arrivals.rate_rps == 10
    assert isinstance(fast.prompt, QuantileLength) and fast.output == FixedLength(tokens=64)


def test_objects_dicts_and_files(tmp_path) -> None:
    w = get_workload("poisson:rate=2,isl=3,osl=4")
    assert get_workload(w) is w
    assert get_workload(w.model_dump()) == w
    y = tmp_path / "w.yaml"
    y.write_text("workload:\n  arrivals: {kind: poisson, rate_rps: 2}\n  prompt: {kind: fixed, tokens: 3}\n"
                 "  output: {kind: fixed, tokens: 4}\n")
    assert get_workload(y).arrivals == w.arrivals
    t = tmp_path / "trace.jsonl"
    t.write_text('{"arrival_s": 0, "prompt_tokens": 5, "output_tokens": 6}\n'
                 '{"arrival_s": 2, "prompt_tokens": 7, "output_tokens": 8}\n')
    replay = get_workload(str(t))
    assert isinstance(replay.arrivals, TraceArrivals)
    s = replay.generate(0, num_requests=3)
    assert s.prompt_tokens.tolist() == [5, 7, 5] and s.output_tokens.tolist() == [6, 8, 6]
    assert s.arrival_s.tolist() == [0, 2, 4]
    half = get_workload(f"trace:path={t},scale=0.5").generate(0, num_requests=2)
    assert half.arrival_s.tolist() == [0, 1]


@pytest.mark.parametrize(
    "spec, token",
    [
        ("poisson:rate=x,isl=1,osl=1", "rate=x"),
        ("poison:rate=1", "poison"),
        ("poisson:rate=1,isl=lognorm(1,2),osl=1", "isl=lognorm(1,2)"),
        ("poisson:rate=1,isl=uniform(1),osl=1", "isl=uniform(1)"),
        ("poisson:rate=1,isl=5,osl=1,foo=3", "foo=3"),
        ("poisson:rate=1,isl=1.5,osl=1", "isl=1.5"),
        ("poisson:rate=-1,isl=1,osl=1", "rate=-1"),
        ("closed:clients=2.5,isl=1,osl=1", "clients=2.5"),
        ("poisson:rate=1,rate=2,isl=1,osl=1", "rate=2"),
        ("poisson:rate=1,isl,osl=1", "isl"),
        ("gamma:rate=1,cv=1,isl=lognormal(5,1,bad=2),osl=1", "isl=lognormal(5,1,bad=2)"),
        ("trace:path=/no/such/file.csv", "path=/no/such/file.csv"),
        ("poisson:rate=1,isl=1,osl=1,turns=azure-conv", "turns=azure-conv"),
    ],
)
def test_errors_name_the_bad_token(spec: str, token: str) -> None:
    with pytest.raises(ConfigError) as err:
        get_workload(spec)
    assert repr(token) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_keys_and_missing_file() -> None:
    with pytest.raises(ConfigError, match="needs osl="):
        get_workload("poisson:rate=1,isl=1")
    with pytest.raises(ConfigError, match="file not found"):
        get_workload("does/not/exist.csv")
    with pytest.raises(ConfigError, match="must be a name"):
        get_workload(3)  # type: ignore[arg-type]
    assert isinstance(get_workload("constant:rate=2,isl=1,osl=1"), Workload)


def test_trace_replay_keeps_sessions_and_offsets_ids_of_copies(tmp_path) -> None:
    from fleetsim.traces import write_jsonl

    original = get_workload("poisson:rate=1,isl=10,osl=5,turns=2,system=16,turn_think=3").generate(
        0, num_requests=6
    )
    p = write_jsonl(original, tmp_path / "chat.jsonl")
    replay = get_workload(str(p)).generate(0, num_requests=12)
    first, second = replay[:6], replay[6:]
    assert first.session_id.tolist() == (original.session_id).tolist()
    assert first.prefix_tokens.tolist() == original.prefix_tokens.tolist()
    assert first.think_s.tolist() == original.think_s.tolist()
    span = int(original.session_id.max()) + 1
    # The second copy is other users: ids shifted by the id span, system prompt shared.
    assert second.session_id.tolist() == (original.session_id + span).tolist()
    assert second.system_prefix_id.tolist() == original.system_prefix_id.tolist()
    assert len(set(replay.req_id.tolist())) == 12
    t0 = original.arrival_s - original.arrival_s[0]
    period = t0[-1] + t0[-1] / 5
    assert second.arrival_s.tolist() == pytest.approx((t0 + period).tolist())
