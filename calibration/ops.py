"""Operator descriptions: what the cost model prices and the op graphs produce.

An operator is a small frozen record with its shape; ``flops`` and ``bytes_moved`` follow
from the shape in closed form. ``count`` says how many identical instances one step runs
(e.g. once per layer), so a graph stays short. Bytes are HBM traffic of an unfused kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fleetsim.hardware.specs import DTYPE_BYTES

CollectiveKind = Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv", "broadcast"]
Tier = Literal["scale_up", "scale_out", "host"]


def dtype_bytes(dtype: str) -> float:
    """Bytes per element of ``dtype`` (fp8 = 1, bf16 = 2, ...)."""
    return DTYPE_BYTES[dtype]


@dataclass(frozen=True, slots=True)
class GemmOp:
    """``batch`` independent (M x K) @ (K x N) products (batch > 1: grouped / per-expert GEMM).

    ``layout`` is the operand layout: "tn" for a linear layer's forward ``x W^T`` (the
    profile's ``gemm.csv``), "nn" for its input gradient ``dy W`` and "nt" for its weight
    gradient ``dy^T x`` (``gemm_layout.csv`` where measured, else priced as "tn")."""

    name: str
    m: int
    n: int
    k: int
    dtype: str = "bf16"
    batch: int = 1
    count: int = 1
    layout: str = "tn"

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k * self.batch

    @property
    def bytes_moved(self) -> float:
        b = dtype_bytes(self.dtype)
        out_b = 2.0 if self.dtype in ("fp8", "int8", "fp4") else b
        return self.batch * ((self.m * self.k + self.k * self.n) * b + self.m * self.n * out_b)


BACKWARD_FLOPS_FACTOR = 2.5
"""Attention backward FLOPs over forward FLOPs (5 against 2 matmuls per score pair)."""
BACKWARD_BYTES_FACTOR = 2.0
"""Attention backward HBM traffic over the forward's (Q, K, V, O, dO in; dQ, dK, dV out)."""


@dataclass(frozen=True, slots=True)
class AttentionOp:
    """Scaled-dot-product attention over a batch of sequences.

    ``q_lens[i]`` new query tokens attend to ``kv_lens[i]`` keys (the context *including* the
    new tokens). ``phase`` is "decode" when every q_len is 1. With ``causal``, query j of a
    chunk sees ``kv_len - q_len + j + 1`` keys. ``head_dim`` is the query/key width,
    ``v_head_dim`` the value width (they differ under MLA). ``backward`` marks the gradient of
    a causal self-attention (dQ, dK, dV from dO): FlashAttention-2's backward does 5 matmuls per
    (query, key) pair against the forward's 2 (Dao 2023), so ``BACKWARD_FLOPS_FACTOR`` = 2.5 times
    the forward FLOPs, and reads Q, K, V, O, dO and writes dQ, dK, dV (``BACKWARD_BYTES_FACTOR``
    = 2 times the forward traffic); its phase is "backward".
    """

    name: str
    q_lens: tuple[int, ...]
    kv_lens: tuple[int, ...]
    num_heads: int
    num_kv_heads: int
    head_dim: int
    v_head_dim: int
    causal: bool = True
    dtype: str = "bf16"
    kv_dtype: str = "bf16"
    count: int = 1
    backward: bool = False

    @property
    def phase(self) -> str:
        if self.backward:
            return "backward"
        return "decode" if all(q == 1 for q in self.q_lens) else "prefill"

    @property
    def score_pairs(self) -> float:
        """Number of (query, key) pairs computed, summed over the batch."""
        total = 0.0
        for q, kv in zip(self.q_lens, self.kv_lens, strict=True):
            if self.causal:
                total += q * kv - q * (q - 1) / 2.0
            else:
                total += q * kv
        return total

    @property
    def flops(self) -> float:
        f = 2.0 * self.num_heads * (self.head_dim + self.v_head_dim) * self.score_pairs
        return f * BACKWARD_FLOPS_FACTOR if self.backward else f

    @property
    def bytes_moved(self) -> float:
        b, kvb = dtype_bytes(self.dtype), dtype_bytes(self.kv_dtype)
        q_tok = sum(self.q_lens)
        kv_tok = sum(self.kv_lens)
        q_io = q_tok * self.num_heads * (self.head_dim + self.v_head_dim) * b
        kv_io = kv_tok * self.num_kv_heads * (self.head_dim + self.v_head_dim) * kvb
        return (q_io + kv_io) * (BACKWARD_BYTES_FACTOR if self.backward else 1.0)


@dataclass(frozen=True, slots=True)
class ElementwiseOp:
    """A memory-bound kernel: norms, activations, rotary, residual add, embedding gather,
    sampling, cross-entropy, optimizer update, copies. ``kernel`` names it; bytes and FLOPs are
    given by the graph builder that knows the kernel's reads and writes."""

    name: str
    kernel: str
    elements: int
    bytes_moved: float
    flops: float = 0.0
    dtype: str = "bf16"
    count: int = 1


@dataclass(frozen=True, slots=True)
class CollectiveOp:
    """A collective over ``group_size`` ranks. ``bytes`` is the full logical tensor size per
    rank (all-reduce input size; all-gather *output* size; reduce-scatter *input* size;
    all-to-all bytes sent+kept per rank; send/recv message size). ``link`` names a LinkSpec;
    None means the GPU's own link for ``tier``."""

    name: str
    kind: CollectiveKind
    bytes: float
    group_size: int
    tier: Tier = "scale_up"
    link: str | None = None
    count: int = 1

    @property
    def flops(self) -> float:
        return 0.0

    @property
    def bytes_moved(self) -> float:
        return self.bytes


@dataclass(frozen=True, slots=True)
class MemcpyOp:
    """Host<->device or device<->device copy (offload, KV swap)."""

    name: str
    direction: Literal["h2d", "d2h", "d2d"]
    bytes: float
    count: int = 1

    @property
    def flops(self) -> float:
        return 0.0

    @property
    def bytes_moved(self) -> float:
        return self.bytes


Op = GemmOp | AttentionOp | ElementwiseOp | CollectiveOp | MemcpyOp
"""Any operator the cost model can price."""
