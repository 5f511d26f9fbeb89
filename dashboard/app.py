"""fleetsim what-if dashboard (Streamlit): ``fleetsim dashboard`` or ``streamlit run`` on
this file, from any folder.

Every number shown comes from the public API (``plan_serving``, ``simulate_serving``,
``estimate_train_step``, ``plan_training``); the views only collect inputs, keep results
in session state and draw them."""

from __future__ import annotations

import os
import sys


def _installed_fleetsim() -> None:
    """Import ``fleetsim`` as installed (or as the checkout this file belongs to), never a
    same-named folder of the working directory.

    ``streamlit run`` puts the current directory on ``sys.path``; started in the folder above
    a checkout named ``fleetsim``, that folder (no ``__init__.py`` at its top) would shadow the
    package as an empty namespace package (``module 'fleetsim' has no attribute
    'plan_serving'``). Such path entries are dropped; a checkout root, whose ``fleetsim/``
    is the real package, stays."""

    def shadows(entry: str) -> bool:
        folder = os.path.join(entry or os.getcwd(), "fleetsim")
        return os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, "__init__.py"))

    sys.path[:] = [p for p in sys.path if not shadows(p)]
    mod = sys.modules.get("fleetsim")
    if mod is not None and getattr(mod, "__file__", None) is None:
        for name in [n for n in sys.modules if n == "fleetsim" or n.startswith("fleetsim.")]:
            del sys.modules[name]


_installed_fleetsim()

import streamlit as st  # noqa: E402
from fleetsim.dashboard import compare_view, plan_view, sidebar, simulate_view, train_view  # noqa: E402


def main() -> None:
    st.set_page_config(page_title="fleetsim what-if", layout="wide")
    st.title("fleetsim what-if")
    scenario = sidebar.render()
    plan_tab, sim_tab, train_tab, cmp_tab = st.tabs(["Plan", "Simulate", "Train", "Compare"])
    with plan_tab:
        plan_view.render(scenario)
    with sim_tab:
        simulate_view.render(scenario)
    with train_tab:
        train_view.render(scenario)
    with cmp_tab:
        compare_view.render()


main()
