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

The KV cache of a prompt moves from the prefill replica to a decode replica
(``sim.serving.disagg``: its bytes, route and time are the simulator's functions): within a
node over NVLink, between nodes of one pool over the node's NIC, between pools over the
cluster's fabric. A (prefill, decode) pair's TTFT is the prefill's TTFT plus that transfer
(the client's first token comes from the decode replica), and a prefill replica's share of
its link caps the prompt tokens/s it can hand over (``planner.milp.KvRoute``).

These bounds rank the candidates; the top ones per GPU pool and role get simulated capacities
(``capacity.capacity``: a prefill replica at one output token a request, a decode replica in a
simulated P/D deployment). ``planner.milp.plan_disaggregated`` then picks one prefill and one
decode option (possibly different GPU types) and replica counts covering the workload's prompt
tokens/s (demand x mean prompt tokens) and output tokens/s (demand x mean output tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fleetsim.hardware.catalog import get_link
from fleetsim.hardware.specs import ClusterSpec
from fleetsim.planner.first_plan import ReplicaTimer
from fleetsim.planner.milp import (
    DecodeOption,
    DisaggPlan,
    DisaggProblem,
    KvRoute,
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
from fleetsim.sim.serving.disagg import (
    Route,
    kv_transfer_bytes,
    link_rate_bps,
    transfer_route,
    transfer_time_s,
)
from fleetsim.sim.serving.feasibility import gpus_per_node
from fleetsim.workloads.models import ModelSpec


@dataclass(frozen=True)
class RoleCandidate:
    """A prefill or decode candidate: its analytic record (``replica_rps`` = tokens/s over the
    mean tokens of its role per request) and its tokens/s bound."""

    supply: Supply
    analytic: Analytic
    tokens_per_s: float


@dataclass(frozen=True)
class KvLink:
    """The link a prefill replica's KV caches take to a decode replica: its route and catalog
    name, the seconds one prompt takes over it when free, and the prompt tokens/s the prefill
    replica's share of it carries (a node's NIC or fabric link is shared by the prefill
    replicas the node holds, as in the simulator)."""

    route: Route
    link: str
    transfer_s: float
    prompt_tokens_per_s: float


def kv_link(cluster: ClusterSpec, model: ModelSpec, kv_dtype: str, isl: int, pre: Knobs, dec: Knobs,
            same_node: bool | None = None) -> KvLink:
    """``pre``'s KV link to ``dec`` for prompts of ``isl`` tokens. ``same_node`` None: within
    a node only when both roles share a one-node pool (where every replica sits); a larger
    pool's transfers are priced on the NIC between nodes (the slower link, on the safe side)."""
    pool = cluster.pools[pre.pool]
    if same_node is None:
        same_node = pre.pool == dec.pool and pool.num_nodes == 1
    route, name = transfer_route(cluster, pre.pool, dec.pool, same_node)
    link = get_link(name)
    senders = 1 if route == "scale_up" else max(1, gpus_per_node(pool) // pre.gpus)
    per_token = kv_transfer_bytes(model, 1, kv_dtype)
    return KvLink(route=route, link=name, transfer_s=transfer_time_s(link, pre.gpus, kv_transfer_bytes(model, isl, kv_dtype)),
                  prompt_tokens_per_s=link_rate_bps(link, pre.gpus) / per_token / senders)


def capacity_run_link(cluster: ClusterSpec, model: ModelSpec, kv_dtype: str, isl: int, pre: Knobs) -> KvLink:
    """The link of a prefill candidate's capacity run (``capacity.capacity``: the prefill
    replica, then one decode replica of the same layout, placed consecutively in its pool)."""
    same = 2 * pre.gpus <= gpus_per_node(cluster.pools[pre.pool])
    return kv_link(cluster, model, kv_dtype, isl, pre, pre.model_copy(update={"role": "decode"}), same_node=same)


def pair_ttft_s(e: Evaluation, link: KvLink, run: KvLink) -> float:
    """A prefill option's TTFT with its KV over ``link``: the simulated p-percentile TTFT at
    capacity with the capacity run's transfer (``run``) swapped for ``link``'s, or the
    analytic prefill time plus the transfer."""
    sim = [c.ttft_s for c in e.capacity if c.simulations and c.ttft_s is not None]
    if sim:
        return max(sim) - run.transfer_s + link.transfer_s
    return e.analytic.ttft_s + link.transfer_s


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
    """The ``top`` candidates of each (GPU pool, role) by $/h, GPUs or W per token/s, plus
    the best of every TP degree not among them (as ``space.rank_for_simulation``)."""
    def score(c: RoleCandidate) -> tuple[float, str]:
        g = c.analytic.knobs.gpus
        per = {"min_cost": g * c.supply.price_per_gpu_hour, "min_gpus": float(g),
               "min_energy": c.supply.replica_power_w(g, None)}.get(objective, float(g))
        return per / c.tokens_per_s, c.analytic.knobs.id

    out: list[RoleCandidate] = []
    groups = dict.fromkeys((c.supply.index, c.analytic.knobs.role) for c in cands)
    for idx, role in groups:
        mine = sorted((c for c in cands if c.supply.index == idx and c.analytic.knobs.role == role), key=score)
        chosen = mine[:top]
        for tp in dict.fromkeys(c.analytic.knobs.tp for c in mine) if top else ():
            if all(c.analytic.knobs.tp != tp for c in chosen):
                chosen.append(next(c for c in mine if c.analytic.knobs.tp == tp))
        out += chosen
    return out


def feed_replicas(decode: RoleCandidate, prefill_tokens_per_s: float | None, isl: int, osl: int) -> int:
    """Prefill replicas that keep one decode replica fed up to 2.5x its analytic rate (the
    capacity search brackets up to about 4x its start; the analytic decode bound is
    optimistic), at most 16."""
    if not prefill_tokens_per_s:
        return 1
    need = 2.5 * decode.tokens_per_s / osl * isl / prefill_tokens_per_s
    return max(1, min(16, math.ceil(need)))


@dataclass(frozen=True)
class Links:
    """What the KV routes need: the cluster, model, KV dtype and the TTFT target."""

    cluster: ClusterSpec
    model: ModelSpec
    kv_dtype: str
    ttft_s: float | None


def routes(pre: list[Evaluation], dec: list[Evaluation], isl: int, links: Links) -> list[KvRoute]:
    """The allowed (prefill, decode) pairs and the prompt tokens/s each prefill replica's
    link share carries; a pair whose TTFT with the transfer misses the target is left out."""
    out = []
    for p in pre:
        run = capacity_run_link(links.cluster, links.model, links.kv_dtype, isl, p.knobs)
        for d in dec:
            kl = kv_link(links.cluster, links.model, links.kv_dtype, isl, p.knobs, d.knobs)
            if links.ttft_s is not None and pair_ttft_s(p, kl, run) > links.ttft_s:
                continue
            out.append(KvRoute(prefill=p.knobs.id, decode=d.knobs.id, prompt_tokens_per_s=kl.prompt_tokens_per_s))
    return out


def solve(evals: list[Evaluation], isl: int, osl: int, demand_rps: float, objective: str,
          availability: dict[str, int] | None, budget_w: float | None, use_measured_power: bool,
          links: Links | None = None) -> DisaggPlan | None:
    """``plan_disaggregated`` over the role evaluations with a positive capacity (tokens/s =
    requests/s x mean prompt or output tokens), with the KV routes of ``links`` when given;
    None without options for both roles."""
    pre, dec = [], []
    pre_e, dec_e = [], []
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
            pre_e.append(e)
        elif e.knobs.role == "decode":
            dec.append(DecodeOption(**common, output_tokens_per_s=rps * osl))  # type: ignore[arg-type]
            dec_e.append(e)
    if not pre or not dec:
        return None
    kv = None if links is None else tuple(routes(pre_e, dec_e, isl, links))
    return plan_disaggregated(DisaggProblem(prefill=tuple(pre), decode=tuple(dec), prompt_tokens_per_s=demand_rps * isl,
                                            output_tokens_per_s=demand_rps * osl, objective=objective,  # type: ignore[arg-type]
                                            availability=availability, power_budget_w=budget_w, routes=kv))


def entry(plan: DisaggPlan, evals: list[Evaluation], engine: str, demand_rps: float,
          availability: dict[str, int] | None, budget_w: float | None, links: Links | None = None,
          isl: int = 0) -> PlanEntry:
    """A plan entry from an optimal xPyD plan: prefill pools first, then decode pools, and
    the KV link between them (``links`` given)."""
    by_id = {e.knobs.id: e for e in evals}
    kv: dict[str, object] = {}
    if links is not None and plan.prefill and plan.decode:
        pk, dk = by_id[next(iter(plan.prefill))].knobs, by_id[next(iter(plan.decode))].knobs
        kl = kv_link(links.cluster, links.model, links.kv_dtype, isl, pk, dk)
        kv = {"kv_link": f"{kl.route} {kl.link}", "kv_transfer_s": kl.transfer_s}
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
    if plan.kv_link_load is not None and plan.kv_link_load >= 1 - 1e-6:
        binding.append("kv_transfer")
    kinds = "+".join(plan.prefill_gpus) + "->" + "+".join(plan.decode_gpus)
    return PlanEntry(name=f"disaggregated {plan.x}P{plan.y}D {kinds}", pools=tuple(pools),
                     objective=plan.objective_name, objective_value=float(plan.objective or 0.0),
                     predicted_goodput_rps=demand_rps, cost_per_hour=plan.cost_per_hour, gpus=plan.gpus,
                     gpus_by_type=plan.gpus_by_type, power_w=plan.power_w, binding=tuple(binding), **kv)  # type: ignore[arg-type]
