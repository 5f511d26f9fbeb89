"""LoRA workloads: adapter populations, spec keys, traces with adapter ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.lengths import UniformLength
from fleetsim.workloads.lora import AdapterPopulation, fit_zipf_exponent, top_share_ids
from fleetsim.workloads.requests import RequestStream
from fleetsim.workloads.spec import parse_workload_spec
from fleetsim.workloads.tracefile import read_jsonl

SPEC = "poisson:rate=5,isl=512,osl=128"


def test_zipf_probabilities_closed_form() -> None:
    p = AdapterPopulation(num_adapters=3, popularity="zipf", zipf_a=1.0).probabilities()
    h = 1 + 1 / 2 + 1 / 3
    assert p == pytest.approx([1 / h, 0.5 / h, (1 / 3) / h])
    assert AdapterPopulation(num_adapters=4).probabilities() == pytest.approx([0.25] * 4)


def test_spec_draws_zipf_and_keeps_other_columns() -> None:
    w = parse_workload_spec(f"{SPEC},adapters=2000,adapter_zipf=1.1,lora_rank=16")
    s = w.generate(0, num_requests=20000)
    base = parse_workload_spec(SPEC).generate(0, num_requests=20000)
    assert np.array_equal(s.arrival_s, base.arrival_s)  # common random numbers
    assert np.array_equal(s.prompt_tokens, base.prompt_tokens)
    ids = s.column("adapter_id")
    assert ids.min() >= 0 and ids.max() < 2000
    assert (s.column("lora_rank") == 16).all()
    p = w.adapters.probabilities()  # type: ignore[union-attr]
    # empirical share of adapter 0 within 4 standard errors of the Zipf probability
    se = np.sqrt(p[0] * (1 - p[0]) / len(s))
    assert abs((ids == 0).mean() - p[0]) < 4 * se
    assert fit_zipf_exponent(np.bincount(ids)[:50]) == pytest.approx(1.1, abs=0.15)


def test_rank_distribution_is_per_adapter() -> None:
    pop = AdapterPopulation(num_adapters=50, rank=UniformLength(low=8, high=64))
    ids, ranks = pop.assign(np.random.default_rng(1), 5000)
    for a in np.unique(ids):
        assert len(np.unique(ranks[ids == a])) == 1  # one rank per adapter
    assert ranks.min() >= 8 and ranks.max() <= 64


def test_trace_adapter_ids(tmp_path) -> None:
    rows = [{"arrival_s": i * 0.1, "prompt_tokens": 10, "output_tokens": 5, "adapter_id": i % 3} for i in range(30)]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    s = read_jsonl(path)
    assert list(s.column("adapter_id")[:4]) == [0, 1, 2, 0]
    with pytest.raises(ConfigError, match="no adapter population"):
        parse_workload_spec(f"trace:path={path}").generate(0, num_requests=30)
    w = parse_workload_spec(f"trace:path={path},adapters=3,lora_rank=8")
    out = w.generate(0, num_requests=30)
    assert np.array_equal(out.column("adapter_id"), s.column("adapter_id"))
    assert (out.column("lora_rank") == 8).all()
    with pytest.raises(ConfigError, match="outside the population of 2"):
        parse_workload_spec(f"trace:path={path},adapters=2").generate(0, num_requests=30)
    pop = parse_workload_spec(f"{SPEC},adapter_trace={path}").adapters
    assert pop is not None and pop.num_adapters == 3 and pop.zipf_a == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("spec, word", [
    (f"{SPEC},adapters=3,lora_rank=0", "lora_rank=0"),
    (f"{SPEC},adapters=3,lora_rank=-4", "lora_rank=-4"),
    (f"{SPEC},lora_rank=8", "needs adapters"),
    (f"{SPEC},adapters=0", "adapters=0"),
    (f"{SPEC},adapters=2.5", "adapters=2.5"),
])
def test_bad_specs_name_the_token(spec: str, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        parse_workload_spec(spec)


def test_stream_checks_and_top_share() -> None:
    with pytest.raises(ConfigError, match="lora_rank without an adapter_id|lora_rank given without"):
        RequestStream(arrival_s=[0.0], prompt_tokens=[1], output_tokens=[1], lora_rank=[8])
    ids = np.array([5] * 10 + [1] * 5 + list(range(10, 30)))
    assert top_share_ids(ids) == {5, 1, 10}
    r = RequestStream(arrival_s=[0.0], prompt_tokens=[1], output_tokens=[1], adapter_id=[2], lora_rank=[8])
    assert next(iter(r)).adapter_id == 2 and r[0].lora_rank == 8
