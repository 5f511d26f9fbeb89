"""Plan: the serving planner's ranked plans, the Pareto frontier, the chosen plan's GPU mix,
explanation and engine flags; one click simulates a plan on the scenario's workload."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from fleetsim.dashboard import charts
from fleetsim.dashboard import format as fmt
from fleetsim.dashboard import scenario as sc
from fleetsim.dashboard.common import model_and_cluster, pin_and_show, pinned_note, run_simulation
from fleetsim.dashboard.format import show_error
from fleetsim.dashboard.sidebar import scenario_name
from fleetsim.hardware.errors import FleetsimError
from fleetsim.planner.serving.search import CAP_FRACTIONS

import fleetsim

POWER_CAP_SHARES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
"""Caps offered; the planner's own default (``CAP_FRACTIONS``) is preselected."""
FLAG_ENGINES = {"sglang": "sglang", "trtllm": "trtllm"}
"""Serving profile -> the engine whose command line ``planner.flags`` writes (else vLLM)."""


def _plan(s: sc.Scenario, simulate: bool, caps: tuple[float, ...] = CAP_FRACTIONS) -> dict[str, Any]:
    model, cluster = model_and_cluster(s)
    kw: dict[str, Any] = {}
    if s.workload_kind == "trace upload":
        tr = st.session_state.get("trace")
        if tr is None:
            raise sc.ConfigError("workload: upload a trace first (Azure CSV, fleetsim JSONL or CSV)")
        kw["isl"] = max(1, round(float(np.mean(tr.prompt_tokens))))
        kw["osl"] = max(1, round(float(np.mean(tr.output_tokens))))
    else:
        sc.workload_for_api(s, None)  # refuses a path
        kw["workload"] = s.workload.strip()
    t0 = time.perf_counter()
    plan = fleetsim.plan_serving(
        model, cluster, rate_rps=s.rate_rps or None, ttft_s=s.ttft_slo_s or None, tpot_s=s.tpot_slo_s or None,
        engine=s.engine, objective=s.objective, power_budget_w=s.power_budget_w or None, simulate=simulate,
        seed=s.seed, search_space={"power_caps": caps}, **kw)
    res = plan.search
    return {"plan": plan, "search": res, "seconds": time.perf_counter() - t0, "scenario": s.to_dict()}


def plans_table(res: Any) -> pd.DataFrame:
    """One row per plan, best first, units in the column names."""
    from fleetsim.cli.plan_serving import table

    t = table(res)
    return t.rename(columns={"usd_h": "usd_per_h", "usd_per_Mtok": "usd_per_Mtok_out", "goodput_rps": "goodput_req_s",
                             "j_per_tok": "J_per_out_tok"})


def engine_lines(model: Any, entry: Any, profile: str) -> list[str]:
    """The command lines (``planner.flags``) that run ``entry``'s pools, one per pool and
    a ``nvidia-smi`` line per capped pool."""
    from fleetsim.planner.flags import ServingDeployment, power_cap_command, serving_command

    engine = next((v for k, v in FLAG_ENGINES.items() if profile.startswith(k)), "vllm")
    lines = []
    for pc in entry.pools:
        d = ServingDeployment(model=model.name, gpu=pc.gpu, tp=pc.tp, pp=pc.pp, ep=pc.ep, replicas=pc.replicas,
                              max_num_seqs=pc.max_num_seqs, max_num_batched_tokens=pc.max_num_batched_tokens,
                              power_cap_w=None if pc.power_cap_w is None else round(pc.power_cap_w), role=pc.role)
        lines.append(f"# {pc.replicas} x {pc.gpu} (pool {pc.pool}, {pc.role})")
        cap = power_cap_command(d)
        if cap is not None:
            lines.append(cap.line)
        lines.append(serving_command(d, engine).line)
    return lines


