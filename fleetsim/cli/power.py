"""``fleetsim power``: what GPU power caps do to a fleet under a facility power budget.

Runs the workload (or one training step with ``--training``) on the cluster uncapped and at each
``--caps`` value, and prints per cap the throughput, latency, joules per token, GPU power, each
node's provisioned power, how many nodes the budget holds and what the fleet then delivers
(``fleetsim.power_whatif``).
"""

from __future__ import annotations

import argparse

from fleetsim.cli.args import positive_float, positive_int
from fleetsim.cli.table import print_frame
from fleetsim.hardware.errors import ConfigError


def _caps(text: str) -> list[float]:
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            v = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a number of watts") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"{part!r}: a cap must be > 0 W")
        out.append(v)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("power", help="power-cap what-if: throughput, latency, energy and nodes under a budget",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="catalog name, HF config.json path or directory")
    p.add_argument("--cluster", required=True, help="shorthand such as 8x8xH100, or a YAML path (one node type)")
    p.add_argument("--caps", type=_caps, required=True, metavar="W,W,...", help="GPU power caps to try (W)")
    p.add_argument("--power-budget-w", type=positive_float, default=None,
                   help="facility budget (default: the cluster's uncapped provisioned power)")
    p.add_argument("--workload", default=None,
                   help="serving workload (default: a saturating closed loop, 16 clients per GPU)")
    p.add_argument("--num-requests", type=positive_int, default=None,
                   help="requests per simulation (default 4 per client of the default workload)")
    p.add_argument("--engine", default=None, help="engine profile (default vllm; megatron with --training)")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("training (--training: one step per cap instead of a serving simulation)")
    g.add_argument("--training", action="store_true")
    g.add_argument("--global-batch", type=positive_int, default=None)
    g.add_argument("--seq-len", type=positive_int, default=None)
    g.add_argument("--micro-batch", type=positive_int, default=1)
    g.add_argument("--tp", type=positive_int, default=None)
    g.add_argument("--pp", type=positive_int, default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fleetsim.calibration.power import power_params
    from fleetsim.hardware.catalog import get_gpu
    from fleetsim.hardware.cluster import load_cluster
    from fleetsim.power_whatif import power_cap_whatif

    cluster = load_cluster(args.cluster)
    for pool in cluster.pools:
        for cap in args.caps:
            power_params(get_gpu(pool.node.gpu)).check_cap(cap, "--caps")
    training = None
    if args.training:
        if args.global_batch is None:
            raise ConfigError("--training needs --global-batch")
        training = {"global_batch": args.global_batch, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
                    "engine": args.engine or "megatron"}
        training.update({k: getattr(args, k) for k in ("tp", "pp") if getattr(args, k) is not None})
    elif any(getattr(args, k) is not None for k in ("global_batch", "seq_len", "tp", "pp")):
        raise ConfigError("--global-batch/--seq-len/--tp/--pp go with --training")
    df = power_cap_whatif(args.model, cluster, args.caps, workload=args.workload,
                          num_requests=args.num_requests, seed=args.seed, engine=args.engine or "vllm",
                          power_budget_w=args.power_budget_w, training=training)
    what = "training tokens/s" if training else "output tokens/s"
    print(f"{args.model} on {df.attrs['cluster']}: facility budget {df.attrs['budget_w']:,.0f} W; "
          f"throughput is {what} of the cluster as given, fleet = nodes the budget holds")
    show = df.copy()
    for c in ("throughput_per_node_change", "nodes_change", "fleet_throughput_change"):
        show[c] = (100 * show[c]).map("{:+.1f}%".format)
    print_frame(show.drop(columns=["capped"]))
    return 0
