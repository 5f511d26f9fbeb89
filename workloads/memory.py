"""GPU memory footprint of a model replica: weights, KV cache, serving activations.

All figures are bytes on ONE GPU (a TP rank of one pipeline stage). Sharding follows the op
graphs: attention and MLP matrices split by tp (KV projections replicated when
tp > num_kv_heads; MLA's latent down-projections replicated), routed experts split by ep
(and by the expert TP degree), vocab-parallel embedding and LM head split by tp, norms and
the router replicated. Matrix weights are stored in ``dtype``; embeddings, LM head, norms,
biases and routers stay in the activation dtype (bf16 for fp8/int8/fp4 checkpoints), as in
vLLM and TensorRT-LLM. Quantization scales are ignored (< 1% for 128x128 fp8 blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, floor

from fleetsim.calibration.ops import dtype_bytes
from fleetsim.hardware.errors import ConfigError, InfeasibleError
from fleetsim.hardware.specs import GPUSpec
from fleetsim.workloads.graph_common import act_dtype, check_kv_dtype, expert_tokens
from fleetsim.workloads.models import LayerKind, ModelSpec
from fleetsim.workloads.parallel import ParallelConfig

GB = 1e9


def _stages(parallel: ParallelConfig, model: ModelSpec, stage: int | None) -> list[int]:
    if stage is None:
        return list(range(parallel.pp))
    if not 0 <= stage < parallel.pp:
        raise ConfigError(f"stage {stage} out of range 0..{parallel.pp - 1}")
    return [stage]


def _layer_elems(model: ModelSpec, par: ParallelConfig, kind: LayerKind) -> tuple[float, float]:
    """(matrix elements, small elements: norms/biases/router) of one layer on one GPU."""
    h, tp = model.hidden_size, par.tp
    heads = model.num_heads // tp
    hd, vhd = model.head_dim, model.value_head_dim
    nb = 2 if model.norm == "layernorm" else 1
    small = float(model.layer_norm_params())
    if model.is_mla:
        assert model.kv_lora_rank is not None
        r, rope = model.kv_lora_rank, model.qk_rope_head_dim
        if model.q_lora_rank:
            mat = h * model.q_lora_rank + model.q_lora_rank * heads * hd
            small += nb * model.q_lora_rank
        else:
            mat = h * heads * hd
        mat += h * (r + rope) + r * heads * (model.qk_nope_head_dim + vhd) + heads * vhd * h
        small += nb * r
    else:
        kvr = par.kv_heads_per_rank(model)
        mat = h * heads * hd + h * kvr * (hd + vhd) + heads * vhd * h
        if model.qkv_bias:
            small += heads * hd + kvr * (hd + vhd)
        if model.o_bias:
            small += h
        if model.qk_norm:
            small += 2 * nb * hd
    gated = 3 if model.mlp_gated else 2

    def mlp(ffn_local: int) -> tuple[float, float]:
        bias = ((2 * ffn_local if model.mlp_gated else ffn_local) + h) if model.mlp_bias else 0
        return float(gated * h * ffn_local), float(bias)

    if kind == "dense":
        m, b = mlp(model.intermediate_size // tp)
        return mat + m, small + b
    m, b = mlp(model.moe_intermediate_size // par.expert_tp)
    e_local = model.num_experts // par.ep
    mat += e_local * m
    small += e_local * b + model.router_params()
    if model.shared_ffn_size:
        sm, sb = mlp(model.shared_ffn_size // tp)
        mat += sm
        small += sb
    return mat, small


def weight_bytes(model: ModelSpec, parallel: ParallelConfig | None = None, dtype: str = "bf16",
                 stage: int | None = None) -> float:
    """Weight bytes held by one GPU of pipeline ``stage`` (None: the largest stage)."""
    par = parallel if parallel is not None else ParallelConfig()
    par.validate_for(model)
    wb, ab = dtype_bytes(dtype), dtype_bytes(act_dtype(dtype))
    stage_ranges = par.stage_layers(model)
    h, tp = model.hidden_size, par.tp
    vocab_local = ceil(model.vocab_size / tp) * h
    per_kind = {k: _layer_elems(model, par, k) for k in ("dense", "moe")}
    best = 0.0
    for st in _stages(par, model, stage):
        total = 0.0
        for i in stage_ranges[st]:
            mat, small = per_kind[model.layer_kinds[i]]
            total += mat * wb + small * ab
        if st == 0:
            total += vocab_local * ab
            if model.position_embedding == "learned":
                total += model.max_position_embeddings * h * ab
        if st == par.pp - 1:
            total += model.final_norm_params() * ab
            if not model.tie_word_embeddings or par.pp > 1:
                total += vocab_local * ab
        best = max(best, total)
    return best


def kv_cache_bytes_per_token(model: ModelSpec, parallel: ParallelConfig | None = None,
                             kv_dtype: str = "bf16", stage: int | None = None) -> float:
    """KV-cache bytes one token occupies on one GPU (largest stage when ``stage`` is None).

    GQA/MHA: 2 * kv_heads_per_rank * head_dim per layer (KV heads replicated when
    tp > num_kv_heads). MLA: the compressed latent plus the rope key, kv_lora_rank +
    qk_rope_head_dim per layer, replicated on every TP rank. Sliding-window layers are
    counted like global ones (an upper bound; the cache manager may cap them).
    """
    par = parallel if parallel is not None else ParallelConfig()
    par.validate_for(model)
    b = dtype_bytes(check_kv_dtype(kv_dtype))
    if model.is_mla:
        width = model.kv_cache_width
    else:
        width = par.kv_heads_per_rank(model) * (model.head_dim + model.value_head_dim)
    layers = max(len(par.stage_layers(model)[st]) for st in _stages(par, model, stage))
    return float(layers * width * b)


def serving_activation_bytes(model: ModelSpec, parallel: ParallelConfig | None = None,
                             max_batched_tokens: int = 8192, dtype: str = "bf16",
                             max_num_seqs: int = 256) -> float:
    """Peak transient activation bytes of one forward step with ``max_batched_tokens`` tokens
    on one GPU: residual stream and hidden state (2 T h) plus the largest intermediate among
    attention (QKV + output), MLP (gate/up + activation), MoE (permuted tokens + expert
    intermediates) and fp32 logits/probabilities of up to ``max_num_seqs`` sampled rows."""
    par = parallel if parallel is not None else ParallelConfig()
    if max_batched_tokens < 1:
        raise ConfigError(f"max_batched_tokens must be >= 1, got {max_batched_tokens}")
    ab = dtype_bytes(act_dtype(dtype))
    T, h, tp = max_batched_tokens, model.hidden_size, par.tp
    heads = model.num_heads // tp
    kvr = par.kv_heads_per_rank(model)
    attn = T * (heads * model.head_dim + kvr * (model.head_dim + model.value_head_dim)
                + heads * model.value_head_dim)
    if model.is_mla:
        attn += T * heads * (model.qk_nope_head_dim + model.value_head_dim)
    cand = [attn * ab]
    if model.num_dense_layers:
        f = model.intermediate_size // tp
        cand.append(T * (2 * f + f if model.mlp_gated else 2 * f) * ab)
    if model.is_moe:
        f = model.moe_intermediate_size // par.expert_tp
        rows = expert_tokens(model, par, T) * (model.num_experts // par.ep)
        cand.append((T * model.num_experts_per_tok * h + rows * 3 * f + rows * h) * ab)
    cand.append(2 * min(T, max_num_seqs) * ceil(model.vocab_size / tp) * 4.0)
    return 2 * T * h * ab + max(cand)


@dataclass(frozen=True, slots=True)
class MemoryBreakdown:
    """How one GPU's memory is split (bytes)."""

    usable_bytes: float
    weight_bytes: float
    activation_bytes: float
    kv_bytes: float
    kv_bytes_per_token: float
    max_kv_tokens: int


