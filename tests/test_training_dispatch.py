"""Eager host dispatch in the training step: kernel counts against torch.profiler counts of
the real PyTorch step, and host-bound / device-bound step times in closed form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _training_stub import StubCost
from fleetsim.hardware.catalog import get_gpu
from fleetsim.sim.training import dispatch as dsp
from fleetsim.sim.training.layer_ops import LayerCoster
from fleetsim.sim.training.placement import CollectivePricer

from fleetsim.training import build_train_job, estimate_train_step
from fleetsim.training_validate import megatron_gpt

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "calibration" / "validation" / "H200-SXM" / "train_dispatch_profile.json"
GPU = get_gpu("H100-SXM")
GPT350M = megatron_gpt("gpt2-350m", 24, 1024, 8, 4096, 50257, 1024)
# calibration/bench/torch_models.make_train_model under autocast, per block, by hand:
# forward: ln1 + its bf16 cast, 4 GEMMs x (weight cast, bias cast, GEMM), the head-merge
# copy, SDPA, 2 residual adds, ln2 + its cast, GELU
FWD_PER_LAYER = 2 + 4 * 3 + 1 + 1 + 2 + 2 + 1
# backward: 4 x (dgrad, wgrad, bias grad, weight-grad cast, bias-grad cast), 2 norms x
# (input grad, weight grad, cast grad), SDPA backward (memset, dot(dO,O), main, dQ convert),
# head-merge copy back, QKV gradient stack, GELU backward, 2 residual grads
BWD_PER_LAYER = 4 * 5 + 2 * 3 + 4 + 1 + 1 + 1 + 2
EDGE_FWD, EDGE_BWD = 12, 18  # embedding + head/loss (dispatch.EMBEDDING_/HEAD_KERNELS)
TENSORS = 24 * 12 + 4  # PyTorch's parameter tensors of this model (wte, wpe, ln_f w/b)


class HostStub(StubCost):
    """Stub kernel prices plus a host launch interval."""

    def __init__(self, launch_s: float, **kw: float) -> None:
        super().__init__(**kw)
        self.launch_s = launch_s

    def host_launch_s(self, gpu: object) -> float:
        return self.launch_s


def _coster(recompute: str = "none") -> LayerCoster:
    job = build_train_job(GPT350M, "1xH100-SXM", None, 1, 1, 1024, precision="amp", recompute=recompute)
    cost = StubCost()
    return LayerCoster(job, GPU, cost, CollectivePricer(job, GPU, cost))


def test_kernel_counts_match_hand_count() -> None:
    lt = _coster().layer("dense", False)
    assert lt.fwd_kernels is not None and lt.bwd_kernels is not None
    assert lt.fwd_kernels.count == FWD_PER_LAYER == 21
    assert lt.bwd_kernels.count == BWD_PER_LAYER == 35
    assert lt.param_tensors == 12


@pytest.mark.skipif(not PROFILE.exists(), reason="calibration/validation/H200-SXM/train_dispatch_profile.json absent")
def test_kernel_counts_match_profiler() -> None:
    """Step kernel counts within 10 % of torch.profiler's on the real model (16-token
    sequences, where some GEMMs add split-K reductions the count leaves out)."""
    rows = [r for r in json.loads(PROFILE.read_text())["rows"] if "kernels" in r and r["model"] == "gpt2-350m"]
    plain = next(r["kernels"] for r in rows if not r["recompute"])
    ckpt = next(r["kernels"] for r in rows if r["recompute"])
    lt, lr = _coster().layer("dense", False), _coster("full").layer("dense", False)
    assert lt.fwd_kernels is not None and lt.bwd_kernels is not None and lr.bwd_kernels is not None
    ours_f = 24 * lt.fwd_kernels.count + EDGE_FWD
    ours_b = 24 * lt.bwd_kernels.count + EDGE_BWD
    ours_rb = 24 * lr.bwd_kernels.count + EDGE_BWD
    assert ours_f == pytest.approx(plain["forward"], rel=0.10)
    assert ours_b == pytest.approx(plain["backward"], rel=0.10)
    assert ours_rb == pytest.approx(ckpt["backward"], rel=0.10)
    assert plain["optimizer"] < 0.1 * TENSORS  # fused AdamW: few multi-tensor launches


def _step(cost: StubCost, execution: str = "eager", recompute: str = "none") -> float:
    est = estimate_train_step(GPT350M, "1xH100-SXM", None, 1, 1, 1024, precision="amp", recompute=recompute,
                              gpu=GPU, cost_model=cost, check_memory=False, execution=execution,
                              record_timeline=False)
    return est.time_s


@pytest.mark.parametrize("recompute", ["none", "full"])
def test_host_bound_step_is_the_host_total(recompute: str) -> None:
    """Launch interval 1 ms, kernels 1 ns: the step is the host's total issue time,
    OP_HOST_RATIO per kernel + checkpoint hooks + the optimizer's per-tensor work (the last
    kernels, zero-time in the stub, end with the host)."""
    x = 1e-3
    kern = 24 * (FWD_PER_LAYER + BWD_PER_LAYER) + EDGE_FWD + EDGE_BWD
    hooks = 0.0
    if recompute == "full":
        kern += 24 * FWD_PER_LAYER
        hooks = 24 * (dsp.CHECKPOINT_FWD_HOST_RATIO + dsp.CHECKPOINT_BWD_HOST_RATIO)
    host = x * (kern * dsp.OP_HOST_RATIO + hooks + dsp.OPTIMIZER_HOST_RATIO_PER_TENSOR * TENSORS)
    t = _step(HostStub(x, gemm_s=1e-9), recompute=recompute)
    assert t == pytest.approx(host, rel=1e-6)


def test_device_bound_step_adds_one_launch() -> None:
    """Launch interval 1 ns, GEMMs 10 ms: eager = graph + (at most) the host time before
    the first kernel; graph execution has no host term at all."""
    eager = _step(HostStub(1e-9, gemm_s=1e-2))
    graph = _step(HostStub(1e-9, gemm_s=1e-2), execution="graph")
    assert graph == pytest.approx(24 * 12 * 1e-2, rel=1e-12)
    assert graph <= eager <= graph + 1e-6


def test_eager_small_model_is_host_bound_on_h100_profile() -> None:
    """With the H100 profile the 350M model at 1024 tokens is host-bound: eager is slower
    than graph execution by more than the profile's launch cost times the kernel count
    difference allows to be noise (> 20 %), while a 2.7B model at 2048 tokens is not (< 3 %)."""
    small_e = estimate_train_step(GPT350M, "1xH100-SXM", None, 1, 1, 1024, precision="amp",
                                  check_memory=False, record_timeline=False)
    small_g = estimate_train_step(GPT350M, "1xH100-SXM", None, 1, 1, 1024, precision="amp",
                                  check_memory=False, record_timeline=False, execution="graph")
    assert small_e.time_s > 1.2 * small_g.time_s
    assert small_e.result.engine.stages[0].host_bound_s > 0
    big = megatron_gpt("gpt2-2.7b", 32, 2560, 20, 10240, 50257, 2048)
    big_e = estimate_train_step(big, "1xH100-SXM", None, 2, 2, 2048, precision="amp",
                                check_memory=False, record_timeline=False)
    big_g = estimate_train_step(big, "1xH100-SXM", None, 2, 2, 2048, precision="amp",
                                check_memory=False, record_timeline=False, execution="graph")
    assert big_g.time_s <= big_e.time_s < 1.03 * big_g.time_s


DDP_PROFILE = ROOT / "calibration" / "validation" / "H200-SXM" / "train_dispatch_profile_ddp2.jsonl"


@pytest.mark.skipif(not DDP_PROFILE.exists(), reason="calibration/validation/H200-SXM/train_dispatch_profile_ddp2.jsonl absent")
def test_ddp_backward_kernel_count_matches_profiler() -> None:
    """DDP over two GPUs: backward kernels = the single-GPU count + DDP_KERNELS_PER_TENSOR
    per parameter tensor, within 10 % of torch.profiler's count on rank 0."""
    rows = [json.loads(line) for line in DDP_PROFILE.read_text().splitlines()]
    measured = next(r["kernels"]["backward"] for r in rows if "kernels" in r and not r["recompute"])
    lt = _coster().layer("dense", False)
    assert lt.bwd_kernels is not None
    ours = 24 * lt.bwd_kernels.count + EDGE_BWD + dsp.DDP_KERNELS_PER_TENSOR * TENSORS
    assert ours == pytest.approx(measured, rel=0.10)
