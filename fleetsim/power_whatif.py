"""Power-cap what-if: POLCA's question for a fleet under a facility power budget.

For each GPU power cap, ``power_cap_whatif`` runs the same workload on the same cluster with every
GPU capped (the serving simulator, or one training step with ``training=``) and reports what one
node then delivers and draws. A node's provisioned power under a cap is what the cap guarantees,
``gpus x cap + host``; an uncapped node is provisioned at its GPUs' TDP. With a facility budget
(default: what the cluster's nodes are provisioned for uncapped, ``nodes x (gpus x TDP + host) x
PUE``) the table says how many such nodes fit, and so how many more nodes a cap buys and what the
whole fleet then serves, against what each node gives up.

Caps are validated against each GPU's ``[min_power_cap_w, tdp_w]``; a budget below the cluster's
idle draw is refused (``hardware.cluster.check_power_budget``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.checks import positive
from fleetsim.hardware.cluster import check_power_budget, host_power_w, load_cluster
from fleetsim.hardware.errors import ConfigError
from fleetsim.hardware.specs import ClusterSpec

__all__ = ["power_cap_whatif", "provisioned_node_w"]

CLIENTS_PER_GPU = 16
"""Clients per GPU of the default saturating closed-loop workload."""
REQUESTS_PER_CLIENT = 4
"""Requests per client of the default workload (each client's later requests see a loaded engine)."""


def provisioned_node_w(cluster: ClusterSpec, cap_w: float | None) -> float:
    """Facility power one node of the cluster's first pool is provisioned for under ``cap_w``
    (None: uncapped, the GPUs' TDP): (GPUs x limit + host) x PUE."""
    p = cluster.pools[0]
    gpu = get_gpu(p.node.gpu)
    limit = gpu.tdp_w if cap_w is None else min(cap_w, gpu.tdp_w)
    g = p.gpus_used_per_node
    return (g * limit + host_power_w(p.node, g)) * cluster.pue


def _caps(caps: Sequence[float | None], cluster: ClusterSpec) -> list[float | None]:
    from fleetsim.calibration.power import power_params

    if not caps:
        raise ConfigError("caps: give at least one power cap (W)")
    gpus = {get_gpu(p.node.gpu).name: get_gpu(p.node.gpu) for p in cluster.pools}
    out: list[float | None] = []
    for c in caps:
        if c is None:
            out.append(None)
            continue
        for g in gpus.values():
            power_params(g).check_cap(c, "caps")
        out.append(float(c))
    if None not in out:
        out.insert(0, None)  # the uncapped baseline every row is compared with
    return out


def _serving_row(model: Any, cluster: ClusterSpec, workload: Any, cap: float | None, seed: int,
                 num_requests: int | None, engine: str, slo: dict[str, float] | None) -> dict[str, float]:
    from fleetsim.serving import simulate_serving

    res = simulate_serving(model, cluster, workload, seed=seed, num_requests=num_requests, slo=slo,
                           engine={"profile": engine, "power_cap_w": cap})
    s = res.summary
    return {"throughput": float(s["output_tokens_per_s"]), "ttft_p90_s": float(s["ttft_p90_s"]),
            "tpot_p90_s": float(s["tpot_p90_s"]), "j_per_token": float(s["j_per_output_token"]),
            "gpu_avg_power_w": float(s["avg_power_w"]) / cluster.num_gpus,
            "gpu_peak_power_w": float(s["peak_power_w"]) / cluster.num_gpus}


def _training_row(model: Any, cluster: ClusterSpec, cap: float | None, training: dict[str, Any]
                  ) -> dict[str, float]:
    from fleetsim.training import estimate_train_step

    est = estimate_train_step(model, cluster, power_cap_w=cap, record_timeline=False, **training)
    return {"throughput": est.tokens_per_s, "step_s": est.time_s, "j_per_token": est.j_per_token,
            "gpu_avg_power_w": est.avg_power_w}


def power_cap_whatif(model: Any, cluster: str | ClusterSpec, caps: Sequence[float | None], *,
                     workload: Any = None, num_requests: int | None = None, seed: int = 0,
                     engine: str = "vllm", slo: dict[str, float] | None = None,
                     power_budget_w: float | None = None, training: dict[str, Any] | None = None
                     ) -> pd.DataFrame:
    """One row per cap (the uncapped baseline first): per-cluster throughput (output tokens/s
    serving, training tokens/s), latency (serving p90 TTFT/TPOT; training step time), J per
    token, GPU average (and serving peak) power, the node's provisioned power, the nodes the
    budget holds, the fleet's throughput at that node count, and the changes against uncapped.
    ``training``: ``estimate_train_step`` keywords (global_batch, seq_len, parallel degrees, ...)
    to run a training step instead of a serving simulation. ``workload`` (serving) defaults to a
    saturating closed loop, ``CLIENTS_PER_GPU`` clients per GPU with no think time and the Azure conversation
    lengths, so throughput is what the capped fleet can serve, not what arrives."""
    cl = load_cluster(cluster) if not isinstance(cluster, ClusterSpec) else cluster
    if len({p.node.name for p in cl.pools}) > 1:
        raise ConfigError(f"cluster {cl.name!r}: the power-cap what-if takes one node type (got "
                          f"{', '.join(sorted({p.node.name for p in cl.pools}))})")
    cap_list = _caps(caps, cl)
    if workload is None:
        workload = f"closed:clients={CLIENTS_PER_GPU * cl.num_gpus},think=0,isl=azure-conv,osl=azure-conv"
        if num_requests is None:
            num_requests = REQUESTS_PER_CLIENT * CLIENTS_PER_GPU * cl.num_gpus
    if power_budget_w is not None:
        positive(power_budget_w, "power_budget_w")
        check_power_budget(cl.model_copy(update={"power_budget_w": float(power_budget_w)}), "power_budget_w")
        budget = float(power_budget_w)
    elif cl.power_budget_w is not None:
        budget = cl.power_budget_w
    else:
        budget = cl.num_nodes * provisioned_node_w(cl, None)
    rows = []
    for cap in cap_list:
        r = (_training_row(model, cl, cap, training) if training is not None
             else _serving_row(model, cl, workload, cap, seed, num_requests, engine, slo))
        node_w = provisioned_node_w(cl, cap)
        nodes = math.floor(budget / node_w + 1e-9)
        rows.append({"cap_w": cap if cap is not None else get_gpu(cl.pools[0].node.gpu).tdp_w,
                     "capped": cap is not None, **r, "node_provisioned_w": node_w, "nodes_in_budget": nodes,
                     "fleet_throughput": r["throughput"] / cl.num_nodes * nodes})
    df = pd.DataFrame(rows)
    base = df.iloc[0]
    df["throughput_per_node_change"] = df["throughput"] / base["throughput"] - 1.0
    df["nodes_change"] = df["nodes_in_budget"] / base["nodes_in_budget"] - 1.0 if base["nodes_in_budget"] else math.nan
    df["fleet_throughput_change"] = (df["fleet_throughput"] / base["fleet_throughput"] - 1.0
                                     if base["fleet_throughput"] > 0 else math.nan)
    df.attrs["budget_w"] = budget
    df.attrs["cluster"] = cl.name
    return df