def memory_breakdown(model: ModelSpec, gpu_memory_bytes: float | GPUSpec,
                     parallel: ParallelConfig | None = None, dtype: str = "bf16",
                     kv_dtype: str | None = None, memory_utilization: float = 0.9,
                     max_batched_tokens: int = 8192) -> MemoryBreakdown:
    """Weights, activations and the KV cache that fills the rest, on the tightest stage.
    Raises ``InfeasibleError`` (with the breakdown) when not even one token of KV fits."""
    par = parallel if parallel is not None else ParallelConfig()
    mem = gpu_memory_bytes.memory_bytes if isinstance(gpu_memory_bytes, GPUSpec) else float(gpu_memory_bytes)
    if not 0 < memory_utilization <= 1:
        raise ConfigError(f"memory_utilization must be in (0, 1], got {memory_utilization}")
    if mem <= 0:
        raise ConfigError(f"gpu memory must be > 0 bytes, got {mem}")
    kvd = kv_dtype if kv_dtype is not None else act_dtype(dtype)
    usable = mem * memory_utilization
    act = serving_activation_bytes(model, par, max_batched_tokens, dtype)
    worst: MemoryBreakdown | None = None
    for st in range(par.pp):
        w = weight_bytes(model, par, dtype, stage=st)
        per_tok = kv_cache_bytes_per_token(model, par, kvd, stage=st)
        free = usable - w - act
        tokens = floor(free / per_tok) if free > 0 else 0
        if tokens < 1:
            where = f" (pipeline stage {st})" if par.pp > 1 else ""
            raise InfeasibleError(
                f"{model.name} with tp={par.tp} pp={par.pp} ep={par.ep} {dtype} does not fit"
                f"{where}: weights {w / GB:.2f} GB + activations {act / GB:.2f} GB > "
                f"{usable / GB:.2f} GB usable ({memory_utilization:.0%} of {mem / GB:.2f} GB)"
            )
        b = MemoryBreakdown(usable, w, act, tokens * per_tok, per_tok, tokens)
        if worst is None or b.max_kv_tokens < worst.max_kv_tokens:
            worst = b
    assert worst is not None
    return worst


