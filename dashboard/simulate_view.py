"""Simulate: every deployment and engine option of ``simulate_serving`` (TP/PP/EP, replicas,
prefill/decode split, scheduler, router, prefix caching, speculative decoding, fp8 KV, power
cap); SLO attainment and goodput up front; latency CDFs and histograms with SLO lines;
throughput, queue, KV occupancy and power over time; the per-request table; downloads
including the Perfetto timeline. The last result stays in ``st.session_state['sim']``."""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from fleetsim.dashboard import charts
from fleetsim.dashboard import format as fmt
from fleetsim.dashboard import scenario as sc
from fleetsim.dashboard.common import engine_config, pin_and_show, pinned_note, run_simulation
from fleetsim.dashboard.format import show_error
from fleetsim.dashboard.sidebar import scenario_name
from fleetsim.hardware.errors import FleetsimError

ROUTERS = ("least_outstanding_tokens", "round_robin", "prefix_aware")
TABLE_ROWS = 2_000
"""Rows of the per-request table sent to the page (the CSV download has every request)."""


def deployment_from_form(v: dict[str, Any], s: sc.Scenario) -> dict[str, Any] | None:
    """The ``Deployment`` dict of the form's values ``v`` (None: the API's default layout
    with the scenario's engine profile and power cap)."""
    if v["default_layout"]:
        return None
    sched: dict[str, Any] = {"kind": v["scheduler"], "max_num_seqs": int(v["max_num_seqs"])}
    if v["scheduler"] == "vllm":
        sched |= {"max_num_batched_tokens": int(v["max_num_batched_tokens"]), "chunked_prefill": bool(v["chunked"])}
    knobs: dict[str, Any] = {"scheduler": sched, "enable_prefix_caching": bool(v["prefix_caching"])}
    if v["fp8_kv"]:
        knobs["kv_dtype"] = "fp8"
    if v["spec"] != "none":
        spec: dict[str, Any] = {"method": v["spec"], "num_speculative_tokens": int(v["spec_k"]),
                                "acceptance_rate": float(v["spec_accept"])}
        if v["spec"] == "draft":
            spec["draft_model"] = v["draft_model"]
        knobs["spec_decode"] = spec
    eng = engine_config(s, **knobs)
    base = {"pool": int(v["pool"]), "tp": int(v["tp"]), "pp": int(v["pp"]), "ep": int(v["ep"])}
    if int(v["prefill_replicas"]) > 0:
        pools = [base | {"replicas": int(v["prefill_replicas"]), "role": "prefill", "engine": eng},
                 base | {"replicas": int(v["decode_replicas"]), "role": "decode", "engine": eng}]
    else:
        pools = [base | {"replicas": int(v["replicas"]) or None, "engine": eng}]
    return {"pools": pools, "router": v["router"]}


def _form(s: sc.Scenario) -> None:
    ss = st.session_state
    with st.form("sim_form"):
        v: dict[str, Any] = {}
        v["default_layout"] = st.checkbox("API default layout (one replica per GPU, or the smallest TP that fits)",
                                          value=True, key="sim_default")
        c = st.columns(6)
        v["pool"] = c[0].number_input("Cluster pool", 0, 63, 0, key="sim_pool")
        v["tp"] = c[1].number_input("TP", 1, 64, 1, key="sim_tp")
        v["pp"] = c[2].number_input("PP", 1, 64, 1, key="sim_pp")
        v["ep"] = c[3].number_input("EP", 1, 256, 1, key="sim_ep")
        v["replicas"] = c[4].number_input("Replicas (0 = all that fit)", 0, 4096, 0, key="sim_replicas")
        v["router"] = c[5].selectbox("Router", ROUTERS, key="sim_router")
        c = st.columns(6)
        v["prefill_replicas"] = c[0].number_input("PD split: prefill replicas (0 = none)", 0, 4096, 0, key="sim_pd_p")
        v["decode_replicas"] = c[1].number_input("PD split: decode replicas", 1, 4096, 1, key="sim_pd_d")
        v["scheduler"] = c[2].selectbox("Scheduler", ("vllm", "static"), key="sim_sched")
        v["max_num_seqs"] = c[3].number_input("max_num_seqs", 1, 65536, 256, key="sim_seqs")
        v["max_num_batched_tokens"] = c[4].number_input("max_num_batched_tokens", 1, 10**7, 8192, key="sim_tokens")
        v["chunked"] = c[5].checkbox("chunked prefill", value=True, key="sim_chunked")
        c = st.columns(6)
        v["prefix_caching"] = c[0].checkbox("prefix caching", key="sim_prefix")
        v["fp8_kv"] = c[1].checkbox("fp8 KV cache", key="sim_fp8kv")
        v["spec"] = c[2].selectbox("Speculative decoding", ("none", "ngram", "draft"), key="sim_spec")
        v["spec_k"] = c[3].number_input("speculative tokens", 1, 64, 4, key="sim_spec_k")
        v["spec_accept"] = c[4].number_input("acceptance rate", 0.0, 0.99, 0.7, key="sim_spec_acc")
        v["draft_model"] = c[5].text_input("draft model", "llama-3.2-1b", key="sim_draft")
        go = st.form_submit_button("Simulate", type="primary")
    if go:
        try:
            dep = deployment_from_form(v, s)
            engine = None if dep is not None else engine_config(s)
            run_simulation(s, dep, "simulation" if dep is None else "custom deployment", engine=engine)
        except FleetsimError as exc:
            ss["sim_error"] = str(exc)
        except ValueError as exc:  # pydantic's ValidationError of a deployment field
            ss["sim_error"] = fmt.one_line(exc)