def plan_deployment(entry: Any, s: sc.Scenario) -> dict[str, Any]:
    """The ``Deployment`` (as its dict) of a plan: one pool per plan pool, the plan's knobs."""
    pools = []
    for pc in entry.pools:
        eng: dict[str, Any] = {"profile": pc.engine, "scheduler": {"kind": "vllm", "max_num_seqs": pc.max_num_seqs,
                                                                   "max_num_batched_tokens": pc.max_num_batched_tokens}}
        if pc.power_cap_w is not None:
            eng["power_cap_w"] = pc.power_cap_w
        pools.append({"pool": pc.pool, "tp": pc.tp, "pp": pc.pp, "ep": pc.ep, "replicas": pc.replicas,
                      "role": pc.role, "engine": eng})
    return {"pools": pools}


def pareto_frame(res: Any) -> tuple[pd.DataFrame, str, str, str]:
    """The frontier rows to draw: simulated candidates (cost per req/s) when there are any,
    else the checked plans (cost per hour); latency in ms."""
    rows = pd.DataFrame(list(res.pareto))
    if rows.empty:
        return rows, "", "", ""
    cand = rows[rows["kind"] == "candidate"].copy() if "kind" in rows else rows.iloc[0:0]
    if len(cand):
        cand["tpot_ms"] = cand["tpot_s"] * 1e3
        cand["ttft_ms"] = cand["ttft_s"] * 1e3
        cols = ["name", "usd_per_hour_per_rps", "tpot_ms", "ttft_ms", "j_per_output_token", "on_frontier"]
        return cand[cols], "usd_per_hour_per_rps", "tpot_ms", "USD/h per req/s of capacity"
    plans = rows.copy()
    plans["tpot_p90_ms"] = plans["tpot_p90_s"] * 1e3
    plans["ttft_p90_ms"] = plans["ttft_p90_s"] * 1e3
    cols = ["name", "cost_per_hour", "tpot_p90_ms", "ttft_p90_ms", "j_per_output_token", "on_frontier"]
    return plans[cols], "cost_per_hour", "tpot_p90_ms", "USD/h"


def _plan_metrics(entry: Any) -> dict[str, tuple[float | None, str]]:
    c = entry.checked
    return {"cost": (entry.cost_per_hour, "USD/h"), "GPUs": (float(entry.gpus), ""), "power": (entry.power_w, "W"),
            "goodput": (None if c is None else c.goodput_rps, "req/s"),
            "TTFT p90": (None if c is None else c.ttft_p90_s, "s"),
            "TPOT p90": (None if c is None else c.tpot_p90_s, "s"),
            "energy per output token": (None if c is None else c.j_per_output_token, "J/tok")}


