"""Disaggregated prefill/decode (xPyD) plans whose pools may be different GPU types.

Candidates: every layout that survived the co-located pruning (memory fit, layout) becomes a
*prefill* replica and a *decode* replica candidate. Their analytic capacities, on the same
``ReplicaTimer`` (the engine profile's iteration prices) the co-located stage uses:

- prefill: a replica runs back-to-back iterations of ``max_num_batched_tokens`` prompt tokens
  (chunked prefill fills the budget), so it sustains ``engines * tokens / iteration_s(0, isl,
  tokens)`` prompt tokens/s; it is infeasible when one prompt alone,
  ``prefill_s(isl)``, misses the TTFT target.
- decode: the largest batch ``b`` (KV capacity for ``b`` requests of ``isl + osl`` tokens per
  engine, ``max_num_seqs``) whose decode iteration ``iteration_s(b, isl + osl/2, 0)`` keeps the
  TPOT target; it generates ``engines * b / iteration_s`` output tokens/s.

These bounds rank the candidates; the top ones per GPU pool and role get simulated capacities
(``capacity.capacity``: a prefill replica at one output token a request, a decode replica in a
simulated P/D deployment). ``planner.milp.plan_disaggregated`` then picks one prefill and one
decode option (possibly different GPU types) and replica counts covering the workload's prompt
tokens/s (demand x mean prompt tokens) and output tokens/s (demand x mean output tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fleetsim.planner.first_plan import ReplicaTimer
from fleetsim.planner.milp import (
    DecodeOption,
    DisaggPlan,
    DisaggProblem,
    PrefillOption,
    plan_disaggregated,
)
from fleetsim.planner.serving.records import (
    Analytic,
    Bottleneck,
    Evaluation,
    Knobs,
    PlanEntry,
    PoolChoice,
    Rejection,
    Slo,
)
from fleetsim.planner.serving.space import Supply


@dataclass(frozen=True)
class RoleCandidate:
    """A prefill or decode candidate: its analytic record (``replica_rps`` = tokens/s over the
    mean tokens of its role per request) and its tokens/s bound."""

    supply: Supply
    analytic: Analytic
    tokens_per_s: float


def prefill_analytic(k: Knobs, timer: ReplicaTimer, slo: Slo, isl: int) -> tuple[Analytic, float] | Rejection:
    """The analytic record and prompt tokens/s of a prefill replica."""
    p = timer.prefill_s(isl)
    if slo.ttft_s is not None and p > slo.ttft_s:
        return Rejection(knobs=k, stage="analytic", bottleneck="ttft_slo", miss=p / slo.ttft_s,
                         reason=f"prefill of {isl} tokens takes {p * 1e3:.1f} ms > TTFT target "
                                f"{slo.ttft_s * 1e3:.1f} ms")
    tok = k.max_num_batched_tokens
    it = timer.iteration_s(0, isl, tok)
    rate = timer.engines * tok / it
    return _role(k, timer, batch=max(1, tok // isl), limited="compute", prefill_s=p, ttft=p, tpot=it,
                 tokens_per_s=rate, per_request=isl)


def decode_analytic(k: Knobs, timer: ReplicaTimer, slo: Slo, isl: int, osl: int) -> tuple[Analytic, float] | Rejection:
    """The analytic record and output tokens/s of a decode replica at its largest batch
    within TPOT."""
    e = timer.engines
    ctx = isl + osl // 2
    b_kv = timer.kv_capacity_tokens // ((isl + osl) * e)
    b_max = min(k.max_num_seqs, b_kv)
    if b_max < 1:
        return Rejection(knobs=k, stage="analytic", bottleneck="kv_capacity",
                         miss=(isl + osl) * e / max(timer.kv_capacity_tokens, 1),
                         reason=f"KV cache holds {timer.kv_capacity_tokens} tokens, less than one request "
                                f"of {isl + osl} tokens")

    def ok(b: int) -> bool:
        return slo.tpot_s is None or timer.iteration_s(b, ctx, 0) <= slo.tpot_s

    if not ok(1):
        one = timer.iteration_s(1, ctx, 0)
        assert slo.tpot_s is not None
        return Rejection(knobs=k, stage="analytic", bottleneck="tpot_slo", miss=one / slo.tpot_s,
                         reason=f"one decode takes {one * 1e3:.2f} ms > TPOT target {slo.tpot_s * 1e3:.2f} ms")
    lo, hi = 1, b_max
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    it = timer.iteration_s(lo, ctx, 0)
    limited: Bottleneck = ("kv_capacity" if lo == b_kv and b_kv <= k.max_num_seqs else
                           "max_num_seqs" if lo == k.max_num_seqs else "tpot_slo")
    return _role(k, timer, batch=lo * e, limited=limited, prefill_s=timer.prefill_s(isl), ttft=timer.prefill_s(isl),
                 tpot=it, tokens_per_s=e * lo / it, per_request=osl)


def _role(k: Knobs, timer: ReplicaTimer, *, batch: int, limited: Bottleneck, prefill_s: float, ttft: float,
          tpot: float, tokens_per_s: float, per_request: int) -> tuple[Analytic, float]:
    a = Analytic(knobs=k, batch=batch, limited_by=limited, kv_tokens=timer.kv_capacity_tokens, prefill_s=prefill_s,
                 ttft_s=ttft, tpot_s=tpot, replica_rps=tokens_per_s / per_request, max_replicas=timer.max_replicas)
    return a, tokens_per_s


def candidates(layouts: list[tuple[Supply, Knobs, ReplicaTimer]], slo: Slo, isl: int, osl: int
               ) -> tuple[list[RoleCandidate], list[Rejection]]:
    """Prefill and decode candidates of every surviving layout, and the rejections."""
    out: list[RoleCandidate] = []
    rejected: list[Rejection] = []
    prefill: dict[tuple[int, int, int, int, int], tuple[Supply, Knobs, ReplicaTimer]] = {}
    for s, k, timer in layouts:  # a prefill replica per layout: the largest max_num_seqs
        key = (k.pool, k.tp, k.pp, k.ep, k.max_num_batched_tokens)
        if key not in prefill or k.max_num_seqs > prefill[key][1].max_num_seqs:
            prefill[key] = (s, k, timer)
    todo = [(s, k.model_copy(update={"role": "prefill"}), t) for s, k, t in prefill.values()] + [
        (s, k.model_copy(update={"role": "decode"}), t) for s, k, t in layouts]
    for s, k, timer in todo:
        got = (prefill_analytic(k, timer, slo, isl) if k.role == "prefill" else
               decode_analytic(k, timer, slo, isl, osl))
        if isinstance(got, Rejection):
            rejected.append(got)
        else:
            out.append(RoleCandidate(supply=s, analytic=got[0], tokens_per_s=got[1]))
    return out, rejected


def rank(cands: list[RoleCandidate], objective: str, top: int) -> list[RoleCandidate]:
    """The ``top`` candidates of each (GPU pool, role) by $/h, GPUs or W per token/s."""
    def score(c: RoleCandidate) -> tuple[float, str]:
        g = c.analytic.knobs.gpus
        per = {"min_cost": g * c.supply.price_per_gpu_hour, "min_gpus": float(g),
               "min_energy": c.supply.replica_power_w(g, None)}.get(objective, float(g))
        return per / c.tokens_per_s, c.analytic.knobs.id

    out: list[RoleCandidate] = []
    groups = dict.fromkeys((c.supply.index, c.analytic.knobs.role) for c in cands)
    for idx, role in groups:
        mine = sorted((c for c in cands if c.supply.index == idx and c.analytic.knobs.role == role), key=score)
        out += mine[:top]
    return out


def feed_replicas(decode: RoleCandidate, prefill_tokens_per_s: float | None, isl: int, osl: int) -> int:
    """Prefill replicas that keep one decode replica fed up to 2.5x its analytic rate (the
    capacity search brackets up to about 4x its start; the analytic decode bound is
    optimistic), at most 16."""
    if not prefill_tokens_per_s:
        return 1
    need = 2.5 * decode.tokens_per_s / osl * isl / prefill_tokens_per_s
    return max(1, min(16, math.ceil(need)))


def solve(evals: list[Evaluation], isl: int, osl: int, demand_rps: float, objective: str,
          availability: dict[str, int] | None, budget_w: float | None, use_measured_power: bool) -> DisaggPlan | None:
    """``plan_disaggregated`` over the role evaluations with a positive capacity (tokens/s =
    requests/s x mean prompt or output tokens); None without options for both roles."""
    pre, dec = [], []
    for e in evals:
        cap = e.capacity_rps()
        if not cap:
            continue
        rps = min(cap.values())
        watts = e.power_w
        if use_measured_power:
            measured = [c.avg_power_w for c in e.capacity if c.avg_power_w]
            watts = measured[0] if measured else watts
        common = dict(id=e.knobs.id, gpu=e.knobs.gpu, gpus_per_replica=e.knobs.gpus,
                      price_per_hour=e.price_per_hour, power_w=watts)
        if e.knobs.role == "prefill":
            pre.append(PrefillOption(**common, prompt_tokens_per_s=rps * isl))  # type: ignore[arg-type]
        elif e.knobs.role == "decode":
            dec.append(DecodeOption(**common, output_tokens_per_s=rps * osl))  # type: ignore[arg-type]
    if not pre or not dec:
        return None
    return plan_disaggregated(DisaggProblem(prefill=tuple(pre), decode=tuple(dec), prompt_tokens_per_s=demand_rps * isl,
                                            output_tokens_per_s=demand_rps * osl, objective=objective,  # type: ignore[arg-type]
                                            availability=availability, power_budget_w=budget_w))


def entry(plan: DisaggPlan, evals: list[Evaluation], engine: str, demand_rps: float,
          availability: dict[str, int] | None, budget_w: float | None) -> PlanEntry:
    """A plan entry from an optimal xPyD plan: prefill pools first, then decode pools."""
    by_id = {e.knobs.id: e for e in evals}
    pools = []
    for did, n in [*sorted(plan.prefill.items()), *sorted(plan.decode.items())]:
        k = by_id[did].knobs
        pools.append(PoolChoice(gpu=k.gpu, pool=k.pool, tp=k.tp, pp=k.pp, ep=k.ep, replicas=n, role=k.role,
                                power_cap_w=k.power_cap_w, engine=engine, max_num_seqs=k.max_num_seqs,
                                max_num_batched_tokens=k.max_num_batched_tokens))
    binding = [f"inventory[{g}]" for g, avail in (availability or {}).items()
               if plan.gpus_by_type.get(g, 0) >= avail > 0]
    if budget_w is not None and plan.power_w >= budget_w * (1 - 1e-6):
        binding.append("power_budget")
    kinds = "+".join(plan.prefill_gpus) + "->" + "+".join(plan.decode_gpus)
    return PlanEntry(name=f"disaggregated {plan.x}P{plan.y}D {kinds}", pools=tuple(pools),
                     objective=plan.objective_name, objective_value=float(plan.objective or 0.0),
                     predicted_goodput_rps=demand_rps, cost_per_hour=plan.cost_per_hour, gpus=plan.gpus,
                     gpus_by_type=plan.gpus_by_type, power_w=plan.power_w, binding=tuple(binding))