def slo_attainment(requests: pd.DataFrame, ttft_slo_s: float | None, tpot_slo_s: float | None) -> dict[str, float]:
    """Share of arrived requests that finished within each target and within both."""
    n = len(requests)
    if not n:
        return {}
    ok = requests["finished"].astype(bool).to_numpy()
    out = {}
    both = ok.copy()
    for col, slo in (("ttft_s", ttft_slo_s), ("tpot_s", tpot_slo_s)):
        if slo:
            v = requests[col].to_numpy(dtype=float)
            within = ok & (np.nan_to_num(v, nan=math.inf) <= slo)
            out[col] = float(within.sum() / n)
            both &= within
    if out:
        out["both"] = float(both.sum() / n)
    return out


def _trace_bytes(res: Any) -> bytes:
    """The Perfetto/Chrome trace of a result (iterations, KV occupancy and power counters),
    gzip-compressed JSON; made when the download is clicked."""
    from fleetsim.traces.chrome import write_chrome_trace

    spans = res.trace_spans()
    counters = [{"process": x["process"], "name": "kv_occupancy", "time_s": x["start_s"] + x["dur_s"],
                 "values": {"kv": x["args"]["kv_occupancy"]}} for x in spans] + res.power_counters()
    fd, tmp = tempfile.mkstemp(suffix=".json.gz", prefix="fleetsim-trace-")
    os.close(fd)
    try:
        write_chrome_trace(spans, tmp, counters, metadata={"model": res.model.name, "cluster": res.cluster.name})
        with open(tmp, "rb") as f:
            return f.read()
    finally:
        os.unlink(tmp)


def _finite_or_none(v: Any) -> float | None:
    return v if isinstance(v, float) and math.isfinite(v) else None


