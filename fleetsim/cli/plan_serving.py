"""``fleetsim plan`` for serving (the default): objective, market, power budget, SLO
percentile, simulation, JSON, explanation. Parses, calls ``fleetsim.plan_serving(...)``'s
full search, prints; ``fleetsim plan --analytic`` (``fleetsim.cli.plan``) is the quick
analytic ranking instead."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import pandas as pd

from fleetsim.cli.args import check_out_dir, positive_float, positive_int
from fleetsim.cli.table import print_frame

PLANNER_FLAGS = ("objective", "market", "power_budget_w", "simulate", "json", "explain", "slo_percentile",
                 "goodput_share", "buckets", "seed", "executor", "disaggregate", "out")


def add_flags(p: argparse.ArgumentParser) -> None:
    """The planner's flags on the ``plan`` parser."""
    g = p.add_argument_group("serving planner")
    g.add_argument("--market", default=None, metavar="GPU:USD_H:N,...",
                   help="GPU types for rent instead of --cluster, e.g. H100:3.0:64,H200:3.5:32")
    g.add_argument("--power-budget-w", type=positive_float, default=None, help="facility power budget (W)")
    g.add_argument("--slo-percentile", type=positive_float, default=None,
                   help="percentile the --ttft-s/--tpot-s targets hold at (default 90)")
    g.add_argument("--goodput-share", type=positive_float, default=None,
                   help="share of requests that must meet both targets (default 0.9)")
    g.add_argument("--buckets", type=positive_int, default=None, help="request-size buckets (default 1)")
    g.add_argument("--simulate", action=argparse.BooleanOptionalAction, default=None,
                   help="simulate the capacity of the top candidates (default on)")
    g.add_argument("--seed", type=int, default=None, help="simulation seed; plans are re-checked with seed + 1")
    g.add_argument("--disaggregate", default=None, metavar="{auto,never,only}",
                   help="prefill/decode disaggregated (xPyD) plans, pools possibly of different GPU types: "
                   "auto ranks them with co-located plans (default; needs --rate), never, or only")


def wanted(args: argparse.Namespace) -> bool:
    """Any planner flag, or a workload that carries LoRA adapters (planned with adapter slots)."""
    return bool(given_flags(args)) or _carries_adapters(getattr(args, "workload", None))


def given_flags(args: argparse.Namespace) -> list[str]:
    """The planner's flags given on the command line, as typed (``--power-budget-w``)."""
    return ["--" + f.replace("_", "-") for f in PLANNER_FLAGS if getattr(args, f, None) not in (None, False)]


def _carries_adapters(spec: str | None) -> bool:
    if not spec:
        return False
    from fleetsim.workloads.defaults import get_workload

    wl = get_workload(spec)
    return wl.adapters is not None or bool((wl.generate(0, num_requests=200).column("adapter_id") >= 0).any())


def run(args: argparse.Namespace) -> int:
    from fleetsim.hardware.errors import ConfigError
    from fleetsim.planning import plan_serving

    if args.cluster is not None and args.market is not None:
        raise ConfigError("give either --cluster or --market, not both")
    if args.cluster is None and args.market is None:
        raise ConfigError("--cluster is required (or --market GPU:USD_H:N,... for GPUs for rent)")
    check_out_dir(getattr(args, "out", None))
    plan = plan_serving(
        args.model, args.cluster if args.market is None else None, isl=args.isl, osl=args.osl,
        workload=args.workload, rate_rps=args.rate, ttft_s=args.ttft_s, tpot_s=args.tpot_s, dtype=args.dtype,
        kv_dtype=args.kv_dtype, engine=args.engine or "vllm",
        objective=args.objective or ("min_cost" if args.rate else "max_goodput"), market=args.market,
        power_budget_w=args.power_budget_w,
        slo_percentile=90.0 if args.slo_percentile is None else args.slo_percentile,
        goodput_share=0.9 if args.goodput_share is None else args.goodput_share,
        simulate=args.simulate is not False, seed=args.seed or 0, buckets=args.buckets or 1,
        executor=getattr(args, "executor", None) or "local", disaggregate=args.disaggregate or "auto")
    res = plan.search
    files = None
    if getattr(args, "out", None):
        from fleetsim.cli.plan_out import write_serving_plans

        files = write_serving_plans(args.out, res, table(res))
    if args.json:
        print(json.dumps(_finite(res.to_json()), indent=2))
        return 0 if res.status == "optimal" else 1
    print(header(plan, res, args))
    if res.status != "optimal":
        print(res.explain())
        return 1
    print_frame(table(res).head(args.top))
    if res.adapters is not None and not args.explain:
        print(res.adapters.describe()[0].strip())
    if args.explain:
        print()
        print(res.explain())
    if files is not None:
        from fleetsim.cli.plan_out import written

        print(written(files))
    return 0


