"""fleetsim what-if dashboard (Streamlit).

Run with ``fleetsim dashboard``. Every number shown comes from the public API
(``plan_serving``, ``simulate_serving``, ``estimate_train_step``); the page only collects
inputs and draws results.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
from fleetsim.hardware.errors import FleetsimError

import fleetsim


def _models() -> list[str]:
    from fleetsim.workloads.models import list_models

    return list_models()


def plan_tab() -> None:
    st.subheader("Serving plan")
    models = _models()
    c1, c2 = st.columns(2)
    model = c1.selectbox("Model", models, index=models.index("llama-3.1-70b") if "llama-3.1-70b" in models else 0, key="plan_model")
    cluster = c2.text_input("Cluster", "8xH100", key="plan_cluster", help="e.g. 8xH100, 16xH100+32xL4")
    c3, c4, c5 = st.columns(3)
    isl = c3.number_input("Prompt tokens", 1, 200_000, 1024, key="plan_isl")
    osl = c4.number_input("Output tokens", 1, 100_000, 256, key="plan_osl")
    rate = c5.number_input("Rate (req/s, 0 = max throughput)", 0.0, 1e6, 0.0, key="plan_rate")
    c6, c7 = st.columns(2)
    ttft = c6.number_input("TTFT target (ms, 0 = none)", 0.0, 1e6, 0.0, key="plan_ttft")
    tpot = c7.number_input("TPOT target (ms, 0 = none)", 0.0, 1e5, 0.0, key="plan_tpot")
    try:
        plan = fleetsim.plan_serving(
            model,
            cluster,
            isl=int(isl),
            osl=int(osl),
            rate_rps=rate or None,
            ttft_s=ttft / 1e3 or None,
            tpot_s=tpot / 1e3 or None,
        )
    except FleetsimError as exc:
        st.error(str(exc))
        return
    st.text(plan.headline())
    table = plan.table()
    st.dataframe(table, hide_index=True)
    if not table.empty:
        st.bar_chart(table, x="rank", y="out_tok_s")
    for r in plan.rejected:
        st.caption(f"not feasible: {r.gpu} TP={r.tp}: {r.reason}")


def simulate_tab() -> None:
    st.subheader("Serving simulation")
    models = _models()
    c1, c2, c3 = st.columns(3)
    model = c1.selectbox("Model", models, index=models.index("llama-3.1-8b") if "llama-3.1-8b" in models else 0, key="sim_model")
    cluster = c2.text_input("Cluster", "1xH100", key="sim_cluster")
    workload = c3.text_input("Workload", "azure-conv", key="sim_workload", help="azure-conv, azure-code, poisson:rate=5,isl=1024,osl=256 or a trace path")
    c4, c5 = st.columns(2)
    n = c4.number_input("Requests", 10, 100_000, 2000, key="sim_n")
    seed = c5.number_input("Seed", 0, 2**31 - 1, 0, key="sim_seed")
    if not st.button("Simulate", key="sim_go"):
        return
    try:
        res = fleetsim.simulate_serving(model, cluster, workload, seed=int(seed), num_requests=int(n))
    except FleetsimError as exc:
        st.error(str(exc))
        return
    summary = pd.DataFrame({"metric": list(res.summary), "value": [str(v) for v in res.summary.values()]})
    st.dataframe(summary, hide_index=True, key="sim_summary")
    st.line_chart(res.timeseries, x="start_s", y=["batch_size"])
    st.line_chart(res.timeseries, x="start_s", y=["kv_occupancy"])
    st.caption("TTFT distribution (s)")
    st.bar_chart(res.requests["ttft_s"].dropna().describe(percentiles=[0.5, 0.9, 0.99]).drop("count"))


def train_tab() -> None:
    st.subheader("Training step")
    models = _models()
    c1, c2 = st.columns(2)
    model = c1.selectbox("Model", models, index=models.index("gpt3-175b") if "gpt3-175b" in models else 0, key="tr_model")
    cluster = c2.text_input("Cluster", "64xA100-80GB", key="tr_cluster")
    c3, c4, c5 = st.columns(3)
    tp = c3.number_input("TP", 1, 64, 8, key="tr_tp")
    pp = c4.number_input("PP", 1, 256, 8, key="tr_pp")
    dp = c5.number_input("DP", 1, 4096, 1, key="tr_dp")
    c6, c7, c8 = st.columns(3)
    gb = c6.number_input("Global batch", 1, 65536, 64, key="tr_gb")
    mb = c7.number_input("Micro-batch", 1, 1024, 1, key="tr_mb")
    seq = c8.number_input("Sequence length", 1, 1_000_000, 2048, key="tr_seq")
    recompute = st.selectbox("Recomputation", ["selective", "none", "full"], key="tr_rc")
    try:
        est = fleetsim.estimate_train_step(
            model,
            cluster,
            fleetsim.ParallelConfig(tp=int(tp), pp=int(pp), dp=int(dp), sequence_parallel=int(tp) > 1),
            micro_batch=int(mb),
            global_batch=int(gb),
            seq_len=int(seq),
            recompute=recompute,
        )
    except FleetsimError as exc:
        st.error(str(exc))
        return
    c9, c10, c11 = st.columns(3)
    c9.metric("Step time", f"{est.time_s:.2f} s")
    c10.metric("MFU", f"{est.mfu * 100:.1f} %")
    c11.metric("Peak memory", f"{est.peak_memory_bytes / 2**30:.1f} GiB")


def main() -> None:
    st.set_page_config(page_title="fleetsim", layout="wide")
    st.title("fleetsim what-if")
    tabs = st.tabs(["Plan", "Simulate", "Train"])
    with tabs[0]:
        plan_tab()
    with tabs[1]:
        simulate_tab()
    with tabs[2]:
        train_tab()


main()