def result_view(got: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a simulation (metrics, charts, tables), computed once per
    result and kept with it: a rerun that computes nothing redraws it without recomputing."""
    res = got["result"]
    sm = res.summary
    ttft_slo, tpot_slo = _finite_or_none(sm.get("ttft_slo_s")), _finite_or_none(sm.get("tpot_slo_s"))
    rq = res.requests
    att = slo_attainment(rq, ttft_slo, tpot_slo)
    src = f" of trace {got['trace_name']}" if got.get("trace_name") else ""
    latency = {}
    for column, name, slo in (("ttft_s", "TTFT", ttft_slo), ("tpot_s", "TPOT", tpot_slo),
                              ("e2e_s", "E2E latency", None), ("queue_delay_s", "queue delay", None)):
        vals = rq[column].to_numpy(dtype=float)
        latency[name] = (charts.latency_cdf(vals, name, slo), charts.latency_hist(vals, name, slo))
    ts = with_token_rate(res.timeseries)
    queue = rq.dropna(subset=["queue_delay_s"]).sort_values("arrival_s")
    over_time = [
        charts.over_time(ts.dropna(subset=["tok_per_s"]), "start_s", "tok_per_s", "tokens per second per engine",
                         "tok/s", color="replica"),
        charts.over_time(ts, "start_s", "kv_occupancy", "KV cache occupancy", "share of KV blocks", color="replica"),
        charts.over_time(queue, "arrival_s", "queue_delay_s", "queue delay by arrival", "s")]
    if len(res.power):
        over_time.append(charts.over_time(res.power, "start_s", "power_w", "GPU power per pool", "W", color="pool"))
    return {
        "headline": fmt.escape_md(f"Result: {got['label']}{src} - {res.model.name} on {res.cluster.name}, "
                                  f"{fmt.count(sm['num_requests'])} requests, simulated in "
                                  f"{fmt.seconds(got['seconds'])}"),
        "metrics": [
            ("SLO attainment", fmt.share(att.get("both")) if att else "no SLO set"),
            ("Goodput", fmt.rate(sm.get("goodput_rps"), "req/s")),
            ("Output throughput", fmt.rate(sm.get("output_tokens_per_s"), "tok/s")),
            ("TTFT p90", fmt.seconds(sm.get("ttft_p90_s"))),
            ("TPOT p90", fmt.seconds(sm.get("tpot_p90_s"))),
            ("Energy per output token", fmt.joules(sm.get("j_per_output_token")) + "/tok"),
            ("Avg GPU power", fmt.watts(sm.get("avg_power_w"))),
            ("Peak GPU power", fmt.watts(sm.get("peak_power_w"))),
            ("Finished", f"{fmt.count(sm['finished'])} of {fmt.count(sm['num_requests'])}"),
            ("Energy (facility)", fmt.joules(sm.get("energy_facility_j"))),
            ("Replicas", fmt.count(sm.get("num_replicas"))),
            ("Simulated time", fmt.seconds(sm.get("duration_s")))],
        "pin": {"goodput": (sm.get("goodput_rps"), "req/s"), "throughput": (sm.get("output_tokens_per_s"), "tok/s"),
                "TTFT p90": (sm.get("ttft_p90_s"), "s"), "TPOT p90": (sm.get("tpot_p90_s"), "s"),
                "E2E p90": (sm.get("e2e_p90_s"), "s"), "avg GPU power": (sm.get("avg_power_w"), "W"),
                "energy per output token": (sm.get("j_per_output_token"), "J/tok"),
                "SLO attainment": (att.get("both"), "share")},
        "latency": latency, "over_time": over_time,
        "summary": pd.DataFrame(fmt.summary_rows(sm), columns=["metric", "value"]),
        "requests_head": rq.head(TABLE_ROWS), "num_requests": len(rq),
        "name": scenario_name(sc.Scenario(**got["scenario"])),
    }


def _downloads(got: dict[str, Any], name: str) -> None:
    """Requests CSV, inputs and summary JSON, Perfetto timeline: each made when clicked
    (never on a rerun), without a rerun of its own."""
    res = got["result"]

    def summary_json() -> str:
        sm = res.summary
        payload = {"scenario": got["scenario"], "deployment": json.loads(res.deployment.model_dump_json()),
                   "summary": {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                               for k, v in sm.items()}}
        return json.dumps(payload, indent=2, default=float)

    d = st.columns(3)
    d[0].download_button("Requests (CSV)", lambda: res.requests.to_csv(index=False), f"{name}_requests.csv",
                         "text/csv", key="sim_dl_requests", on_click="ignore")
    d[1].download_button("Inputs and summary (JSON)", summary_json, f"{name}_summary.json", "application/json",
                         key="sim_dl_summary", on_click="ignore")
    d[2].download_button("Perfetto timeline (.json.gz)", lambda: _trace_bytes(res), f"{name}_trace.json.gz",
                         "application/gzip", key="sim_dl_trace", help="open in ui.perfetto.dev", on_click="ignore")


@st.fragment(key="simulate")
def render(s: sc.Scenario) -> None:
    """The Simulate tab; a fragment: its own widgets rerun only this tab."""
    st.subheader("Serving simulation")
    _form(s)
    ss = st.session_state
    if ss.get("sim_error"):
        show_error(ss["sim_error"])
    got = ss.get("sim")
    if got is None:
        st.caption("Press Simulate, or simulate a plan row on the Plan tab.")
        return
    if "view" not in got:
        got["view"] = result_view(got)
    v = got["view"]
    st.markdown(v["headline"])
    shown = v["metrics"]
    for i in range(0, len(shown), 4):
        for col, (label, value) in zip(st.columns(4), shown[i:i + 4], strict=False):
            col.metric(label, value)
    st.button("Pin this simulation", key="sim_pin", on_click=pin_and_show,
              args=("simulation", got["label"], v["pin"], "simulate"))
    pinned_note("simulate")
    lat = st.tabs(list(v["latency"]))
    for tab, (cdf, hist) in zip(lat, v["latency"].values(), strict=True):
        a, b = tab.columns(2)
        charts.draw(a, cdf)
        charts.draw(b, hist)
    for i in range(0, len(v["over_time"]), 2):
        for col, chart in zip(st.columns(2), v["over_time"][i:i + 2], strict=False):
            charts.draw(col, chart)
    with st.expander("Summary (all figures, with units)"):
        st.dataframe(v["summary"], hide_index=True, key="sim_summary")
    with st.expander("Replicas"):
        st.dataframe(got["result"].replicas, hide_index=True)
    with st.expander("Per-request table"):
        st.dataframe(v["requests_head"], hide_index=True)
        if v["num_requests"] > TABLE_ROWS:
            st.caption(f"first {TABLE_ROWS:,} of {v['num_requests']:,} requests shown; the CSV download has all")
    _downloads(got, v["name"])


def with_token_rate(timeseries: pd.DataFrame) -> pd.DataFrame:
    """``timeseries`` with ``tok_per_s``: a segment's tokens over its span (``tokens`` is the
    segment's total already: a fast-forwarded decode run of n iterations at batch b logs
    b * n); NaN for a segment of no duration."""
    span = (timeseries["end_s"] - timeseries["start_s"]).where(lambda x: x > 0)
    return timeseries.assign(tok_per_s=timeseries["tokens"] / span)
