"""The dashboard in a real browser, for the browser tests, the screenshots and the benchmark:
``fleetsim dashboard`` on a free loopback port, the distribution's headless Chromium driven
by Playwright (its own browser download is never used), and a clock that reads Streamlit's
websocket messages to time a rerun from the click to the script's end.

Needs ``pip install playwright`` and a Chromium binary (``apt-get install chromium``;
``FLEETSIM_CHROMIUM`` names another)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage")
"""Headless without a display or a sandbox; the background-networking switches keep Chromium
from calling home (on a closed network it retries without end and loads the CPU)."""


def chromium_path() -> str | None:
    """The distribution's Chromium (``FLEETSIM_CHROMIUM`` overrides), or None."""
    env = os.environ.get("FLEETSIM_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    for p in sorted(Path("/usr/lib").glob("chromium*/chromium")):
        if p.is_file():
            return str(p)
    return None


def missing() -> str | None:
    """Why the browser cannot run here (None: it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (python3 -m pip install playwright)"
    if chromium_path() is None:
        return "no Chromium binary found (apt-get install chromium, or set FLEETSIM_CHROMIUM)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(port: int | None = None, timeout_s: float = 90.0) -> Iterator[str]:
    """``fleetsim dashboard`` on ``port`` (a free one by default) until the block ends; yields
    its URL once the health check answers."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    # its own process group: ``fleetsim dashboard`` runs streamlit as a child, which must end too
    proc = subprocess.Popen([sys.executable, "-m", "fleetsim", "dashboard", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fleetsim dashboard did not start (exit {proc.poll()})")
            time.sleep(0.2)
        yield url
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the server's process group (SIGTERM, then SIGKILL after 15 s)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(15)
            os.killpg(proc.pid, 0)  # the group may outlive its leader
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            pass
        if sig == signal.SIGTERM:
            time.sleep(0.5)


def launch(playwright: Any) -> Any:
    """Headless Chromium (the distribution's binary) with ``CHROMIUM_ARGS``."""
    path = chromium_path()
    if path is None:
        raise RuntimeError(missing() or "no Chromium")
    return playwright.chromium.launch(executable_path=path, headless=True, args=list(CHROMIUM_ARGS))


_EARLY = "finished:2"
"""``FINISHED_EARLY_FOR_RERUN``: a run cut short by the rerun that follows it."""


class RerunClock:
    """Streamlit's server messages as the page receives them, with their arrival times.

    ``mark()`` before an action, then ``wait_done(mark)`` returns the seconds from the mark to
    the end of the script run it started (a ``script_finished`` message) and to the first
    element sent (``first_delta_s``, None for a run that sent nothing new)."""

    def __init__(self, page: Any) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self._msg = ForwardMsg
        self.page = page
        self.events: list[tuple[float, str]] = []
        self.first_delta_s: float | None = None
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload: str | bytes) -> None:
        t = time.perf_counter()
        if isinstance(payload, str):
            return
        try:
            msg = self._msg.FromString(payload)
        except Exception:  # a frame that is no ForwardMsg
            return
        kind = msg.WhichOneof("type") or ""
        if kind == "script_finished":
            kind = f"finished:{msg.script_finished}"
        self.events.append((t, kind))

    def mark(self) -> tuple[int, float]:
        return len(self.events), time.perf_counter()

    def wait_done(self, mark: tuple[int, float], timeout_s: float = 600.0) -> float:
        """Seconds from ``mark`` to the end of the next script run (plus two animation frames,
        so the page has drawn what it received)."""
        i0, t0 = mark
        deadline = time.monotonic() + timeout_s
        while True:
            done = [t for t, k in self.events[i0:] if k.startswith("finished:") and k != _EARLY]
            if done:
                deltas = [t for t, k in self.events[i0:] if k == "delta"]
                self.first_delta_s = deltas[0] - t0 if deltas else None
                self.page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
                return time.perf_counter() - t0
            if time.monotonic() > deadline:
                raise TimeoutError("the script run did not finish")
            self.page.wait_for_timeout(10)
