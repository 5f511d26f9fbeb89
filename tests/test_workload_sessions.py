"""Workload.generate and multi-turn sessions against hand-computed token arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.arrivals import (
    ClosedLoopClients,
    ConstantArrivals,
    GammaArrivals,
    PoissonArrivals,
)
from fleetsim.workloads.lengths import FixedLength, LognormalLength
from fleetsim.workloads.sessions import SYSTEM_PREFIX_ID, MultiTurnSessions
from fleetsim.workloads.workload import Workload


def session_workload(**kw) -> Workload:
    return Workload(
        arrivals=ConstantArrivals(rate_rps=1.0),
        prompt=FixedLength(tokens=10),
        output=FixedLength(tokens=5),
        sessions=MultiTurnSessions(turns=3, system_prompt_tokens=20, think_time_s=100.0, **kw),
    )


def test_turn_prompts_carry_the_conversation() -> None:
    s = session_workload().generate(0, num_requests=6)
    df = s.to_frame()
    first = df[df.session_id == 0].sort_values("arrival_s")
    # Turn k: prefix = 20 + 15 k, prompt = prefix + 10; zero-latency times 0, 100, 200.
    assert first.prefix_tokens.tolist() == [20, 35, 50]
    assert first.prompt_tokens.tolist() == [30, 45, 60]
    assert first.arrival_s.tolist() == [0.0, 100.0, 200.0]
    assert first.think_s.tolist() == [0.0, 100.0, 100.0]
    assert (df.system_prefix_id == SYSTEM_PREFIX_ID).all() and (df.system_prefix_tokens == 20).all()
    assert (df.client_id == df.session_id).all() and s.is_closed_loop
    assert s.is_sorted()


def test_max_context_ends_sessions() -> None:
    s = session_workload(max_context_tokens=50).generate(0, num_requests=10)
    # Turn 2 would need 60 + 5 = 65 > 50 tokens, so every session stops after 2 turns.
    assert s.to_frame().groupby("session_id").size().max() == 2
    assert len(s) == 10


def test_open_turns_have_no_client() -> None:
    s = session_workload(closed_loop=False).generate(0, num_requests=6)
    assert not s.is_closed_loop and (s.client_id == -1).all()


def test_prefix_hit_rate_with_infinite_cache_matches_hand_count() -> None:
    # Block 16; system 32 = 2 blocks; user 16 and output 16 tokens per turn; 3 turns.
    # Turn k prompt = 32 + 32 k + 16 -> 3 + 2k blocks, of which 2 + 2k were seen before
    # (system + earlier turns incl. their answers), except the very first request (0).
    # Sessions S: hits 2 (S - 1) + S (4 + 6) = 12 S - 2 over 15 S prompt blocks.
    w = Workload(
        arrivals=ConstantArrivals(rate_rps=1.0),
        prompt=FixedLength(tokens=16),
        output=FixedLength(tokens=16),
        sessions=MultiTurnSessions(turns=3, system_prompt_tokens=32, think_time_s=1000.0),
    )
    n_sessions = 7
    stream = w.generate(0, num_requests=3 * n_sessions)
    cache: set[int] = set()
    hits = total = 0
    for r in stream:
        blocks = r.prompt_hashes(16)
        hits += sum(b in cache for b in blocks)
        total += len(blocks)
        cache.update(r.block_hashes(16, r.prompt_tokens + r.output_tokens))
    assert total == 15 * n_sessions
    assert hits == 12 * n_sessions - 2


def test_closed_loop_clients_run_sessions_back_to_back() -> None:
    w = Workload(
        arrivals=ClosedLoopClients(num_clients=2, think_time_s=7.0),
        prompt=FixedLength(tokens=10),
        output=FixedLength(tokens=5),
        sessions=MultiTurnSessions(turns=2, think_time_s=1.0),
    )
    df = w.generate(0, num_requests=8).to_frame()
    c0 = df[df.client_id == 0].sort_values("arrival_s")
    # Client 0 runs sessions 0, 2: turns at 0, 1 (turn think 1), then 1 + 7 = 8, 9.
    assert c0.session_id.tolist() == [0, 0, 2, 2]
    assert c0.arrival_s.tolist() == [0.0, 1.0, 8.0, 9.0]
    assert c0.think_s.tolist() == [0.0, 1.0, 7.0, 1.0]
    d = w.generate(0, duration_s=30.0).to_frame()
    assert d.arrival_s.max() < 30 and len(d) == 2 * 8  # per client: 0,1,8,9,16,17,24,25


def test_same_seed_same_stream_and_common_random_lengths() -> None:
    w = Workload(
        arrivals=GammaArrivals(rate_rps=5.0, cv=2.0),
        prompt=LognormalLength(median=500, sigma=1.0),
        output=LognormalLength(median=100, sigma=0.5),
    )
    a, b = w.generate(11, num_requests=5000), w.generate(11, num_requests=5000)
    assert a == b
    assert w.generate(12, num_requests=5000) != a
    faster = w.with_rate(50.0).generate(11, num_requests=5000)
    assert np.array_equal(faster.prompt_tokens, a.prompt_tokens)
    assert faster.rate_rps == pytest.approx(10 * a.rate_rps, rel=0.15)
    g = np.random.default_rng(3)
    assert len(w.generate(g, duration_s=100.0)) > 0


def test_generate_requires_bounds_and_valid_seed() -> None:
    w = Workload(arrivals=PoissonArrivals(rate_rps=1), prompt=FixedLength(tokens=1), output=FixedLength(tokens=1))
    with pytest.raises(ConfigError, match="num_requests or duration_s"):
        w.generate(0)
    with pytest.raises(ConfigError, match="seed"):
        w.generate(-1, num_requests=3)
    with pytest.raises(ConfigError, match="closed-loop"):
        w.model_copy(update={"arrivals": ClosedLoopClients(num_clients=2)}).with_rate(3.0)


def test_sessions_open_loop_offered_rate() -> None:
    w = session_workload().model_copy(update={"arrivals": PoissonArrivals(rate_rps=2.0)})
    assert w.mean_rate_rps() == pytest.approx(6.0)  # 2 sessions/s x 3 turns
    assert w.is_closed_loop


@pytest.mark.parametrize(
    "spec",
    [
        "poisson:rate=2,isl=5,osl=5",
        "gamma:rate=2,cv=3,isl=5,osl=5,turns=3,turn_think=1",
        "closed:clients=3,think=1,isl=5,osl=5",
        "constant:rate=1,isl=1,osl=1",
    ],
)
def test_empty_requests_give_empty_streams(spec: str) -> None:
    from fleetsim.workloads.defaults import get_workload

    w = get_workload(spec)
    assert len(w.generate(0, num_requests=0)) == 0
    assert len(w.generate(0, duration_s=0.0)) == 0


def test_summary_headlines() -> None:
    w = Workload(arrivals=GammaArrivals(rate_rps=2.0, cv=3.0), prompt=FixedLength(tokens=100),
                 output=LognormalLength(median=10, sigma=0.0))
    s = w.summary()
    assert (s["arrivals"], s["rate_rps"], s["cv"], s["prompt_mean_tokens"], s["output_mean_tokens"]) == (
        "gamma", 2.0, 3.0, 100.0, pytest.approx(10.0))
    assert session_workload().summary()["turns_mean"] == 3.0
