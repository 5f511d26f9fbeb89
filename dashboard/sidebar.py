"""The scenario sidebar: model, cluster, workload, SLOs, engine, power, objective; uploads;
save/load. Widget values live in ``st.session_state`` (keys ``sc_<field>``), so they and
every result survive reruns."""

from __future__ import annotations

from typing import Any

import streamlit as st
from fleetsim.dashboard import scenario as sc
from fleetsim.dashboard.format import one_line, show_error
from fleetsim.hardware.errors import FleetsimError


@st.cache_data(show_spinner=False)
def catalog_models() -> list[str]:
    from fleetsim.workloads.models import list_models

    return list_models()


@st.cache_data(show_spinner=False)
def engines(role: str) -> list[str]:
    from fleetsim.calibration.engines import engine_names

    return engine_names(role)  # type: ignore[arg-type]


@st.cache_data(show_spinner=False)
def builtin_workloads() -> list[str]:
    from fleetsim.workloads.defaults import list_workloads

    return list_workloads()


OBJECTIVES = ("max_goodput", "min_cost", "min_gpus", "min_energy")


def _apply_pending() -> None:
    """Put a loaded scenario into the widgets' state before they are drawn."""
    pending = st.session_state.pop("scenario_pending", None)
    if pending is None:
        return
    for k, v in pending.to_dict().items():
        if k in ("model_config", "cluster_yaml", "cluster_pools"):
            st.session_state[k] = v
        elif k in ("ttft_slo_s", "tpot_slo_s"):
            st.session_state[f"sc_{k}"] = v * 1e3  # the widgets are in ms
        else:
            st.session_state[f"sc_{k}"] = v


def _upload(label: str, key: str, types: list[str], parse: Any, store: str) -> None:
    """Parse a new upload once (by file id) into ``st.session_state[store]``."""
    f = st.file_uploader(label, type=types, key=key)
    if f is None:
        return
    if st.session_state.get(f"{store}_id") == f.file_id:
        return
    st.session_state[f"{store}_id"] = f.file_id
    try:
        st.session_state[store] = parse(f.getvalue(), f.name)
        st.session_state[f"{store}_name"] = f.name
    except FleetsimError as exc:
        st.session_state[store] = None
        st.session_state[f"{store}_error"] = one_line(exc)
    else:
        st.session_state.pop(f"{store}_error", None)


def _upload_error(store: str) -> None:
    err = st.session_state.get(f"{store}_error")
    if err:
        show_error(err)


