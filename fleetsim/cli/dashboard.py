"""``fleetsim dashboard``: start the Streamlit what-if dashboard."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

from fleetsim.cli.args import port


def app_path() -> Path:
    """Location of the Streamlit script (found, not imported: the dashboard sits above the CLI)."""
    spec = importlib.util.find_spec("fleetsim.dashboard")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).with_name("app.py")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="open the Streamlit what-if dashboard")
    p.add_argument("--port", type=port, default=8501, help="TCP port to serve on (default 8501)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_path()), "--server.port", str(args.port),
           "--server.headless", "true"]
    return subprocess.call(cmd)