def header(plan: Any, res: Any, args: argparse.Namespace) -> str:
    """What was planned: model, supply, engine, workload, targets, objective, effort."""
    cl = plan.cluster
    supply = (f"a market of {cl.name.replace('+', ', ')} GPUs" if args.market is not None
              else f"{cl.name} ({cl.num_gpus} GPU{'' if cl.num_gpus == 1 else 's'})")
    slo = res.slo
    goals = [f"{name} p{slo.percentile:g} <= {v * 1e3:g} ms" for name, v in (("TTFT", slo.ttft_s), ("TPOT", slo.tpot_s))
             if v is not None]
    targets = (", ".join(goals) + f", {slo.goodput_share:.0%} of requests within both" if goals else
               f"no latency target: a rate counts while the p{slo.percentile:g} queueing delay stays under "
               f"{slo.max_queue_delay_s:g} s")
    demand = f"; demand {res.demand_rps:g} req/s" if res.demand_rps else ""
    lines = [f"Serving plans for {plan.model.name} ({plan.model.params_total() / 1e9:.1f}B params) on {supply}",
             f"engine profile: {plan.engine}",
             f"workload: {res.isl} prompt + {res.osl} output tokens per request, mean ({plan.lengths_from}){demand}",
             f"targets: {targets}",
             f"objective: {res.objective}; {res.simulations} simulations in {res.seconds:.1f} s; "
             "the plans' figures are re-simulated with another seed"]
    for gpu, share in plan.provenance.items():
        lines.append(f"operator costs on {gpu}: " + ", ".join(f"{k} {v:.0%}" for k, v in share.items() if v > 0))
    return "\n".join(lines) + "\n"


def table(res: Any) -> pd.DataFrame:
    """One row per plan, best first, in human units; ``pareto``: no other plan that meets
    the SLO is at once cheaper, faster (p90 TTFT and TPOT) and less energy per token."""
    rows = []
    front = {r["name"]: r["on_frontier"] for r in res.pareto if r.get("kind") == "plan"}
    for i, p in enumerate(res.plans, 1):
        c = p.checked
        ms = (lambda v: None if v is None else round(v * 1e3, 1))  # noqa: E731
        rows.append({"rank": i, "plan": p.name,
                     "pools": " + ".join(f"{x.replicas}x{x.gpu} tp{x.tp}pp{x.pp}"
                                         + (f"@{x.power_cap_w:g}W" if x.power_cap_w else "")
                                         + ("" if x.role == "both" else f" {x.role}") for x in p.pools),
                     "gpus": p.gpus, "usd_h": round(p.cost_per_hour, 2),
                     "usd_per_Mtok": None if p.usd_per_million_tokens is None else round(p.usd_per_million_tokens, 3),
                     "goodput_rps": None if c is None else round(c.goodput_rps, 2),
                     "ttft_p90_ms": ms(c and c.ttft_p90_s), "ttft_p99_ms": ms(c and c.ttft_p99_s),
                     "tpot_p90_ms": ms(c and c.tpot_p90_s), "tpot_p99_ms": ms(c and c.tpot_p99_s),
                     "j_per_tok": None if c is None or c.j_per_output_token is None else round(c.j_per_output_token, 3),
                     "power_kw": None if c is None or c.avg_power_w is None else round(c.avg_power_w / 1e3, 2),
                     "meets_slo": "-" if c is None else ("yes" if c.meets_slo else "NO"),
                     "pareto": "yes" if front.get(p.name) else "-"})
    return pd.DataFrame.from_records(rows)


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x
