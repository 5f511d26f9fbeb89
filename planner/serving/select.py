"""Selection: the GPU mix as an integer program over simulated capacities, and plan objects.

Each evaluated candidate becomes a ``planner.milp.Deployment`` (id = the candidate's knobs,
capacity per request-size bucket, $/h and watts per replica); ``plan_mix`` chooses integer
replicas for the objective under availability (inventory or market) and the facility power
budget (power caps enter as candidates of their own, so choosing a cap per pool is part of
the same program). An infeasible program is a value with the binding family and its closest
miss. Alternatives (the optimum restricted to each GPU type) give the ranked list and the
Pareto frontier.
"""

from __future__ import annotations

from fleetsim.planner.milp import Bucket as MilpBucket
from fleetsim.planner.milp import Deployment as MilpDeployment
from fleetsim.planner.milp import MixPlan, MixProblem, plan_mix
from fleetsim.planner.serving.records import Evaluation, PlanEntry, PoolChoice


def deployments(evals: list[Evaluation], use_measured_power: bool) -> list[MilpDeployment]:
    """MILP deployments of the candidates with a positive capacity; ``use_measured_power``
    prices a replica at its simulated mean power at capacity (the ``min_energy`` objective
    without a budget) instead of its cap."""
    out = []
    for e in evals:
        cap = e.capacity_rps()
        if not cap:
            continue
        watts = e.power_w
        if use_measured_power:
            measured = [c.avg_power_w for c in e.capacity if c.avg_power_w]
            if measured:
                watts = sum(measured) / len(measured)
        out.append(MilpDeployment(id=e.knobs.id, gpu=e.knobs.gpu, gpus_per_replica=e.knobs.gpus,
                                  price_per_hour=e.price_per_hour, power_w=watts, capacity_rps=cap))
    return out


def solve_mix(evals: list[Evaluation], loads: dict[str, float], objective: str,
              availability: dict[str, int] | None, budget_w: float | None, use_measured_power: bool,
              only_gpu: str | None = None) -> MixPlan | None:
    """``plan_mix`` over ``evals`` (those on ``only_gpu`` when given); None without candidates."""
    deps = [d for d in deployments(evals, use_measured_power) if only_gpu is None or d.gpu == only_gpu]
    if not deps:
        return None
    return plan_mix(MixProblem(buckets=tuple(MilpBucket(name=b, load_rps=v) for b, v in loads.items()),
                               deployments=tuple(deps), objective=objective, availability=availability,  # type: ignore[arg-type]
                               power_budget_w=budget_w))


def entry(name: str, mix: MixPlan, evals: list[Evaluation], engine: str, availability: dict[str, int] | None,
          budget_w: float | None) -> PlanEntry:
    """A plan entry from an optimal mix: its pools, totals and binding selection families."""
    by_id = {e.knobs.id: e for e in evals}
    pools = []
    for did, n in sorted(mix.replicas.items()):
        k = by_id[did].knobs
        pools.append(PoolChoice(gpu=k.gpu, pool=k.pool, tp=k.tp, pp=k.pp, ep=k.ep, replicas=n, role=k.role,
                                power_cap_w=k.power_cap_w, engine=engine, max_num_seqs=k.max_num_seqs,
                                max_num_batched_tokens=k.max_num_batched_tokens))
    binding = []
    for gpu, avail in (availability or {}).items():
        if mix.gpus_by_type.get(gpu, 0) >= avail > 0:
            binding.append(f"inventory[{gpu}]")
    if budget_w is not None and mix.power_w >= budget_w * (1 - 1e-6):
        binding.append("power_budget")
    return PlanEntry(name=name, pools=tuple(pools), objective=mix.objective_name,
                     objective_value=float(mix.objective or 0.0), predicted_goodput_rps=mix.goodput_rps,
                     cost_per_hour=mix.cost_per_hour, gpus=mix.gpus, gpus_by_type=mix.gpus_by_type,
                     power_w=mix.power_w, binding=tuple(binding))


def pareto(points: list[dict[str, float | str | None]], keys: tuple[str, ...]) -> list[bool]:
    """Which points no other point dominates (no worse in every key of ``keys``, all to be
    minimized, and better in one); a key missing (None) on either point is skipped."""
    def le(a: dict[str, float | str | None], b: dict[str, float | str | None]) -> tuple[bool, bool]:
        no_worse, better = True, False
        for k in keys:
            x, y = a.get(k), b.get(k)
            if not isinstance(x, float | int) or not isinstance(y, float | int):
                continue
            if x > y:
                no_worse = False
            elif x < y:
                better = True
        return no_worse, better

    out = []
    for i, p in enumerate(points):
        dominated = any(j != i and all(le(q, p)) for j, q in enumerate(points))
        out.append(not dominated)
    return out
