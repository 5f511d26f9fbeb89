"""The dashboard in a real browser: ``fleetsim dashboard`` on a free loopback port (one
server for the module), driven by Playwright with the distribution's headless Chromium
(``fleetsim.dashboard.browser``; no display needed, Playwright's own browsers unused).
Each test opens its own page, so its own Streamlit session.

Skips, naming the reason, when Playwright or a Chromium binary is missing. Covered: every
page renders without an exception; plan, then simulate the top plan row in one click;
an Azure CSV trace uploaded and replayed whole; two pinned results compared with their
deltas (the API's numbers); downloads carry the API's numbers; bad input in each widget
gives one line, shown exactly as the API words it (no traceback, no Markdown mangling of
``tp*cp*pp*dp`` or ``['x']``); results survive a widget change on another tab and in the
sidebar; the server listens on 127.0.0.1 only. Every wait is on the page's content or on
Streamlit's own end-of-run message, with generous timeouts."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fleetsim.dashboard import browser
from fleetsim.dashboard import format as fmt

import fleetsim

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=browser.missing() or "")

TIMEOUT_MS = 120_000
N = 60
"""Requests per simulation in these tests (small: the browser, not the simulator, is tested)."""


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
    with browser.serve() as url:
        yield url


@pytest.fixture(scope="module")
def chromium(server: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = browser.launch(p)
        yield b
        b.close()


class Page:
    """One browser page (one Streamlit session) and the helpers the tests share."""

    def __init__(self, pg: Any, url: str) -> None:
        self.pg = pg
        self.clock = browser.RerunClock(pg)
        self.side = pg.locator('[data-testid="stSidebar"]')
        m = self.clock.mark()
        pg.goto(url)
        pg.get_by_text("Press Plan").first.wait_for()
        self.clock.wait_done(m, TIMEOUT_MS / 1e3)

    def act(self, action: Any) -> None:
        """``action`` (a click, a key press, an upload), then wait for the script run it starts."""
        m = self.clock.mark()
        action()
        self.clock.wait_done(m, TIMEOUT_MS / 1e3)

    def enter(self, label: str, value: str, where: Any = None) -> None:
        box = (where or self.side).get_by_label(label, exact=True).and_((where or self.side).get_by_role(
            "spinbutton").or_((where or self.side).get_by_role("textbox")))
        box.fill(value)
        self.act(lambda: box.press("Enter"))

    def click(self, name: str, exact: bool = True) -> None:
        self.act(lambda: self.pg.get_by_role("button", name=name, exact=exact).click())

    def tab(self, name: str) -> None:
        self.pg.get_by_role("tab", name=name, exact=True).click()

    def upload(self, uploader_label: str, path: Path) -> None:
        box = self.side.locator('[data-testid="stFileUploader"]').filter(has_text=uploader_label)
        self.act(lambda: box.locator('input[type="file"]').set_input_files(str(path)))

    def download(self, name: str) -> bytes:
        with self.pg.expect_download() as dl:
            self.pg.get_by_role("button", name=name).click()
        return Path(dl.value.path()).read_bytes()

    def errors(self) -> list[str]:
        return [e.inner_text().strip() for e in self.pg.locator('[data-testid="stAlertContentError"]').all()]

    def no_exception(self) -> None:
        assert self.pg.locator('[data-testid="stException"]').count() == 0
        assert "Traceback" not in self.pg.content()


@pytest.fixture
def page(chromium: Any, server: str) -> Iterator[Page]:
    ctx = chromium.new_context(viewport={"width": 1600, "height": 1200}, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    try:
        yield Page(pg, server)
    finally:
        ctx.close()


def test_listens_on_loopback_only(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    addrs = listening_addresses(port)
    if not addrs:
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    assert addrs == {"127.0.0.1"}, addrs


def test_every_page_renders(page: Page) -> None:
    pg = page.pg
    for name, text in (("Plan", "Press Plan"), ("Simulate", "Press Simulate"), ("Train", "Press Estimate step"),
                       ("Compare", "0 pinned")):
        page.tab(name)
        pg.get_by_text(text).first.wait_for(state="visible")
        page.no_exception()
    assert page.errors() == []


def test_plan_then_simulate_top_row_pin_compare_and_download(page: Page) -> None:
    pg = page.pg
    page.enter("Requests", str(N))
    page.click("Plan")
    pg.get_by_text("Simulate this plan").first.wait_for()
    flags = pg.locator('[data-testid="stCode"]').filter(has_text="--tensor-parallel-size")
    assert "vllm serve" in flags.first.inner_text()
    plan = fleetsim.plan_serving("llama-3.1-8b", "2xH100", workload="azure-conv", engine="vllm",
                                 objective="max_goodput", simulate=False, seed=0).search
    best = plan.plans[0]
    assert pg.get_by_text(fmt.usd(best.cost_per_hour, "h"), exact=True).first.is_visible()
    page.click("Simulate this plan")  # one click: the top row, on the scenario's workload
    pg.get_by_text("Simulated: the result is on the Simulate tab.").wait_for()
    page.tab("Simulate")
    pg.get_by_text(f"Result: plan 1: {best.name}").first.wait_for(state="visible")
    from fleetsim.dashboard.plan_view import plan_deployment
    from fleetsim.dashboard.scenario import Scenario

    sim = fleetsim.simulate_serving("llama-3.1-8b", "2xH100", "azure-conv", plan_deployment(best, Scenario()),
                                    seed=0, num_requests=N)
    assert pg.get_by_text(fmt.seconds(sim.summary["ttft_p90_s"]), exact=True).first.is_visible()
    # the requests download is the API's per-request table
    got = pd.read_csv(io.BytesIO(page.download("Requests (CSV)")))
    assert len(got) == N
    pd.testing.assert_series_equal(got["ttft_s"], sim.requests["ttft_s"].reset_index(drop=True), check_names=False)
    summary = json.loads(page.download("Inputs and summary (JSON)"))
    assert summary["summary"]["num_requests"] == N and summary["scenario"]["num_requests"] == N
    # pin the simulation, then the plan; Compare shows B - A of the API's numbers
    page.click("Pin this simulation")
    pg.get_by_text("pinned as 'plan 1").first.wait_for()
    page.tab("Plan")
    page.click("Pin this plan")
    page.tab("Compare")
    table = pd.read_csv(io.BytesIO(page.download("Comparison (CSV)")))
    row = table[table["metric"] == "TPOT p90"].iloc[0]
    delta = best.checked.tpot_p90_s - sim.summary["tpot_p90_s"]  # B (plan) - A (simulation)
    assert row["delta (B - A)"] == ("+" if delta >= 0 else "-") + fmt.seconds(abs(delta))
    assert row["relative"] == f"{delta / abs(sim.summary['tpot_p90_s']) * 100:+.1f} %"
    page.no_exception()


def test_results_survive_widget_changes_elsewhere(page: Page) -> None:
    pg = page.pg
    page.enter("Requests", str(N))
    page.tab("Simulate")
    page.click("Simulate")
    result = pg.get_by_text("Result: simulation")
    result.first.wait_for(state="visible")
    shown = pg.locator('[data-testid="stMetric"]').filter(has_text="TTFT p90").inner_text()
    page.tab("Train")
    train = pg.locator('[data-testid="stForm"]').filter(has_text="Estimate step")
    train.get_by_label("TP", exact=True).fill("2")
    page.click("Estimate step")
    pg.get_by_text("Step time").first.wait_for(state="visible")
    page.enter("Seed", "5")  # the sidebar: a whole-page rerun
    page.enter("TTFT (ms; 0 = none)", "250")
    page.tab("Simulate")
    assert result.first.is_visible()
    assert pg.locator('[data-testid="stMetric"]').filter(has_text="TTFT p90").inner_text() == shown
    page.tab("Train")
    assert pg.get_by_text("Step time").first.is_visible()
    page.no_exception()
    assert page.errors() == []


def test_azure_trace_upload_is_replayed_whole(page: Page, tmp_path: Path) -> None:
    from fleetsim.dashboard.scenario import parse_trace

    rows = [f"2023-11-16 18:15:{10 + i // 4:02d}.{(i % 4) * 25:02d}00000,{100 + 7 * i},{20 + i % 9}" for i in range(41)]
    trace = tmp_path / "azure_small.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    pg = page.pg
    page.act(lambda: page.side.get_by_text("trace upload").click())
    page.upload("Trace", trace)
    page.side.get_by_text("azure_small.csv: 41 requests").wait_for()
    page.tab("Simulate")
    page.click("Simulate")
    pg.get_by_text("of trace azure_small.csv").first.wait_for(state="visible")
    sim = fleetsim.simulate_serving("llama-3.1-8b", "2xH100", parse_trace(trace.read_bytes(), trace.name), None,
                                    seed=0, engine={"profile": "vllm"})
    assert sim.summary["num_requests"] == 41  # whole: not cut or looped to the sidebar's request count
    finished = pg.locator('[data-testid="stMetric"]').filter(has_text="Finished").inner_text()
    assert f"{sim.summary['finished']} of 41" in finished
    assert pg.get_by_text(fmt.seconds(sim.summary["ttft_p90_s"]), exact=True).first.is_visible()
    page.no_exception()


def _bad_inputs(tmp: Path) -> dict[str, tuple[Any, str]]:
    """Widget -> (what to do on the page, the API's one-line message it must show)."""
    from fleetsim.dashboard import scenario as sc

    def api_error(fn: Any, *args: Any, **kw: Any) -> str:
        with pytest.raises(fleetsim.FleetsimError) as e:
            fn(*args, **kw)
        return fmt.one_line(e.value)

    files = {"bad_config.json": b'{"model_type": "llama",', "bad_cluster.yaml": b"pools: [",
             "bad_azure.csv": b"TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6805900,374\n",
             "bad_scenario.yaml": b"clustr: 8xH100\n"}
    for name, data in files.items():
        (tmp / name).write_bytes(data)

    def sidebar_text(radio: str | None, label: str, value: str, button: str, tab: str = "Plan") -> Any:
        def go(page: Page) -> None:
            if radio:
                page.act(lambda: page.side.get_by_text(radio, exact=True).click())
            page.enter(label, value)
            page.tab(tab)
            page.click(button)
        return go

    def form(tab: str, fields: dict[str, str], button: str, uncheck: str | None = None) -> Any:
        def go(page: Page) -> None:
            page.tab(tab)
            f = page.pg.locator('[data-testid="stForm"]').filter(has=page.pg.get_by_role("button", name=button))
            if uncheck:
                f.get_by_text(uncheck).click()
            for label, value in fields.items():
                f.get_by_label(label, exact=True).fill(value)
            page.click(button)
        return go

    def upload(radio: str | None, uploader: str, name: str) -> Any:
        def go(page: Page) -> None:
            if radio:
                page.act(lambda: page.side.get_by_text(radio, exact=True).click())
            page.upload(uploader, tmp / name)
        return go

    tp64 = {"pools": [{"pool": 0, "tp": 64, "pp": 1, "ep": 1, "replicas": None, "engine": {
        "profile": "vllm", "enable_prefix_caching": False, "scheduler": {
            "kind": "vllm", "max_num_seqs": 256, "max_num_batched_tokens": 8192, "chunked_prefill": True}}}],
        "router": "least_outstanding_tokens"}
    return {
        "cluster shorthand": (sidebar_text(None, "Cluster shorthand", "8xNOPE", "Plan"),
                              api_error(fleetsim.load_cluster, "8xNOPE")),
        "cluster path": (sidebar_text(None, "Cluster shorthand", "/etc/passwd", "Plan"),
                         api_error(sc.Scenario(cluster="/etc/passwd").cluster_source)),
        "workload spec": (sidebar_text("spec", "Workload spec", "poisson:rate=oops", "Simulate", "Simulate"),
                          api_error(sc.workload_for_api, sc.Scenario(workload_kind="spec",
                                                                     workload="poisson:rate=oops"), None)),
        "simulate form": (form("Simulate", {"TP": "64"}, "Simulate", uncheck="API default layout"),
                          api_error(fleetsim.simulate_serving, "llama-3.1-8b", "2xH100", "azure-conv", tp64,
                                    seed=0, num_requests=N)),
        "train form": (form("Train", {"DP (0 = GPUs left)": "3"}, "Estimate step"),
                       api_error(fleetsim.estimate_train_step, "llama-3.1-8b", "2xH100", dp=3, micro_batch=1,
                                 global_batch=64, seq_len=2048, engine="megatron")),
        "model upload": (upload("config.json upload", "Hugging Face config.json", "bad_config.json"),
                         api_error(sc.parse_model_config, files["bad_config.json"], "bad_config.json")),
        "cluster upload": (upload("YAML upload", "Cluster YAML", "bad_cluster.yaml"),
                           api_error(sc.parse_cluster_yaml, files["bad_cluster.yaml"], "bad_cluster.yaml")),
        "trace upload": (upload("trace upload", "Trace", "bad_azure.csv"),
                         api_error(sc.parse_trace, files["bad_azure.csv"], "bad_azure.csv")),
        "scenario load": (upload(None, "Load scenario", "bad_scenario.yaml"),
                          api_error(sc.scenario_from_text, files["bad_scenario.yaml"].decode(), "bad_scenario.yaml")),
    }


BAD = ("cluster shorthand", "cluster path", "workload spec", "simulate form", "train form", "model upload",
       "cluster upload", "trace upload", "scenario load")


@pytest.mark.parametrize("widget", BAD)
def test_bad_input_is_one_line_shown_as_typed(page: Page, tmp_path: Path, widget: str) -> None:
    go, message = _bad_inputs(tmp_path)[widget]
    page.enter("Requests", str(N))
    go(page)
    page.pg.locator('[data-testid="stAlertContentError"]').first.wait_for(state="visible")
    assert page.errors() == [message]  # one line, every character as the API wrote it
    assert "\n" not in message and "root:" not in message
    page.no_exception()