def plan_view(got: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a plan that every rank shares (the ranked table, the Pareto
    chart, the explanation, the analytic first pass), computed once per plan."""
    plan, res = got["plan"], got["search"]
    view: dict[str, Any] = {"headline": plan.headline(), "ranks": {}}
    if res.status == "optimal" and res.plans:
        view["table"] = plans_table(res)
        pts, x, y, xt = pareto_frame(res)
        view["pareto"] = charts.pareto(pts, x, y, "j_per_output_token", xt, "TPOT p90 (ms)") if len(pts) else None
        view["explain"] = res.explain()
        view["analytic"] = plan.table()
    return view


def rank_view(got: dict[str, Any], rank: int) -> dict[str, Any]:
    """What the page shows of one plan row (metrics, GPU mix, flags), computed once per row."""
    ranks = got["view"]["ranks"]
    if rank not in ranks:
        plan, entry = got["plan"], got["search"].plans[rank - 1]
        try:
            flags: str | None = "\n".join(engine_lines(plan.model, entry, plan.engine))
            flags_error = None
        except FleetsimError as exc:
            flags, flags_error = None, str(exc)
        ranks[rank] = {
            "metrics": [("Cost", fmt.usd(entry.cost_per_hour, "h")), ("GPUs", fmt.count(entry.gpus)),
                        ("Power", fmt.watts(entry.power_w))]
            + ([("Goodput", fmt.rate(entry.checked.goodput_rps, "req/s"))] if entry.checked is not None else []),
            "gpu_mix": charts.gpu_mix(dict(entry.gpus_by_type)), "flags": flags, "flags_error": flags_error,
            "why": got["view"]["explain"] if rank == 1 else
            f"plan {entry.name}: binding {', '.join(entry.binding) or 'none'}"}
    return dict(ranks[rank])


@st.fragment(key="plan")
def render(s: sc.Scenario) -> None:
    """The Plan tab; a fragment: its own widgets rerun only this tab."""
    st.subheader("Serving plan")
    c1, c2, c3 = st.columns([1, 2, 1])
    simulate = c1.checkbox("simulate capacities", value=False, key="plan_simulate",
                           help="bisect each top candidate's capacity by simulation (slower, more exact)")
    caps = c2.multiselect("power caps to try (share of each GPU's TDP)", POWER_CAP_SHARES,
                          default=list(CAP_FRACTIONS),
                          key="plan_caps", help="searched with a power budget or the min_energy objective "
                          "(nvidia-smi -pl; clipped to the GPU's lowest settable cap)")
    if c3.button("Plan", key="plan_go", type="primary"):
        try:
            with st.spinner("planning ..."):
                st.session_state["plan"] = _plan(s, simulate, tuple(sorted(caps or CAP_FRACTIONS, reverse=True)))
            st.session_state.pop("plan_error", None)
        except FleetsimError as exc:
            st.session_state["plan_error"] = str(exc)
    if st.session_state.get("plan_error"):
        show_error(st.session_state["plan_error"])
    got = st.session_state.get("plan")
    if got is None:
        st.caption("Press Plan to rank deployments of the scenario's model on its cluster.")
        return
    if "view" not in got:
        got["view"] = plan_view(got)
    view, res = got["view"], got["search"]
    st.text(view["headline"])
    st.caption(f"planned in {fmt.seconds(got['seconds'])}; {res.simulations} simulations")
    if "table" not in view:
        show_error(f"no plan: {res.reason or res.status}")
        if res.closest_miss:
            st.text(f"closest miss: {res.closest_miss}")
        return
    st.dataframe(view["table"], hide_index=True, key="plan_table")
    ranks = list(range(1, len(res.plans) + 1))
    rank = st.selectbox("Plan", ranks, format_func=lambda r: f"{r}: {res.plans[r - 1].name}", key="plan_rank")
    entry = res.plans[rank - 1]
    rv = rank_view(got, rank)
    b1, b2 = st.columns(2)
    if b1.button("Simulate this plan", key="plan_simulate_row"):
        try:
            run_simulation(s, plan_deployment(entry, s), f"plan {rank}: {entry.name}")
        except FleetsimError as exc:
            show_error(exc)
        else:
            st.session_state["plan_simulated"] = True
            st.rerun()  # the whole page: the Simulate tab shows the new result
    if st.session_state.pop("plan_simulated", False):
        st.success("Simulated: the result is on the Simulate tab.")
    b2.button("Pin this plan", key="plan_pin", on_click=pin_and_show,
              args=("plan", f"plan {rank}: {entry.name}", _plan_metrics(entry), "plan"))
    with b2:
        pinned_note("plan")
    for col, (label, value) in zip(st.columns(4), rv["metrics"], strict=False):
        col.metric(label, value)
    g1, g2 = st.columns([1, 2])
    charts.draw(g1, rv["gpu_mix"])
    if view["pareto"] is not None:
        charts.draw(g2, view["pareto"])
    with st.expander("Why this plan", expanded=rank == 1):
        st.code(rv["why"], language=None)
    with st.expander("Engine flags", expanded=True):
        if rv["flags"] is not None:
            st.code(rv["flags"], language="bash")
        else:
            show_error(rv["flags_error"])
    with st.expander("Analytic candidates (first pass)"):
        st.dataframe(view["analytic"], hide_index=True)

    def plans_json() -> str:
        return json.dumps({"scenario": got["scenario"], "plans": res.to_json()}, indent=2, default=_json_default)

    st.download_button("Download plans (JSON)", plans_json, f"{scenario_name(s)}_plans.json", "application/json",
                       key="plan_download", on_click="ignore")


def _json_default(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return None if not np.isfinite(v) else float(v)
    return str(v)
