"""LoRA serving: oracles (base-model equality, slot monotonicity, hand-computed load
stalls and kernel time), memory modes, the affinity router and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fleetsim.calibration.measured import PROFILE_ROOT
from fleetsim.hardware.errors import ConfigError, InfeasibleError
from fleetsim.workloads.lora import adapter_bytes
from fleetsim.workloads.models import load_model
from fleetsim.workloads.requests import RequestStream

from fleetsim.serving import Deployment, EngineConfig, LoraConfig, PoolDeployment, simulate_serving

MODEL = "llama-3.1-8b"
H200 = "1xH200-SXM"
BASE_KEYS = ("finished", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "e2e_p99_s", "energy_j", "output_tokens_per_s")


def _stream(n: int, gap_s: float, adapter: list[int] | None = None, rank: int = 0, isl: int = 512,
            osl: int = 8) -> RequestStream:
    cols = {"arrival_s": np.arange(n) * gap_s, "prompt_tokens": np.full(n, isl), "output_tokens": np.full(n, osl)}
    if adapter is not None:
        cols["adapter_id"] = np.array(adapter)
        cols["lora_rank"] = np.full(n, rank)
    return RequestStream(**cols)


def _dep(lora: LoraConfig | None, replicas: int = 1, router: str = "least_outstanding_tokens") -> Deployment:
    return Deployment(pools=(PoolDeployment(replicas=replicas, engine=EngineConfig(lora=lora)),), router=router)


def test_no_adapters_and_rank_zero_equal_the_base_model() -> None:
    wl = "poisson:rate=20,isl=lognormal(400,0.8,16,2048),osl=lognormal(100,0.8,2,512)"
    base = simulate_serving(MODEL, H200, wl, _dep(None), num_requests=400)
    lora = simulate_serving(MODEL, H200, wl, _dep(LoraConfig(memory="unified")), num_requests=400)
    reqs = base.requests.copy()
    for k in BASE_KEYS:
        assert lora.summary[k] == base.summary[k], k
    pd.testing.assert_frame_equal(lora.requests.drop(columns="adapter_id"), reqs)
    # one adapter of rank 0: the base model, bit for bit
    s = base.requests
    one = RequestStream(arrival_s=s["arrival_s"], prompt_tokens=s["prompt_tokens"], output_tokens=s["output_tokens"],
                        adapter_id=np.zeros(len(s), np.int64))
    r0 = simulate_serving(MODEL, H200, one, _dep(LoraConfig()))
    for k in BASE_KEYS:
        assert r0.summary[k] == base.summary[k], k
    assert r0.summary["lora_loads"] == 0


def test_more_slots_never_lower_the_hit_rate() -> None:
    wl = "poisson:rate=8,isl=256,osl=64,adapters=200,adapter_zipf=1.0,lora_rank=16"
    rates = []
    for slots in (4, 8, 16, 64, 256):
        r = simulate_serving(MODEL, H200, wl, _dep(LoraConfig(max_loras=4, gpu_slots=slots)), num_requests=600)
        rates.append(r.summary["lora_hit_rate"])
    assert all(b >= a for a, b in zip(rates, rates[1:], strict=False)), rates
    assert rates[-1] > rates[0]


def _load_s(rank: int) -> float:
    """One rank-``rank`` llama-3.1-8b adapter from pinned memory on the H200, by hand:
    latency + bytes / bandwidth + 448 tensor copies x per-copy time (lora_load_fit.json)."""
    fit = json.loads((PROFILE_ROOT / "H200-SXM" / "lora_load_fit.json").read_text())["pinned"]
    nbytes = rank * 81920 * 32 * 2
    return fit["latency_s"] + nbytes / fit["bandwidth_bps"] + 448 * fit["per_copy_s"]


def _grouped_s(tokens: int) -> float:
    """224 applications (7 projections x 32 layers) of the measured grouped kernel, h=4096, A=1, r=16."""
    rows = pd.read_csv(PROFILE_ROOT / "H200-SXM" / "lora.csv")
    row = rows[(rows["impl"] == "sgmv_grouped_mm") & (rows["hidden"] == 4096) & (rows["tokens"] == tokens)
               & (rows["adapters"] == 1) & (rows["rank"] == 16)]
    return 224 * float(row["time_s"].iloc[0])


def test_load_stalls_equal_loads_times_load_time_when_nothing_overlaps() -> None:
    n = 5
    base = simulate_serving(MODEL, H200, _stream(n, 10.0), _dep(None))
    lora = simulate_serving(MODEL, H200, _stream(n, 10.0, list(range(n)), 16),
                            _dep(LoraConfig(max_loras=1)))
    s = lora.summary
    assert s["lora_loads"] == n and s["lora_hit_rate"] == 0.0 and s["lora_evictions"] == n - 1
    assert s["lora_load_stall_s"] == pytest.approx(n * _load_s(16), rel=1e-12)
    # each request alone: TTFT grows by its load plus the prefill's LoRA kernels (512 tokens),
    # every later token by the decode's LoRA kernels (1 token)
    d_ttft = lora.requests["ttft_s"] - base.requests["ttft_s"]
    assert np.allclose(d_ttft, _load_s(16) + _grouped_s(512), rtol=1e-9)
    d_tpot = lora.requests["tpot_s"] - base.requests["tpot_s"]
    assert np.allclose(d_tpot, _grouped_s(1), rtol=1e-9)
    # the same adapter every time: one load, then hits
    again = simulate_serving(MODEL, H200, _stream(n, 10.0, [7] * n, 16), _dep(LoraConfig(max_loras=1)))
    assert again.summary["lora_loads"] == 1 and again.summary["lora_hit_rate"] == pytest.approx(0.8)


def test_batch_limit_and_memory_modes() -> None:
    # 8 simultaneous requests of 8 adapters, max_loras 2: never more than 2 adapters run together
    stream = _stream(8, 0.0, list(range(8)), 16, isl=64, osl=32)
    r = simulate_serving(MODEL, H200, stream, _dep(LoraConfig(max_loras=2)))
    first = r.requests.sort_values("ttft_s")["ttft_s"].to_numpy()
    assert r.summary["finished"] == 8
    assert (first[:2] < first[2]).all()  # only two adapters start in the first wave
    slots = simulate_serving(MODEL, H200, stream, _dep(LoraConfig(max_loras=2, max_lora_rank=64)))
    uni = simulate_serving(MODEL, H200, stream, _dep(LoraConfig(max_loras=2, memory="unified")))
    m = load_model(MODEL)
    assert slots.summary["lora_adapter_bytes_per_gpu"] == pytest.approx(2 * adapter_bytes(m, 64))
    assert uni.summary["kv_bytes_per_gpu"] > slots.summary["kv_bytes_per_gpu"]
    # unified: idle adapters stay resident until KV needs the blocks, so all 8 are held at the peak
    assert 8 * adapter_bytes(m, 16) <= uni.summary["lora_adapter_bytes_per_gpu"] <= 8 * adapter_bytes(m, 16) * 1.01


def test_adapter_affinity_router_raises_the_hit_rate() -> None:
    wl = "poisson:rate=30,isl=256,osl=64,adapters=64,adapter_zipf=0.8,lora_rank=16"
    out = {}
    for router in ("least_outstanding_tokens", "adapter_affinity"):
        r = simulate_serving(MODEL, "4xH200-SXM", wl, _dep(LoraConfig(max_loras=4), 4, router), num_requests=800)
        out[router] = r.summary["lora_hit_rate"]
    assert out["adapter_affinity"] > out["least_outstanding_tokens"] + 0.1, out


@pytest.mark.parametrize("kwargs, word", [
    ({"workload": _stream(2, 1.0, [0, 1], 4097)}, "exceeds llama-3.1-8b's hidden size 4096"),
    ({"workload": _stream(2, 1.0, [0, 1], 128)}, "exceeds max_lora_rank 64"),
    ({"lora": {"max_loras": 8, "gpu_slots": 4}}, "more adapters per batch than adapter slots"),
    ({"lora": {"max_loras": 4, "max_cpu_loras": 2}}, "max_cpu_loras 2"),
    ({"lora": {"gpu_slots": 2000, "max_lora_rank": 512}}, "leave no KV cache|no room for KV"),
    ({"lora": None}, "has no engine.lora"),
])
def test_bad_input_is_one_line(kwargs: dict, word: str) -> None:
    wl = kwargs.get("workload", _stream(2, 1.0, [0, 1], 16))
    with pytest.raises((ConfigError, InfeasibleError)) as e:
        lora = kwargs.get("lora", {})
        dep = Deployment(pools=(PoolDeployment(engine=EngineConfig(lora=lora)),)) if lora is not None else _dep(None)
        simulate_serving(MODEL, H200, wl, dep)
    assert "\n" not in str(e.value)
    assert pytest.importorskip("re").search(word, str(e.value)), str(e.value)


def test_cli_matches_api_and_bad_flags_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from fleetsim.cli import main

    wl = "poisson:rate=6,isl=256,osl=64"
    rc = main(["simulate", "--model", MODEL, "--cluster", "2xH200-SXM", "--workload", wl, "--num-requests", "200",
               "--adapters", "300", "--adapter-zipf", "1.1", "--lora-rank", "16", "--max-loras", "8",
               "--adapter-memory", "unified", "--router", "adapter-affinity"])
    out = capsys.readouterr().out
    assert rc == 0
    api = simulate_serving(MODEL, "2xH200-SXM", f"{wl},adapters=300,adapter_zipf=1.1,lora_rank=16",
                           Deployment(pools=(PoolDeployment(engine=EngineConfig(
                               lora=LoraConfig(max_loras=8, memory="unified"))),), router="adapter_affinity"),
                           num_requests=200)
    s = api.summary
    assert f"hit rate {s['lora_hit_rate']:.4g}, {s['lora_loads']} loads stalling {s['lora_load_stall_s']:.4g} s" in out
    for argv in (["--lora-rank", "0", "--adapters", "3"], ["--adapter-zipf", "1.0"],
                 ["--adapters", "3", "--max-loras", "8", "--gpu-slots", "2"], ["--router", "adapter-magic"]):
        try:
            rc = main(["simulate", "--model", MODEL, "--cluster", "1xH200-SXM", "--workload", wl,
                       "--num-requests", "5", *argv])
        except SystemExit as e:
            rc = e.code  # type: ignore[assignment]
        assert rc == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) <= 2 and "error" in err[-1]
