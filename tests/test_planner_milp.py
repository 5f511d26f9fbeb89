"""The planner's integer programs against brute force on small seeded random instances.

Oracles: every optimum equals an exhaustive search over integer replica counts (the bucket
shares of a GPU mix, given the counts, by an independent LP: scipy's ``linprog``) searched
one past the MILP's own replica bound; more budget or inventory never gives a worse optimum;
an infeasible instance names its binding family with the closest miss the search finds; HiGHS
and CBC agree; bad input is one ConfigError line naming the field.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fleetsim.hardware.errors import ConfigError
from fleetsim.planner.milp import (
    Bucket,
    CapProblem,
    Deployment,
    DisaggProblem,
    plan_caps,
    plan_disaggregated,
    plan_mix,
)
from fleetsim.planner.solver import Model, highs_available, resolve_solver, solve
from scipy.optimize import linprog

SOLVERS = ["highs", "cbc"] if highs_available() else ["cbc"]


def close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


# -- GPU mix ----------------------------------------------------------------------------


def mix_instance(seed: int, n_dep: int = 3, n_bucket: int = 2) -> tuple[list[Bucket], list[Deployment]]:
    rng = np.random.default_rng(seed)
    buckets = [Bucket(name=f"b{i}", load_rps=float(rng.integers(1, 9)) / 2) for i in range(n_bucket)]
    deps = []
    for j in range(n_dep):
        caps = {b.name: float(rng.integers(2, 9)) for b in buckets if rng.random() < 0.8}
        deps.append(Deployment(id=f"d{j}", gpu="AB"[j % 2], gpus_per_replica=int(rng.choice([1, 2])),
                               price_per_hour=float(rng.integers(1, 11)),
                               power_w=float(rng.integers(3, 15) * 100), capacity_rps=caps))
    for b in buckets:  # every bucket servable by someone
        if not any(b.name in d.capacity_rps for d in deps):
            d0 = deps[0]
            deps[0] = d0.model_copy(update={"capacity_rps": {**d0.capacity_rps, b.name: 3.0}})
    return buckets, deps


class MixOracle:
    """Exhaustive search over integer replicas; the bucket shares by linprog."""

    def __init__(self, buckets: list[Bucket], deps: list[Deployment]) -> None:
        self.b, self.d = buckets, deps
        self.pairs = [(i, j) for i, b in enumerate(buckets) for j, d in enumerate(deps)
                      if b.name in d.capacity_rps]
        bound = [math.ceil(sum(b.load_rps / d.capacity_rps[b.name] for b in buckets
                               if b.name in d.capacity_rps)) + 1 for d in deps]
        self.grid = list(itertools.product(*(range(n + 1) for n in bound)))
        self._served: dict[tuple[int, ...], float] = {}

    def served(self, x: tuple[int, ...]) -> float:
        """Most load (requests/s) the replicas ``x`` serve, sum_d y_bd <= 1 (an LP)."""
        if x not in self._served:
            n = len(self.pairs)
            c = np.array([-self.b[i].load_rps for i, _ in self.pairs])
            a_ub, b_ub = [], []
            for j, _ in enumerate(self.d):
                a_ub.append([self.b[i].load_rps / self.d[j].capacity_rps[self.b[i].name]
                             if jj == j else 0.0 for i, jj in self.pairs])
                b_ub.append(x[j])
            for i, _ in enumerate(self.b):
                a_ub.append([1.0 if ii == i else 0.0 for ii, _ in self.pairs])
                b_ub.append(1.0)
            r = linprog(c, A_ub=np.array(a_ub), b_ub=np.array(b_ub), bounds=[(0, 1)] * n,
                        method="highs")
            assert r.status == 0
            self._served[x] = -float(r.fun)
        return self._served[x]

    def total(self) -> float:
        return sum(b.load_rps for b in self.b)

    def feasible(self, x: tuple[int, ...]) -> bool:
        return self.served(x) >= self.total() - 1e-7

    def cost(self, x: tuple[int, ...]) -> float:
        return sum(d.price_per_hour * n for d, n in zip(self.d, x, strict=True))

    def gpus_by(self, x: tuple[int, ...]) -> dict[str, int]:
        out: dict[str, int] = {}
        for d, n in zip(self.d, x, strict=True):
            out[d.gpu] = out.get(d.gpu, 0) + d.gpus_per_replica * n
        return out

    def gpus(self, x: tuple[int, ...]) -> float:
        return sum(self.gpus_by(x).values())

    def power(self, x: tuple[int, ...]) -> float:
        return sum(d.power_w * n for d, n in zip(self.d, x, strict=True))

    def within(self, x: tuple[int, ...], avail: dict[str, int] | None, budget: float | None) -> bool:
        ok = all(g <= (avail or {}).get(t, g) for t, g in self.gpus_by(x).items())
        return ok and (budget is None or self.power(x) <= budget + 1e-9)

    def least(self, key: Callable[[tuple[int, ...]], float], ok: Callable[[tuple[int, ...]], bool]) -> float | None:
        """Least ``key`` over replicas that pass ``ok`` and serve the whole load."""
        for x in sorted(self.grid, key=key):
            if ok(x) and self.feasible(x):
                return key(x)
        return None

    def most_served(self, avail: dict[str, int] | None, budget: float | None) -> float:
        cands = [x for x in self.grid if self.within(x, avail, budget)]
        return max(self.served(x) for x in cands)


def _seeds(n: int, base: int) -> Iterator[int]:
    return iter(range(base, base + n))


@pytest.mark.parametrize("seed", list(_seeds(6, 100)))
def test_mix_min_objectives_equal_brute_force(seed: int) -> None:
    buckets, deps = mix_instance(seed)
    o = MixOracle(buckets, deps)
    rng = np.random.default_rng(seed + 7)
    avail = {"A": int(rng.integers(2, 8)), "B": int(rng.integers(2, 8))} if seed % 2 else None
    budget = float(rng.integers(20, 60) * 100) if seed % 3 == 0 else None
    keys = {"min_cost": o.cost, "min_gpus": o.gpus, "min_energy": o.power}
    for objective, key in keys.items():
        want = o.least(key, lambda x: o.within(x, avail, budget))
        plan = plan_mix(buckets=buckets, deployments=deps, objective=objective,
                        availability=avail, power_budget_w=budget)
        if want is None:
            assert plan.status == "infeasible", (objective, plan)
            continue
        assert plan.status == "optimal", plan.reason
        assert close(plan.objective, want), (objective, plan.objective, want)
        # the plan's own numbers are consistent with its replicas
        x = tuple(plan.replicas.get(d.id, 0) for d in deps)
        assert o.feasible(x) and o.within(x, avail, budget)
        assert close(plan.cost_per_hour, o.cost(x)) and plan.gpus == o.gpus(x)
        assert close(plan.power_w, o.power(x)) and close(plan.goodput_rps, o.total())
        for b in buckets:
            assert close(sum(plan.assignment[b.name].values()), 1.0)


@pytest.mark.parametrize("seed", list(_seeds(5, 200)))
def test_mix_max_goodput_equals_brute_force(seed: int) -> None:
    buckets, deps = mix_instance(seed)
    o = MixOracle(buckets, deps)
    rng = np.random.default_rng(seed)
    avail = {"A": int(rng.integers(0, 4)), "B": int(rng.integers(1, 4))}
    plan = plan_mix(buckets=buckets, deployments=deps, objective="max_goodput", availability=avail)
    assert plan.status == "optimal"
    assert close(plan.objective, o.most_served(avail, None))
    assert all(g <= avail[t] for t, g in plan.gpus_by_type.items())
    bigger = plan_mix(buckets=buckets, deployments=deps, objective="max_goodput",
                      availability={t: n + 2 for t, n in avail.items()})
    assert bigger.objective is not None and bigger.objective >= plan.objective - 1e-6


@pytest.mark.parametrize("seed", list(_seeds(4, 300)))
def test_mix_more_budget_or_inventory_never_costs_more(seed: int) -> None:
    buckets, deps = mix_instance(seed)
    last = math.inf
    for avail in (3, 4, 6, 10, None):
        a = None if avail is None else {"A": avail, "B": avail}
        plan = plan_mix(buckets=buckets, deployments=deps, availability=a)
        cost = plan.objective if plan.status == "optimal" else math.inf
        assert cost is not None and cost <= last + 1e-9
        last = cost
    last = math.inf
    for budget in (1500.0, 3000.0, 6000.0, 12000.0):
        plan = plan_mix(buckets=buckets, deployments=deps, objective="min_gpus", power_budget_w=budget)
        gpus = plan.objective if plan.status == "optimal" else math.inf
        assert gpus is not None and gpus <= last + 1e-9
        last = gpus


@pytest.mark.parametrize("seed", [401, 402, 405, 408])  # seeds whose load one GPU cannot serve
def test_mix_infeasible_names_binding_families_and_closest_miss(seed: int) -> None:
    buckets, deps = mix_instance(seed)
    o = MixOracle(buckets, deps)
    avail = {"A": 1, "B": 0}
    assert o.least(o.cost, lambda x: o.within(x, avail, None)) is None
    plan = plan_mix(buckets=buckets, deployments=deps, availability=avail)
    assert plan.status == "infeasible" and plan.reason.startswith("infeasible: relax")
    misses = {m.family: m for m in plan.misses}
    assert set(misses) == {"coverage", "availability"}  # capacity is structural, never relaxed
    # closest miss in GPUs: the fewest extra GPUs over the inventory that serve everything
    extra = o.least(lambda x: sum(max(0, g - avail.get(t, 0)) for t, g in o.gpus_by(x).items()),
                    lambda x: True)
    assert close(misses["availability"].slack, float(extra or 0))
    # closest miss in load: what the inventory cannot serve
    assert close(misses["coverage"].slack, o.total() - o.most_served(avail, None))
    # a power budget below the least power that serves the load
    need = o.least(o.power, lambda x: True)
    assert need is not None
    short = plan_mix(buckets=buckets, deployments=deps, power_budget_w=need - 50.0)
    pw = {m.family: m for m in short.misses}["power_budget"]
    assert close(pw.slack, 50.0) and "power_budget short by 50" in short.reason


def test_mix_bucket_nobody_serves_is_the_coverage_miss() -> None:
    buckets, deps = mix_instance(1)
    extra = Bucket(name="huge", load_rps=2.5)
    plan = plan_mix(buckets=[*buckets, extra], deployments=deps)
    assert plan.status == "infeasible"
    assert [m.family for m in plan.misses] == ["coverage"]
    assert plan.misses[0].by_constraint == {"coverage[huge]": 2.5}


@pytest.mark.parametrize("seed", list(_seeds(3, 500)))
def test_solvers_agree(seed: int) -> None:
    if len(SOLVERS) < 2:
        pytest.skip("highspy is not installed: only CBC")
    buckets, deps = mix_instance(seed)
    for objective in ("min_cost", "min_gpus", "max_goodput"):
        a = {"A": 3, "B": 3} if objective == "max_goodput" else None
        got = [plan_mix(buckets=buckets, deployments=deps, objective=objective, availability=a,
                        solver=s) for s in SOLVERS]
        assert [g.solver for g in got] == SOLVERS
        assert close(got[0].objective, got[1].objective or 0.0)
    caps = cap_instance(seed)
    got_c = [plan_caps(caps, solver=s) for s in SOLVERS]
    assert close(got_c[0].objective, got_c[1].objective or 0.0)
    dis = disagg_instance(seed, single_pool=True)
    got_d = [plan_disaggregated(dis, solver=s) for s in SOLVERS]
    assert close(got_d[0].objective, got_d[1].objective or 0.0)


def test_deterministic() -> None:
    buckets, deps = mix_instance(3)
    a = plan_mix(buckets=buckets, deployments=deps, objective="max_goodput", availability={"A": 2, "B": 2})
    b = plan_mix(buckets=buckets, deployments=deps, objective="max_goodput", availability={"A": 2, "B": 2})
    assert a.model_copy(update={"seconds": 0.0}) == b.model_copy(update={"seconds": 0.0})


# -- power caps -------------------------------------------------------------------------


def cap_instance(seed: int, objective: str = "max_goodput", budget_share: float = 0.5) -> CapProblem:
    rng = np.random.default_rng(seed)
    pools = []
    for k in range(int(rng.integers(2, 4))):
        caps = sorted(rng.choice(np.arange(3, 8) * 100.0, size=int(rng.integers(2, 4)), replace=False))
        opts = [{"cap_w": float(c), "goodput_rps": float(rng.integers(5, 20)) * c / 700.0,
                 "power_w": float(c) * float(rng.uniform(0.8, 1.0))} for c in caps]
        pools.append({"name": f"p{k}", "gpu": "H100", "replicas": int(rng.integers(1, 5)), "options": opts})
    lo = sum(p["replicas"] * min(o["power_w"] for o in p["options"]) for p in pools)
    hi = sum(p["replicas"] * max(o["power_w"] for o in p["options"]) for p in pools)
    if objective == "max_goodput":
        return CapProblem(pools=pools, power_budget_w=lo + budget_share * (hi - lo))
    glo = sum(p["replicas"] * min(o["goodput_rps"] for o in p["options"]) for p in pools)
    ghi = sum(p["replicas"] * max(o["goodput_rps"] for o in p["options"]) for p in pools)
    return CapProblem(pools=pools, objective="min_energy", demand_rps=glo + budget_share * (ghi - glo))


def cap_brute(p: CapProblem) -> tuple[float | None, float | None]:
    """(best goodput within budget, least power meeting demand) over every cap choice."""
    best_g: float | None = None
    best_p: float | None = None
    for combo in itertools.product(*(q.options for q in p.pools)):
        g = sum(q.replicas * o.goodput_rps for q, o in zip(p.pools, combo, strict=True))
        w = sum(q.replicas * o.power_w for q, o in zip(p.pools, combo, strict=True))
        if p.power_budget_w is None or w <= p.power_budget_w + 1e-9:
            if p.demand_rps is None or g >= p.demand_rps - 1e-9:
                best_p = w if best_p is None else min(best_p, w)
            best_g = g if best_g is None else max(best_g, g)
    return best_g, best_p


@pytest.mark.parametrize("seed", list(_seeds(6, 600)))
def test_caps_equal_brute_force_and_monotone(seed: int) -> None:
    last = -math.inf
    for share in (0.0, 0.3, 0.6, 1.0):
        p = cap_instance(seed, budget_share=share)
        plan = plan_caps(p)
        want, _ = cap_brute(p)
        assert plan.status == "optimal" and close(plan.objective, want or 0.0)
        assert plan.power_w <= (p.power_budget_w or 0) + 1e-6 and close(plan.goodput_rps, want or 0.0)
        assert plan.objective is not None and plan.objective >= last - 1e-9  # more budget never worse
        last = plan.objective
    last = math.inf
    for share in (1.0, 0.7, 0.4, 0.0):  # less demand never needs more power
        p = cap_instance(seed, objective="min_energy", budget_share=share)
        plan = plan_caps(p)
        _, want = cap_brute(p)
        assert plan.status == "optimal" and close(plan.objective, want or 0.0)
        assert plan.goodput_rps >= (p.demand_rps or 0) - 1e-6
        assert plan.objective is not None and plan.objective <= last + 1e-9
        last = plan.objective


def test_caps_infeasible_closest_miss() -> None:
    p = cap_instance(7, budget_share=0.0)
    floor = p.power_budget_w or 0.0
    low = plan_caps(p.model_copy(update={"power_budget_w": floor - 120.0}))
    assert low.status == "infeasible"
    assert [(m.family, round(m.slack, 6)) for m in low.misses] == [("power_budget", 120.0)]
    q = cap_instance(7, objective="min_energy", budget_share=1.0)
    most = q.demand_rps or 0.0
    high = plan_caps(q.model_copy(update={"demand_rps": most + 3.0}))
    assert [(m.family, round(m.slack, 6)) for m in high.misses] == [("demand", 3.0)]


# -- disaggregated prefill/decode -------------------------------------------------------


def disagg_instance(seed: int, *, single_pool: bool, avail: dict[str, int] | None = None,
                    objective: str = "min_cost") -> DisaggProblem:
    rng = np.random.default_rng(seed)

    def opts(kind: str, rate: str, base: float) -> list[dict[str, object]]:
        return [{"id": f"{kind}-{g}", "gpu": g, "gpus_per_replica": int(rng.choice([1, 2])),
                 rate: base * float(rng.integers(2, 8)), "price_per_hour": float(rng.integers(1, 9)),
                 "power_w": float(rng.integers(3, 10) * 100)} for g in ("A", "B")]

    return DisaggProblem(prefill=opts("p", "prompt_tokens_per_s", 5000.0),
                         decode=opts("d", "output_tokens_per_s", 1000.0),
                         prompt_tokens_per_s=5000.0 * float(rng.integers(4, 14)),
                         output_tokens_per_s=1000.0 * float(rng.integers(4, 14)),
                         availability=avail, objective=objective, single_pool=single_pool)


def disagg_brute(p: DisaggProblem, key: str) -> float | None:
    pre = [(o, o.prompt_tokens_per_s) for o in p.prefill]
    dec = [(o, o.output_tokens_per_s) for o in p.decode]
    ranges = [range(math.ceil(p.prompt_tokens_per_s / c) + 2) for _, c in pre] + [
        range(math.ceil(p.output_tokens_per_s / c) + 2) for _, c in dec]
    every = [o for o, _ in pre] + [o for o, _ in dec]
    best: float | None = None
    for x in itertools.product(*ranges):
        xp, xd = x[: len(pre)], x[len(pre):]
        if p.single_pool and (sum(n > 0 for n in xp) > 1 or sum(n > 0 for n in xd) > 1):
            continue
        if sum(c * n for (_, c), n in zip(pre, xp, strict=True)) < p.prompt_tokens_per_s - 1e-9:
            continue
        if sum(c * n for (_, c), n in zip(dec, xd, strict=True)) < p.output_tokens_per_s - 1e-9:
            continue
        by: dict[str, int] = {}
        for o, n in zip(every, x, strict=True):
            by[o.gpu] = by.get(o.gpu, 0) + o.gpus_per_replica * n
        if any(g > (p.availability or {}).get(t, g) for t, g in by.items()):
            continue
        v = {"min_cost": sum(o.price_per_hour * n for o, n in zip(every, x, strict=True)),
             "min_gpus": float(sum(by.values())),
             "min_energy": sum(o.power_w * n for o, n in zip(every, x, strict=True))}[key]
        best = v if best is None else min(best, v)
    return best


@pytest.mark.parametrize("seed", list(_seeds(5, 700)))
def test_disaggregated_equal_brute_force(seed: int) -> None:
    for single in (True, False):
        for objective in ("min_cost", "min_gpus", "min_energy"):
            avail = {"A": 6, "B": 8} if seed % 2 else None
            p = disagg_instance(seed, single_pool=single, avail=avail, objective=objective)
            want = disagg_brute(p, objective)
            plan = plan_disaggregated(p)
            if want is None:
                assert plan.status == "infeasible" and plan.misses
                continue
            assert plan.status == "optimal" and close(plan.objective, want), (single, objective)
            assert plan.x >= 1 and plan.y >= 1
            if single:
                assert len(plan.prefill) == 1 and len(plan.decode) == 1
            pre = {o.id: o for o in p.prefill}
            dec = {o.id: o for o in p.decode}
            assert sum(pre[i].prompt_tokens_per_s * n for i, n in plan.prefill.items()) >= p.prompt_tokens_per_s
            assert sum(dec[i].output_tokens_per_s * n for i, n in plan.decode.items()) >= p.output_tokens_per_s


def test_disaggregated_mixed_types_and_inventory() -> None:
    """Prefill on the type with cheap prompt tokens, decode on the other: the optimum mixes
    types, and losing that type's inventory raises the cost, never lowers it."""
    p = DisaggProblem(
        prefill=[{"id": "p-h", "gpu": "H100", "gpus_per_replica": 1, "prompt_tokens_per_s": 40000.0,
                  "price_per_hour": 4.0, "power_w": 700.0},
                 {"id": "p-a", "gpu": "A100", "gpus_per_replica": 1, "prompt_tokens_per_s": 10000.0,
                  "price_per_hour": 2.0, "power_w": 400.0}],
        decode=[{"id": "d-h", "gpu": "H100", "gpus_per_replica": 1, "output_tokens_per_s": 3000.0,
                 "price_per_hour": 4.0, "power_w": 600.0},
                {"id": "d-a", "gpu": "A100", "gpus_per_replica": 1, "output_tokens_per_s": 2000.0,
                 "price_per_hour": 2.0, "power_w": 350.0}],
        prompt_tokens_per_s=80000.0, output_tokens_per_s=12000.0)
    plan = plan_disaggregated(p)
    # by hand: prefill 2 x H100 ($8) beats 8 x A100 ($16); decode 6 x A100 ($12) beats 4 x H100 ($16)
    assert (plan.prefill, plan.decode, plan.cost_per_hour) == ({"p-h": 2}, {"d-a": 6}, 20.0)
    assert (plan.prefill_gpus, plan.decode_gpus) == (("H100",), ("A100",))
    tight = plan_disaggregated(p.model_copy(update={"availability": {"A100": 4}}))
    assert tight.status == "optimal" and (tight.objective or 0) >= 20.0
    none = plan_disaggregated(p.model_copy(update={"availability": {"A100": 0, "H100": 5}}))
    assert none.status == "infeasible"
    miss = {m.family: m.slack for m in none.misses}
    # 2 H100 prefill leave 3 for decode (9000 tok/s of 12000): 1 more H100, or 3000 tok/s
    assert close(miss["availability"], 1.0) and close(miss["output_throughput"], 3000.0)


