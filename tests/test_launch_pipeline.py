"""calibration/launch.py against hand-computed host/device pipelines and the brute-force
recurrence end_i = max(issue_i, end_{i-1}) + d_i."""

from __future__ import annotations

import numpy as np
import pytest
from fleetsim.calibration.launch import Dispatch, chain, from_kernels, pipeline_end_s
from fleetsim.hardware.errors import ConfigError


def _brute(host: list[float], dev: list[float]) -> float:
    issue = end = 0.0
    for h, d in zip(host, dev, strict=True):
        issue += h
        end = max(issue, end) + d
    return end


def test_host_bound_by_hand() -> None:
    """Host 10 us per kernel, kernels 2 us: the device waits for each launch; the last kernel
    is issued at 5 x 10 us and ends 2 us later."""
    assert pipeline_end_s(10e-6, [2e-6] * 5) == pytest.approx(52e-6, rel=1e-12)


def test_device_bound_by_hand() -> None:
    """Host 1 us, kernels 10 us: only the first launch is exposed: 1 + 5 x 10 us."""
    assert pipeline_end_s(1e-6, [10e-6] * 5) == pytest.approx(51e-6, rel=1e-12)


def test_mixed_by_hand() -> None:
    """Host 1 s each, kernels 0.5, 3, 0.5 s: ends 1.5, max(2, 1.5) + 3 = 5, max(3, 5) + 0.5."""
    d = from_kernels([1.0, 1.0, 1.0], [0.5, 3.0, 0.5])
    assert (d.host_s, d.device_s, d.end_s) == pytest.approx((3.0, 4.0, 5.5))
    assert d.host_bound_s == pytest.approx(1.5)
    # twice: issue 4, 5, 6 -> ends max(4, 5.5) + 0.5 = 6, max(5, 6) + 3 = 9, max(6, 9) + 0.5
    assert d.repeat(2).end_s == pytest.approx(9.5)
    assert pipeline_end_s(1.0, [0.5, 3.0, 0.5], repeat=2) == pytest.approx(9.5)


def test_host_only_and_device_only_entries() -> None:
    """A host-only hook (d = 0) delays later launches; a device-only entry (h = 0) runs as
    soon as the previous kernel ends."""
    assert pipeline_end_s([5.0, 1.0, 0.0], [0.0, 2.0, 3.0]) == pytest.approx(6.0 + 2.0 + 3.0)


@pytest.mark.parametrize("seed", range(20))
def test_closed_form_equals_recurrence(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    h = rng.exponential(1.0, n) * rng.choice([0.0, 1.0], n, p=[0.1, 0.9])
    d = rng.exponential(rng.choice([0.2, 1.0, 5.0]), n)
    assert from_kernels(h, d).end_s == pytest.approx(_brute(list(h), list(d)), rel=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_then_and_repeat_are_exact(seed: int) -> None:
    """Concatenation and repetition of summaries equal the recurrence over the unrolled
    kernel list; chain is associative."""
    rng = np.random.default_rng(100 + seed)
    parts = []
    for _ in range(4):
        n = int(rng.integers(1, 12))
        parts.append((rng.exponential(1.0, n), rng.exponential(rng.choice([0.3, 3.0]), n)))
    r = int(rng.integers(0, 6))
    h = np.concatenate([p[0] for p in parts])
    d = np.concatenate([p[1] for p in parts])
    whole = chain([from_kernels(*p) for p in parts])
    assert whole.end_s == pytest.approx(_brute(list(h), list(d)), rel=1e-12)
    left = from_kernels(*parts[0]).then(from_kernels(*parts[1])).then(from_kernels(*parts[2]))
    right = from_kernels(*parts[0]).then(from_kernels(*parts[1]).then(from_kernels(*parts[2])))
    assert left.end_s == pytest.approx(right.end_s, rel=1e-12)
    rep = from_kernels(*parts[0]).repeat(r)
    expect = _brute(list(np.tile(parts[0][0], r)), list(np.tile(parts[0][1], r))) if r else 0.0
    assert rep.end_s == pytest.approx(expect, rel=1e-12)


def test_finish_from_busy_device_and_late_host() -> None:
    d = from_kernels([1.0, 1.0], [0.5, 0.5])  # end 2.5
    assert d.finish(host_at_s=0.0, device_free_s=10.0) == pytest.approx(11.0)  # device-limited
    assert d.finish(host_at_s=10.0, device_free_s=0.0) == pytest.approx(12.5)  # host-limited


def test_agrees_with_serving_eager_pipeline() -> None:
    """The serving estimator's own loop implementation (fleetsim.estimate) gives the same
    end times, blocks of repeated layers included."""
    from fleetsim.estimate import eager_pipeline_s

    dev = [3e-6, 1e-5, 2e-6, 4e-6, 6e-6]
    counts = [1, 4, 4, 4, 1]
    ours = from_kernels(5e-6, dev[:1]).then(from_kernels(5e-6, dev[1:4]).repeat(4)).then(
        from_kernels(5e-6, dev[4:]))
    assert ours.end_s == pytest.approx(eager_pipeline_s(dev, counts, 5e-6), rel=1e-12)


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match="entries"):
        from_kernels([1.0, 2.0], [1.0])
    with pytest.raises(ConfigError, match=">= 0"):
        from_kernels(1.0, [-1.0])
    with pytest.raises(ConfigError, match="repeat"):
        Dispatch(1.0, 1.0, 2.0).repeat(-1)
    assert from_kernels(1.0, []) == Dispatch()
