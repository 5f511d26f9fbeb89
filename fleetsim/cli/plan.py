"""``fleetsim plan``: what to run for a model on a cluster or a GPU market.

Serving (the default) runs the full planner (``fleetsim.cli.plan_serving``: candidates,
analytic pruning, simulated capacities, integer programs, a re-simulated choice);
``--training`` the training planner; ``--analytic`` the quick analytic ranking of TP x
replica deployments, one GPU type at a time, with no simulation."""

from __future__ import annotations

import argparse

import pandas as pd

from fleetsim.cli.args import positive_float, positive_int
from fleetsim.cli.table import print_frame

RANGES = {"ttft_ms": 1, "tpot_ms": 2, "out_tok_s": 0}
"""Columns whose ``_p10`` / ``_p90`` pair prints as one ``_80`` range column (``45.1-52.3``), with
the decimals ``ServingPlan.table`` rounds them to."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="choose what to run: parallelism, GPU mix, replicas, disaggregation, power caps",
        description="Plan serving (default) or training (--training) of a model on a cluster or a GPU "
        "market: candidates are pruned analytically, the survivors' capacities simulated, GPU mix, "
        "disaggregation and power caps chosen by integer programs, and the chosen plan re-simulated "
        "with another seed. Lengths default to the built-in azure-conv workload's means.",
    )
    p.add_argument("--model", required=True, help="catalog name, HF config.json path or directory")
    p.add_argument("--cluster", default=None, help="shorthand such as 8xH100, 16xH100+32xL4, or a YAML path")
    p.add_argument("--isl", type=positive_int, default=None, help="prompt tokens per request")
    p.add_argument("--osl", type=positive_int, default=None, help="output tokens per request")
    p.add_argument("--workload", default=None, help="built-in workload whose mean lengths to use (default azure-conv)")
    p.add_argument("--rate", type=positive_float, default=None, help="requests per second to serve")
    p.add_argument("--ttft-s", type=positive_float, default=None, help="time-to-first-token target (s)")
    p.add_argument("--tpot-s", type=positive_float, default=None, help="time-per-output-token target (s)")
    p.add_argument("--dtype", default="bf16", help="weight/compute dtype (bf16, fp8)")
    p.add_argument("--kv-dtype", default=None, help="KV cache dtype (default: same as --dtype)")
    p.add_argument("--engine", default=None, metavar="NAME|YAML",
                   help="engine profile (fleetsim specs engines) or a profile YAML (default vllm; "
                   "megatron with --training)")
    p.add_argument("--top", type=positive_int, default=10, help="rows to show")
    p.add_argument("--analytic", action="store_true",
                   help="serving: the quick analytic ranking of TP x replica deployments per GPU type "
                   "(no simulation, no integer program) instead of the full planner")
    p.add_argument("--objective", default=None,
                   help="serving: min_cost, min_gpus, min_energy (need --rate) or max_goodput; "
                   "training: throughput (default), time, cost or energy")
    p.add_argument("--json", action="store_true", default=None, help="print the plans as JSON (an object with 'plans')")
    p.add_argument("--explain", action="store_true", default=None,
                   help="explain the best plan's bottleneck (training: with Megatron-LM arguments and a torchtitan config)")
    p.add_argument("--executor", default=None, metavar="{local,ray}",
                   help="where candidate evaluations run: local (a process pool on this machine's cores) "
                   "or ray (a Ray cluster; pip install 'fleetsim[ray]'); default local. "
                   "Results are the same whichever runs them")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory for plans.json, plans.csv and the figures (Pareto frontier, GPU mix; "
                   "training: step time vs cost and MFU, memory) as PNGs; runs the full serving planner")
    from fleetsim.cli import plan_serving as planner
    from fleetsim.cli.plan_training import add_training_args

    add_training_args(p)
    planner.add_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fleetsim.cli import plan_serving as planner
    from fleetsim.hardware.errors import ConfigError

    if args.training:
        from fleetsim.cli.plan_training import run_training

        return run_training(args)
    from fleetsim.planning import plan_serving

    if not args.analytic:
        return planner.run(args)
    given = planner.given_flags(args)
    if given:
        raise ConfigError(f"--analytic takes none of the planner's flags ({', '.join(given)})")
    if planner.wanted(args):
        raise ConfigError(f"--analytic does not plan LoRA adapters (workload {args.workload!r}): drop --analytic")
    if args.cluster is None:
        raise ConfigError("--cluster is required (or --market with the serving planner)")

    plan = plan_serving(
        args.model,
        args.cluster,
        isl=args.isl,
        osl=args.osl,
        workload=args.workload,
        rate_rps=args.rate,
        ttft_s=args.ttft_s,
        tpot_s=args.tpot_s,
        dtype=args.dtype,
        kv_dtype=args.kv_dtype,
        engine=args.engine or "vllm",
    )
    print(plan.headline())
    print()
    print_frame(compact(plan.table().head(args.top)))
    if plan.rejected:
        print()
        print("Not feasible:")
        for r in plan.rejected:
            print(f"  {r.gpu} TP={r.tp} PP={r.pp}: {r.reason}")
    return 0


def compact(table: pd.DataFrame) -> pd.DataFrame:
    """``plan.table()`` with each interval pair as one ``lo-hi`` column after its point."""
    out = table.copy()
    for col, d in RANGES.items():
        lo, hi = out.pop(f"{col}_p10"), out.pop(f"{col}_p90")
        out.insert(out.columns.get_loc(col) + 1, f"{col}_80",
                   [f"{a:.{d}f}-{b:.{d}f}" for a, b in zip(lo, hi, strict=True)])
    return out
