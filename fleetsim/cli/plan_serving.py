"""``fleetsim plan`` with the serving planner's flags: objective, market, power budget,
SLO percentile, simulation, JSON, explanation. Parses, calls ``fleetsim.plan_serving``,
prints; the default ``fleetsim plan`` output (no planner flag) is ``fleetsim.cli.plan``'s."""

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
    g = p.add_argument_group("serving planner (any of these runs the full planner)")
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
    return any(getattr(args, f, None) not in (None, False) for f in PLANNER_FLAGS)


def run(args: argparse.Namespace) -> int:
    from fleetsim.planning import plan_serving

    if args.cluster is not None and args.market is not None:
        from fleetsim.hardware.errors import ConfigError

        raise ConfigError("give either --cluster or --market, not both")
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
        executor=getattr(args, "executor", None), disaggregate=args.disaggregate or "auto")
    res = plan.search
    files = None
    if getattr(args, "out", None):
        from fleetsim.cli.plan_out import write_serving_plans

        files = write_serving_plans(args.out, res, table(res))
    if args.json:
        print(json.dumps(_finite(res.to_json()), indent=2))
        return 0 if res.status == "optimal" else 1
    if files is not None:
        from fleetsim.cli.plan_out import written

        print(written(files))
    print(f"Serving plans for {plan.model.name} ({res.objective}; {res.isl} prompt + {res.osl} output tokens "
          f"mean; {res.simulations} simulations, {res.seconds:.1f} s)")
    if res.status != "optimal":
        print(res.explain())
        return 1
    print_frame(table(res))
    if args.explain:
        print()
        print(res.explain())
    return 0


def table(res: Any) -> pd.DataFrame:
    """One row per plan, best first, in human units."""
    rows = []
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
                     "meets_slo": "-" if c is None else ("yes" if c.meets_slo else "NO")})
    return pd.DataFrame.from_records(rows)


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x