# -- the solver layer ---------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_solver_statuses(solver: str) -> None:
    m = Model("unbounded")
    x = m.var("x", integer=True)
    m.constrain("floor", "floor", x >= 1)
    m.maximize(x)
    assert solve(m, solver).status == "unbounded"
    m = Model("joint")  # neither family alone restores feasibility: relaxed together
    x, y = m.var("x[a b]"), m.var("y-1")
    m.constrain("need", "need_x", x >= 2, relaxable=False)
    m.constrain("need", "need_y", y >= 3, relaxable=False)
    m.constrain("cap_x", "cap_x", x <= 1)
    m.constrain("cap_y", "cap_y", y <= 1)
    m.minimize(x + y)
    r = solve(m, solver)
    assert r.status == "infeasible" and r.joint and r.solver == solver
    assert [(mm.family, round(mm.slack, 9)) for mm in r.misses] == [("cap_x", 1.0), ("cap_y", 2.0)]
    m = Model("ok")
    x = m.var("x[a b]", integer=True)
    m.constrain("need", "need", 3 * x >= 7)
    m.minimize(x)
    r = solve(m, solver)
    assert (r.status, r.objective, r.values) == ("optimal", 3.0, {"x[a b]": 3.0})


def test_solver_choice() -> None:
    assert resolve_solver("auto") == ("highs" if highs_available() else "cbc")
    with pytest.raises(ConfigError, match="solver must be one of"):
        resolve_solver("gurobi")
    m = Model("dup")
    m.var("x")
    with pytest.raises(ValueError, match="twice"):
        m.var("x")


