"""Screenshots of every page and the interaction times, measured in headless Chromium.

``python3 -m fleetsim.dashboard.screenshots OUT_DIR [--trace AZURE_CSV]`` starts
``fleetsim dashboard`` on a free loopback port, walks plan -> simulate a plan row -> train
-> compare (and, with ``--trace``, uploads and replays that trace), writes
``dashboard-<page>.png`` into ``OUT_DIR`` and prints the seconds from each click to its
result, next to the public API's time for the same trace replay. Needs Playwright and a
Chromium binary (the distribution's; ``FLEETSIM_CHROMIUM`` overrides)."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def _chromium() -> str:
    for name in (os.environ.get("FLEETSIM_CHROMIUM", ""), "chromium", "chromium-browser"):
        found = shutil.which(name) if name else None
        if found:
            return found
    raise SystemExit("no Chromium binary (apt-get install chromium, or set FLEETSIM_CHROMIUM)")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_health(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("the dashboard did not start")


def _click_until(pg: Any, button: Any, text: str) -> float:
    t0 = time.perf_counter()
    button.click()
    pg.get_by_text(text).first.wait_for()
    return time.perf_counter() - t0


def walk(out: Path, trace: Path | None) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    port = _port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "fleetsim", "dashboard", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times: dict[str, float] = {}
    try:
        _wait_health(url, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium(), headless=True,
                                        args=["--no-sandbox", "--disable-dev-shm-usage"])
            pg = browser.new_page(viewport={"width": 1500, "height": 1000})
            pg.set_default_timeout(600_000)
            t0 = time.perf_counter()
            pg.goto(url)
            pg.get_by_text("Press Plan").first.wait_for()
            times["first paint"] = time.perf_counter() - t0
            side = pg.locator('[data-testid="stSidebar"]')
            side.get_by_label("Requests").fill("300")
            side.get_by_label("Requests").press("Enter")
            pg.wait_for_timeout(1000)
            times["plan"] = _click_until(pg, pg.get_by_role("button", name="Plan", exact=True), "Simulate this plan")
            pg.locator('[data-testid="stCode"]').filter(has_text="vllm serve").first.wait_for()
            pg.screenshot(path=str(out / "dashboard-plan.png"))
            times["simulate plan row (300 requests)"] = _click_until(
                pg, pg.get_by_role("button", name="Simulate this plan"), "Simulated: the result")
            pg.get_by_role("button", name="Pin this plan").click()
            pg.wait_for_timeout(1000)
            pg.get_by_role("tab", name="Simulate").click()
            pg.get_by_role("button", name="Pin this simulation").click()
            pg.wait_for_timeout(1500)
            pg.screenshot(path=str(out / "dashboard-simulate.png"))
            pg.get_by_role("tab", name="Train").click()
            side.get_by_label("Cluster shorthand", exact=True).and_(side.get_by_role("textbox")).fill("8xH100")
            side.get_by_label("Cluster shorthand", exact=True).and_(side.get_by_role("textbox")).press("Enter")
            pg.wait_for_timeout(1000)
            pg.get_by_label("TP", exact=True).last.fill("2")
            pg.get_by_label("PP", exact=True).last.fill("2")
            pg.get_by_label("global batch (seq)").fill("16")
            pg.get_by_label("global batch (seq)").press("Tab")
            times["train estimate"] = _click_until(pg, pg.get_by_role("button", name="Estimate step"), "pipeline schedule")
            pg.wait_for_timeout(1500)
            pg.screenshot(path=str(out / "dashboard-train.png"))
            pg.get_by_role("tab", name="Compare").click()
            pg.wait_for_timeout(1000)
            pg.screenshot(path=str(out / "dashboard-compare.png"))
            if trace is not None:
                side.get_by_label("Cluster shorthand", exact=True).and_(side.get_by_role("textbox")).fill("2xH100")
                side.get_by_label("Cluster shorthand", exact=True).and_(side.get_by_role("textbox")).press("Enter")
                side.get_by_text("trace upload").click()
                pg.wait_for_timeout(1000)
                t0 = time.perf_counter()
                side.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(trace))
                side.get_by_text("replayed whole").wait_for()
                times["trace upload and parse"] = time.perf_counter() - t0
                pg.get_by_role("tab", name="Simulate").click()
                times["trace replay"] = _click_until(pg, pg.get_by_role("button", name="Simulate", exact=True),
                                                     f"of trace {trace.name}")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)
    if trace is not None:
        from fleetsim.workloads.tracefile import load_trace

        import fleetsim

        t0 = time.perf_counter()
        fleetsim.simulate_serving("llama-3.1-8b", "2xH100", load_trace(trace), seed=0)
        times["trace replay by the API"] = time.perf_counter() - t0
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m fleetsim.dashboard.screenshots")
    ap.add_argument("out", type=Path)
    ap.add_argument("--trace", type=Path, default=None, help="an Azure CSV / JSONL trace to upload and replay")
    args = ap.parse_args(argv)
    for k, v in walk(args.out, args.trace).items():
        print(f"{k}: {v:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
