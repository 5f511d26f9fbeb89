"""Every serving result and training step produced in any test is checked against the
invariants of ``fleetsim.sim.check`` (a violation fails that test with ``InvariantError``).

The wrappers sit where results are built (``fleetsim.serving.collect``, the
``simulate_step`` that ``fleetsim.training`` and ``fleetsim.training_validate`` call), so
tests that imported ``simulate_serving``/``estimate_train_step`` by name are covered too.
Set ``FLEETSIM_NO_RESULT_CHECKS=1`` to turn the checks off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from fleetsim.sim.check import assert_serving_result, assert_train_estimate
from fleetsim.sim.serving import results as serving_results
from fleetsim.sim.training import step as training_step

import fleetsim.serving
import fleetsim.training
import fleetsim.training_validate

_collect = serving_results.collect
_simulate_step = training_step.simulate_step


def checked_collect(sim: Any, ttft_slo_s: float | None, tpot_slo_s: float | None) -> Any:
    raw = _collect(sim, ttft_slo_s, tpot_slo_s)
    assert_serving_result(fleetsim.serving.ServingResult(raw, None, None, None))  # type: ignore[arg-type]
    return raw


def checked_simulate_step(*args: Any, **kwargs: Any) -> Any:
    result = _simulate_step(*args, **kwargs)
    assert_train_estimate(result)
    return result


@pytest.fixture(autouse=True)
def _check_every_result(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if os.environ.get("FLEETSIM_NO_RESULT_CHECKS"):
        yield
        return
    for module in (fleetsim.serving, serving_results):
        monkeypatch.setattr(module, "collect", checked_collect)
    for module in (fleetsim.training, fleetsim.training_validate, training_step):
        monkeypatch.setattr(module, "simulate_step", checked_simulate_step)
    yield