# -- bad input ----------------------------------------------------------------------------


def _dep(**kw: object) -> dict[str, object]:
    d: dict[str, object] = {"id": "d0", "gpu": "H100", "gpus_per_replica": 1, "price_per_hour": 2.0,
                            "power_w": 700.0, "capacity_rps": {"b0": 3.0}}
    return {**d, **kw}


BAD: list[tuple[Callable[[], object], str]] = [
    (lambda: plan_mix(buckets=[{"name": "b0", "load_rps": 1.0}], deployments=[_dep(price_per_hour=-1.0)]),
     "price_per_hour"),
    (lambda: plan_mix(buckets=[{"name": "b0", "load_rps": 1.0}], deployments=[_dep(capacity_rps={"b0": 0.0})]),
     "capacity_rps['b0']"),
    (lambda: plan_mix(buckets=[{"name": "b0", "load_rps": 1.0}], deployments=[_dep(capacity_rps={"b0": -2.0})]),
     "capacity_rps['b0']"),
    (lambda: plan_mix(buckets=[{"name": "b0", "load_rps": 1.0}], deployments=[_dep(capacity_rps={"bx": 2.0})]),
     "unknown bucket 'bx'"),
    (lambda: plan_mix(buckets=[{"name": "b0", "load_rps": 1.0}], deployments=[]), "deployments"),
    (lambda: plan_mix(buckets=[], deployments=[_dep()]), "buckets"),
    (lambda: plan_mix(buckets=[{"name": "b0", "load_rps": 1.0}], deployments=[_dep()], objective="cheapest"),
     "objective"),
    (lambda: plan_mix(buckets=[{"name": "b0", "load_rps": -1.0}], deployments=[_dep()]), "load_rps"),
    (lambda: plan_mix(buckets=[{"name": "b0", "load_rps": 1.0}], deployments=[_dep(), _dep()]),
     "'d0' appears twice"),
    (lambda: plan_mix(buckets=[{"name": "b0", "load_rps": 1.0}], deployments=[_dep()],
                      availability={"H100": -1}), "availability['H100']"),
    (lambda: plan_mix(buckets=[{"name": "b0", "load_rps": 1.0}], deployments=[_dep()], power_budget_w=0.0),
     "power_budget_w"),
    (lambda: plan_mix(buckets=[{"name": "b0", "load_rps": 1.0}], deployments=[_dep(gpus_per_replica=0)]),
     "gpus_per_replica"),
    (lambda: plan_mix(buckets=[{"name": "b0", "load_rps": 1.0}], deployments=[_dep()], colour="red"),
     "unknown key 'colour'"),
    (lambda: plan_mix(buckets=[{"name": "b0", "load_rps": 1.0}], deployments=[_dep()], solver="glpk"),
     "solver"),
    (lambda: plan_caps(pools=[{"name": "p", "gpu": "H100", "replicas": 1, "options": []}],
                       power_budget_w=1.0), "options"),
    (lambda: plan_caps(pools=[{"name": "p", "gpu": "H100", "replicas": 1,
                               "options": [{"cap_w": 400.0, "goodput_rps": 1.0, "power_w": 400.0}]}]),
     "power_budget_w is required"),
    (lambda: plan_caps(pools=[{"name": "p", "gpu": "H100", "replicas": 1,
                               "options": [{"cap_w": 400.0, "goodput_rps": 1.0, "power_w": 400.0}]}],
                       objective="min_energy"), "demand_rps is required"),
    (lambda: plan_caps(pools=[{"name": "p", "gpu": "H100", "replicas": 1,
                               "options": [{"cap_w": -4.0, "goodput_rps": 1.0, "power_w": 400.0}]}],
                       power_budget_w=1.0), "cap_w"),
    (lambda: plan_caps(pools=[], power_budget_w=1.0, objective="max_energy"), "pools"),
    (lambda: plan_disaggregated(prefill=[], decode=[], prompt_tokens_per_s=1.0,
                                output_tokens_per_s=1.0), "prefill"),
    (lambda: plan_disaggregated(prefill=[{"id": "p", "gpu": "A", "gpus_per_replica": 1,
                                          "prompt_tokens_per_s": 0.0, "price_per_hour": 1.0,
                                          "power_w": 1.0}],
                                decode=[{"id": "d", "gpu": "A", "gpus_per_replica": 1,
                                         "output_tokens_per_s": 1.0, "price_per_hour": 1.0,
                                         "power_w": 1.0}],
                                prompt_tokens_per_s=1.0, output_tokens_per_s=1.0), "prompt_tokens_per_s"),
]


@pytest.mark.parametrize("call,field", BAD, ids=[f for _, f in BAD])
def test_bad_input_is_one_line_naming_the_field(call: Callable[[], object], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        call()
    msg = str(exc.value)
    assert "\n" not in msg and field in msg, msg
