"""Dashboard speed in a real browser: milliseconds per interaction and a trace replay
against the public API's time for the same replay.

Starts ``fleetsim dashboard`` on a free loopback port, drives the distribution's headless
Chromium with Playwright (``fleetsim.dashboard.browser``) and times each interaction from
the click (or key press) to the end of the script run it starts, read from Streamlit's
websocket messages, plus two animation frames so the page has drawn it:

* ``done``: the script run finished and the page drew what it received;
* ``first``: the first new element arrived (the page starts to change);
* ``API``: for plan and simulate clicks, the API's own time inside the server, as the page
  shows it ("planned in", "simulated in"); ``done`` minus it is the dashboard's part.

An interaction that runs no script (a tab switch, when tabs are drawn up front) is timed
until its content is visible. Each repeatable interaction runs ``--repeat`` times; the
median and the range are printed. The scenario is the sidebar's default (llama-3.1-8b on
2xH100, azure-conv, 500 requests).

With ``--trace`` (default: the Azure conversation trace in ``../shared/data``), the trace
is uploaded and replayed whole (Simulate), then the same replay runs through
``fleetsim.simulate_serving`` in this process (after a small warm-up run, as the server is
warm) and both times are printed. ``--big N`` also simulates N requests of azure-conv on
8xH100 and times a widget change and a tab switch with that result on the page (the
simulation alone takes minutes on a 2-core machine).

Run: ``python benchmarks/bench_dashboard.py [--repeat 3] [--trace CSV | --no-trace] [--big 100000]``.
Figures only: nothing here is a test assertion.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

from fleetsim.dashboard.browser import RerunClock, launch, missing, serve

ROOT = Path(__file__).resolve().parents[1]
AZURE_CONV = ROOT.parent / "shared" / "data" / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_conv.csv"
TIMEOUT_MS = int(os.environ.get("BENCH_TIMEOUT_MS", 600_000))


class Bench:
    def __init__(self, page: Any, clock: RerunClock) -> None:
        self.pg, self.clock = page, clock
        self.rows: dict[str, list[tuple[float, float | None]]] = {}
        self.api: dict[str, list[float]] = {}

    def api_time(self, name: str, text: str) -> None:
        """The API's own seconds for the last ``name``, read from the page ("planned in 1.2 s")."""
        shown = self.pg.get_by_text(re.compile(f"{text} [0-9.]+ (us|ms|s)")).first.inner_text()
        value, unit = re.search(f"{text} ([0-9.]+) (us|ms|s)", shown).groups()  # type: ignore[union-attr]
        self.api.setdefault(name, []).append(float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit])

    def time(self, name: str, action: Any, visible: Any = None, run: bool | None = True) -> float:
        """Run ``action``; wait for ``visible`` and for the script run (``run`` None: only if
        one started). Records (done, first) seconds under ``name``."""
        m = self.clock.mark()
        action()
        if visible is not None:
            visible.first.wait_for(state="visible")
        if run is None:
            self.pg.wait_for_timeout(50)
            run = any(k in ("delta", "new_session") for _, k in self.clock.events[m[0]:])
        if run:
            done = self.clock.wait_done(m, TIMEOUT_MS / 1e3)
            first = self.clock.first_delta_s
        else:
            self.pg.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            done = time.perf_counter() - m[1]
            first = done
        self.rows.setdefault(name, []).append((done, first))
        if os.environ.get("BENCH_VERBOSE"):
            print(f"  {name}: {done * 1e3:.0f} ms", flush=True)
        return done

    def report(self) -> None:
        print(f"{'interaction':58s} {'done ms':>9s} {'first ms':>9s} {'API ms':>8s}  range (done, ms)")
        for name, vals in self.rows.items():
            done = [d for d, _ in vals]
            first = [f for _, f in vals if f is not None]
            fm = f"{statistics.median(first) * 1e3:9.0f}" if first else f"{'-':>9s}"
            api = f"{statistics.median(self.api[name]) * 1e3:8.0f}" if name in self.api else f"{'':8s}"
            rng = f"{min(done) * 1e3:.0f}-{max(done) * 1e3:.0f}" if len(done) > 1 else ""
            print(f"{name:58s} {statistics.median(done) * 1e3:9.0f} {fm} {api}  {rng}")


def _enter(locator: Any, value: str) -> Any:
    locator.fill(value)
    return lambda: locator.press("Enter")


