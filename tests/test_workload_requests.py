"""Request / RequestStream: block hashes against a pure-Python SplitMix64, stream operations."""

from __future__ import annotations

import numpy as np
import pytest
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.requests import Request, RequestStream

M64 = (1 << 64) - 1


def splitmix(x: int) -> int:
    """Reference SplitMix64 finaliser (Steele, Lea, Flood 2014) in plain integers."""
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def ref_hash(namespace: int, owner: int, index: int) -> int:
    return splitmix(splitmix((namespace << 56) ^ owner) ^ splitmix(index))


def test_hash_values_match_reference_splitmix() -> None:
    r = Request(req_id=7, arrival_s=0.0, prompt_tokens=40, output_tokens=1, prefix_id=3, prefix_tokens=20)
    # block size 8: 5 full blocks; blocks 0, 1 lie inside the 20-token prefix, block 2 straddles it.
    assert r.prompt_hashes(8) == (
        ref_hash(2, 3, 0),
        ref_hash(2, 3, 1),
        ref_hash(3, 7, 2),
        ref_hash(3, 7, 3),
        ref_hash(3, 7, 4),
    )


def test_shared_prefix_blocks_equal_rest_unique() -> None:
    a = Request(0, 0.0, 100, 5, prefix_id=9, prefix_tokens=64)
    b = Request(1, 1.0, 90, 5, prefix_id=9, prefix_tokens=64)
    c = Request(2, 2.0, 100, 5, prefix_id=8, prefix_tokens=64)
    ha, hb, hc = a.prompt_hashes(16), b.prompt_hashes(16), c.prompt_hashes(16)
    assert len(ha) == 100 // 16 and len(hb) == 90 // 16  # full blocks only
    assert ha[:4] == hb[:4]  # 64 shared tokens = 4 blocks
    assert not set(ha[4:]) & set(hb[4:])
    assert not set(ha) & set(hc)
    assert len(set(ha) | set(hb)) == len(ha) + len(hb) - 4


def test_system_prefix_shared_across_sessions_and_session_blocks_grow() -> None:
    # Two sessions share a 32-token system prompt; session 5's turn 1 extends its turn 0.
    t0 = Request(0, 0.0, 80, 40, session_id=5, prefix_id=5, prefix_tokens=32,
                 system_prefix_id=0, system_prefix_tokens=32)
    t1 = Request(1, 9.0, 200, 10, session_id=5, prefix_id=5, prefix_tokens=120,
                 system_prefix_id=0, system_prefix_tokens=32)
    other = Request(2, 1.0, 80, 40, session_id=6, prefix_id=6, prefix_tokens=32,
                    system_prefix_id=0, system_prefix_tokens=32)
    h0, h1, ho = t0.prompt_hashes(16), t1.prompt_hashes(16), other.prompt_hashes(16)
    assert h0[:2] == ho[:2] == h1[:2]  # system prompt blocks
    assert h0[2:] != ho[2:]
    # Turn 0's whole prompt (5 blocks) reappears at the start of turn 1, and so do the
    # decode blocks of turn 0's answer (tokens 80..120 -> blocks 5, 6).
    assert h1[:5] == h0
    assert t0.block_hashes(16, 120) == h1[:7]


def test_hashes_deterministic_and_block_size_checked() -> None:
    r = Request(3, 0.0, 1000, 1, prefix_id=1, prefix_tokens=512)
    assert r.prompt_hashes(16) == Request(3, 5.0, 1000, 9, prefix_id=1, prefix_tokens=512).prompt_hashes(16)
    with pytest.raises(ConfigError, match="block_size"):
        r.prompt_hashes(0)


def make_stream(n: int = 10) -> RequestStream:
    return RequestStream(
        arrival_s=np.arange(n) * 0.5,
        prompt_tokens=np.arange(n) + 10,
        output_tokens=np.full(n, 3),
        session_id=[-1] * (n - 1) + [4],
    )


def test_stream_iteration_len_and_frame() -> None:
    s = make_stream()
    assert len(s) == 10
    reqs = list(s)
    assert reqs[3] == Request(3, 1.5, 13, 3) == s[3]
    assert reqs[-1].session_id == 4 and reqs[0].session_id is None
    df = s.to_frame()
    assert list(df["prompt_tokens"]) == list(range(10, 20))
    assert RequestStream.from_frame(df) == s
    assert RequestStream.from_requests(reqs) == s


def test_stream_transforms() -> None:
    s = make_stream()
    assert s.head(3).prompt_tokens.tolist() == [10, 11, 12]
    w = s.window(1.0, 2.5)
    assert w.arrival_s.tolist() == [1.0, 1.5, 2.0] and w.req_id.tolist() == [2, 3, 4]
    fast = s.scale_time(0.5)
    assert fast.arrival_s.tolist() == pytest.approx((np.arange(10) * 0.25).tolist())
    assert fast.rate_rps == pytest.approx(2 * s.rate_rps) and s.rate_rps == pytest.approx(2.0)
    with pytest.raises(ConfigError):
        s.scale_time(0)
    with pytest.raises(ConfigError):
        s.window(2, 1)


def test_sorted_check_names_request() -> None:
    s = RequestStream(arrival_s=[0.0, 2.0, 1.0], prompt_tokens=[1, 1, 1], output_tokens=[1, 1, 1])
    assert not s.is_sorted()
    with pytest.raises(ConfigError, match="request 2 .*before"):
        s.check_sorted()
    assert s.sorted().req_id.tolist() == [0, 2, 1]


@pytest.mark.parametrize(
    "bad, msg",
    [
        ({"prompt_tokens": [5, -1]}, "prompt_tokens is negative"),
        ({"arrival_s": [0.0, np.nan]}, "not finite"),
        ({"prefix_tokens": [6, 0]}, "prefix_tokens exceeds"),
    ],
)
def test_validation_names_row(bad: dict, msg: str) -> None:
    cols = {"arrival_s": [0.0, 1.0], "prompt_tokens": [5, 5], "output_tokens": [1, 1]} | bad
    with pytest.raises(ConfigError, match=msg):
        RequestStream(**cols)


def test_columns_read_only_and_unknown_column_rejected() -> None:
    s = make_stream()
    with pytest.raises(ValueError):
        s.arrival_s[0] = 5.0
    with pytest.raises(ConfigError, match="unknown column"):
        RequestStream(arrival_s=[0.0], prompt_tokens=[1], output_tokens=[1], color=[1])


def test_million_requests_fit_far_below_two_gigabytes() -> None:
    n = 1_000_000
    s = RequestStream(arrival_s=np.zeros(n), prompt_tokens=np.ones(n), output_tokens=np.ones(n))
    # 13 eight-byte columns (with adapter_id, lora_rank): 104 bytes per request.
    assert s.nbytes == 104 * n


def test_slicing_keeps_ids() -> None:
    s = make_stream()
    part = s[2:5]
    assert isinstance(part, RequestStream) and part.req_id.tolist() == [2, 3, 4]
    assert s[-1].req_id == 9
    with pytest.raises(IndexError):
        s[10]


def test_duplicate_request_ids_rejected() -> None:
    with pytest.raises(ConfigError, match="request id 4 appears more than once"):
        RequestStream(req_id=[4, 1, 4], arrival_s=[0, 1, 2], prompt_tokens=[1] * 3, output_tokens=[1] * 3)
    assert len(RequestStream(req_id=[4, 1, 3], arrival_s=[0, 1, 2], prompt_tokens=[1] * 3,
                             output_tokens=[1] * 3)) == 3
