"""A first analytic serving plan: which TP x replicas to run on each GPU pool.

For every GPU type of the cluster and every tensor-parallel size that divides the model and
fits inside one node, the plan sizes the KV cache, then models one replica in steady state
with continuous batching:

* ``P``    = prefill time of one prompt of ``isl`` tokens (eager),
* every ``osl`` iterations the replica must also prefill the ``b`` prompts that replace the
  finished ones; chunked prefill spreads them, so each iteration carries ``b`` decodes at
  mean context ``isl + osl/2`` plus ``k = b * isl / osl`` prompt tokens, priced as ONE
  mixed iteration ``I(b, k)`` (the decode and prefill tokens share the weight reads),
* ``TPOT(b) = I(b, k)``; request throughput ``X(b) = b / (osl * TPOT(b))`` and output
  tokens/s ``X(b) * osl``,
* ``TTFT`` ~ ``P`` plus the one iteration in flight when the request arrives, ``TPOT(b)``.

Each row carries the 80% prediction interval of its TTFT and TPOT (``calibration.intervals``),
from the log bounds the timer gives for ``P`` and ``I(b, k)``; throughput scales with
``1 / TPOT``, so its range is the point times ``TPOT / TPOT_p90`` to ``TPOT / TPOT_p10``.

The batch ``b`` is the largest that the KV cache holds (``b * (isl + osl)`` tokens), that the
scheduler allows (``max_num_seqs``) and that meets the TPOT and TTFT targets.

A model that does not fit in the memory of one node's TP group gets pipeline stages across
nodes: the smallest power-of-two ``pp`` that fits. Such a replica runs ``pp`` virtual engines
(as vLLM does): each stage works on a different engine's batch, so with balanced stages an
engine's iteration takes the whole-model time ``I(b, k)`` (its TPOT) and the replica serves
``pp`` batches at once: ``X = pp * b / (osl * TPOT)``, with ``pp * b`` sequences in the KV cache. With a request
rate the plan asks for ``ceil(rate / X(b))`` replicas and flags a shortfall. The discrete-event
simulator (``fleetsim simulate``) checks a plan under real arrivals; this module is the fast
pre-filter the full planner builds on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from fleetsim.hardware.cluster import price_per_gpu_hour
from fleetsim.hardware.errors import ConfigError, FleetsimError, InfeasibleError
from fleetsim.hardware.specs import ClusterSpec, GPUSpec, PoolSpec


@dataclass(frozen=True)
class ServingTargets:
    """What the user asks of the deployment: lengths, an optional rate and latency targets."""

    isl: int
    osl: int
    rate_rps: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    max_num_seqs: int = 256

    def __post_init__(self) -> None:
        for name in ("isl", "osl", "max_num_seqs"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v > 0):
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        for name in ("rate_rps", "ttft_s", "tpot_s"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a positive number, got {v!r}")


@dataclass(frozen=True)
class ReplicaTimer:
    """Step times of one replica configuration (seconds), supplied by the cost model."""

    prefill_s: Callable[[int], float]
    """Prefill of one prompt of n tokens."""
    iteration_s: Callable[[int, int, int], float]
    """One iteration of b decodes at context c plus k prompt tokens of new requests."""
    kv_capacity_tokens: int
    """Tokens of KV cache the replica holds."""
    engines: int = 1
    """Batches in flight at once: the pipeline depth (virtual engines), 1 without PP."""
    max_replicas: int = 1
    """Replicas of this layout the pool holds (``sim.serving.feasibility.check_replica``)."""
    prefill_log_band: Callable[[int], tuple[float, float]] | None = None
    """(q10, q90) of ``ln(measured / predicted)`` for ``prefill_s(n)`` (the 80% interval, TTFT's class)."""
    iteration_log_band: Callable[[int, int, int], tuple[float, float]] | None = None
    """(q10, q90) of ``ln(measured / predicted)`` for ``iteration_s(b, c, k)`` (TPOT's class)."""


@dataclass(frozen=True)
class PlanRow:
    """One candidate: a GPU type, a TP size and how many replicas of it."""

    gpu: str
    tp: int
    replicas: int
    gpus_used: int
    batch: int
    """Sequences decoding at once in one replica (all its virtual engines)."""
    kv_capacity_tokens: int
    prefill_s: float
    iteration_s: float
    ttft_s: float
    tpot_s: float
    replica_rps: float
    output_tok_s: float
    meets_latency: bool
    replicas_needed: int | None
    meets_rate: bool
    price_per_hour_usd: float | None
    usd_per_million_output_tokens: float | None
    note: str = ""
    pp: int = 1
    ttft_s_p10: float = math.nan
    ttft_s_p90: float = math.nan
    tpot_s_p10: float = math.nan
    tpot_s_p90: float = math.nan
    """80% prediction intervals of ``ttft_s`` and ``tpot_s``; NaN when the timer gives no bounds."""

    @property
    def output_tok_s_p10(self) -> float:
        """Lower end of the throughput: every iteration at the slow end ``tpot_s_p90``."""
        return self.output_tok_s * self.tpot_s / self.tpot_s_p90

    @property
    def output_tok_s_p90(self) -> float:
        """Upper end of the throughput: every iteration at the fast end ``tpot_s_p10``."""
        return self.output_tok_s * self.tpot_s / self.tpot_s_p10


@dataclass(frozen=True)
class Rejected:
    gpu: str
    tp: int
    reason: str
    pp: int = 1


@dataclass
class FirstPlan:
    targets: ServingTargets
    rows: list[PlanRow] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def best(self) -> PlanRow | None:
        return self.rows[0] if self.rows else None


def tp_candidates(num_heads: int, num_kv_heads: int, gpus_per_node: int) -> list[int]:
    """Powers of two up to one node whose TP divides the attention heads."""
    out = []
    tp = 1
    while tp <= gpus_per_node:
        kv_ok = num_kv_heads % tp == 0 or tp % num_kv_heads == 0
        if num_heads % tp == 0 and kv_ok:
            out.append(tp)
        tp *= 2
    return out


def size_replica(
    targets: ServingTargets, timer: ReplicaTimer
) -> tuple[int, float, float, float, float, float] | str:
    """Pick the batch for one replica. Returns (b, P, D(b), TTFT, TPOT, X) or a reason string."""
    isl, osl = targets.isl, targets.osl
    ctx = isl + osl // 2
    e = timer.engines
    b_max = min(targets.max_num_seqs, timer.kv_capacity_tokens // ((isl + osl) * e))
    if b_max < 1:
        return (
            f"KV cache holds {timer.kv_capacity_tokens} tokens, less than one request "
            f"of {isl + osl} tokens"
        )
    p = timer.prefill_s(isl)
    if targets.ttft_s is not None and p > targets.ttft_s:
        return f"prefill of {isl} tokens takes {p * 1e3:.1f} ms > TTFT target {targets.ttft_s * 1e3:.1f} ms"

    def metrics(b: int) -> tuple[float, float, float, float]:
        d = timer.iteration_s(b, ctx, round(b * isl / osl))
        tpot = d
        ttft = p + tpot
        x = e * b / (osl * tpot)
        return d, ttft, tpot, x

    def ok(b: int) -> bool:
        _, ttft, tpot, _ = metrics(b)
        if targets.tpot_s is not None and tpot > targets.tpot_s:
            return False
        return not (targets.ttft_s is not None and ttft > targets.ttft_s)

    if not ok(1):
        d, ttft, tpot, _ = metrics(1)
        return (
            f"even one sequence misses the latency targets (TPOT {tpot * 1e3:.2f} ms, "
            f"TTFT {ttft * 1e3:.1f} ms)"
        )
    # Latency grows with b, so binary-search the largest b that meets the targets.
    lo, hi = 1, b_max
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    d, ttft, tpot, x = metrics(lo)
    return lo * e, p, d, ttft, tpot, x


def pipeline_depths(pool_gpus: int, tp: int, num_layers: int) -> list[int]:
    """Powers of two ``pp`` with ``tp * pp`` GPUs in the pool and at most one layer a stage."""
    out, pp = [], 1
    while tp * pp <= pool_gpus and pp <= num_layers:
        out.append(pp)
        pp *= 2
    return out


def plan_pool(
    pool: PoolSpec,
    gpu: GPUSpec,
    targets: ServingTargets,
    tps: list[int],
    make_timer: Callable[[PoolSpec, GPUSpec, int, int], ReplicaTimer],
    num_layers: int,
    usd_per_gpu_h: float | None = None,
) -> tuple[list[PlanRow], list[Rejected]]:
    """All TP candidates of one pool, each with the smallest pipeline depth that fits;
    ``usd_per_gpu_h`` prices a GPU-hour (default: the GPU's catalog price). ``make_timer``
    raises ``InfeasibleError`` for a layout that does not fit (the shared feasibility check),
    and a deeper pipeline is tried."""
    rows: list[PlanRow] = []
    rejected: list[Rejected] = []
    if usd_per_gpu_h is None:
        usd_per_gpu_h = gpu.price_per_hour_usd
    for tp in tps:
        timer: ReplicaTimer | None = None
        why: Rejected | None = None
        for pp in pipeline_depths(pool.gpus, tp, num_layers):
            try:
                timer = make_timer(pool, gpu, tp, pp)
                break
            except InfeasibleError as exc:
                why = Rejected(gpu.name, tp, exc.reason, pp)  # try a deeper pipeline
            except FleetsimError as exc:
                why = Rejected(gpu.name, tp, str(exc), pp)
                break
        if timer is None:
            if why is not None:
                rejected.append(why)
            continue
        pp = timer.engines
        sized = size_replica(targets, timer)
        if isinstance(sized, str):
            rejected.append(Rejected(gpu.name, tp, sized, pp))
            continue
        b, p, d, ttft, tpot, x = sized
        ttft_band, tpot_band = _bands(targets, timer, b // pp, ttft, tpot)
        replicas = timer.max_replicas
        needed = math.ceil(targets.rate_rps / x) if targets.rate_rps else None
        used = replicas if needed is None else min(replicas, needed)
        gpus_used = used * tp * pp
        price = usd_per_gpu_h * gpus_used if usd_per_gpu_h else None
        out_tok_s = x * targets.osl * used
        usd_per_m = price / (out_tok_s * 3600) * 1e6 if price else None
        rows.append(
            PlanRow(
                gpu=gpu.name,
                tp=tp,
                replicas=used,
                gpus_used=gpus_used,
                batch=b,
                kv_capacity_tokens=timer.kv_capacity_tokens,
                prefill_s=p,
                iteration_s=d,
                ttft_s=ttft,
                tpot_s=tpot,
                replica_rps=x,
                output_tok_s=out_tok_s,
                meets_latency=True,
                replicas_needed=needed,
                meets_rate=needed is None or needed <= replicas,
                price_per_hour_usd=price,
                usd_per_million_output_tokens=usd_per_m,
                note="" if needed is None or needed <= replicas else _short_note(needed, replicas),
                pp=pp,
                ttft_s_p10=ttft_band[0],
                ttft_s_p90=ttft_band[1],
                tpot_s_p10=tpot_band[0],
                tpot_s_p90=tpot_band[1],
            )
        )
    return rows, rejected


def _bands(targets: ServingTargets, timer: ReplicaTimer, b: int, ttft: float, tpot: float
           ) -> tuple[tuple[float, float], tuple[float, float]]:
    """(p10, p90) of TTFT (the prefill's class) and TPOT (the iteration's class) for a
    replica sized at ``b`` sequences per engine; NaN without the timer's bounds."""
    nan = (math.nan, math.nan)
    if timer.prefill_log_band is None or timer.iteration_log_band is None:
        return nan, nan
    isl, osl = targets.isl, targets.osl
    lo_p, hi_p = timer.prefill_log_band(isl)
    lo_d, hi_d = timer.iteration_log_band(b, isl + osl // 2, round(b * isl / osl))
    return (ttft * math.exp(lo_p), ttft * math.exp(hi_p)), (tpot * math.exp(lo_d), tpot * math.exp(hi_d))


def _short_note(needed: int, replicas: int) -> str:
    """``needs 3 replicas, has 1`` (a huge need in 3 significant digits)."""
    need = f"{needed}" if needed < 10**6 else f"{float(needed):.3g}"
    return f"needs {need} replica{'' if needed == 1 else 's'}, has {replicas}"


def rank(rows: list[PlanRow], with_rate: bool) -> list[PlanRow]:
    """Rows that meet the rate first; then fewest GPUs (with a rate) or most tokens/s."""
    if with_rate:
        return sorted(rows, key=lambda r: (not r.meets_rate, r.gpus_used, -r.output_tok_s, r.tp, r.pp))
    return sorted(rows, key=lambda r: (-r.output_tok_s, r.tp, r.pp))


def first_plan(
    cluster: ClusterSpec,
    gpus: dict[str, GPUSpec],
    num_heads: int,
    num_kv_heads: int,
    targets: ServingTargets,
    make_timer: Callable[[PoolSpec, GPUSpec, int, int], ReplicaTimer],
    num_layers: int,
) -> FirstPlan:
    """Plan every pool of ``cluster``; ``gpus`` maps each pool's GPU name to its spec."""
    plan = FirstPlan(targets)
    rows: list[PlanRow] = []
    for i, pool in enumerate(cluster.pools):
        gpu = gpus[pool.node.gpu]
        per_node = pool.gpus_per_node or pool.node.gpus_per_node
        tps = tp_candidates(num_heads, num_kv_heads, per_node)
        if not tps:
            plan.rejected.append(Rejected(gpu.name, 0, f"no TP size up to {per_node} divides {num_heads} heads"))
            continue
        r, rej = plan_pool(pool, gpu, targets, tps, make_timer, num_layers, price_per_gpu_hour(cluster, i))
        rows += r
        plan.rejected += rej
    plan.rows = rank(rows, targets.rate_rps is not None)
    return plan