def max_kv_tokens(model: ModelSpec, gpu_memory_bytes: float | GPUSpec,
                  parallel: ParallelConfig | None = None, dtype: str = "bf16",
                  kv_dtype: str | None = None, memory_utilization: float = 0.9,
                  max_batched_tokens: int = 8192) -> int:
    """Tokens of KV cache one replica can hold: (memory * utilization - weights - activation
    peak) / KV bytes per token, on the tightest pipeline stage."""
    return memory_breakdown(model, gpu_memory_bytes, parallel, dtype, kv_dtype,
                            memory_utilization, max_batched_tokens).max_kv_tokens


def activation_bytes_per_layer_korthikanti(s: int, b: int, h: int, a: int, t: int = 1,
                                           sp: bool = False, recompute: str = "none") -> float:
    """Training activation bytes stored per transformer layer, Korthikanti et al. 2022
    (16-bit activations, dropout masks 1 byte), for sequence ``s``, micro-batch ``b``,
    hidden ``h``, ``a`` heads, tensor parallel ``t``:

    * no parallelism: s b h (34 + 5 a s / h)                         (eq. 1)
    * tensor parallel: s b h (10 + 24/t + 5 a s / (h t))              (eq. 2)
    * tensor + sequence parallel: s b h / t (34 + 5 a s / h)          (eq. 4)
    * selective recompute drops the 5 a s / h attention term          (Table 2)
    * full recompute keeps only the layer input: 2 s b h (/t with sp)
    """
    if recompute not in ("none", "selective", "full"):
        raise ConfigError(f"recompute {recompute!r} not one of none, selective, full")
    if t < 1:
        raise ConfigError(f"tensor parallel degree must be >= 1, got {t}")
    sbh = float(s) * b * h
    if recompute == "full":
        return 2 * sbh / (t if sp else 1)
    attn = 0.0 if recompute == "selective" else 5 * a * s / h
    if sp:
        return sbh / t * (34 + attn)
    return sbh * (10 + 24 / t + attn / t)
