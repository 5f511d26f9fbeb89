"""Training FLOPs per step: model FLOPs (for MFU) and hardware FLOPs (for HFU).

Narayanan et al. 2021 eq. 3 counts, per sequence of ``s`` tokens and per layer, the forward
matmuls ``24 s h^2`` (QKV 6, projection 2, MLP 16) and attention ``4 s^2 h`` (QK^T and AV,
no causal discount), plus the logits ``2 s h V``; the backward is twice the forward:

    F = 72 B s L h^2 (1 + s/(6h) + V/(12 h L)).

Here the same count is taken from the model's shape, so it holds for GQA, gated MLPs and
MoE (active experts only): forward FLOPs per token = 2 x (matmul weights a token touches)
+ 2 s a (d_qk + d_v) per layer + 2 h V, times 3 for forward + backward. For a GPT with
ffn = 4h and MHA it equals eq. 3 exactly (biases and norms are not matmul weights).
Hardware FLOPs add the recomputation: the whole layer forward again with ``full``
(eq. 3's ``96 B s L h^2 (1 + s/(6h) + V/(16 h L))``) or the attention core with
``selective``.
"""

from __future__ import annotations

from fleetsim.workloads.models import ModelSpec


def layer_matmul_weights(model: ModelSpec, kind: str) -> float:
    """Matmul weights one token multiplies by in a layer (active experts only)."""
    m, h = model, model.hidden_size
    if m.is_mla:
        attn = float(m.attention_params())
    else:
        kv_w = m.num_kv_heads * (m.head_dim + m.value_head_dim)
        attn = float(h * m.q_width + h * kv_w + m.num_heads * m.value_head_dim * h)
    mats = 3 if m.mlp_gated else 2
    if kind == "moe":
        mlp = h * m.num_experts + m.num_experts_per_tok * mats * h * m.moe_intermediate_size
        if m.shared_ffn_size:
            mlp += mats * h * m.shared_ffn_size
    else:
        mlp = mats * h * m.intermediate_size
    return attn + mlp


def attention_flops_per_token(model: ModelSpec, seq_len: int, local: bool = False) -> float:
    """Forward score and value FLOPs per token of one layer (eq. 3 convention: full s)."""
    keys = seq_len
    if local and model.sliding_window:
        keys = min(seq_len, model.sliding_window)
    return 2.0 * keys * model.num_heads * (model.head_dim + model.value_head_dim)


def forward_flops(model: ModelSpec, tokens: float, seq_len: int) -> tuple[float, float, float]:
    """(layer matmul, attention, logits) forward FLOPs for ``tokens`` tokens."""
    mat = att = 0.0
    for i, kind in enumerate(model.layer_kinds):
        mat += 2.0 * layer_matmul_weights(model, kind)
        att += attention_flops_per_token(model, seq_len, model.is_local_layer(i))
    logits = 2.0 * model.hidden_size * model.vocab_size
    return mat * tokens, att * tokens, logits * tokens


def model_flops(model: ModelSpec, global_batch: int, seq_len: int) -> float:
    """Model FLOPs of one step (forward + backward, no recomputation): eq. 3."""
    mat, att, logits = forward_flops(model, float(global_batch) * seq_len, seq_len)
    return 3.0 * (mat + att + logits)


def hardware_flops(model: ModelSpec, global_batch: int, seq_len: int, recompute: str) -> float:
    """Model FLOPs plus the recomputed forward FLOPs."""
    mat, att, logits = forward_flops(model, float(global_batch) * seq_len, seq_len)
    extra = {"none": 0.0, "selective": att, "full": mat + att}[recompute]
    return 3.0 * (mat + att + logits) + extra
