"""The dashboard in a real browser: ``fleetsim dashboard`` on a free loopback port, driven by
Playwright with the distribution's headless Chromium (no display needed).

Skips, naming the reason, when Playwright or a Chromium binary is missing (install:
``python3 -m pip install playwright`` and ``apt-get install chromium``; Playwright's own
browser download is not used). The walk: plan a scenario, simulate a plan row, change a
widget on another tab and find the simulation still shown, an error with ``tp*cp*pp*dp``
shown literally, a trace upload replayed whole; and the server listens on 127.0.0.1 only."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_MS = 60_000


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


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (python3 -m pip install playwright)"
    if chromium_path() is None:
        return "no Chromium binary found (apt-get install chromium, or set FLEETSIM_CHROMIUM)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """Local addresses of sockets listening on TCP ``port`` (Linux ``/proc/net/tcp*``)."""
    out = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            addr, p = f[1].split(":")
            if f[3] == "0A" and int(p, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(addr)
                if width == 8:
                    out.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    out.add(socket.inet_ntop(socket.AF_INET6, words))
    return out


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    log = open(os.devnull, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "fleetsim", "dashboard", "--port", str(port)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start (exit {proc.poll()})")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def page(server: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        pg = browser.new_page(viewport={"width": 1600, "height": 1200})
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(server)
        pg.get_by_text("fleetsim what-if").first.wait_for()
        yield pg
        browser.close()


def _idle(pg: object) -> None:
    """Wait until the app finished its rerun (Streamlit shows a 'Running...' status widget)."""
    pg.wait_for_timeout(300)  # type: ignore[attr-defined]
    pg.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")  # type: ignore[attr-defined]


def _no_exception(pg: object) -> None:
    assert pg.locator('[data-testid="stException"]').count() == 0  # type: ignore[attr-defined]


def _timed(pg: object, action, done: str) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    action()
    pg.get_by_text(done).first.wait_for()  # type: ignore[attr-defined]
    return time.perf_counter() - t0


def test_listens_on_loopback_only(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    addrs = listening_addresses(port)
    if not addrs:
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    assert addrs == {"127.0.0.1"}, addrs


def test_plan_simulate_row_and_results_survive_other_tabs(page: object) -> None:
    pg = page
    times = {}
    side = pg.locator('[data-testid="stSidebar"]')  # type: ignore[attr-defined]
    req = side.get_by_label("Requests")
    req.fill("100")
    req.press("Enter")
    _idle(pg)
    times["plan"] = _timed(pg, lambda: pg.get_by_role("button", name="Plan", exact=True).click(),  # type: ignore[attr-defined]
                           "Simulate this plan")
    code = pg.locator('[data-testid="stCode"]').filter(has_text="--tensor-parallel-size")  # type: ignore[attr-defined]
    code.first.wait_for()
    assert "vllm serve" in code.first.inner_text()
    _no_exception(pg)
    times["simulate plan row"] = _timed(
        pg, lambda: pg.get_by_role("button", name="Simulate this plan").click(),  # type: ignore[attr-defined]
        "Simulated: the result is on the Simulate tab.")
    pg.get_by_role("tab", name="Simulate").click()  # type: ignore[attr-defined]
    result = pg.get_by_text("Result: plan 1")  # type: ignore[attr-defined]
    result.first.wait_for()
    # a widget change on another tab reruns the page; the simulation stays
    pg.get_by_role("tab", name="Train").click()  # type: ignore[attr-defined]
    dp = pg.get_by_label("DP (0 = GPUs left)")  # type: ignore[attr-defined]
    dp.fill("3")
    dp.press("Tab")
    t0 = time.perf_counter()
    pg.get_by_role("button", name="Estimate step").click()  # type: ignore[attr-defined]
    err = pg.get_by_text("tp*cp*pp*dp", exact=False)  # type: ignore[attr-defined]
    err.first.wait_for()
    times["train error"] = time.perf_counter() - t0
    assert "tpcpppdp" not in pg.content()  # type: ignore[attr-defined]
    side.get_by_label("Seed").fill("5")
    side.get_by_label("Seed").press("Enter")
    _idle(pg)
    pg.get_by_role("tab", name="Simulate").click()  # type: ignore[attr-defined]
    assert result.first.is_visible()
    assert pg.get_by_text("TTFT p90").first.is_visible()  # type: ignore[attr-defined]
    _no_exception(pg)
    # a download carries the simulation's requests
    with pg.expect_download() as dl:  # type: ignore[attr-defined]
        pg.get_by_role("button", name="Requests (CSV)").click()  # type: ignore[attr-defined]
    assert dl.value.suggested_filename == "llama-3.1-8b_2xH100_requests.csv"  # named after the scenario
    head = Path(dl.value.path()).read_text().splitlines()
    assert head[0].startswith("req_id,arrival_s") and len(head) == 101
    # pin the simulation and the plan, compare them
    pg.get_by_role("button", name="Pin this simulation").click()  # type: ignore[attr-defined]
    _idle(pg)
    pg.get_by_role("tab", name="Plan").click()  # type: ignore[attr-defined]
    pg.get_by_role("button", name="Pin this plan").click()  # type: ignore[attr-defined]
    _idle(pg)
    pg.get_by_role("tab", name="Compare").click()  # type: ignore[attr-defined]
    with pg.expect_download() as dl:  # type: ignore[attr-defined]
        pg.get_by_role("button", name="Comparison (CSV)").click()  # type: ignore[attr-defined]
    table = Path(dl.value.path()).read_text()
    assert "delta (B - A)" in table.splitlines()[0] and "TTFT p90" in table
    _no_exception(pg)
    print("browser interaction times (s):", {k: round(v, 2) for k, v in times.items()})


def test_trace_upload_is_replayed_whole(page: object, tmp_path: Path) -> None:
    pg = page
    trace = tmp_path / "mine.jsonl"
    trace.write_text("\n".join(f'{{"arrival_s": {0.2 * i}, "prompt_tokens": {100 + i}, "output_tokens": {20 + i % 7}}}'
                               for i in range(37)) + "\n")
    side = pg.locator('[data-testid="stSidebar"]')  # type: ignore[attr-defined]
    side.get_by_text("trace upload").click()
    _idle(pg)
    side.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(trace))
    side.get_by_text("mine.jsonl: 37 requests").wait_for()
    pg.get_by_role("tab", name="Simulate").click()  # type: ignore[attr-defined]
    pg.get_by_role("button", name="Simulate", exact=True).click()  # type: ignore[attr-defined]
    pg.get_by_text("of trace mine.jsonl").first.wait_for()  # type: ignore[attr-defined]
    assert pg.get_by_text("37 of 37").first.is_visible()  # type: ignore[attr-defined]
    _no_exception(pg)
