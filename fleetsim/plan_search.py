"""The serving planner's public edge: markets and inventories as supply pools, names resolved
to specs, then ``planner.serving.search.search``.

``--market H100:3.0:64,H200:3.5:32`` is a list of GPU type : $ per GPU-hour : GPUs for rent;
each becomes a pool of whole 8-GPU nodes of the catalog's default node for that GPU (the
cluster shorthand's rule). A fixed inventory is the cluster's pools at their catalog or
cluster prices; with a facility power budget the inventory's idle draw (accelerators idle,
hosts, PUE: ``hardware.cluster.idle_power_w``) comes off the budget first, since the GPUs
draw it whether used or not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.checks import non_negative_int, positive
from fleetsim.hardware.cluster import (
    check_power_budget,
    idle_power_w,
    load_cluster,
    node_host_power_w,
    price_per_gpu_hour,
)
from fleetsim.hardware.errors import ConfigError, suggest
from fleetsim.hardware.specs import ClusterSpec
from fleetsim.planner.executor import make_executor
from fleetsim.planner.serving.lora import adapter_need, search_adapters
from fleetsim.planner.serving.records import OBJECTIVES, MarketOffer, SearchSpace, Slo
from fleetsim.planner.serving.search import DISAGGREGATE, ServingPlans, plain_map, search
from fleetsim.planner.serving.space import Supply, TimerFactory
from fleetsim.sim.serving.config import EngineConfig, VllmScheduler
from fleetsim.sim.serving.feasibility import gpus_per_node
from fleetsim.workloads.models import ModelSpec
from fleetsim.workloads.workload import Workload


def parse_market(text: str | list[MarketOffer] | list[dict[str, Any]]) -> list[MarketOffer]:
    """``GPU:PRICE:COUNT[,GPU:PRICE:COUNT...]`` (or offers / dicts of their fields) as offers;
    an unknown GPU, a negative price or count is one line naming the entry."""
    if isinstance(text, list):
        offers = [o if isinstance(o, MarketOffer) else MarketOffer(**o) for o in text]
    elif isinstance(text, str):
        offers = []
        for part in [p.strip() for p in text.split(",") if p.strip()]:
            bits = part.split(":")
            if len(bits) != 3:
                raise ConfigError(f"market entry {part!r}: expected GPU:PRICE_PER_GPU_HOUR:COUNT")
            try:
                price, count = float(bits[1]), int(bits[2])
            except ValueError:
                raise ConfigError(f"market entry {part!r}: price must be a number and count an integer") from None
            if price < 0:
                raise ConfigError(f"market entry {part!r}: price must be >= 0, got {price:g}")
            if count < 0:
                raise ConfigError(f"market entry {part!r}: count must be >= 0, got {count}")
            offers.append(MarketOffer(gpu=bits[0].strip(), price_per_gpu_hour=price, available=count))
    else:
        raise ConfigError(f"market must be a string such as H100:3.0:64, got {type(text).__name__}")
    if not offers:
        raise ConfigError("market: no entries; expected e.g. H100:3.0:64,H200:3.5:32")
    seen = set()
    for o in offers:
        name = get_gpu(o.gpu).name  # unknown GPU: one line with close matches
        if name in seen:
            raise ConfigError(f"market: {o.gpu!r} appears twice")
        seen.add(name)
    return offers


def market_supply(offers: list[MarketOffer]) -> tuple[ClusterSpec, list[Supply]]:
    """A cluster of every GPU for rent and its supply pools at the market's prices."""
    terms = [f"{max(o.available, 1)}x{o.gpu}" for o in offers]
    cl = load_cluster("+".join(terms))
    supplies = []
    for i, (o, pool) in enumerate(zip(offers, cl.pools, strict=True)):
        gpu = get_gpu(pool.node.gpu)
        supplies.append(Supply(index=i, pool=pool, gpu=gpu, price_per_gpu_hour=o.price_per_gpu_hour,
                               available=o.available, host_w_per_gpu=node_host_power_w(pool.node) / gpus_per_node(pool),
                               pue=cl.pue, count_idle=False))
    return cl, supplies


def inventory_supply(cl: ClusterSpec) -> list[Supply]:
    """The cluster's pools at their prices (0 where neither cluster nor catalog has one)."""
    out = []
    for i, pool in enumerate(cl.pools):
        gpu = get_gpu(pool.node.gpu)
        out.append(Supply(index=i, pool=pool, gpu=gpu, price_per_gpu_hour=price_per_gpu_hour(cl, i) or 0.0,
                          available=pool.gpus, host_w_per_gpu=node_host_power_w(pool.node) / gpus_per_node(pool),
                          pue=cl.pue, count_idle=True))
    return out


