"""The dashboard's views headless (Streamlit AppTest): every number shown is the API's.

One app session walks the planner's path (plan -> simulate a plan row -> pin -> compare)
so the planner runs once; the other tests each start a fresh session."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit.testing.v1")
from fleetsim.dashboard import format as fmt  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

import fleetsim  # noqa: E402
from fleetsim.cli.dashboard import app_path  # noqa: E402


def _app() -> AppTest:
    at = AppTest.from_file(str(app_path()), default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _errors(at: AppTest) -> list[str]:
    return [e.value.replace("\\", "") for e in at.error]


def test_plan_simulate_row_pin_and_compare_show_api_numbers() -> None:
    at = _app()
    at.number_input(key="sc_num_requests").set_value(100).run()
    at.button(key="plan_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, _errors(at)
    plan = fleetsim.plan_serving("llama-3.1-8b", "2xH100", workload="azure-conv", engine="vllm",
                                 objective="max_goodput", simulate=False, seed=0)
    res = plan.search
    shown = at.dataframe[0].value
    assert list(shown["plan"]) == [p.name for p in res.plans]
    assert list(shown["usd_per_h"]) == [round(p.cost_per_hour, 2) for p in res.plans]
    best = res.plans[0]
    assert _metrics(at)["Cost"] == fmt.usd(best.cost_per_hour, "h")
    assert any("vllm serve" in c.value for c in at.code), "engine flags missing"
    # one click simulates the plan row on the scenario's workload
    at.button(key="plan_simulate_row").click().run()
    assert not at.exception, at.exception
    from fleetsim.dashboard.plan_view import plan_deployment
    from fleetsim.dashboard.scenario import Scenario

    sim = fleetsim.simulate_serving("llama-3.1-8b", "2xH100", "azure-conv", plan_deployment(best, Scenario()),
                                    seed=0, num_requests=100)
    m = _metrics(at)
    assert m["TTFT p90"] == fmt.seconds(sim.summary["ttft_p90_s"])
    assert m["Output throughput"] == fmt.rate(sim.summary["output_tokens_per_s"], "tok/s")
    # the simulation survives a widget change on another tab and in the sidebar
    at.selectbox(key="tr_rc").set_value("full").run()
    at.number_input(key="sc_seed").set_value(3).run()
    assert _metrics(at)["TTFT p90"] == fmt.seconds(sim.summary["ttft_p90_s"])
    # pin both and compare: the delta is B - A of the API's numbers. A pin reruns only its own
    # tab and Compare (keyed fragments); AppTest then holds only those, so a full run first
    at.button(key="plan_pin").click().run()
    at.run()
    at.button(key="sim_pin").click().run()
    assert not at.exception, at.exception
    assert [b.key for b in at.button if b.key == "plan_go"] == []  # the Plan tab did not rerun
    table = at.dataframe[-1].value
    row = table[table["metric"] == "TPOT p90"].iloc[0]
    delta = sim.summary["tpot_p90_s"] - best.checked.tpot_p90_s
    assert row["delta (B - A)"] == ("+" if delta >= 0 else "-") + fmt.seconds(abs(delta))


def test_simulate_form_options_reach_the_api() -> None:
    at = _app()
    at.number_input(key="sc_num_requests").set_value(100).run()
    at.checkbox(key="sim_default").uncheck()
    at.number_input(key="sim_replicas").set_value(1)
    at.checkbox(key="sim_fp8kv").check()
    at.selectbox(key="sim_spec").set_value("ngram")
    at.selectbox(key="sim_router").set_value("round_robin")
    at.button(key="FormSubmitter:sim_form-Simulate").click().run()
    assert not at.exception, at.exception
    assert not at.error, _errors(at)
    dep = {"pools": [{"pool": 0, "tp": 1, "pp": 1, "ep": 1, "replicas": 1, "engine": {
        "profile": "vllm", "kv_dtype": "fp8", "enable_prefix_caching": False,
        "scheduler": {"kind": "vllm", "max_num_seqs": 256, "max_num_batched_tokens": 8192, "chunked_prefill": True},
        "spec_decode": {"method": "ngram", "num_speculative_tokens": 4, "acceptance_rate": 0.7}}}],
        "router": "round_robin"}
    sim = fleetsim.simulate_serving("llama-3.1-8b", "2xH100", "azure-conv", dep, seed=0, num_requests=100)
    m = _metrics(at)
    assert m["TPOT p90"] == fmt.seconds(sim.summary["tpot_p90_s"])
    assert m["Replicas"] == "1"
    assert len(at.get("vega_lite_chart")) >= 8  # CDFs, histograms, time series


def test_trace_workload_replays_whole_trace(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fleetsim.dashboard.scenario import parse_trace

    lines = [f'{{"arrival_s": {0.2 * i}, "prompt_tokens": {100 + i}, "output_tokens": {20 + i % 7}}}'
             for i in range(37)]
    stream = parse_trace("\n".join(lines).encode(), "mine.jsonl")
    assert len(stream) == 37
    at = _app()
    at.session_state["trace"] = stream
    at.session_state["trace_name"] = "mine.jsonl"
    at.radio(key="sc_workload_kind").set_value("trace upload").run()
    at.button(key="FormSubmitter:sim_form-Simulate").click().run()
    assert not at.exception, at.exception
    sim = fleetsim.simulate_serving("llama-3.1-8b", "2xH100", stream, seed=0)
    assert sim.summary["num_requests"] == 37  # not cut or looped to the request count (500)
    assert _metrics(at)["Finished"] == f"{sim.summary['finished']} of 37"
    assert _metrics(at)["TTFT p90"] == fmt.seconds(sim.summary["ttft_p90_s"])


def test_train_view_shows_estimate_and_tp_cp_pp_dp_error_literally() -> None:
    at = _app()
    at.text_input(key="sc_cluster").set_value("8xH100").run()
    at.number_input(key="tr_tp").set_value(2)
    at.number_input(key="tr_pp").set_value(2)
    at.number_input(key="tr_gb").set_value(16)
    at.button(key="FormSubmitter:train_form-Estimate step").click().run()
    assert not at.exception, at.exception
    assert not at.error, _errors(at)
    est = fleetsim.estimate_train_step("llama-3.1-8b", "8xH100", tp=2, pp=2, cp=1, ep=1, vpp=1,
                                       sequence_parallel=True, micro_batch=1, global_batch=16, seq_len=2048,
                                       recompute="selective", engine="megatron")
    m = _metrics(at)
    assert m["Step time"] == fmt.seconds(est.time_s)
    assert m["MFU"] == fmt.share(est.mfu)
    assert m["Peak memory"] == fmt.nbytes(est.peak_memory_bytes)
    assert len(at.get("vega_lite_chart")) >= 3  # breakdown, memory, pipeline timeline
    at.number_input(key="tr_dp").set_value(3)
    at.button(key="FormSubmitter:train_form-Estimate step").click().run()
    assert not at.exception
    (err,) = at.error
    assert "tp\\*cp\\*pp\\*dp" in err.value  # escaped: Markdown shows it as typed
    assert "\n" not in err.value
    assert _metrics(at)["Step time"] == fmt.seconds(est.time_s)  # the last estimate stays


@pytest.mark.parametrize("key,value,word", [
    ("sc_cluster", "8xNOPE", "NOPE"),
    ("sc_cluster", "/etc/passwd", "shorthand"),
])
def test_bad_cluster_is_one_plain_line(key: str, value: str, word: str) -> None:
    at = _app()
    at.text_input(key=key).set_value(value).run()
    at.button(key="plan_go").click().run()
    assert not at.exception
    errs = _errors(at)
    assert len(errs) == 1 and word in errs[0] and "\n" not in errs[0]
    assert "root:" not in errs[0]  # never echoes a server file


def test_bad_workload_spec_and_path_are_refused() -> None:
    at = _app()
    at.radio(key="sc_workload_kind").set_value("spec").run()
    at.text_input(key="sc_workload").set_value("/etc/passwd").run()
    at.button(key="FormSubmitter:sim_form-Simulate").click().run()
    assert not at.exception
    errs = _errors(at)
    assert len(errs) == 1 and "upload a trace" in errs[0] and "root:" not in errs[0]
    at.text_input(key="sc_workload").set_value("poisson:rate=oops").run()
    at.button(key="FormSubmitter:sim_form-Simulate").click().run()
    errs = _errors(at)
    assert len(errs) == 1 and "oops" in errs[0]


def test_loaded_scenario_sets_the_widgets() -> None:
    from fleetsim.dashboard.scenario import Scenario

    at = _app()
    at.session_state["scenario_pending"] = Scenario(cluster="4xA100-80GB", seed=7, ttft_slo_s=0.25,
                                                    objective="min_cost")
    at.run()
    assert at.text_input(key="sc_cluster").value == "4xA100-80GB"
    assert at.number_input(key="sc_seed").value == 7
    assert at.number_input(key="sc_ttft_slo_s").value == 250.0
    assert at.selectbox(key="sc_objective").value == "min_cost"


def test_uploaded_model_and_built_cluster_reach_the_api() -> None:
    import json

    from fleetsim.dashboard.scenario import parse_model_config

    cfg = parse_model_config(json.dumps({
        "model_type": "llama", "hidden_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 16,
        "num_key_value_heads": 4, "intermediate_size": 4096, "vocab_size": 32000,
        "max_position_embeddings": 4096}).encode(), "tiny/config.json")
    at = _app()
    at.session_state["model_config"] = cfg
    at.session_state["cluster_pools"] = [{"gpu": "H100", "count": 2}]
    at.radio(key="sc_model_kind").set_value("config.json upload").run()
    at.radio(key="sc_cluster_kind").set_value("builder").run()
    at.number_input(key="tr_gb").set_value(8)
    at.button(key="FormSubmitter:train_form-Estimate step").click().run()
    assert not at.exception, at.exception
    assert not at.error, _errors(at)
    est = fleetsim.estimate_train_step(fleetsim.load_model(cfg), "2xH100", tp=1, pp=1, cp=1, ep=1, vpp=1,
                                       sequence_parallel=False, micro_batch=1, global_batch=8, seq_len=2048,
                                       recompute="selective", engine="megatron")
    assert _metrics(at)["Step time"] == fmt.seconds(est.time_s)
    assert _metrics(at)["GPUs"] == "2"


def test_plan_with_power_budget_and_caps_matches_the_api() -> None:
    at = _app()
    at.number_input(key="sc_rate_rps").set_value(4.0)
    at.selectbox(key="sc_objective").set_value("min_energy")
    at.multiselect(key="plan_caps").set_value([1.0, 0.7]).run()
    at.button(key="plan_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, _errors(at)
    res = fleetsim.plan_serving("llama-3.1-8b", "2xH100", workload="azure-conv", rate_rps=4.0, engine="vllm",
                                objective="min_energy", simulate=False, seed=0,
                                search_space={"power_caps": (1.0, 0.7)}).search
    shown = at.dataframe[0].value
    assert list(shown["pools"]) == [" + ".join(f"{x.replicas}x{x.gpu} tp{x.tp}pp{x.pp}"
                                               + (f"@{x.power_cap_w:g}W" if x.power_cap_w else "")
                                               + ("" if x.role == "both" else f" {x.role}") for x in p.pools)
                                    for p in res.plans]
    assert _metrics(at)["Power"] == fmt.watts(res.plans[0].power_w)
