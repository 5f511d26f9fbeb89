"""Per-GPU memory against hand-computed Korthikanti et al. 2022 formulas and ZeRO sharding."""

from __future__ import annotations

import pytest
from fleetsim.hardware.errors import InfeasibleError
from fleetsim.sim.training.memory import stage_params
from fleetsim.sim.training.step import stage_memories

from fleetsim.training import build_train_job, estimate_train_step
from fleetsim.training_validate import megatron_gpt

# a GPT with a, s, h such that every Korthikanti term is non-trivial
L, H, A, S, V, B = 8, 1024, 16, 512, 32000, 2


def _job(tp: int = 1, pp: int = 1, dp: int = 1, **kw: object):
    model = megatron_gpt("g", L, H, A, 4 * H, V, S)
    gpus = tp * pp * dp
    base: dict[str, object] = dict(micro_batch=B, global_batch=B * dp * kw.pop("m", 1), seq_len=S, tp=tp,  # type: ignore[operator]
                                   pp=pp, dp=dp, attention="eager", dropout=True)
    base.update(kw)
    return build_train_job(model, f"{gpus}xH100-SXM", **base)  # type: ignore[arg-type]


def _act(job) -> float:  # noqa: ANN001
    return stage_memories(job)[0].activations_bytes


@pytest.mark.parametrize("t", [1, 2, 4, 8])
def test_activations_tensor_parallel(t: int) -> None:
    """s b h (10 + 24/t + 5 a s/(h t)) per layer (Korthikanti eq. 2 with TP)."""
    want = S * B * H * (10 + 24 / t + 5 * A * S / (H * t)) * L
    assert _act(_job(tp=t)) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("t", [2, 4, 8])
def test_activations_sequence_parallel(t: int) -> None:
    """s b h / t (34 + 5 a s / h) per layer with TP + SP."""
    want = S * B * H / t * (34 + 5 * A * S / H) * L
    assert _act(_job(tp=t, sequence_parallel=True)) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(("t", "sp"), [(1, False), (4, False), (4, True)])
def test_activations_selective(t: int, sp: bool) -> None:
    """Selective recomputation removes the 5 a s / h term."""
    inner = 34 / t if sp else 10 + 24 / t
    want = S * B * H * inner * L
    assert _act(_job(tp=t, sequence_parallel=sp, recompute="selective")) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(("t", "sp"), [(1, False), (4, True)])
def test_activations_full_recompute(t: int, sp: bool) -> None:
    """Full recomputation keeps each layer's 16-bit input, 2 s b h (/t with SP), plus the one
    layer rematerialised during its backward (its Korthikanti activations)."""
    one = S * B * H / t * (34 + 5 * A * S / H) if sp else S * B * H * (10 + 24 / t + 5 * A * S / (H * t))
    want = 2 * S * B * H * L / (t if sp else 1) + one
    assert _act(_job(tp=t, sequence_parallel=sp, recompute="full")) == pytest.approx(want, rel=1e-12)


def test_flash_attention_drops_score_term() -> None:
    """Flash attention stores no s x s scores: 34 s b h plus the fp32 log-sum-exp (4 a bytes/token)."""
    want = S * B * (34 * H + 4 * A) * L
    assert _act(_job(attention="flash")) == pytest.approx(want, rel=1e-12)


def test_pipeline_first_stage_holds_p_microbatches() -> None:
    """1F1B: stage 0 holds p micro-batches of L/p layers = L layers' worth; the last stage one."""
    p = 4
    mem = stage_memories(_job(pp=p, m=8))
    per_layer = S * B * H * (34 + 5 * A * S / H)
    assert mem[0].activations_bytes == pytest.approx(per_layer * L, rel=1e-12)
    assert mem[-1].activations_bytes == pytest.approx(per_layer * L / p, rel=1e-12)


def test_interleaved_factor() -> None:
    """Interleaving multiplies stage 0's activations by 1 + (p-1)/(p v)."""
    p, v = 4, 2
    mem = stage_memories(_job(pp=p, m=8, vpp=v, schedule="interleaved"))
    per_layer = S * B * H * (34 + 5 * A * S / H)
    assert mem[0].activations_bytes == pytest.approx(per_layer * L * (1 + (p - 1) / (p * v)), rel=1e-12)