def walk(url: str, repeat: int, trace: Path | None, big: int) -> tuple[Bench, dict[str, float]]:
    from playwright.sync_api import sync_playwright

    extra: dict[str, float] = {}
    with sync_playwright() as p:
        browser = launch(p)
        pg = browser.new_page(viewport={"width": 1500, "height": 1000})
        pg.set_default_timeout(TIMEOUT_MS)
        b = Bench(pg, RerunClock(pg))
        b.time("page load (first session of the server)", lambda: pg.goto(url), pg.get_by_text("Press Plan"))
        for _ in range(repeat):
            b.time("page load (new session)", lambda: pg.reload(), pg.get_by_text("Press Plan"))
        side = pg.locator('[data-testid="stSidebar"]')
        seed = side.get_by_label("Seed")
        tab = {n: pg.get_by_role("tab", name=n) for n in ("Plan", "Simulate", "Train", "Compare")}
        for i in range(repeat):
            b.time("tab switch (no results)", lambda: tab["Train"].click(), pg.get_by_text("Press Estimate step"), None)
            b.time("tab switch (no results)", lambda: tab["Plan"].click(), pg.get_by_text("Press Plan"), None)
            b.time("sidebar widget change (no results)", _enter(seed, str(10 + i)))
        for _ in range(repeat):
            b.time("plan (analytic capacities)", lambda: pg.get_by_role("button", name="Plan", exact=True).click(),
                   pg.get_by_text("Simulate this plan"))
            b.api_time("plan (analytic capacities)", "planned in")
        for _ in range(repeat):
            b.time("widget change in the Plan tab (plan shown)", lambda: pg.get_by_text("simulate capacities").click())
        for _ in range(repeat):
            b.time("simulate a plan row (500 requests)", lambda: pg.get_by_role("button", name="Simulate this plan")
                   .click(), pg.get_by_text("Simulated: the result"))
        tab["Simulate"].click()
        b.api_time("simulate a plan row (500 requests)", "simulated in")
        for _ in range(repeat):
            b.time("simulate (form, 500 requests)", lambda: pg.get_by_role("button", name="Simulate", exact=True)
                   .click(), pg.get_by_text("Result: simulation"))
            b.api_time("simulate (form, 500 requests)", "simulated in")
        tab["Train"].click()
        pg.get_by_label("TP", exact=True).last.fill("2")  # llama-3.1-8b needs TP 2 on H100 (memory)
        for _ in range(repeat):
            b.time("train: estimate a step (TP 2)", lambda: pg.get_by_role("button", name="Estimate step").click(),
                   pg.get_by_text("Step time"))
        for i in range(repeat):
            b.time("tab switch (results shown)", lambda: tab["Simulate"].click(), pg.get_by_text("Result: simulation"),
                   None)
            b.time("tab switch (results shown)", lambda: tab["Plan"].click(), pg.get_by_text("Simulate this plan"), None)
            b.time("sidebar widget change (results shown)", _enter(seed, str(20 + i)))
        tab["Simulate"].click()
        b.time("pin a simulation", lambda: pg.get_by_role("button", name="Pin this simulation").click())
        tab["Train"].click()
        b.time("pin a training estimate", lambda: pg.get_by_role("button", name="Pin this training estimate").click())
        b.time("tab switch to Compare (2 pins)", lambda: tab["Compare"].click(), pg.get_by_role("button", name="Comparison (CSV)"), None)
        if trace is not None:
            b.time("workload: trace upload (radio)", lambda: side.get_by_text("trace upload").click())
            b.time(f"trace upload and parse ({trace.name})", lambda: side.locator(
                '[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(trace)),
                side.get_by_text("replayed whole"))
            tab["Simulate"].click()
            extra["trace replay in the browser"] = b.time(
                "trace replay (Simulate)", lambda: pg.get_by_role("button", name="Simulate", exact=True).click(),
                pg.get_by_text(f"of trace {trace.name}"))
            b.api_time("trace replay (Simulate)", "simulated in")
            extra["trace replay: API"] = _api_replay(trace)
            for i in range(repeat):
                b.time("sidebar widget change (trace result shown)", _enter(seed, str(30 + i)))
        if big:
            if trace is not None:
                b.time("workload: built-in (radio)", lambda: side.get_by_text("built-in", exact=True).click())
            cl = side.get_by_label("Cluster shorthand", exact=True).and_(side.get_by_role("textbox"))
            b.time("cluster change", _enter(cl, "8xH100"))
            b.time("requests change", _enter(side.get_by_label("Requests"), str(big)))
            tab["Simulate"].click()
            extra[f"simulate {big:,} requests in the browser"] = b.time(
                f"simulate {big:,} requests", lambda: pg.get_by_role("button", name="Simulate", exact=True).click(),
                pg.get_by_text(f"{big:,} requests, simulated"))
            for i in range(repeat):
                b.time(f"sidebar widget change ({big:,}-request result shown)", _enter(seed, str(40 + i)))
                b.time(f"tab switch ({big:,}-request result shown)", lambda: tab["Plan"].click(),
                       pg.get_by_text("Simulate this plan"), None)
                b.time(f"tab switch ({big:,}-request result shown)", lambda: tab["Simulate"].click(),
                       pg.get_by_text("Result: simulation"), None)
        browser.close()
    return b, extra


def _api_replay(trace: Path) -> float:
    """``simulate_serving`` on the trace as the dashboard calls it (default layout, the
    sidebar's engine profile, seed 0, whole trace), after a 50-request warm-up."""
    from fleetsim.workloads.tracefile import load_trace

    import fleetsim

    fleetsim.simulate_serving("llama-3.1-8b", "2xH100", "azure-conv", None, seed=0, num_requests=50,
                              engine={"profile": "vllm"})
    stream = load_trace(trace)
    t0 = time.perf_counter()
    fleetsim.simulate_serving(fleetsim.load_model("llama-3.1-8b"), fleetsim.load_cluster("2xH100"), stream, None,
                              seed=0, num_requests=None, engine={"profile": "vllm"})
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--trace", type=Path, default=AZURE_CONV)
    ap.add_argument("--no-trace", action="store_true")
    ap.add_argument("--big", type=int, default=0, help="also simulate this many requests (e.g. 100000)")
    args = ap.parse_args(argv)
    why = missing()
    if why:
        raise SystemExit(why)
    trace = None if args.no_trace else args.trace
    if trace is not None and not trace.is_file():
        print(f"no trace at {trace}: trace replay skipped")
        trace = None
    with serve() as url:
        bench, extra = walk(url, args.repeat, trace, args.big)
    bench.report()
    for k, v in extra.items():
        print(f"{k}: {v:.2f} s")
    if trace is not None:
        ratio = extra["trace replay in the browser"] / extra["trace replay: API"]
        print(f"trace replay, browser / API: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
