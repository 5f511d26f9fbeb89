"""Compare: pinned plans, simulations and training estimates side by side, with the
deltas of the second against the first (absolute, in the metric's unit, and relative)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st
from fleetsim.dashboard import format as fmt

_FORMAT = {"s": fmt.seconds, "W": fmt.watts, "B": fmt.nbytes, "share": fmt.share,
           "USD": fmt.usd, "USD/h": lambda v: fmt.usd(v, "h"), "req/s": lambda v: fmt.rate(v, "req/s"),
           "tok/s": lambda v: fmt.rate(v, "tok/s"), "J/tok": lambda v: fmt.joules(v) + "/tok",
           "": lambda v: fmt.count(v) if v is not None and float(v).is_integer() else f"{v:.4g}"}


def show(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return _FORMAT.get(unit, lambda v: f"{v:.4g} {unit}")(value)


def compare_frame(a: dict[str, Any], b: dict[str, Any]) -> pd.DataFrame:
    """The metrics of pins ``a`` and ``b`` (union, ``a``'s order first) with ``b - a``."""
    names = list(a["metrics"]) + [k for k in b["metrics"] if k not in a["metrics"]]
    rows = []
    for k in names:
        va, ua = a["metrics"].get(k, (None, ""))
        vb, ub = b["metrics"].get(k, (None, ua))
        unit = ua or ub
        delta = rel = "n/a"
        if va is not None and vb is not None:
            delta = ("+" if vb - va >= 0 else "-") + show(abs(vb - va), unit)
            rel = "n/a" if va == 0 else f"{(vb - va) / abs(va) * 100:+.1f} %"
        rows.append({"metric": k, a["label"]: show(va, ua), b["label"]: show(vb, ub or ua),
                     "delta (B - A)": delta, "relative": rel})
    return pd.DataFrame(rows)


@st.fragment(key="compare")
def render() -> None:
    """The Compare tab; a fragment, rerun by its own widgets and by a pin on another tab."""
    st.subheader("Compare")
    pins: list[dict[str, Any]] = st.session_state.get("pins", [])
    if len(pins) < 2:
        st.caption(f"{len(pins)} pinned. Pin plans, simulations or training estimates on the other tabs "
                   "(two or more) to see them side by side.")
        return
    labels = [p["label"] for p in pins]
    c1, c2, c3 = st.columns([2, 2, 1])
    ia = c1.selectbox("A", range(len(pins)), format_func=lambda i: labels[i], key="cmp_a")
    ib = c2.selectbox("B", range(len(pins)), index=len(pins) - 1, format_func=lambda i: labels[i], key="cmp_b")
    if c3.button("Clear pins", key="cmp_clear"):
        st.session_state["pins"] = []
        st.session_state.pop("pinned_note", None)
        st.rerun(scope="fragment")
    a, b = pins[ia], pins[ib]
    a_label, b_label = f"A: {a['label']}", f"B: {b['label']}"
    frame = compare_frame({**a, "label": a_label}, {**b, "label": b_label})
    st.dataframe(frame, hide_index=True, key="cmp_table")
    st.download_button("Comparison (CSV)", frame.to_csv(index=False), "comparison.csv", "text/csv", key="cmp_dl",
                       on_click="ignore")
