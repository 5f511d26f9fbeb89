"""The training op graph takes an engine profile's kernel flags (workloads/graph_training.py)."""

from __future__ import annotations

import pytest
from fleetsim.calibration.engines import Kernels, get_engine
from fleetsim.calibration.ops import ElementwiseOp, GemmOp
from fleetsim.workloads.graph_training import training_edge_ops, training_layer_graph
from fleetsim.workloads.models import load_model

HF = get_engine("hf-transformers", "training").kernels


@pytest.fixture(scope="module")
def llama():
    return load_model("llama-3.1-8b")


@pytest.mark.parametrize("engine", ["megatron", "torch-eager"])
@pytest.mark.parametrize("amp", [False, True])
def test_default_profiles_keep_the_one_kernel_graph(llama, engine, amp):
    k = get_engine(engine, "training").kernels
    for recompute in ("none", "full"):
        a = training_layer_graph(llama, "dense", False, 2, 512, tp=2, amp=amp, recompute=recompute)
        b = training_layer_graph(llama, "dense", False, 2, 512, tp=2, amp=amp, recompute=recompute, kernels=k)
        assert (a.forward, a.backward, a.recompute) == (b.forward, b.backward, b.recompute)
    ea = training_edge_ops(llama, 2, 512, tp=2, amp=amp)
    eb = training_edge_ops(llama, 2, 512, tp=2, amp=amp, kernels=k)
    assert (ea.head_fwd, ea.head_bwd) == (eb.head_fwd, eb.head_bwd)


def test_hf_profile_splits_projections_norms_rotary_activation(llama):
    base = training_layer_graph(llama, "dense", False, 1, 256, tp=1)
    g = training_layer_graph(llama, "dense", False, 1, 256, tp=1, kernels=HF)
    gemm = {op.name: op for op in g.forward if isinstance(op, GemmOp)}
    fused = {op.name: op for op in base.forward if isinstance(op, GemmOp)}
    assert gemm["q"].n + gemm["k"].n + gemm["v"].n == fused["qkv"].n
    assert gemm["mlp_gate"].n + gemm["mlp_up"].n == fused["mlp_up"].n
    # the model's GEMM FLOPs are unchanged by the split
    assert sum(op.flops for op in g.compute if isinstance(op, GemmOp)) == pytest.approx(
        sum(op.flops for op in base.compute if isinstance(op, GemmOp)))
    names = [op.name for op in g.forward]
    assert [n for n in names if n.startswith("norm1.")] == [f"norm1.{i}" for i in range(8)]
    assert all(op.dtype == "fp32" for op in g.forward if op.name.startswith("norm"))
    assert sum(n.startswith("rotary.") for n in names) == 10
    assert sum(n.startswith("mlp_act.") for n in names) == 2
    # each split kernel has its backward kernel; full recompute replays them all
    bwd = {op.name for op in g.backward}
    assert all(f"{op.name}_bwd" in bwd for op in g.forward if isinstance(op, ElementwiseOp))
    assert {"q_dgrad", "k_wgrad", "mlp_gate_dgrad"} <= bwd
    full = training_layer_graph(llama, "dense", False, 1, 256, recompute="full", kernels=HF)
    assert full.recompute == full.forward


def test_autocast_casts_each_separate_weight(llama):
    g = training_layer_graph(llama, "dense", False, 1, 256, amp=True, kernels=HF)
    casts = {op.name: op for op in g.forward if op.name.endswith("_weight_cast")}
    gemms = [op for op in g.forward if isinstance(op, GemmOp)]
    assert set(casts) == {f"{op.name}_weight_cast" for op in gemms}
    assert casts["k_weight_cast"].elements == llama.hidden_size * llama.num_kv_heads * llama.head_dim


def test_logits_fp32_upcasts_without_autocast(llama):
    plain = training_edge_ops(llama, 1, 256)
    up = training_edge_ops(llama, 1, 256, kernels=Kernels(logits_fp32=True))
    assert [op.name for op in up.head_fwd] == [op.name for op in plain.head_fwd] + ["logits_upcast"]
    tp = training_edge_ops(llama, 1, 256, tp=2, kernels=HF)
    names = [op.name for op in tp.head_fwd]
    assert names.index("lm_head_tp") == 8 and names[9] == "lm_head"


def test_qwen_bias_follows_separate_projections():
    qwen = load_model("qwen2.5-7b")
    g = training_layer_graph(qwen, "dense", False, 1, 128, amp=True, kernels=HF)
    names = {op.name for op in g.forward}
    assert {"q_bias_cast", "k_bias_cast", "v_bias_cast"} <= names


def test_fp32_parameter_profiles_run_autocast_unless_told():
    from fleetsim.training import build_train_job

    args = ("llama-3.1-8b", "1xH200-SXM")
    kw = dict(micro_batch=1, global_batch=1, seq_len=512, pp=1)
    for engine, precision in (("hf-transformers", "amp"), ("torch-compile", "amp"),
                              ("megatron", "mixed"), ("torch-eager", "mixed")):
        job = build_train_job(*args, engine=engine, **kw)
        assert job.recipe.precision == precision, engine
    assert build_train_job(*args, engine="hf-transformers", precision="mixed", **kw).recipe.precision == "mixed"


def test_separate_projections_cast_their_shared_input_again(llama):
    g = training_layer_graph(llama, "dense", False, 1, 256, amp=True, kernels=HF)
    casts = [op.name for op in g.forward if op.name.endswith("_input_cast")]
    assert casts == ["k_input_cast", "v_input_cast", "mlp_up_input_cast"]
    assert {f"{c}_bwd" for c in casts} <= {op.name for op in g.backward}
    fused = training_layer_graph(llama, "dense", False, 1, 256, amp=True)
    assert not any(op.name.endswith("_input_cast") for op in fused.forward)


def test_split_norms_still_count_their_weights():
    from fleetsim.sim.training.layer_ops import LayerCoster
    from fleetsim.sim.training.placement import CollectivePricer
    from fleetsim.sim.training.step import _default_gpu_and_cost

    from fleetsim.training import build_train_job

    counts = {}
    for engine in ("hf-transformers", "torch-eager"):
        job = build_train_job("llama-3.1-8b", "1xH200-SXM", micro_batch=1, global_batch=1, seq_len=256,
                              engine=engine, pp=1)
        gpu, cost = _default_gpu_and_cost(job, None, None)
        lt = LayerCoster(job, gpu, cost, CollectivePricer(job, gpu, cost)).layer("dense", False)
        counts[engine] = lt.param_tensors
    assert counts == {"hf-transformers": 7 + 2, "torch-eager": 4 + 2}  # GEMM weights + norm weights


def test_extra_backward_kernels_end_the_layer_backward(llama):
    assert HF.extra_kernels_backward is not None
    k = round(HF.extra_kernels_backward.value)
    g = training_layer_graph(llama, "dense", False, 1, 256, kernels=HF)
    bare = training_layer_graph(llama, "dense", False, 1, 256,
                                kernels=HF.model_copy(update={"extra_kernels_backward": None}))
    assert g.backward[: len(bare.backward)] == bare.backward
    assert [op.name for op in g.backward[len(bare.backward):]] == [f"extra_backward.{i}" for i in range(k)]
    assert g.forward == bare.forward
