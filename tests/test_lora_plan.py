"""Planning for an adapter population: a population of one tiny adapter plans the base
model's deployment, more GPU-resident slots never lower the hit rate, the chosen slot count
is the brute-force answer over single-slot plans, slots that leave no KV cache are a memory
rejection with the reason, LoRA engine flags, the analytic LoRA price, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml
from fleetsim.calibration.lora import roofline_cost
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.cluster import load_cluster
from fleetsim.hardware.errors import ConfigError
from fleetsim.planner.first_plan import ReplicaTimer
from fleetsim.planner.flags import ServingDeployment, serving_command
from fleetsim.planner.serving.lora import (
    adapter_need,
    expected_distinct,
    hit_rate_curve,
    lora_config,
    priced,
    slot_rank,
)
from fleetsim.planner.serving.records import PoolChoice, SearchSpace
from fleetsim.workloads.defaults import get_workload
from fleetsim.workloads.models import load_model

from fleetsim.plan_search import inventory_supply
from fleetsim.planning import plan_serving

SMALL = SearchSpace(max_num_seqs=(64,), sim_top=1, sim_requests=40, bisection_steps=2)
BASE = "poisson:rate=5,isl=256,osl=64"
POP = BASE + ",adapters=200,adapter_zipf=1.1,lora_rank=16"
SLO = dict(rate_rps=30, ttft_s=0.5, tpot_s=0.02)


def _layout(plan) -> list[tuple[str, int, int, int]]:  # type: ignore[no-untyped-def]
    return sorted((p.gpu, p.tp, p.pp, p.replicas) for p in plan.pools)


def test_one_tiny_adapter_plans_the_base_models_deployment() -> None:
    base = plan_serving("llama-3.2-1b", "2xH100", workload=BASE, search_space=SMALL, **SLO).search
    one = plan_serving("llama-3.2-1b", "2xH100", workload=BASE + ",adapters=1,lora_rank=1",
                       search_space=SMALL, **SLO).search
    assert base.adapters is None and one.adapters is not None
    assert one.adapters.slots == 1 and one.adapters.max_lora_rank == 1
    assert _layout(one.best) == _layout(base.best) and one.best.gpus == base.best.gpus
    # one adapter: only the first of the 40 re-simulated requests (max(sim_requests, 40 x 1 replica)) loads it
    assert one.best.meets_slo and one.adapters.hit_rate == pytest.approx(39 / 40)


def test_more_gpu_slots_never_lower_the_hit_rate() -> None:
    m, cl = load_model("llama-3.2-1b"), load_cluster("1xH100")
    wl = get_workload(POP)
    need = adapter_need(wl, m)
    assert need is not None
    pc = PoolChoice(gpu="H100-SXM", pool=0, tp=1, pp=1, ep=1, replicas=1, role="both", power_cap_w=None,
                    engine="vllm", max_num_seqs=64, max_num_batched_tokens=8192)
    curve = hit_rate_curve(m, cl, pc, "vllm", "bf16", "bf16", wl, 30.0, [4, 8, 16, 64, 200], need,
                           inventory_supply(cl), 0, 60, per_batch=4)
    rates = [h for _, h in curve]
    assert [s for s, _ in curve] == [4, 8, 16, 64, 200]
    assert all(b >= a for a, b in zip(rates, rates[1:], strict=False)), curve
    assert rates[-1] > rates[0]


def test_chosen_slots_are_the_smallest_meeting_the_slo_at_the_cheapest_deployment() -> None:
    grid = (1, 4, 16, 64)
    space = SMALL.model_copy(update={"adapter_slots": grid})
    res = plan_serving("llama-3.2-1b", None, market="H100:3.0:8", workload=POP, search_space=space, **SLO).search
    assert res.status == "optimal" and res.adapters is not None
    # brute force: every slot count planned on its own through the public API
    single = {}
    for s in grid:
        r = plan_serving("llama-3.2-1b", None, market="H100:3.0:8", workload=POP,
                         search_space=SMALL.model_copy(update={"adapter_slots": (s,)}), **SLO).search
        if r.best is not None and r.best.meets_slo:
            single[s] = r.best.cost_per_hour
    assert single, "no slot count meets the SLO"
    cheapest = min(single.values())
    expected = min(s for s, c in single.items() if c == cheapest)
    assert res.adapters.slots == expected
    assert res.best.cost_per_hour == pytest.approx(cheapest)
    assert res.best.pools[0].max_loras == expected and f"--max-loras {expected}" in res.best.pools[0].command
    opts = {o.slots: o for o in res.adapters.options}
    assert set(opts) == set(grid) and opts[expected].meets_slo
    # the slots' memory, llama-3.2-1b by hand (h 2048, 8 KV heads of 64, ffn 8192, 16 layers), per rank and
    # layer: q 2048+2048, k 2048+512, v 2048+512, o 2048+2048, gate/up/down 3 x (2048+8192); bf16, tp1
    per_layer = 4096 + 2560 + 2560 + 4096 + 3 * 10240
    assert res.adapters.adapter_bytes_per_gpu == pytest.approx(expected * 16 * per_layer * 16 * 2)


def test_slots_that_leave_no_kv_cache_are_infeasible_with_the_reason() -> None:
    space = SMALL.model_copy(update={"adapter_slots": (1, 8)})
    res = plan_serving("llama-3.1-8b", "1xL4", workload="poisson:rate=1,isl=256,osl=64,adapters=10,lora_rank=256",
                       rate_rps=0.2, search_space=space, simulate=False).search
    opts = {o.slots: o for o in res.adapters.options}
    assert opts[1].status == "optimal" and res.adapters.slots == 1
    assert opts[8].status != "optimal"
    assert "8 LoRA slots of rank 256" in opts[8].reason and "leave no KV cache" in opts[8].reason
    # 8 x 256 x 81,920 x 32 x 2 bytes = 10.0 GiB named in the reason
    assert f"{8 * 256 * 81920 * 32 * 2 / 2**30:.2f} GiB" in opts[8].reason


def test_analytic_stage_adds_the_lora_kernels_and_expected_distinct_adapters() -> None:
    assert expected_distinct((0.5, 0.5), 2) == pytest.approx(1.5)  # 2 x (1 - 0.25)
    assert expected_distinct((1.0,), 7) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    p = np.arange(1, 51, dtype=float) ** -1.1
    p /= p.sum()
    mc = np.mean([len(set(rng.choice(50, 16, p=p))) for _ in range(4000)])
    assert expected_distinct(p, 16) == pytest.approx(mc, rel=0.02)
    m, gpu = load_model("llama-3.2-1b"), get_gpu("H100-SXM")
    need = adapter_need(get_workload(POP), m)
    assert need is not None and need.max_rank == 16
    base = ReplicaTimer(lambda n: 0.01, lambda b, c, k: 0.02, 10_000)
    cfg = lora_config(need, 4, 200).model_copy(update={"kernel": "roofline"})
    t = priced(base, m, gpu, cfg, need, 256)
    # 7 projections x 16 layers of the roofline kernel, 32 tokens, A = 4 (capped at the slots), r = 16
    a = min(4, int(np.ceil(expected_distinct(need.probabilities, 32))))
    assert a == 4
    want = 7 * 16 * roofline_cost(gpu, 2048, 32, 4, 16).seconds
    assert t.iteration_s(32, 300, 0) - 0.02 == pytest.approx(want)
    assert t.prefill_s(256) - 0.01 == pytest.approx(7 * 16 * roofline_cost(gpu, 2048, 256, 1, 16).seconds)


def test_engine_flags_for_lora() -> None:
    d = ServingDeployment(model="llama-3.1-8b", gpu="H100", max_loras=16, max_lora_rank=16, max_cpu_loras=2000)
    v = serving_command(d, "vllm").argv
    assert v[-7:] == ("--enable-lora", "--max-loras", "16", "--max-lora-rank", "16", "--max-cpu-loras", "2000")
    sg = serving_command(d, "sglang").argv
    i = sg.index("--enable-lora")
    assert sg[i:i + 7] == ("--enable-lora", "--max-loras-per-batch", "16", "--max-lora-rank", "16",
                           "--max-loaded-loras", "2000")
    assert "down_proj" in sg[i + 8:]
    tr = serving_command(d, "trtllm")
    cfg = yaml.safe_load(next(iter(tr.files.values())))["lora_config"]
    assert (cfg["max_loras"], cfg["max_lora_rank"], cfg["max_cpu_loras"]) == (16, 16, 2000)
    assert "--enable-lora" not in serving_command(d.model_copy(update={"max_loras": None, "max_lora_rank": None,
                                                                        "max_cpu_loras": None}), "vllm").argv
    with pytest.raises(ConfigError, match="max_cpu_loras 8 < max_loras 16"):
        serving_command(d.model_copy(update={"max_cpu_loras": 8}), "vllm")
    with pytest.raises(ConfigError, match="vLLM accepts"):
        serving_command(d.model_copy(update={"max_lora_rank": 24}), "vllm")
    assert slot_rank(24) == 32 and slot_rank(1) == 1 and slot_rank(600) == 600


@pytest.mark.parametrize(("kw", "match"), [
    ({"workload": BASE + ",adapters=4,lora_rank=4096"}, "lora_rank up to 4096 exceeds llama-3.2-1b's hidden size 2048"),
    ({"workload": POP, "disaggregate": "only"}, "not made for LoRA workloads"),
    ({"workload": POP, "search_space": {"adapter_slots": (0, 4)}}, "adapter_slots must be positive"),
])
def test_bad_input_is_one_line(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        _ = plan_serving("llama-3.2-1b", "1xH100", rate_rps=1, **kw).search
    assert "\n" not in str(e.value)


def test_cli_plans_with_adapters_and_bad_rank_exits_2() -> None:
    cmd = [sys.executable, "-m", "fleetsim", "plan", "--model", "llama-3.2-1b", "--cluster", "1xH100",
           "--rate", "1", "--workload", BASE + ",adapters=4,lora_rank=4096"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "hidden size" in r.stderr
