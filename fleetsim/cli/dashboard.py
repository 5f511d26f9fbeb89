"""``fleetsim dashboard``: start the Streamlit what-if dashboard (loopback by default)."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import subprocess
import sys
from pathlib import Path

from fleetsim.cli.args import port


def app_path() -> Path:
    """Location of the Streamlit script (found, not imported: the dashboard sits above the CLI)."""
    spec = importlib.util.find_spec("fleetsim.dashboard")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).with_name("app.py")


def address(text: str) -> str:
    """An IP address to listen on (``127.0.0.1`` loopback only; ``0.0.0.0`` every interface)."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="open the Streamlit what-if dashboard")
    p.add_argument("--address", type=address, default="127.0.0.1",
                   help="IP address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=port, default=8501, help="TCP port to serve on (default 8501)")
    p.set_defaults(func=run)


def command(addr: str, port_: int) -> list[str]:
    """The ``streamlit run`` command line (headless, no usage statistics, the given address)."""
    return [sys.executable, "-m", "streamlit", "run", str(app_path()), "--server.address", addr,
            "--server.port", str(port_), "--server.headless", "true", "--browser.gatherUsageStats", "false"]


def run(args: argparse.Namespace) -> int:
    return subprocess.call(command(args.address, args.port))
