"""Screenshots of every page, taken in headless Chromium.

``python3 -m fleetsim.dashboard.screenshots OUT_DIR`` starts ``fleetsim dashboard`` on a
free loopback port, walks plan -> simulate the top plan row -> pin -> train -> pin ->
compare and writes ``dashboard-<page>.png`` into ``OUT_DIR``. Needs Playwright and a
Chromium binary (``fleetsim.dashboard.browser``). Interaction times:
``benchmarks/bench_dashboard.py``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fleetsim.dashboard.browser import RerunClock, launch, serve

TIMEOUT_MS = 600_000


def walk(out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    with serve() as url, sync_playwright() as p:
        browser = launch(p)
        pg = browser.new_page(viewport={"width": 1500, "height": 1000})
        pg.set_default_timeout(TIMEOUT_MS)
        clock = RerunClock(pg)

        def act(action: Any) -> None:
            m = clock.mark()
            action()
            clock.wait_done(m, TIMEOUT_MS / 1e3)

        def shot(name: str) -> None:
            pg.wait_for_timeout(800)  # let Vega finish its transitions
            path = out / f"dashboard-{name}.png"
            pg.screenshot(path=str(path))
            shots.append(path)

        act(lambda: pg.goto(url))
        side = pg.locator('[data-testid="stSidebar"]')
        cluster = side.get_by_label("Cluster shorthand", exact=True).and_(side.get_by_role("textbox"))
        cluster.fill("8xH100")
        act(lambda: cluster.press("Enter"))
        requests = side.get_by_label("Requests", exact=True)
        requests.fill("300")
        act(lambda: requests.press("Enter"))
        act(lambda: pg.get_by_role("button", name="Plan", exact=True).click())
        pg.locator('[data-testid="stCode"]').filter(has_text="vllm serve").first.wait_for()
        act(lambda: pg.get_by_role("button", name="Pin this plan").click())
        shot("plan")
        act(lambda: pg.get_by_role("button", name="Simulate this plan").click())
        pg.get_by_role("tab", name="Simulate").click()
        pg.get_by_text("Result: plan 1").first.wait_for()
        act(lambda: pg.get_by_role("button", name="Pin this simulation").click())
        shot("simulate")
        pg.get_by_role("tab", name="Train").click()
        form = pg.locator('[data-testid="stForm"]').filter(has=pg.get_by_role("button", name="Estimate step"))
        for label, value in (("TP", "2"), ("PP", "2"), ("global batch (seq)", "16")):
            form.get_by_label(label, exact=True).fill(value)
        act(lambda: pg.get_by_role("button", name="Estimate step").click())
        pg.get_by_text("Step time").first.wait_for()
        shot("train")
        pg.get_by_role("tab", name="Compare").click()
        pg.get_by_role("button", name="Comparison (CSV)").wait_for()
        shot("compare")
        browser.close()
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m fleetsim.dashboard.screenshots")
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    for path in walk(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
