"""Train: one training job (TP/CP/PP/DP/EP, virtual stages, micro/global batch, sequence,
recomputation, ZeRO, schedule, engine profile, power cap) estimated by
``fleetsim.estimate_train_step``: step time and its breakdown, memory per stage, the
pipeline schedule as a timeline, MFU, and time, cost and energy to train N tokens; and the
training planner (``fleetsim.training_plans``) for the best layouts."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import pandas as pd
import streamlit as st
from fleetsim.dashboard import charts
from fleetsim.dashboard import format as fmt
from fleetsim.dashboard import scenario as sc
from fleetsim.dashboard.common import model_and_cluster, pin_and_show, pinned_note
from fleetsim.dashboard.format import show_error
from fleetsim.dashboard.sidebar import engines, scenario_name
from fleetsim.hardware.errors import FleetsimError

import fleetsim

BREAKDOWN = ("compute_s", "exposed_comm_s", "optimizer_s", "contention_s", "host_bound_s", "stage_imbalance_s")


def train_options(v: dict[str, Any], s: sc.Scenario) -> dict[str, Any]:
    """``estimate_train_step`` keywords of the form's values (``dp`` 0: the GPUs left over)."""
    opts: dict[str, Any] = {
        "tp": int(v["tp"]), "cp": int(v["cp"]), "pp": int(v["pp"]), "ep": int(v["ep"]), "vpp": int(v["vpp"]),
        "sequence_parallel": int(v["tp"]) > 1, "micro_batch": int(v["micro_batch"]),
        "global_batch": int(v["global_batch"]), "seq_len": int(v["seq_len"]), "recompute": v["recompute"],
        "engine": v["engine"]}
    if int(v["dp"]) > 0:
        opts["dp"] = int(v["dp"])
    if v["zero"] != "auto":
        opts["zero"] = int(v["zero"])
    if v["schedule"] != "auto":
        opts["schedule"] = v["schedule"]
    if s.power_cap_w > 0:
        opts["power_cap_w"] = s.power_cap_w
    return opts


def _form(s: sc.Scenario) -> None:
    ss = st.session_state
    with st.form("train_form"):
        v: dict[str, Any] = {}
        c = st.columns(6)
        v["tp"] = c[0].number_input("TP", 1, 64, 1, key="tr_tp")
        v["cp"] = c[1].number_input("CP", 1, 64, 1, key="tr_cp")
        v["pp"] = c[2].number_input("PP", 1, 256, 1, key="tr_pp")
        v["dp"] = c[3].number_input("DP (0 = GPUs left)", 0, 65536, 0, key="tr_dp")
        v["ep"] = c[4].number_input("EP", 1, 256, 1, key="tr_ep")
        v["vpp"] = c[5].number_input("virtual stages", 1, 64, 1, key="tr_vpp")
        c = st.columns(6)
        v["micro_batch"] = c[0].number_input("micro-batch (seq)", 1, 1024, 1, key="tr_mb")
        v["global_batch"] = c[1].number_input("global batch (seq)", 1, 1 << 20, 64, key="tr_gb")
        v["seq_len"] = c[2].number_input("sequence (tokens)", 1, 1 << 22, 2048, key="tr_seq")
        v["recompute"] = c[3].selectbox("recomputation", ("selective", "none", "full"), key="tr_rc")
        v["zero"] = c[4].selectbox("ZeRO stage", ("auto", "0", "1", "2", "3"), key="tr_zero")
        v["schedule"] = c[5].selectbox("schedule", ("auto", "1f1b", "gpipe", "interleaved"), key="tr_sched")
        c3 = st.columns(3)
        names = engines("training")
        v["engine"] = c3[0].selectbox("training engine profile", names, key="tr_engine",
                                      index=names.index("megatron") if "megatron" in names else 0)
        v["tokens"] = c3[1].number_input("tokens to train", 1e6, 1e15, 1e12, format="%.3g", key="tr_tokens")
        c1, c2 = st.columns(2)
        go = c1.form_submit_button("Estimate step", type="primary")
        plan = c2.form_submit_button("Plan training (best layouts)")
    if go:
        try:
            model, cluster = model_and_cluster(s)
            t0 = time.perf_counter()
            est = fleetsim.estimate_train_step(model, cluster, **train_options(v, s))
            ss["train"] = {"est": est, "tokens": float(v["tokens"]), "seconds": time.perf_counter() - t0,
                           "label": f"train {est.job.model.name} tp{v['tp']} cp{v['cp']} pp{v['pp']}"}
            ss.pop("train_error", None)
        except FleetsimError as exc:
            ss["train_error"] = str(exc)
    if plan:
        try:
            model, cluster = model_and_cluster(s)
            with st.spinner("planning the training job ..."):
                kw: dict[str, Any] = {"power_cap_w": s.power_cap_w} if s.power_cap_w > 0 else {}
                tp = fleetsim.plan_training(model, cluster, global_batch=int(v["global_batch"]),
                                            seq_len=int(v["seq_len"]), tokens=float(v["tokens"]),
                                            engine=v["engine"], top=5, **kw)
            ss["train_plan"] = tp
            ss.pop("train_error", None)
        except FleetsimError as exc:
            ss["train_error"] = str(exc)


