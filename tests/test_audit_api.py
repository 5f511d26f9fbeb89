"""Bad inputs through the public API and the parsers beneath it: each one is a
``FleetsimError`` whose message is one line naming the input (parameter, field or file),
never a traceback or a silently wrong number."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fleetsim.hardware.cluster import load_cluster
from fleetsim.hardware.errors import FleetsimError
from fleetsim.workloads.defaults import get_workload
from fleetsim.workloads.models import load_model
from fleetsim.workloads.parallel import ParallelConfig, Seq, as_parallel, parse_parallel
from fleetsim.workloads.requests import RequestStream
from fleetsim.workloads.tracefile import load_trace

from fleetsim.estimate import estimate_forward
from fleetsim.planning import plan_serving
from fleetsim.serving import simulate_serving
from fleetsim.training import build_train_job, estimate_train_step

LLAMA = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1000,
         "max_position_embeddings": 512}
M8B = "llama-3.1-8b"
BINARY = bytes(range(256)) * 4


def config(tmp: Path, drop: tuple[str, ...] = (), **over: Any) -> Path:
    """A llama config.json with ``over`` fields set and ``drop`` keys removed."""
    d = {k: v for k, v in {**LLAMA, **over}.items() if k not in drop}
    p = tmp / "cfg" / "config.json"
    p.parent.mkdir(exist_ok=True)
    p.write_text(json.dumps(d))
    return p


def write(tmp: Path, name: str, content: str | bytes) -> Path:
    p = tmp / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return p


AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
FS = "arrival_s,prompt_tokens,output_tokens\n"
JL = '{"arrival_s": 0.0, "prompt_tokens": 10, "output_tokens": 5}\n'


def model_cases() -> list[tuple[str, Callable[[Path], Any], str]]:
    def cfg(**over: Any) -> Callable[[Path], Any]:
        return lambda t: load_model(config(t, **over))

    def dropped(key: str) -> Callable[[Path], Any]:
        return lambda t: load_model(config(t, drop=(key,)))

    return [
        ("layers word", cfg(num_hidden_layers="thirty-two"), "num_hidden_layers"),
        ("hidden fractional", cfg(hidden_size=4096.7), "hidden_size"),
        ("hidden bool", cfg(hidden_size=True), "hidden_size"),
        ("hidden string", cfg(hidden_size="64"), "hidden_size"),
        ("hidden negative", cfg(hidden_size=-64), "hidden_size"),
        ("hidden zero", cfg(hidden_size=0), "hidden_size"),
        ("hidden nan", cfg(hidden_size=math.nan), "hidden_size"),
        ("heads zero", cfg(num_attention_heads=0), "num_attention_heads"),
        ("heads not dividing", cfg(num_attention_heads=5), "5 attention heads"),
        ("vocab list", cfg(vocab_size=[1000]), "vocab_size"),
        ("context null", cfg(max_position_embeddings=None), "max_position_embeddings"),
        ("missing ffn", dropped("intermediate_size"), "intermediate_size"),
        ("missing layers", dropped("num_hidden_layers"), "num_hidden_layers"),
        ("unknown type", cfg(model_type="llamaX"), "llamaX"),
        ("type number", cfg(model_type=3), "model_type"),
        ("flag string", cfg(tie_word_embeddings="false"), "tie_word_embeddings"),
        ("kv heads", cfg(num_key_value_heads=3), "num_kv_heads"),
        ("kv heads float", cfg(num_key_value_heads=2.5), "num_key_value_heads"),
        ("head_dim negative", cfg(head_dim=-1), "head_dim"),
        ("ffn huge string", cfg(intermediate_size="1e9"), "intermediate_size"),
        ("no config in dir", lambda t: load_model(t), "config.json"),
        ("not json", lambda t: load_model(write(t, "m.json", "{nope")), "m.json"),
        ("binary", lambda t: load_model(write(t, "b.json", BINARY)), "b.json"),
        ("json list", lambda t: load_model(write(t, "l.json", "[1, 2]")), "l.json"),
        ("json null", lambda t: load_model(write(t, "n.json", "null")), "n.json"),
        ("empty file", lambda t: load_model(write(t, "e.json", "")), "e.json"),
        ("missing file", lambda t: load_model(t / "absent.json"), "absent.json"),
        ("dict missing", lambda t: load_model({"model_type": "llama"}), "hidden_size"),
        ("dict bad moe", lambda t: load_model({**LLAMA, "model_type": "mixtral", "num_local_experts": "8",
                                               "num_experts_per_tok": 2}), "num_local_experts"),
        ("unknown name", lambda t: load_model("nope-model"), "nope-model"),
        ("wrong type", lambda t: load_model(3.5), "float"),
    ]


def trace_cases() -> list[tuple[str, Callable[[Path], Any], str]]:
    def tr(name: str, content: str | bytes) -> Callable[[Path], Any]:
        return lambda t: load_trace(write(t, name, content))

    return [
        ("binary jsonl", tr("b.jsonl", BINARY), "b.jsonl"),
        ("binary csv", tr("b.csv", BINARY), "b.csv"),
        ("binary after text", tr("c.jsonl", JL.encode() + b"\xff\xfe\n"), "c.jsonl"),
        ("empty", tr("e.csv", ""), "e.csv"),
        ("header only", tr("h.csv", AZ), "h.csv"),
        ("azure missing column", tr("a.csv", "TIMESTAMP,ContextTokens\n0,5\n"), "GeneratedTokens"),
        ("azure word", tr("a.csv", AZ + "0,abc,5\n"), "ContextTokens"),
        ("azure negative", tr("a.csv", AZ + "0,-5,5\n"), "ContextTokens"),
        ("azure nan", tr("a.csv", AZ + "0,nan,5\n"), "ContextTokens"),
        ("azure fraction", tr("a.csv", AZ + "0,1.5,5\n"), "ContextTokens"),
        ("azure inf", tr("a.csv", AZ + "0,inf,5\n"), "ContextTokens"),
        ("azure huge", tr("a.csv", AZ + "0,1e30,5\n"), "ContextTokens"),
        ("azure bad time", tr("a.csv", AZ + "yesterday,5,5\n"), "TIMESTAMP"),
        ("azure inf time", tr("a.csv", AZ + "inf,5,5\n0,5,5\n"), "TIMESTAMP"),
        ("azure ragged", tr("a.csv", AZ + "0,5,5,7,8\n"), "a.csv"),
        ("fleetsim unknown", tr("f.csv", "arrival_s,prompt_tokens,output_tokens,foo\n0,1,1,2\n"), "foo"),
        ("fleetsim missing", tr("f.csv", "arrival_s,prompt_tokens\n0,1\n"), "output_tokens"),
        ("fleetsim inf", tr("f.csv", FS + "0,inf,1\n"), "prompt_tokens"),
        ("fleetsim negative time", tr("f.csv", FS + "-1,1,1\n"), "arrival_s"),
        ("fleetsim huge id", tr("f.csv", "arrival_s,prompt_tokens,output_tokens,session_id\n0,1,1,1e30\n"),
         "session_id"),
        ("jsonl bad json", tr("j.jsonl", JL + "{nope\n"), "line 2"),
        ("jsonl list", tr("j.jsonl", "[1, 2]\n"), "line 1"),
        ("jsonl missing", tr("j.jsonl", '{"arrival_s": 0, "prompt_tokens": 3}\n'), "output_tokens"),
        ("jsonl string", tr("j.jsonl", '{"arrival_s": 0, "prompt_tokens": "12", "output_tokens": 3}\n'),
         "prompt_tokens"),
        ("jsonl nan", tr("j.jsonl", '{"arrival_s": NaN, "prompt_tokens": 1, "output_tokens": 3}\n'), "arrival_s"),
        ("jsonl inf", tr("j.jsonl", '{"arrival_s": 0, "prompt_tokens": Infinity, "output_tokens": 3}\n'),
         "prompt_tokens"),
        ("jsonl negative", tr("j.jsonl", '{"arrival_s": -2, "prompt_tokens": 1, "output_tokens": 3}\n'),
         "arrival_s"),
        ("jsonl bool", tr("j.jsonl", '{"arrival_s": 0, "prompt_tokens": true, "output_tokens": 3}\n'),
         "prompt_tokens"),
        ("jsonl unknown", tr("j.jsonl", '{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 3, "foo": 1}\n'),
         "foo"),
        ("jsonl huge", tr("j.jsonl", '{"arrival_s": 0, "prompt_tokens": 1e30, "output_tokens": 3}\n'),
         "prompt_tokens"),
        ("jsonl blank only", tr("j.jsonl", "\n\n \n"), "j.jsonl"),
        ("unknown format", tr("u.csv", "a,b,c\n1,2,3\n"), "u.csv"),
        ("directory", lambda t: load_trace(t), str(Path("/"))),
        ("missing", lambda t: load_trace(t / "gone.jsonl"), "gone.jsonl"),
        ("trace workload binary", lambda t: simulate_serving(M8B, "1xH100", str(write(t, "w.jsonl", BINARY))),
         "w.jsonl"),
    ]


def cluster_cases() -> list[tuple[str, Callable[[Path], Any], str]]:
    def cl(text: Any) -> Callable[[Path], Any]:
        return lambda t: load_cluster(text)

    def yml(content: str | bytes) -> Callable[[Path], Any]:
        return lambda t: load_cluster(write(t, "c.yaml", content))

    pool = "pools:\n  - gpu: H100\n    num_nodes: {}\n"
    return [
        ("zero", cl("0xH100"), "0xH100"),
        ("negative", cl("-1xH100"), "-1xH100"),
        ("unknown gpu", cl("8xNOPE"), "NOPE"),
        ("fractional", cl("1.5xH100"), "1.5xH100"),
        ("empty", cl(""), "cluster"),
        ("fractional inner", cl("2x1.5xH100"), "1.5"),
        ("no name", cl("8x"), "8x"),
        ("node too small", cl("2x16xH100"), "2x16xH100"),
        ("empty term", cl("8xH100+"), "8xH100+"),
        ("wrong type", cl(3), "int"),
        ("yaml unknown key", yml(pool.format(1) + "colour: red\n"), "colour"),
        ("yaml string count", yml(pool.format('"2"')), "num_nodes"),
        ("yaml fractional count", yml(pool.format(1.5)), "num_nodes"),
        ("yaml bool count", yml(pool.format("true")), "num_nodes"),
        ("yaml negative count", yml(pool.format(-1)), "num_nodes"),
        ("yaml binary", yml(BINARY), "c.yaml"),
        ("yaml list", yml("- 1\n- 2\n"), "c.yaml"),
        ("yaml no pools", yml("pools: []\n"), "pools"),
        ("yaml unknown gpu", yml("pools:\n  - gpu: NOPE\n    num_nodes: 1\n"), "NOPE"),
        ("yaml malformed", yml("pools: [\n"), "c.yaml"),
        ("yaml bad oversubscription", yml(pool.format(1) + "oversubscription: .nan\n"), "oversubscription"),
    ]


def spec_cases() -> list[tuple[str, Callable[[Path], Any], str]]:
    def sp(text: str) -> Callable[[Path], Any]:
        return lambda t: get_workload(text)

    return [
        ("isl zero", sp("poisson:rate=1,isl=0,osl=5"), "isl"),
        ("osl zero", sp("poisson:rate=1,isl=5,osl=0"), "osl"),
        ("isl negative", sp("poisson:rate=1,isl=-3,osl=5"), "isl"),
        ("isl fraction", sp("poisson:rate=1,isl=1.5,osl=5"), "isl"),
        ("isl uniform from zero", sp("poisson:rate=1,isl=uniform(0,5),osl=5"), "isl"),
        ("osl lognormal from zero", sp("poisson:rate=1,isl=5,osl=lognormal(100,1,0,1000)"), "osl"),
        ("osl fixed zero", sp("poisson:rate=1,isl=5,osl=fixed(0)"), "osl"),
        ("rate negative", sp("poisson:rate=-1,isl=5,osl=5"), "rate"),
        ("rate nan", sp("poisson:rate=nan,isl=5,osl=5"), "rate"),
        ("rate word", sp("poisson:rate=abc,isl=5,osl=5"), "rate"),
        ("rate zero", sp("constant:rate=0,isl=5,osl=5"), "rate"),
        ("unknown key", sp("poisson:rate=1,isl=5,osl=5,foo=1"), "foo"),
        ("missing cv", sp("gamma:rate=1,isl=5,osl=5"), "cv"),
        ("clients zero", sp("closed:clients=0,isl=5,osl=5"), "clients"),
        ("clients fraction", sp("closed:clients=2.5,isl=5,osl=5"), "clients"),
        ("think negative", sp("closed:clients=2,think=-1,isl=5,osl=5"), "think"),
        ("turns zero", sp("poisson:rate=1,isl=5,osl=5,turns=0"), "turns"),
        ("mu nan", sp("poisson:rate=1,isl=lognormal(mu=nan,sigma=1),osl=5"), "mu"),
        ("trace missing", sp("trace:path=/no/such.jsonl"), "/no/such.jsonl"),
        ("builtin rate", sp("azure-conv:rate=-2"), "rate"),
        ("dict zero prompt", lambda t: get_workload({"arrivals": {"kind": "poisson", "rate_rps": 1},
                                                   "prompt": {"kind": "fixed", "tokens": 0},
                                                   "output": {"kind": "fixed", "tokens": 3}}), "prompt"),
        ("dict bad rate", lambda t: get_workload({"arrivals": {"kind": "poisson", "rate_rps": "fast"},
                                                 "prompt": {"kind": "fixed", "tokens": 2},
                                                 "output": {"kind": "fixed", "tokens": 3}}), "rate_rps"),
        ("empty spec", sp(""), "workload"),
    ]


WL = "poisson:rate=1,isl=10,osl=5"


def serving_cases() -> list[tuple[str, Callable[[Path], Any], str]]:
    def sim(**kw: Any) -> Callable[[Path], Any]:
        base: dict[str, Any] = {"num_requests": 3}
        return lambda t: simulate_serving(M8B, "1xH100", WL, **{**base, **kw})

    return [
        ("num_requests fraction", sim(num_requests=1.5), "num_requests"),
        ("num_requests nan", sim(num_requests=math.nan), "num_requests"),
        ("num_requests zero", sim(num_requests=0), "num_requests"),
        ("num_requests bool", sim(num_requests=True), "num_requests"),
        ("num_requests string", sim(num_requests="10"), "num_requests"),
        ("duration negative", sim(num_requests=None, duration_s=-1), "duration_s"),
        ("duration inf", sim(num_requests=None, duration_s=math.inf), "duration_s"),
        ("seed negative", sim(seed=-1), "seed"),
        ("seed fraction", sim(seed=1.5), "seed"),
        ("slo negative", sim(slo={"ttft_slo_s": -1}), "ttft_slo_s"),
        ("slo nan", sim(slo={"tpot_slo_s": math.nan}), "tpot_slo_s"),
        ("slo unknown", sim(slo={"latency": 1}), "latency"),
        ("slo not dict", sim(slo=0.5), "slo"),
        ("deployment string", sim(deployment="tp=2"), "deployment"),
        ("engine memory", sim(engine={"gpu_memory_utilization": 1.5}), "gpu_memory_utilization"),
        ("engine memory nan", sim(engine={"gpu_memory_utilization": math.nan}), "gpu_memory_utilization"),
        ("engine block", sim(engine={"block_size": 0}), "block_size"),
        ("engine unknown", sim(engine={"bogus": 1}), "bogus"),
        ("engine spec decode", sim(engine={"spec_decode": {"acceptance_rate": 1.5}}), "acceptance_rate"),
        ("deployment no pools", sim(deployment={"pools": []}), "pools"),
        ("deployment tp", sim(deployment={"pools": [{"tp": 0}]}), "tp"),
        ("progress", sim(progress=3), "progress"),
        ("model", lambda t: simulate_serving("nope", "1xH100", WL, num_requests=3), "nope"),
        ("workload", lambda t: simulate_serving(M8B, "1xH100", 42, num_requests=3), "workload"),
    ]


def estimate_cases() -> list[tuple[str, Callable[[Path], Any], str]]:
    def est(batch: Any = 128, **kw: Any) -> Callable[[Path], Any]:
        return lambda t: estimate_forward(M8B, kw.pop("gpu", "H100"), batch, **kw)

    return [
        ("tp zero", est(tp=0), "tp"),
        ("tp fraction", est(tp=1.5), "tp"),
        ("tp string", est(tp="2"), "tp"),
        ("billion tokens", est(10**9), "context length"),
        ("zero tokens", est(0), "batch"),
        ("long decode", est([Seq(1, 10**6)]), "context length"),
        ("empty batch", est([]), "batch"),
        ("graphs string", est(graphs="yes"), "graphs"),
        ("dtype", est(dtype="bf17"), "bf17"),
        ("kv dtype", est(kv_dtype="int3"), "kv_dtype"),
        ("gpu name", est(gpu="NOPE"), "NOPE"),
        ("gpu type", est(gpu=3), "gpu"),
    ]


def training_cases() -> list[tuple[str, Callable[[Path], Any], str]]:
    def job(parallel: Any = None, **kw: Any) -> Callable[[Path], Any]:
        base: dict[str, Any] = {"global_batch": 8, "seq_len": 1024}
        return lambda t: estimate_train_step(M8B, "8xH100", parallel, **{**base, **kw})

    return [
        ("parallel tp zero", job("tp=0"), "tp"),
        ("parallel unknown key", job("tq=8"), "tq=8"),
        ("parallel word", job("tp=eight"), "tp"),
        ("parallel twice", job("tp=2,tp=4"), "tp"),
        ("parallel int", job(8), "parallel"),
        ("parallel empty", job(""), "parallel"),
        ("parallel not dividing", job("tp=3"), "tp*cp*pp = 3"),
        ("global batch fraction", job(global_batch=1.5), "global_batch"),
        ("global batch missing", job(global_batch=None), "global_batch"),
        ("micro batch zero", job(micro_batch=0), "micro_batch"),
        ("seq_len past context", job(seq_len=10**7), "context length"),
        ("seq_len bool", job(seq_len=True), "seq_len"),
        ("tp fraction", job(tp=1.5), "tp"),
        ("zero negative", job(zero=-1), "zero"),
        ("pool negative", job(pool=-1), "pool"),
        ("unknown option", job(bogus=1), "bogus"),
        ("dtype", job(dtype="fp7"), "dtype"),
        ("bucket", job(grad_bucket_bytes=-1.0), "grad_bucket_bytes"),
        ("dict parallel", job({"tp": "x"}), "tp"),
    ]


def plan_cases() -> list[tuple[str, Callable[[Path], Any], str]]:
    def plan(**kw: Any) -> Callable[[Path], Any]:
        base: dict[str, Any] = {"isl": 100, "osl": 10}
        return lambda t: plan_serving(M8B, "1xH100", **{**base, **kw})

    return [
        ("isl zero", plan(isl=0), "isl"),
        ("osl negative", plan(osl=-1), "osl"),
        ("isl fraction", plan(isl=1.5), "isl"),
        ("rate nan", plan(rate_rps=math.nan), "rate_rps"),
        ("ttft negative", plan(ttft_s=-1.0), "ttft_s"),
        ("tpot zero", plan(tpot_s=0.0), "tpot_s"),
        ("past context", plan(isl=10**6), "context length"),
        ("dtype", plan(dtype="fp7"), "fp7"),
    ]


def parallel_cases() -> list[tuple[str, Callable[[Path], Any], str]]:
    return [
        ("pydantic tp", lambda t: ParallelConfig(tp=0), "tp"),
        ("pydantic tp string", lambda t: ParallelConfig(tp="x"), "tp"),
        ("pydantic unknown", lambda t: ParallelConfig(foo=1), "foo"),
        ("sp without tp", lambda t: as_parallel("sp=1"), "sequence_parallel"),
        ("sp word", lambda t: parse_parallel("tp=2,sp=maybe"), "sp"),
        ("as_parallel type", lambda t: as_parallel(3.0), "float"),
        ("no equals", lambda t: parse_parallel("tp8"), "tp8"),
    ]


def overflow_cases() -> list[tuple[str, Callable[[Path], Any], str]]:
    """Token counts past any context: errors naming the field, not overflows or wrapped
    negative numbers (an int64 cast of 1e19 used to report 'negative')."""
    def azure(t: Path) -> Any:
        p = t / "az.csv"
        p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0.5,1e19,2\n")
        return load_trace(p)

    return [
        ("azure huge cell", azure, "ContextTokens"),
        ("spec huge isl", lambda t: get_workload("poisson:rate=5,isl=9223372036854775296,osl=1"), "tokens"),
        ("spec huge system", lambda t: get_workload("azure-code:system=" + "1" + "0" * 30), "system_prompt_tokens"),
        ("unknown home", lambda t: get_workload("~nosuchuser-h9"), "~nosuchuser-h9"),
    ]


CASES = (overflow_cases() + model_cases() + trace_cases() + cluster_cases() + spec_cases() + serving_cases()
         + estimate_cases() + training_cases() + plan_cases() + parallel_cases())


def test_the_audit_covers_at_least_a_hundred_inputs() -> None:
    assert len(CASES) >= 100
    assert len({name for name, _, _ in CASES}) > 0


@pytest.mark.parametrize(("name", "call", "needle"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_it(tmp_path: Path, name: str, call: Callable[[Path], Any],
                                         needle: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FleetsimError) as info:
            call(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert needle in msg, msg


# ---------------------------------------------------------------- silently wrong before


def test_parallel_text_is_parsed_like_the_printed_layout() -> None:
    job = build_train_job(M8B, "8xH100", "tp=8", global_batch=8, seq_len=1024)
    assert (job.parallel.tp, job.parallel.dp) == (8, 1)
    job = build_train_job(M8B, "8xH100", "tp=2, pp=2", global_batch=8, seq_len=1024)
    assert (job.parallel.tp, job.parallel.pp, job.parallel.dp) == (2, 2, 2)
    assert as_parallel("tp=8 pp=2") == ParallelConfig(tp=8, pp=2)
    assert as_parallel({"tp": 4}) == ParallelConfig(tp=4)
    assert parse_parallel("tp=2,sp=1") == {"tp": 2, "sequence_parallel": True}


def test_fractional_sizes_are_rejected_and_whole_floats_kept(tmp_path: Path) -> None:
    with pytest.raises(FleetsimError, match="hidden_size.*4096.7"):
        load_model(config(tmp_path, hidden_size=4096.7, num_attention_heads=32, num_key_value_heads=8))
    spec = load_model(config(tmp_path, hidden_size=4096.0, num_attention_heads=32, num_key_value_heads=8))
    assert spec.hidden_size == 4096 and isinstance(spec.hidden_size, int)


def test_every_entry_point_refuses_sequences_past_the_context() -> None:
    ctx = load_model(M8B).max_position_embeddings
    msgs = []
    for call in (lambda: estimate_forward(M8B, "H100", 10**9),
                 lambda: build_train_job(M8B, "8xH100", global_batch=8, seq_len=ctx + 1),
                 lambda: plan_serving(M8B, "1xH100", isl=ctx, osl=1)):
        with pytest.raises(FleetsimError) as info:
            call()
        msgs.append(str(info.value))
    assert all(f"context length of {ctx} tokens" in m for m in msgs), msgs
    assert estimate_forward(M8B, "H100", [Seq(1, ctx - 1)], graphs=True).time_s > 0


def _stream(lengths: list[tuple[int, int]]) -> RequestStream:
    return RequestStream(arrival_s=np.arange(len(lengths)) * 0.01,
                         prompt_tokens=[p for p, _ in lengths], output_tokens=[o for _, o in lengths])


def test_serving_rejects_requests_longer_than_the_context_visibly() -> None:
    spec = load_model("gpt2")
    ctx = spec.max_position_embeddings
    reqs = _stream([(100, 10), (ctx, 10), (200, 5)])
    with pytest.warns(UserWarning, match=f"1 of 3 requests.*context of {ctx}") as rec:
        res = simulate_serving("gpt2", "1xH100", reqs)
    assert rec[0].filename == __file__  # the warning points at the caller, not the library
    assert res.summary["rejected_over_context"] == 1
    assert sorted(res.requests["req_id"]) == [0, 2]
    with pytest.raises(FleetsimError, match=f"context length of {ctx}"):
        simulate_serving("gpt2", "1xH100", _stream([(ctx, 1)]))


def test_zero_lengths_are_errors_not_a_rate(tmp_path: Path) -> None:
    with pytest.raises(FleetsimError, match="isl must be >= 1"):
        get_workload("poisson:rate=2,isl=0,osl=0")
    with pytest.raises(FleetsimError, match="osl must be >= 1"):
        get_workload("poisson:rate=2,isl=1,osl=0")


def test_unsorted_trace_warns_at_the_caller_naming_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "late.jsonl", '{"arrival_s": 2, "prompt_tokens": 1, "output_tokens": 1}\n'
                                      '{"arrival_s": 1, "prompt_tokens": 2, "output_tokens": 1}\n')
    with pytest.warns(UserWarning, match="late.jsonl.*sorted the 2 requests by arrival") as rec:
        stream = load_trace(p)
    assert rec[0].filename == __file__
    assert list(stream.column("req_id")) == [1, 0]


def test_numeric_checks_name_the_parameter() -> None:
    from fleetsim.hardware.checks import fraction, integer, positive, probability

    assert integer(4.0, "n") == 4 and integer(np.int64(3), "n") == 3
    for bad in (1.5, True, "3", math.nan, math.inf, None):
        with pytest.raises(FleetsimError, match="^n must be an integer"):
            integer(bad, "n")
    assert positive(np.float32(0.5), "x") == 0.5
    for bad in (0, -1, math.nan, math.inf, "1", False):
        with pytest.raises(FleetsimError, match="^x must be a finite number > 0"):
            positive(bad, "x")
    assert probability(0, "p") == 0.0 and fraction(1, "f") == 1.0
    with pytest.raises(FleetsimError, match="f must"):
        fraction(0, "f")
    with pytest.raises(FleetsimError, match="p must"):
        probability(1.01, "p")


def test_builtin_workload_without_a_count_draws_the_default() -> None:
    from fleetsim.workloads import DEFAULT_NUM_REQUESTS

    res = simulate_serving("gpt2", "1xH100", "poisson:rate=50,isl=32,osl=4", seed=3)
    assert res.summary["num_requests"] == DEFAULT_NUM_REQUESTS


def test_a_misspelt_key_is_named_not_the_missing_one() -> None:
    with pytest.raises(FleetsimError, match="unknown key 'foo'"):
        simulate_serving("gpt2", "1xH100", "azure-conv", deployment={"foo": 1}, num_requests=5)
