"""Power-capped plans end to end: a facility budget between the capped and the uncapped draw
of the best plan yields a plan with capped pools and more goodput than any uncapped plan
within the budget; the goodput equals a brute force over every replica count of every
simulated candidate (caps included) within the inventory and the budget."""

from __future__ import annotations

import itertools

import pytest
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.cluster import idle_power_w, load_cluster
from fleetsim.planner.serving.records import SearchSpace
from fleetsim.planner.serving.search import CAP_FRACTIONS

from fleetsim.planning import plan_serving

SPACE = SearchSpace(max_num_seqs=(64,), sim_top=1, sim_requests=40, bisection_steps=2)  # caps: the default
KW = dict(isl=256, osl=64, ttft_s=0.5, tpot_s=0.03, objective="max_goodput", search_space=SPACE)
MODEL, CLUSTER, GPUS = "llama-3.2-1b", "2xH100", 2
H100 = get_gpu("H100")


def _brute(evals, budget_w: float, load: float) -> float:
    """Most requests/s any integer replica counts of ``evals`` serve within the GPUs and watts."""
    opts = [e for e in evals if e.capacity_rps()]
    best = 0.0
    for x in itertools.product(*[range(GPUS // e.knobs.gpus + 1) for e in opts]):
        if sum(n * e.knobs.gpus for n, e in zip(x, opts, strict=True)) > GPUS:
            continue
        if sum(n * e.power_w for n, e in zip(x, opts, strict=True)) > budget_w + 1e-9:
            continue
        best = max(best, min(load, sum(n * e.capacity_rps()["all"] for n, e in zip(x, opts, strict=True))))
    return best


@pytest.fixture(scope="module")
def runs():
    free = plan_serving(MODEL, CLUSTER, **KW).search
    best = free.plans[0]
    assert all(pc.power_cap_w is None for pc in best.pools)
    idle = idle_power_w(load_cluster(CLUSTER))
    # halfway between the best plan's uncapped draw and its draw at the lowest cap (PUE 1)
    budget = idle + 0.5 * (best.power_w + best.gpus * (0.6 * H100.tdp_w - H100.idle_power_w))
    capped = plan_serving(MODEL, CLUSTER, power_budget_w=budget, **KW).search
    return free, capped, budget, idle


def test_binding_budget_picks_capped_pools_with_more_goodput(runs) -> None:
    free, capped, budget, idle = runs
    best_free = free.plans[0]
    cap_w = {e.knobs.power_cap_w for e in capped.evaluations}
    assert cap_w == {None, 0.8 * H100.tdp_w, 0.6 * H100.tdp_w} and CAP_FRACTIONS == (1.0, 0.8, 0.6)
    low_draw = min(best_free.gpus * e.power_w / e.knobs.gpus for e in capped.evaluations if e.knobs.gpus == 1)
    assert idle + low_draw < budget < idle + best_free.power_w  # the budget binds the uncapped best plan
    plan = capped.plans[0]
    assert plan.power_w <= budget - idle + 1e-6
    assert any(pc.power_cap_w is not None for pc in plan.pools)
    uncapped_in_budget = _brute([e for e in capped.evaluations if e.knobs.power_cap_w is None], budget - idle,
                                plan.predicted_goodput_rps * 10)
    assert plan.predicted_goodput_rps > uncapped_in_budget * 1.2
    assert plan.checked is not None and plan.checked.meets_slo
    assert plan.checked.goodput_rps > uncapped_in_budget


def test_capped_plan_goodput_equals_brute_force(runs) -> None:
    _, capped, budget, idle = runs
    plan = capped.plans[0]
    load = plan.predicted_goodput_rps * 10  # max_goodput offers more than the inventory serves
    # the solver holds the first objective within 1e-7 relative while breaking ties
    assert plan.predicted_goodput_rps == pytest.approx(_brute(capped.evaluations, budget - idle, load), rel=1e-6)


def test_caps_are_tried_only_under_a_budget_or_min_energy(runs) -> None:
    free, capped, *_ = runs
    assert {e.knobs.power_cap_w for e in free.evaluations} == {None}
    assert len(capped.evaluations) == 3 * len(free.evaluations)
