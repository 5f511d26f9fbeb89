"""The dashboard's pieces without a page: units, downsampling, scenario files, uploads,
the ``fleetsim dashboard`` command line, and the import guard for a shadowing folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fleetsim.dashboard import charts, scenario
from fleetsim.dashboard import format as fmt
from fleetsim.hardware.errors import ConfigError

from fleetsim.cli.dashboard import app_path, command

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value,text", [(0.0123, "12.3 ms"), (4.5e-5, "45 us"), (2.0, "2 s"), (600.0, "10 min"),
                                        (7200.0, "2 h"), (864000.0, "10 days"), (float("nan"), "n/a"), (None, "n/a")])
def test_seconds(value: float | None, text: str) -> None:
    assert fmt.seconds(value) == text


def test_units() -> None:
    assert fmt.watts(1240.0) == "1.24 kW"
    assert fmt.joules(3.6e9) == "3.6 GJ"
    assert fmt.nbytes(80 * 2**30) == "80 GiB"
    assert fmt.rate(1170.0, "tok/s") == "1.17 ktok/s"
    assert fmt.usd(5.98, "h") == "$5.98/h"
    assert fmt.share(0.9876) == "98.8 %"
    rows = dict(fmt.summary_rows({"ttft_p90_s": 0.25, "avg_power_w": 400.0, "goodput_rps": 3.0, "finished": 10,
                                  "engine": "vllm", "goodput_share": 0.5}))
    assert rows == {"ttft_p90_s": "250 ms", "avg_power_w": "400 W", "goodput_rps": "3 req/s", "finished": "10",
                    "engine": "vllm", "goodput_share": "50.0 %"}


def test_escape_md_keeps_every_character() -> None:
    text = "tp*cp*pp*dp = 1*1*1*3 != 2 GPUs of cluster '2xH100' [a](b) $x$ _y_ <b>"
    escaped = fmt.escape_md(text)
    assert escaped.replace("\\", "") == text.replace("\\", "")
    assert "\\*" in escaped and "\\$" in escaped and "\\_" in escaped


def test_one_line_hides_paths_and_keeps_first_line() -> None:
    assert fmt.one_line(ValueError("/tmp/x123.csv: bad\nsecond line"), {"/tmp/x123.csv": "mine.csv"}) == "mine.csv: bad"


def test_cdf_points_are_quantiles() -> None:
    v = np.arange(1, 100_001, dtype=float)[::-1]
    d = charts.cdf_points(v, max_points=101)
    assert len(d) == 101
    assert d["value"].iloc[0] == 1.0 and d["value"].iloc[-1] == 100_000.0
    # the q-quantile of 1..n is q*n: each point lies on the exact CDF
    np.testing.assert_allclose(d["q"] * 100_000, d["value"])
    assert charts.cdf_points(np.array([np.nan, 2.0, 1.0]))["value"].tolist() == [1.0, 2.0]


def test_bin_mean_downsamples_to_bin_means() -> None:
    df = pd.DataFrame({"t": np.arange(10_000, dtype=float), "y": np.arange(10_000, dtype=float) * 2})
    d = charts.bin_mean(df, "t", ["y"], max_points=100)
    assert len(d) == 100
    np.testing.assert_allclose(d["y"], 2 * d["t"])  # a linear series: mean of y = 2 * mean of t
    assert d["t"].iloc[0] == pytest.approx(49.5)  # first bin holds t = 0..99
    assert len(charts.bin_mean(df.head(50), "t", ["y"], max_points=100)) == 50


def _every_chart() -> list[charts.Chart]:
    rng = np.random.default_rng(0)
    lat = rng.exponential(0.1, 5000)
    ts = pd.DataFrame({"t": np.arange(6000.0), "y": rng.random(6000), "replica": np.arange(6000) % 3})
    pts = pd.DataFrame({"name": ["a", "b"], "usd_per_hour_per_rps": [1.0, 2.0], "tpot_ms": [30.0, 20.0],
                        "j_per_output_token": [0.5, np.nan], "on_frontier": [True, False]})
    bars = pd.DataFrame({"stage": ["stage 0", "stage 0"], "part": ["weights", "grads"], "GiB": [15.0, 30.0]})
    events = pd.DataFrame({"stage": [0, 1], "stream": ["compute", "comm"], "name": ["fwd_0", "send act"],
                           "start_s": [0.0, 0.01], "end_s": [0.01, 0.012], "micro_batch": [0, None]})
    return [charts.latency_cdf(lat, "TTFT", 0.2), charts.latency_cdf(lat, "E2E"), charts.latency_hist(lat, "TPOT", 0.05),
            charts.latency_hist(np.array([np.nan]), "TPOT"), charts.over_time(ts, "t", "y", "y", "share"),
            charts.over_time(ts, "t", "y", "y", "share", color="replica"),
            charts.pareto(pts, "usd_per_hour_per_rps", "tpot_ms", "j_per_output_token", "USD/h", "ms"),
            charts.gpu_mix({"H100": 8, "L4": 4}), charts.stacked_bars(bars, "stage", "part", "GiB", "memory", "GiB"),
            charts.timeline(events)]


def test_chart_specs_are_valid_vega_lite_with_few_points() -> None:
    """Every chart is a valid Vega-Lite spec (the schema altair bundles) once its points are
    attached, and refers only to columns its points have; a 6,000-row series is binned."""
    import jsonschema
    from altair.vegalite.v6.schema import core

    validator = jsonschema.Draft7Validator(core.load_schema())
    for c in _every_chart():
        spec = dict(c.spec, data={"values": json.loads(c.data.to_json(orient="records"))})
        errors = [e.message[:200] for e in validator.iter_errors(spec)]
        assert not errors, (c.spec.get("title"), errors)
        for layer in c.spec.get("layer", [c.spec]):
            if "data" in layer:
                continue
            for ch in layer["encoding"].values():
                for f in ch if isinstance(ch, list) else [ch]:
                    assert "field" not in f or f["field"] in c.data.columns, (c.spec["title"], f["field"])
        assert len(c.data) <= charts.MAX_POINTS
    assert not validator.is_valid({"mark": "nope", "data": {"values": []}})  # the validator does refuse


def test_scenario_round_trips_and_refuses_unknown_keys() -> None:
    s = scenario.Scenario(cluster="4xA100-80GB", seed=7, ttft_slo_s=0.25, cluster_pools=[{"gpu": "H100", "count": 2}])
    assert scenario.scenario_from_text(scenario.scenario_yaml(s), "s.yaml") == s
    assert scenario.scenario_from_text(scenario.scenario_json(s), "s.json") == s
    with pytest.raises(ConfigError, match="s.yaml: unknown key.*clustr"):
        scenario.scenario_from_text("clustr: 8xH100\n", "s.yaml")
    with pytest.raises(ConfigError, match="seed must be a whole number"):
        scenario.scenario_from_text("seed: -1\n", "s.yaml")
    with pytest.raises(ConfigError, match="workload_kind 'file'"):
        scenario.scenario_from_text("workload_kind: file\n", "s.yaml")


def test_cluster_sources() -> None:
    assert scenario.builder_shorthand([{"gpu": "H100", "count": 8}, {"gpu": "L4", "count": 4}]) == "8xH100+4xL4"
    with pytest.raises(ConfigError, match="pool 1: count"):
        scenario.builder_shorthand([{"gpu": "H100", "count": 0}])
    with pytest.raises(ConfigError, match="upload a YAML"):
        scenario.Scenario(cluster="/etc/passwd").cluster_source()


def test_uploads_are_checked_and_never_echo_contents() -> None:
    cfg = {"model_type": "llama", "hidden_size": 512, "num_hidden_layers": 2, "num_attention_heads": 8,
           "num_key_value_heads": 8, "intermediate_size": 1024, "vocab_size": 1000, "max_position_embeddings": 2048}
    assert scenario.parse_model_config(json.dumps(cfg).encode(), "config.json")["hidden_size"] == 512
    with pytest.raises(ConfigError, match="config.json: not JSON"):
        scenario.parse_model_config(b"root:x:0:0:root:/root:/bin/bash", "config.json")
    with pytest.raises(ConfigError, match="larger than"):
        scenario.parse_model_config(b" " * (scenario.MAX_CONFIG_BYTES + 1), "config.json")
    with pytest.raises(ConfigError, match="cl.yaml: expected a mapping"):
        scenario.parse_cluster_yaml(b"- 1\n- 2\n", "cl.yaml")
    with pytest.raises(ConfigError, match="a trace is .csv"):
        scenario.parse_trace(b"x", "t.pkl")
    with pytest.raises(ConfigError) as e:
        scenario.parse_trace(b"arrival_s,prompt_tokens,output_tokens\n0,abc,3\n", "t.csv")
    assert "t.csv" in str(e.value) and "fleetsim-upload" not in str(e.value)
    azure = b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n" \
            b"2023-11-16 18:15:50.9951690,396,109\n2023-11-16 18:15:51.5331230,879,52\n"
    stream = scenario.parse_trace(azure, "azure.csv")
    assert list(stream.prompt_tokens) == [374, 396, 879]
    assert stream.arrival_s[1] == pytest.approx(50.9951690 - 46.6805900)


def test_command_listens_on_loopback_by_default() -> None:
    from fleetsim.cli import main

    cmd = command("127.0.0.1", 8600)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8600"
    assert cmd[cmd.index("run") + 1] == str(app_path())
    try:
        code = main(["dashboard", "--address", "localhost:80"])
    except SystemExit as e:
        code = e.code
    assert code == 2


def test_app_ignores_a_folder_named_fleetsim_in_the_working_directory(tmp_path: Path) -> None:
    """Started in the folder above a checkout called ``fleetsim``, the folder shadows the
    installed package as an empty namespace package; the app's guard drops it."""
    (tmp_path / "fleetsim").mkdir()
    probe = ("import fleetsim, sys; ok1 = hasattr(fleetsim, 'plan_serving'); "
             "import runpy; g = runpy.run_path(sys.argv[1], run_name='guard_only'); "
             "print(ok1, g['ok'])")
    guard = tmp_path / "guard.py"
    src = Path(app_path()).read_text()
    head = src[:src.index("_installed_fleetsim()\n")]
    guard.write_text(head + "_installed_fleetsim()\nimport fleetsim\nok = hasattr(fleetsim, 'plan_serving')\n")
    out = subprocess.run([sys.executable, "-c", probe, str(guard)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = out.stdout.split()
    assert before == "False"  # the shadowing happens without the guard
    assert after == "True"


def test_token_rate_integrates_to_the_tokens_processed() -> None:
    """The Simulate tab's tokens/s series, times each segment's span, adds up to every prompt
    token computed plus every output token generated (the requests table: an independent
    count); it was counted iterations times over for fast-forwarded decode runs."""
    from fleetsim.dashboard.simulate_view import with_token_rate

    import fleetsim

    res = fleetsim.simulate_serving("llama-3.2-1b", "1xH100", "poisson:rate=20,isl=256,osl=64", num_requests=200)
    ts = with_token_rate(res.timeseries).dropna(subset=["tok_per_s"])
    processed = float((ts["tok_per_s"] * (ts["end_s"] - ts["start_s"])).sum())
    rq = res.requests
    expected = float(rq["prompt_tokens"].sum() + rq["generated_tokens"].sum())
    assert abs(processed - expected) <= 0.02 * expected
