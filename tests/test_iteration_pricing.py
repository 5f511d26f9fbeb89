"""One pricing function: the serving simulator's step timer, its surrogate and
estimate_forward agree on the same batch and engine profile."""

from __future__ import annotations

import numpy as np
import pytest
from fleetsim.calibration import get_cost_model
from fleetsim.calibration.cost import IterationCostModel
from fleetsim.calibration.engines import get_engine
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.errors import ConfigError
from fleetsim.sim.iteration import captures, price_iteration
from fleetsim.sim.serving.steptime import GraphStepTimer
from fleetsim.workloads.models import load_model
from fleetsim.workloads.parallel import ParallelConfig, Seq

from fleetsim.estimate import estimate_forward

BATCHES = [
    [Seq(1, 700)] * 8,
    [Seq(1, 300)] * 4 + [Seq(32, 0)],
    [Seq(512, 0)],
    [Seq(1, 2000)] * 64,
]
ENGINES = ["vllm", "sglang", "trtllm", "hf-transformers", "torch-compile", "torch-eager", "fleetsim-harness"]


@pytest.mark.parametrize("engine", ENGINES)
def test_step_timer_and_estimate_forward_agree(engine: str) -> None:
    gpu = get_gpu("H200")
    cm = get_cost_model(gpu)
    model = load_model("llama-3.1-8b")
    prof = get_engine(engine)
    timer = GraphStepTimer(model, gpu, ParallelConfig(tp=2), cm, engine=prof)
    for batch in BATCHES:
        direct = timer.direct_time(batch)
        est = estimate_forward(model, gpu, batch, tp=2, cost_model=cm, engine=engine, check_context=False)
        assert direct == pytest.approx(est.time_s, rel=1e-9, abs=0)
        assert est.engine == engine and est.graphs == captures(prof, batch)


@pytest.mark.parametrize("engine,tol", [("vllm", 0.02), ("trtllm", 0.02), ("hf-transformers", 0.08),
                                        ("torch-compile", 0.08)])
def test_surrogate_stays_close_to_direct_pricing(engine: str, tol: float) -> None:
    gpu = get_gpu("H100")
    timer = GraphStepTimer(load_model("llama-3.1-8b"), gpu, ParallelConfig(), get_cost_model(gpu),
                           engine=get_engine(engine))
    rng = np.random.default_rng(3)
    worst = 0.0
    for _ in range(12):
        n_dec = int(rng.integers(1, 100))
        ctx = rng.integers(1, 4000, n_dec)
        if rng.random() < 0.5:
            direct = timer.direct_time([Seq(1, int(x)) for x in ctx])
            fast = float(timer.decode_times(n_dec, np.array([float((ctx + 1).sum())]))[0])
        else:
            q = int(rng.integers(16, 2000))
            direct = timer.direct_time([Seq(1, int(x)) for x in ctx] + [Seq(q, 0)])
            fast = timer.step_time(n_dec, int((ctx + 1).sum()), [q], [q], 1)
        worst = max(worst, abs(fast / direct - 1))
    assert worst < tol


def test_profile_capture_rule_is_data() -> None:
    vllm, sglang = get_engine("vllm"), get_engine("sglang")
    assert captures(vllm, [Seq(1, 10)] * 512) and not captures(vllm, [Seq(1, 10)] * 513)
    assert not captures(vllm, [Seq(1, 10), Seq(5, 0)])
    assert captures(sglang, [Seq(1, 10)] * 160) and not captures(sglang, [Seq(1, 10)] * 161)
    assert not captures(get_engine("hf-transformers"), [Seq(1, 10)])


def test_hf_profile_prices_its_own_kernels() -> None:
    gpu = get_gpu("H200")
    hf = estimate_forward("llama-3.1-8b", gpu, (1, 128), engine="hf-transformers")
    names = set(hf.ops["name"])
    assert {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"} <= names and "qkv_proj" not in names
    assert hf.ops.loc[hf.ops["name"] == "lm_head", "flops"].iloc[0] == pytest.approx(
        2 * 128 * 4096 * 128256)  # logits of every position
    vllm = estimate_forward("llama-3.1-8b", gpu, (1, 128), engine="vllm")
    assert hf.time_s > vllm.time_s
    dec = estimate_forward("llama-3.1-8b", gpu, (8, 1, 512), engine="hf-transformers", graphs=True)
    assert "kv_expand" in set(dec.ops["name"])


def test_cost_models_implement_the_protocol_and_moe_support_is_checked() -> None:
    assert isinstance(get_cost_model(get_gpu("H100")), IterationCostModel)
    prof = get_engine("vllm").model_copy(update={"kernels": get_engine("vllm").kernels.model_copy(
        update={"supports_moe": False})})
    with pytest.raises(ConfigError, match="does not support mixture-of-experts models"):
        price_iteration(load_model("mixtral-8x7b"), get_gpu("H100"), [Seq(8, 0)], ParallelConfig(tp=2),
                        get_cost_model(get_gpu("H100")), prof)


def test_simulate_names_its_engine_and_rejects_unknown_ones(capsys) -> None:
    import fleetsim
    from fleetsim.cli import main

    wl = "poisson:rate=2,isl=200,osl=20"
    hf = fleetsim.simulate_serving("llama-3.1-8b", "1xH100", wl, num_requests=10, engine="hf-transformers")
    vl = fleetsim.simulate_serving("llama-3.1-8b", "1xH100", wl, num_requests=10)
    assert hf.summary["engine"] == "hf-transformers" and vl.summary["engine"] == "vllm"
    assert hf.summary["tpot_mean_s"] > vl.summary["tpot_mean_s"]
    rc = main(["simulate", "--model", "llama-3.1-8b", "--cluster", "1xH100", "--workload", wl,
               "--num-requests", "5", "--engine", "vlm"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "did you mean 'vllm'" in err


def test_surrogate_keeps_every_extra_kernel_of_a_profile() -> None:
    """However many unfused extra kernels a profile names (here 100 a layer, more than any
    shipped profile), the surrogate prices each of them in its part: it stays as close to
    direct pricing as for the shipped profiles."""
    from fleetsim.calibration.engines import Fitted

    base = get_engine("vllm")
    many = Fitted(value=100, source="default: a test profile with many extra kernels")
    kernels = base.kernels.model_copy(update={"extra_kernels_decode": many, "extra_kernels_prefill": many})
    prof = base.model_copy(update={"kernels": kernels})
    gpu = get_gpu("H100")
    timer = GraphStepTimer(load_model("llama-3.1-8b"), gpu, ParallelConfig(), get_cost_model(gpu), engine=prof)
    plain = GraphStepTimer(load_model("llama-3.1-8b"), gpu, ParallelConfig(), get_cost_model(gpu), engine=base)
    ctx = [700] * 8
    batch = [Seq(1, c) for c in ctx] + [Seq(256, 0)]
    direct = timer.direct_time(batch)
    fast = timer.step_time(8, sum(c + 1 for c in ctx), [256], [256], 1)
    assert fast == pytest.approx(direct, rel=0.02)
    assert direct > plain.direct_time(batch)
    dec = float(timer.decode_times(8, np.array([float(sum(c + 1 for c in ctx))]))[0])
    assert dec == pytest.approx(timer.direct_time([Seq(1, c) for c in ctx]), rel=0.02)
