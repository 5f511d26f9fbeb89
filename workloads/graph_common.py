"""Building blocks shared by the serving and training operator graphs.

Conventions (so a cost model and a reader agree on what an op means):

* GEMM ``dtype`` is the weight dtype; activations are bf16 when weights are 8/4-bit
  (``act_dtype``). A TP-sharded GEMM has N (column-parallel) or K (row-parallel) divided by tp.
* Elementwise kernels carry their HBM bytes (reads + writes) and a rough FLOP count.
* ``count`` is the number of layers that run the identical op in one step.
"""

from __future__ import annotations

from collections.abc import Iterable
from math import ceil

from fleetsim.calibration.ops import (
    AttentionOp,
    CollectiveOp,
    ElementwiseOp,
    GemmOp,
    Op,
    dtype_bytes,
)
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.models import LayerKind, ModelSpec
from fleetsim.workloads.parallel import ParallelConfig

WEIGHT_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8", "fp4")


def act_dtype(dtype: str) -> str:
    """Activation dtype for weights in ``dtype`` (quantized weights run bf16 activations)."""
    if dtype not in WEIGHT_DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r} (choose from {', '.join(WEIGHT_DTYPES)})")
    return "bf16" if dtype in ("fp8", "int8", "fp4") else dtype


def check_kv_dtype(kv_dtype: str) -> str:
    if kv_dtype not in WEIGHT_DTYPES:
        raise ConfigError(f"unknown kv_dtype {kv_dtype!r} (choose from {', '.join(WEIGHT_DTYPES)})")
    return kv_dtype


def norm_op(name: str, model: ModelSpec, rows: int, width: int, act: str, count: int,
            fused_add: bool = False) -> ElementwiseOp:
    """RMSNorm/LayerNorm over ``rows`` x ``width``: read x, write y (+ read/write the residual
    when the residual add is fused in, as vLLM's fused_add_rms_norm does)."""
    b = dtype_bytes(act)
    e = rows * width
    kernel = ("add_" if fused_add else "") + model.norm
    io = (4 if fused_add else 2) * e * b + width * b
    flops = (6.0 if model.norm == "layernorm" else 4.0) * e + (e if fused_add else 0)
    return ElementwiseOp(name, kernel, e, io, flops, act, count)


def ew_op(name: str, kernel: str, elements: int, reads: float, writes: float, act: str,
          count: int, flops_per_elem: float = 1.0) -> ElementwiseOp:
    """A memory-bound kernel touching ``reads + writes`` values per output element."""
    return ElementwiseOp(name, kernel, elements, (reads + writes) * elements * dtype_bytes(act),
                         flops_per_elem * elements, act, count)


def act_op(name: str, model: ModelSpec, rows: int, width: int, act: str, count: int) -> ElementwiseOp:
    """MLP activation on ``rows`` x ``width`` outputs: gated (silu/gelu * up) reads 2, writes 1."""
    if model.mlp_gated:
        kernel = "silu_mul" if model.activation == "swiglu" else "gelu_mul"
        return ew_op(name, kernel, rows * width, 2, 1, act, count, 5.0)
    return ew_op(name, "gelu", rows * width, 1, 1, act, count, 8.0)


def mlp_ops(prefix: str, model: ModelSpec, rows: int, ffn_local: int, dtype: str, act: str,
            count: int, batch: int = 1) -> list[Op]:
    """Up (gate+up fused when gated), activation, down GEMMs for ``rows`` tokens."""
    h = model.hidden_size
    up_n = 2 * ffn_local if model.mlp_gated else ffn_local
    up_name = "gate_up_proj" if model.mlp_gated else "fc1"
    down_name = "down_proj" if model.mlp_gated else "fc2"
    return [
        GemmOp(f"{prefix}{up_name}", rows, up_n, h, dtype, batch, count),
        act_op(f"{prefix}act", model, rows * batch, ffn_local, act, count),
        GemmOp(f"{prefix}{down_name}", rows, h, ffn_local, dtype, batch, count),
    ]


def expert_tokens(model: ModelSpec, parallel: ParallelConfig, tokens: int) -> int:
    """Rows each local expert GEMM processes, assuming uniform routing: the EP group gathers
    tokens from max(1, ep/tp) TP groups (DP-attention ranks with equal batches), each of the
    ``tokens`` picks top-k of ``num_experts``."""
    spread = max(1.0, parallel.ep / parallel.tp)
    return ceil(tokens * model.num_experts_per_tok * spread / model.num_experts)


def active_experts(model: ModelSpec, parallel: ParallelConfig, tokens: int) -> tuple[int, int]:
    """(local experts that receive tokens, rows each of them processes), in expectation under
    uniform routing. Each of the ``R = tokens * spread`` routed tokens picks top-k of E
    experts, so an expert stays idle with probability (1 - k/E)^R: small decode batches touch
    only a few experts and read only their weights, large batches touch them all (then the
    rows are ``expert_tokens``). The local share of routed rows is spread over the active
    experts."""
    e_local = model.num_experts // parallel.ep
    spread = max(1.0, parallel.ep / parallel.tp)
    k, e = model.num_experts_per_tok, model.num_experts
    idle = (1.0 - k / e) ** (tokens * spread)
    active = max(1, min(e_local, round(e_local * (1.0 - idle))))
    if active == e_local:
        return active, expert_tokens(model, parallel, tokens)
    return active, ceil(tokens * k * spread * e_local / (e * active))


def layer_groups(model: ModelSpec, layers: range) -> list[tuple[LayerKind, bool, int]]:
    """Group a stage's layers into runs of identical cost: (kind, is_local_window, count),
    ordered by first appearance."""
    counts: dict[tuple[LayerKind, bool], int] = {}
    for i in layers:
        key = (model.layer_kinds[i], model.is_local_layer(i))
        counts[key] = counts.get(key, 0) + 1
    return [(k, loc, n) for (k, loc), n in counts.items()]


def resolve_stage(parallel: ParallelConfig, model: ModelSpec, stage: int | None) -> tuple[range, bool, bool]:
    """(layers, is_first_stage, is_last_stage) of pipeline ``stage``."""
    stages = parallel.stage_layers(model)
    if stage is None:
        if parallel.pp > 1:
            raise ConfigError(f"pp={parallel.pp}: pass stage=0..{parallel.pp - 1}")
        stage = 0
    if not 0 <= stage < parallel.pp:
        raise ConfigError(f"stage {stage} out of range 0..{parallel.pp - 1}")
    return stages[stage], stage == 0, stage == parallel.pp - 1


def collective(name: str, kind: str, nbytes: float, group: int, count: int) -> CollectiveOp:
    return CollectiveOp(name, kind, float(nbytes), group, count=count)  # type: ignore[arg-type]


def step_flops(ops: Iterable[Op]) -> float:
    """FLOPs of all ops, each times its ``count``."""
    return float(sum(op.flops * op.count for op in ops))


def matmul_flops(ops: Iterable[Op]) -> float:
    """FLOPs of GEMMs and attention only (the terms of the Narayanan/Kaplan closed forms)."""
    return float(sum(op.flops * op.count for op in ops if isinstance(op, GemmOp | AttentionOp)))


def step_bytes(ops: Iterable[Op]) -> float:
    """HBM bytes (collectives: logical bytes) of all ops, each times its ``count``."""
    return float(sum(op.bytes_moved * op.count for op in ops))