def _trace(est: Any) -> bytes:
    """The step's Perfetto trace (gzip JSON), made when the download is clicked."""
    fd, tmp = tempfile.mkstemp(suffix=".json.gz", prefix="fleetsim-train-")
    os.close(fd)
    try:
        est.to_chrome_trace(tmp)
        with open(tmp, "rb") as f:
            return f.read()
    finally:
        os.unlink(tmp)


def memory_frame(memory: pd.DataFrame) -> pd.DataFrame:
    """Memory per stage in long form (GiB), the parts that add up to the total."""
    parts = [c for c in memory.columns if c.endswith("_bytes") and c not in
             ("params_and_optimizer_bytes", "allocated_bytes", "reserved_bytes", "total_bytes", "host_bytes", "nvme_bytes")]
    long = memory.melt(id_vars=["stage"], value_vars=parts, var_name="part", value_name="bytes")
    long = long[long["bytes"] > 0].copy()
    long["GiB"] = long["bytes"] / 2**30
    long["part"] = long["part"].str.removesuffix("_bytes")
    long["stage"] = "stage " + long["stage"].astype(str)
    return long


def estimate_view(got: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a training estimate, computed once per estimate."""
    est, tokens = got["est"], got["tokens"]
    cost = est.train_cost(tokens)
    br = est.breakdown
    parts = pd.DataFrame({"step": "step", "part": [k.removesuffix("_s") for k in BREAKDOWN],
                          "ms": [br[k] * 1e3 for k in BREAKDOWN]})
    summ = est.summary(tokens)
    summ["value"] = summ["value"].map(lambda x: f"{x:.4g}" if isinstance(x, float) else str(x))
    tl = est.timeline
    return {
        "metrics": [
            ("Step time", fmt.seconds(est.time_s)), ("MFU", fmt.share(est.mfu)),
            ("Throughput", fmt.rate(est.tokens_per_s, "tok/s")), ("Peak memory", fmt.nbytes(est.peak_memory_bytes)),
            ("Avg GPU power", fmt.watts(est.avg_power_w)), ("GPUs", fmt.count(est.num_gpus)),
            (f"Time to train {tokens:.3g} tokens", fmt.seconds(cost["time_s"])),
            ("GPU-hours", f"{fmt.count(cost['gpu_hours'])} h"),
            ("Cost", fmt.usd(cost["cost_usd"]) if cost["cost_usd"] is not None else "n/a (no catalog price)"),
            ("Energy (facility)", fmt.joules(cost["energy_j"]))],
        "pin": {"step time": (est.time_s, "s"), "MFU": (est.mfu, "share"), "throughput": (est.tokens_per_s, "tok/s"),
                "peak memory": (est.peak_memory_bytes, "B"), "avg GPU power": (est.avg_power_w, "W"),
                "time to train": (cost["time_s"], "s"), "cost to train": (cost["cost_usd"], "USD"),
                "energy per token": (est.facility_j_per_token, "J/tok")},
        "breakdown": charts.stacked_bars(parts, "step", "part", "ms", "step-time breakdown (max over stages)", "ms"),
        "breakdown_note": f"bubble fraction {fmt.share(br['bubble_fraction'])}; gradient accumulation "
                          f"{int(br['grad_accum'])} micro-batches",
        "memory": charts.stacked_bars(memory_frame(est.memory), "stage", "part", "GiB", "memory per stage", "GiB"),
        "timeline": charts.timeline(tl) if len(tl) else None,
        "summary": summ,
    }


@st.fragment(key="train")
def render(s: sc.Scenario) -> None:
    """The Train tab; a fragment: its own widgets rerun only this tab."""
    st.subheader("Training job")
    _form(s)
    ss = st.session_state
    if ss.get("train_error"):
        show_error(ss["train_error"])
    tplan = ss.get("train_plan")
    if tplan is not None:
        with st.expander("Training plans (best first)", expanded=True):
            st.text(tplan.headline())
            st.dataframe(tplan.table(), hide_index=True, key="train_plan_table")
    got = ss.get("train")
    if got is None:
        st.caption("Press Estimate step to simulate one optimizer step of the scenario's model.")
        return
    if "view" not in got:
        got["view"] = estimate_view(got)
    v = got["view"]
    shown = v["metrics"]
    for i in range(0, len(shown), 4):
        for col, (label, value) in zip(st.columns(4), shown[i:i + 4], strict=False):
            col.metric(label, value)
    st.button("Pin this training estimate", key="train_pin", on_click=pin_and_show,
              args=("training", got["label"], v["pin"], "train"))
    pinned_note("train")
    a, b = st.columns(2)
    charts.draw(a, v["breakdown"])
    a.caption(v["breakdown_note"])
    charts.draw(b, v["memory"])
    if v["timeline"] is not None:
        charts.draw(st, v["timeline"])
    with st.expander("All figures (with units)"):
        st.dataframe(v["summary"], hide_index=True, key="train_summary")
    est = got["est"]
    st.download_button("Pipeline timeline (Perfetto .json.gz)", lambda: _trace(est),
                       f"{scenario_name(s)}_train_trace.json.gz", "application/gzip", key="train_dl_trace",
                       on_click="ignore")
