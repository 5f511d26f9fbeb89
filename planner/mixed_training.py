"""Training plans that pipeline across GPU types (a cluster of several pools).

Every pool contributes ``pp_i = gpus_i / (tp dp)`` pipeline stages of the same TP and DP
degrees; the pools are chained in an order (all orders are tried), and the layers are split
across the stages by the integer program of ``stage_layers`` so slower GPUs get fewer layers,
each stage within its GPU's memory (``sim.training.memory.stage_memory`` with the stage's
layers and the micro-batches 1F1B keeps in flight there).

The training simulator runs one GPU type per job, so these plans are priced from per-stage
estimates, not simulated: each stage's forward and backward per micro-batch come from the
simulator's layer prices on its GPU type (``LayerCoster``), and the step follows the 1F1B
formula for unequal stages, ``sum_s (F_s + B_s) + (m - 1) max_s (F_s + B_s)``, without
data-parallel or point-to-point communication, the optimizer or host dispatch. Board energy
is the stages' kernel energy plus gap power for the rest of the step (``sim.training.energy``'s
accounting).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import permutations

from fleetsim.calibration import get_cost_model
from fleetsim.calibration.power import power_state
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.cluster import node_host_power_w, price_per_gpu_hour
from fleetsim.sim.training.flops import model_flops
from fleetsim.sim.training.job import TrainJob, TrainParallel
from fleetsim.sim.training.layer_ops import LayerCoster
from fleetsim.sim.training.memory import stage_memory
from fleetsim.sim.training.placement import CollectivePricer

from .stage_layers import assign_layers
from .training import (
    MAX_MICRO_BATCH,
    RECOMPUTE_ORDER,
    Rejection,
    Score,
    TrainCandidate,
    TrainEvaluation,
    divisors,
)

MIXED_MICRO_BATCHES = (1, 2, 4)
"""Micro-batches tried for mixed plans (each needs its own integer program per order)."""


@dataclass
class MixedResult:
    plans: list[tuple[TrainEvaluation, TrainJob]]
    rejected: list[Rejection] = field(default_factory=list)
    candidates: int = 0


def _pool_job(base: TrainJob, pool: int, tp: int, dp: int, pp: int, mb: int, rc: str,
              split: tuple[int, ...] | None) -> TrainJob:
    """A job on ``pool`` for pricing and memory only (its GPU count is not checked)."""
    return base.model_copy(update={
        "pool": pool, "micro_batch": mb, "recompute": rc, "zero": 1 if dp > 1 else 0, "schedule": "1f1b",
        "parallel": TrainParallel(tp=tp, pp=pp, dp=dp, sequence_parallel=tp > 1 and base.seq_len % tp == 0,
                                  layer_split=split),
    })


def _cap(base: TrainJob, pool: int, tp: int, dp: int, P: int, s: int, mb: int, rc: str, m: int) -> int:
    """Most layers stage ``s`` (of ``P``) on ``pool``'s GPU holds within its HBM."""
    L = base.model.num_layers
    hbm = get_gpu(base.cluster.pools[pool].node.gpu).memory_bytes
    held = min(P - s, m)

    def ok(x: int) -> bool:
        rest = L - x
        others = [rest // (P - 1) + (1 if i < rest % (P - 1) else 0) for i in range(P - 1)] if P > 1 else []
        split = tuple(others[:s] + [x] + others[s:])
        job = _pool_job(base, pool, tp, dp, P, mb, rc, split if P > 1 else None)
        return stage_memory(job, s, held).total_bytes <= hbm

    lo, hi = 0, L - (P - 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def mixed_search(base: TrainJob, objective: str, top: int, tokens: float | None) -> MixedResult:
    """Plans using every pool in one pipeline (module doc), best ``top`` by ``objective``."""
    cl, m_spec = base.cluster, base.model
    L, B = m_spec.num_layers, base.global_batch
    out = MixedResult(plans=[])
    if m_spec.is_moe or len(cl.pools) < 2:
        return out
    score = Score(objective, base)
    gpus = [p.gpus for p in cl.pools]
    doms = [min(p.gpus_used_per_node, p.node.scale_up_domain) for p in cl.pools]
    tps = [t for t in divisors(min(doms)) if m_spec.num_heads % t == 0 and m_spec.intermediate_size % t == 0
           and all(g % t == 0 for g in gpus)]
    found: list[tuple[float, tuple, TrainEvaluation, TrainJob]] = []
    for tp in tps:
        for dp in divisors(min(gpus) // tp):
            if any(g % (tp * dp) for g in gpus) or B % dp:
                continue
            pps = [g // (tp * dp) for g in gpus]
            P = sum(pps)
            if P > L:
                continue
            for mb in MIXED_MICRO_BATCHES:
                if mb > MAX_MICRO_BATCH or (B // dp) % mb:
                    continue
                m = B // (dp * mb)
                for order in permutations(range(len(gpus))):
                    for rc in RECOMPUTE_ORDER:
                        ev = _plan(base, order, pps, tp, dp, mb, rc, m, tokens, out)
                        if ev is not None:
                            found.append((score.score(ev[0]), ev[0].candidate.sort_key() + (order,), *ev))
                            break
    found.sort(key=lambda t: (t[0], t[1]))
    out.plans = [(ev, job) for _, _, ev, job in found[:top]]
    return out


def _plan(base: TrainJob, order: tuple[int, ...], pps: list[int], tp: int, dp: int, mb: int, rc: str,
          m: int, tokens: float | None, out: MixedResult) -> tuple[TrainEvaluation, TrainJob] | None:
    P = sum(pps)
    stage_pool = [i for i in order for _ in range(pps[i])]
    coster: dict[int, LayerCoster] = {}
    for i in order:
        job = _pool_job(base, i, tp, dp, pps[i], mb, rc, None)
        gpu = get_gpu(base.cluster.pools[i].node.gpu)
        cost = get_cost_model(gpu)
        coster[i] = LayerCoster(job, gpu, cost, CollectivePricer(job, gpu, cost), 1.0,
                                power_state(gpu, base.power_cap_w))
    kinds = base.model.layer_kinds
    per_layer = {i: sum(sum(_lt(c, k, base, j)[:2]) for j, k in enumerate(kinds)) / len(kinds)
                 for i, c in coster.items()}
    per_layer_j = {i: sum(_lt(c, k, base, j)[2] for j, k in enumerate(kinds)) / len(kinds) for i, c in coster.items()}
    (ef, efj), (eb, ebj) = coster[stage_pool[0]].embedding_priced()
    (hf, hfj), (hb, hbj), _ = coster[stage_pool[-1]].head_priced()
    fixed = [0.0] * P
    fixed[0] += ef + eb
    fixed[-1] += hf + hb
    caps = [_cap(base, stage_pool[s], tp, dp, P, s, mb, rc, m) for s in range(P)]
    out.candidates += 1
    cand = TrainCandidate(pool=order[0], tp=tp, pp=P, dp=dp, micro_batch=mb, recompute=rc,  # type: ignore[arg-type]
                          zero=1 if dp > 1 else 0, sequence_parallel=tp > 1 and base.seq_len % tp == 0)
    sol = assign_layers([per_layer[i] for i in stage_pool], caps, base.model.num_layers, fixed)
    if sol is None:
        out.rejected.append(Rejection(candidate=cand, constraint="memory",
                                      reason=f"pools in order {list(order)}: stages hold at most {sum(caps)} of "
                                             f"{base.model.num_layers} layers within their memory"))
        return None
    cand = cand.model_copy(update={"layer_split": sol.layers})
    stage_s = [fixed[s] + per_layer[stage_pool[s]] * sol.layers[s] for s in range(P)]
    step = sum(stage_s) + (m - 1) * max(stage_s)
    stage_j = [per_layer_j[stage_pool[s]] * sol.layers[s] for s in range(P)]
    stage_j[0] += efj + ebj
    stage_j[-1] += hfj + hbj
    per_stage = tp * dp
    energy = 0.0
    for s in range(P):
        pool = stage_pool[s]
        gap_w = power_state(get_gpu(base.cluster.pools[pool].node.gpu), base.power_cap_w).gap_w()
        energy += per_stage * (m * stage_j[s] + gap_w * max(0.0, step - m * stage_s[s]))
    cl = base.cluster
    world = tp * dp * P
    peak = sum(get_gpu(cl.pools[i].node.gpu).flops(base.recipe.dtype) * pps[i] * per_stage for i in order)
    host_w = sum(node_host_power_w(cl.pools[i].node) * -(-pps[i] * per_stage // cl.pools[i].gpus_used_per_node)
                 for i in order)
    tps = base.tokens_per_step
    facility = (energy + host_w * step) * cl.pue
    prices = [price_per_gpu_hour(cl, i) for i in order]
    price = None if any(p is None for p in prices) else sum(
        float(p) * pps[i] * per_stage for p, i in zip(prices, order, strict=True)) / world  # type: ignore[arg-type]
    train_s = None if tokens is None else tokens / tps * step
    names = "+".join(f"{pps[i]}x{cl.pools[i].node.gpu}" for i in order)
    ev = TrainEvaluation(
        candidate=cand, gpu=names, gpus=world, time_s=step, mfu=model_flops(base.model, base.global_batch, base.seq_len)
        / (step * peak), tokens_per_s=tps / step, peak_memory_bytes=0.0, memory={}, energy_j=energy,
        facility_j_per_token=facility / tps, train_time_s=train_s,
        train_cost_usd=None if train_s is None or price is None else train_s / 3600 * world * price,
        train_energy_j=None if tokens is None else facility / tps * tokens, price_per_gpu_hour=price,
        breakdown={"step_s": step, "compute_s": m * max(stage_s),
                   "bubble_fraction": (sum(stage_s) - max(stage_s)) / (m * max(stage_s)),
                   "stage_imbalance_s": m * (max(stage_s) - min(stage_s))},
        priced_by="per-stage estimate",
    )
    job = _pool_job(base, order[0], tp, dp, P, mb, rc, sol.layers)
    mems = [stage_memory(_pool_job(base, stage_pool[s], tp, dp, P, mb, rc, sol.layers), s, min(P - s, m))
            for s in range(P)]
    worst = max(mems, key=lambda x: x.total_bytes)
    ev = ev.model_copy(update={"peak_memory_bytes": worst.total_bytes,
                               "memory": {k: float(v) for k, v in worst.as_dict().items() if k != "stage"}})
    return ev, job


def _lt(c: LayerCoster, kind: str, base: TrainJob, i: int) -> tuple[float, float, float]:
    lt = c.layer(kind, base.model.is_local_layer(i))
    return lt.fwd_s, lt.bwd_s, lt.fwd_j + lt.bwd_j