def test_gpipe_holds_all_microbatches() -> None:
    p, m = 2, 6
    mem = stage_memories(_job(pp=p, m=m, schedule="gpipe"))
    per_layer = S * B * H * (34 + 5 * A * S / H)
    assert mem[0].activations_bytes == pytest.approx(per_layer * L / p * m, rel=1e-12)


def test_mixed_precision_18_bytes_per_param() -> None:
    job = _job(pp=2, m=2)
    dense, _ = stage_params(job, 1)
    # last stage: L/2 layers + final norm + a second copy of the tied embedding as LM head
    model = job.model
    want = L // 2 * model.params_per_layer("dense") + model.final_norm_params() + V * H
    assert dense == want
    mem = stage_memories(job)[1]
    assert mem.params_and_optimizer_bytes == pytest.approx(18 * want, rel=1e-12)
    assert (mem.weights_bytes, mem.grads_bytes, mem.optimizer_bytes) == pytest.approx((2 * want, 4 * want, 12 * want))


@pytest.mark.parametrize(("zero", "w", "g", "o"), [(0, 2, 4, 12), (1, 2, 4, 12 / 8), (2, 2, 4 / 8, 12 / 8),
                                                   (3, 2 / 8, 4 / 8, 12 / 8)])
def test_zero_sharding(zero: int, w: float, g: float, o: float) -> None:
    job = _job(dp=8, zero=zero)
    n, _ = stage_params(job, 0)
    mem = stage_memories(job)[0]
    assert (mem.weights_bytes, mem.grads_bytes, mem.optimizer_bytes) == pytest.approx((w * n, g * n, o * n))


def test_amp_peak_is_start_or_end_of_backward() -> None:
    """PyTorch eager recipe: fp32 weights (4) and Adam moments (8) always; at the start of
    backward all activations, logits buffers and bf16 weight copies (2 per matmul weight) but
    no gradients yet; at the end all fp32 gradients (4). DDP adds a bucket copy (4)."""
    from fleetsim.sim.training.flops import layer_matmul_weights

    job = _job(precision="amp", attention="flash", dropout=False)
    n, _ = stage_params(job, 0)
    mem = stage_memories(job)[0]
    assert (mem.weights_bytes, mem.optimizer_bytes) == pytest.approx((4 * n, 8 * n))
    copies = 2 * (L * layer_matmul_weights(job.model, "dense") + V * H)
    assert mem.weight_copies_bytes == pytest.approx(copies)
    # per token per layer: fp32 norm inputs 2x4h, QKV/MLP inputs 2x2h, Q K V 6h, attention
    # output and its head-merged copy 4h, MLP intermediates 16h, log-sum-exp 4a
    act = S * B * L * (8 * H + 4 * H + 6 * H + 4 * H + 16 * H + 4 * A)
    assert mem.activations_bytes == pytest.approx(act)
    logits = S * B * (6 * H + 12 * V)
    start = 12 * n + copies + act + logits
    assert mem.allocated_bytes == pytest.approx(max(start, 16 * n))
    ddp = stage_memories(_job(dp=2, precision="amp", attention="flash"))[0]
    assert ddp.comm_buffers_bytes == pytest.approx(4 * n)


def test_offload_moves_optimizer_to_host() -> None:
    job = _job(dp=2, zero=1, offload_optimizer="cpu")
    n, _ = stage_params(job, 0)
    mem = stage_memories(job)[0]
    assert mem.optimizer_bytes == 0.0
    assert mem.host_bytes == pytest.approx(12 * n / 2)


def test_does_not_fit_names_the_breakdown() -> None:
    with pytest.raises(InfeasibleError, match=r"stage 0 needs .* GiB per GPU > .* GiB HBM \(GiB: weights"):
        estimate_train_step("llama-3.1-70b", "8xH100-SXM", tp=8, global_batch=8, seq_len=4096)
