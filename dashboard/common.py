"""What the views share: the scenario's model and cluster through the public API, the
pinned results the compare view shows, and the simulation runner (a plan row or the
simulate form both land in ``st.session_state['sim']``)."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st
from fleetsim.dashboard import scenario as sc
from fleetsim.hardware.errors import ConfigError

import fleetsim


def model_and_cluster(s: sc.Scenario) -> tuple[Any, Any]:
    """The scenario's ``ModelSpec`` and ``ClusterSpec`` (one-line ``FleetsimError`` otherwise)."""
    return fleetsim.load_model(s.model_source()), fleetsim.load_cluster(s.cluster_source())


def pin(kind: str, label: str, metrics: dict[str, tuple[float | None, str]]) -> None:
    """Keep ``metrics`` (name -> (value in SI units, unit)) for the compare view."""
    pins: list[dict[str, Any]] = st.session_state.setdefault("pins", [])
    n = sum(1 for p in pins if p["label"].startswith(label))
    pins.append({"kind": kind, "label": label if not n else f"{label} ({n + 1})", "metrics": metrics})


def pin_and_show(kind: str, label: str, metrics: dict[str, tuple[float | None, str]], fragment: str) -> None:
    """A pin button's callback: pin, then rerun only the pinning tab and Compare (the
    fragments keyed ``fragment`` and ``compare``), not the whole page."""
    pin(kind, label, metrics)
    st.session_state["pinned_note"] = (fragment, st.session_state["pins"][-1]["label"])
    st.rerun([fragment, "compare"])


def pinned_note(fragment: str) -> None:
    """'pinned ...' under the pin button that was pressed last."""
    note = st.session_state.get("pinned_note")
    if note and note[0] == fragment:
        st.caption(f"pinned as {note[1]!r} (see the Compare tab)")


def run_simulation(s: sc.Scenario, deployment: Any, label: str, engine: Any = None) -> None:
    """Simulate ``deployment`` (None: the API's default) on the scenario's workload with a
    progress bar; the result goes to ``st.session_state['sim']`` (kept across reruns)."""
    model, cluster = model_and_cluster(s)
    workload = sc.workload_for_api(s, st.session_state.get("trace"))
    is_trace = s.workload_kind == "trace upload"
    bar = st.progress(0.0, text="simulating ...")

    def progress(done: int, total: int) -> None:
        if total > 0:
            bar.progress(min(1.0, done / total), text=f"simulating: {done:,} of {total:,} requests")

    t0 = time.perf_counter()
    try:
        res = fleetsim.simulate_serving(model, cluster, workload, deployment, seed=s.seed, slo=s.slo() or None,
                                        num_requests=None if is_trace else s.num_requests, engine=engine,
                                        progress=progress)
    finally:
        bar.empty()
    st.session_state["sim"] = {"result": res, "label": label, "seconds": time.perf_counter() - t0,
                               "scenario": s.to_dict(), "trace_name": st.session_state.get("trace_name")
                               if is_trace else None}
    st.session_state.pop("sim_error", None)


def engine_config(s: sc.Scenario, **knobs: Any) -> dict[str, Any]:
    """The ``EngineConfig`` fields of the scenario (profile, power cap) plus ``knobs``."""
    out: dict[str, Any] = {"profile": s.engine, **knobs}
    if s.power_cap_w > 0:
        out["power_cap_w"] = s.power_cap_w
    return out


def require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)