def budget_over_baseline(cl: ClusterSpec, supplies: list[Supply], budget_w: float | None,
                         market: bool) -> float | None:
    """Watts the chosen replicas may add: the budget less the inventory's idle draw; for a
    market the budget must at least power one idle GPU with its host share."""
    if budget_w is None:
        return None
    budget_w = positive(budget_w, "power_budget_w")
    if not market:
        check_power_budget(cl.model_copy(update={"power_budget_w": budget_w}), "power_budget_w")
        return budget_w - idle_power_w(cl)
    least = min(s.pue * (s.gpu.idle_power_w + s.host_w_per_gpu) for s in supplies)
    if budget_w < least:
        raise ConfigError(f"power_budget_w={budget_w:g} W is below the idle draw of one market GPU "
                          f"with its host share ({least:,.0f} W)")
    return budget_w


def check_disaggregate(mode: str, objective: str, demand_rps: float | None) -> None:
    """``disaggregate`` is auto, never or only; only needs a demand and a min_* objective."""
    if mode not in DISAGGREGATE:
        raise ConfigError(f"disaggregate {mode!r} is not one of {', '.join(DISAGGREGATE)}"
                          + suggest(str(mode), DISAGGREGATE))
    if mode == "only" and (demand_rps is None or objective == "max_goodput"):
        raise ConfigError("disaggregate 'only' needs a request rate (--rate) and a min_* objective: "
                          "an xPyD plan covers a demand's prompt and output token rates")


def evaluator(executor: Any, workers: int | None = None) -> Callable[..., list[Any]] | None:
    """``evaluate_many`` for ``executor``: None (in-process), ``local``/``ray`` (by name,
    ``planner.executor.make_executor``) or an object with ``map(fn, items)``."""
    if executor is None:
        return None
    if isinstance(executor, str):
        return make_executor(executor, workers=workers).map
    if callable(getattr(executor, "map", None)):
        return executor.map  # type: ignore[no-any-return]
    raise ConfigError(f"executor must be 'local', 'ray' or an executor object, got {type(executor).__name__}")


def run_search(spec: ModelSpec, cl: ClusterSpec, supplies: list[Supply], workload: Workload,
               demand_rps: float | None, slo: Slo, objective: str | None, eng: EngineConfig,
               make_timer: Callable[..., Any], *, budget_w: float | None, simulate: bool, seed: int,
               space: SearchSpace | None, buckets: int,
               evaluate_many: Callable[..., list[Any]] | None, disaggregate: str = "auto") -> ServingPlans:
    """Validate the planner's own inputs and run the search; a workload that carries LoRA
    adapters is planned with adapter slots (``planner.serving.lora``)."""
    obj = objective or ("min_cost" if demand_rps is not None else "max_goodput")
    if obj not in OBJECTIVES:
        raise ConfigError(f"objective {obj!r} is not one of {', '.join(OBJECTIVES)}")
    if obj != "max_goodput" and demand_rps is None:
        raise ConfigError(f"objective {obj!r} needs a request rate (rate_rps / --rate)")
    seed = non_negative_int(seed, "seed")
    check_disaggregate(disaggregate, obj, demand_rps)
    buckets = int(positive(buckets, "buckets"))

    def timer(pool: Any, gpu: Any, tp: int, pp: int, ep: int, tokens: int) -> Any:
        e = eng.model_copy(update={"scheduler": VllmScheduler(max_num_batched_tokens=tokens)})
        return make_timer(pool, gpu, tp, pp, ep, e)

    factory: TimerFactory = timer
    need = adapter_need(workload, spec)
    if need is not None:
        def timer_for(lora: Any) -> TimerFactory:
            def with_slots(pool: Any, gpu: Any, tp: int, pp: int, ep: int, tokens: int) -> Any:
                e = eng.model_copy(update={"scheduler": VllmScheduler(max_num_batched_tokens=tokens), "lora": lora})
                return make_timer(pool, gpu, tp, pp, ep, e)
            return with_slots

        return search_adapters(spec, cl, supplies, workload, demand_rps, slo, obj, eng.profile, eng.dtype,
                               eng.kv_dtype, timer_for, need, space=space, buckets=buckets, power_budget_w=budget_w,
                               simulate_capacity=simulate, seed=seed, evaluate_many=evaluate_many or plain_map,
                               disaggregate=disaggregate)
    return search(spec, cl, supplies, workload, demand_rps, slo, obj, eng.profile, eng.dtype, eng.kv_dtype,
                  factory, space=space, buckets=buckets, power_budget_w=budget_w, simulate_capacity=simulate,
                  seed=seed, evaluate_many=evaluate_many or plain_map, disaggregate=disaggregate)
