"""Executors give the same list, in the items' order, whichever ran them.

Oracle: the in-process list comprehension ``[fn(x) for x in items]`` (exact equality of the
floats: the same code on the same inputs). Ray runs against a local runtime this test starts
and shuts down, and skips with a reason when Ray is not installed.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
from fleetsim.hardware.errors import ConfigError
from fleetsim.planner.executor import (
    RAY_MISSING,
    LocalExecutor,
    RayExecutor,
    make_executor,
    ray_runtime_env,
)

SHAPES = [(tp, batch) for tp in (1, 2, 4) for batch in (1, 8, 64)]


def forward_time(shape: tuple[int, int]) -> float:
    """A cheap analytic evaluation: one decode step of llama-3.1-8b on an H100 (seconds)."""
    from fleetsim.estimate import estimate_forward

    tp, batch = shape
    return estimate_forward("llama-3.1-8b", "H100-SXM", (batch, 1, 1024), tp=tp, engine="vllm").time_s


def square_tag(x: int) -> tuple[int, int]:
    return (x, x * x)


def test_local_one_and_two_workers_equal_inline() -> None:
    expected = [forward_time(s) for s in SHAPES]
    assert LocalExecutor(1).map(forward_time, SHAPES) == expected
    assert LocalExecutor(2).map(forward_time, SHAPES) == expected
    assert len(set(expected)) == len(expected)  # distinct values, so order is really checked


def test_order_kept_with_many_small_items() -> None:
    items = list(range(97, -1, -1))
    assert LocalExecutor(2).map(square_tag, items) == [(x, x * x) for x in items]
    assert LocalExecutor(2).map(square_tag, []) == []


def test_make_executor_and_bad_names() -> None:
    ex = make_executor("local", workers=1)
    assert isinstance(ex, LocalExecutor) and ex.workers == 1
    with pytest.raises(ConfigError, match=r"^--executor 'rya' is not one of local, ray \(did you mean 'ray'\?\)$"):
        make_executor("rya")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="^workers must be a positive integer"):
            LocalExecutor(bad)  # type: ignore[arg-type]


def test_ray_missing_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ray(name: str, *a: object, **k: object) -> object:
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError) as e:
        make_executor("ray")
    assert str(e.value) == RAY_MISSING and "\n" not in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is not installed (pip install 'fleetsim[ray]')")
def test_ray_equals_local() -> None:
    import ray

    expected = LocalExecutor(1).map(forward_time, SHAPES)
    here = os.path.dirname(os.path.abspath(__file__))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=ray_runtime_env(here))
    try:
        assert RayExecutor().map(forward_time, SHAPES) == expected
        assert make_executor("ray").map(square_tag, list(range(50))) == [(x, x * x) for x in range(50)]
    finally:
        ray.shutdown()