def render() -> sc.Scenario:
    """Draw the sidebar and return the scenario it shows."""
    ss = st.session_state
    _apply_pending()
    d = sc.Scenario()
    for k, v in d.to_dict().items():
        if k in ("ttft_slo_s", "tpot_slo_s"):
            ss.setdefault(f"sc_{k}", v * 1e3)
        elif k not in ("model_config", "cluster_yaml", "cluster_pools"):
            ss.setdefault(f"sc_{k}", v)
    ss.setdefault("cluster_pools", [{"gpu": "H100", "count": 8}])
    sb = st.sidebar
    with sb:
        st.header("Scenario")
        st.subheader("Model")
        model_kind = st.radio("Model from", sc.MODEL_KINDS, key="sc_model_kind", horizontal=True)
        models = catalog_models()
        if ss["sc_model"] not in models:
            ss["sc_model"] = models[0]
        if model_kind == "catalog":
            st.selectbox("Catalog model", models, key="sc_model")
        else:
            _upload("Hugging Face config.json", "up_model", ["json"], sc.parse_model_config, "model_config")
            _upload_error("model_config")
            if ss.get("model_config"):
                st.caption(f"uploaded: {ss.get('model_config_name', 'config.json')}")
        st.subheader("Cluster")
        cluster_kind = st.radio("Cluster from", sc.CLUSTER_KINDS, key="sc_cluster_kind", horizontal=True)
        if cluster_kind == "shorthand":
            st.text_input("Cluster shorthand", key="sc_cluster", help="e.g. 8xH100, 16xH100+32xL4")
        elif cluster_kind == "builder":
            edited = st.data_editor(ss["cluster_pools"], num_rows="dynamic", key="pool_editor",
                                    column_config={"gpu": st.column_config.TextColumn("GPU"),
                                                   "count": st.column_config.NumberColumn("GPUs", min_value=1, step=1)})
            ss["cluster_pools"] = [dict(r) for r in edited if r.get("gpu") or r.get("count")]
            st.caption("prices come from the GPU catalog (USD per GPU-hour)")
        else:
            _upload("Cluster YAML", "up_cluster", ["yaml", "yml"], sc.parse_cluster_yaml, "cluster_yaml")
            _upload_error("cluster_yaml")
        st.subheader("Workload")
        wk = st.radio("Workload from", sc.WORKLOAD_KINDS, key="sc_workload_kind", horizontal=True)
        if wk == "built-in":
            names = builtin_workloads()
            if ss["sc_workload"] not in names:
                ss["sc_workload"] = names[0]
            st.selectbox("Built-in workload", names, key="sc_workload")
        elif wk == "spec":
            if ss["sc_workload"] in builtin_workloads():
                ss["sc_workload"] = "poisson:rate=5,isl=1024,osl=256"
            st.text_input("Workload spec", key="sc_workload", help="e.g. poisson:rate=5,isl=1024,osl=256")
        else:
            _upload("Trace (Azure CSV, fleetsim JSONL or CSV)", "up_trace", ["csv", "jsonl", "json"],
                    sc.parse_trace, "trace")
            _upload_error("trace")
            tr = ss.get("trace")
            if tr is not None:
                dur = float(tr.arrival_s[-1] - tr.arrival_s[0]) if len(tr) > 1 else 0.0
                st.caption(f"{ss.get('trace_name')}: {len(tr):,} requests over {dur:.4g} s, replayed whole")
        if wk != "trace upload":
            st.number_input("Requests", 10, 200_000, step=100, key="sc_num_requests")
        st.number_input("Seed", 0, 2**31 - 1, key="sc_seed")
        st.number_input("Plan rate (req/s; 0 = max throughput)", 0.0, 1e6, key="sc_rate_rps")
        st.subheader("SLOs")
        c1, c2 = st.columns(2)
        c1.number_input("TTFT (ms; 0 = none)", 0.0, 1e6, key="sc_ttft_slo_s")
        c2.number_input("TPOT (ms; 0 = none)", 0.0, 1e5, key="sc_tpot_slo_s")
        st.subheader("Engine and power")
        st.selectbox("Serving engine profile", engines("serving"), key="sc_engine")
        c3, c4 = st.columns(2)
        c3.number_input("Power cap per GPU (W; 0 = TDP)", 0.0, 2000.0, key="sc_power_cap_w")
        c4.number_input("Power budget (W; 0 = none)", 0.0, 1e9, key="sc_power_budget_w")
        st.selectbox("Objective", OBJECTIVES, key="sc_objective")
    s = sc.Scenario(
        model_kind=ss["sc_model_kind"], model=ss["sc_model"], model_config=ss.get("model_config"),
        cluster_kind=ss["sc_cluster_kind"], cluster=ss["sc_cluster"], cluster_pools=list(ss["cluster_pools"]),
        cluster_yaml=ss.get("cluster_yaml"), workload_kind=ss["sc_workload_kind"], workload=ss["sc_workload"],
        num_requests=int(ss["sc_num_requests"]), seed=int(ss["sc_seed"]), rate_rps=float(ss["sc_rate_rps"]),
        ttft_slo_s=float(ss["sc_ttft_slo_s"]) / 1e3, tpot_slo_s=float(ss["sc_tpot_slo_s"]) / 1e3,
        engine=ss["sc_engine"], power_cap_w=float(ss["sc_power_cap_w"]),
        power_budget_w=float(ss["sc_power_budget_w"]), objective=ss["sc_objective"])
    with sb:
        _save_load(s)
    return s


def _save_load(s: sc.Scenario) -> None:
    st.subheader("Save / load")
    name = scenario_name(s)
    c1, c2 = st.columns(2)
    c1.download_button("Save YAML", sc.scenario_yaml(s), f"{name}.yaml", "application/yaml", key="save_yaml",
                        on_click="ignore")
    c2.download_button("Save JSON", sc.scenario_json(s), f"{name}.json", "application/json", key="save_json",
                        on_click="ignore")
    f = st.file_uploader("Load scenario (YAML/JSON)", type=["yaml", "yml", "json"], key="up_scenario")
    if f is not None and st.session_state.get("scenario_loaded_id") != f.file_id:
        st.session_state["scenario_loaded_id"] = f.file_id
        try:
            data = f.getvalue()
            if len(data) > sc.MAX_CONFIG_BYTES:
                raise sc.ConfigError(f"{f.name}: larger than {sc.MAX_CONFIG_BYTES >> 20} MiB")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise sc.ConfigError(f"{f.name}: not UTF-8 text") from None
            st.session_state["scenario_pending"] = sc.scenario_from_text(text, f.name)
        except FleetsimError as exc:
            st.session_state["scenario_error"] = one_line(exc)
        else:
            st.session_state.pop("scenario_error", None)
            st.rerun()
    if st.session_state.get("scenario_error"):
        show_error(st.session_state["scenario_error"])


def scenario_name(s: sc.Scenario) -> str:
    """A file-name stem for downloads: model and cluster, safe characters only."""
    import re

    model = s.model if s.model_kind == "catalog" else str((s.model_config or {}).get("_name_or_path", "custom"))
    cluster = s.cluster if s.cluster_kind == "shorthand" else s.cluster_kind.split()[0]
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{model}_{cluster}")[:80]
