"""Operator lists as numpy arrays, one group per operator kind.

Pricing a million operators a second leaves about a microsecond each, so the cost models
read each operator's fields once into arrays and do every formula vectorised. The FLOP and
byte formulas here are the array forms of the properties in ``ops.py`` (tests check they
agree). Ragged attention batches are summarised by their *equivalent uniform batch*: the
same number of sequences B, the mean query length q and the key length kv that gives the
same number of (query, key) score pairs, so FLOPs match exactly and KV bytes nearly so.
Prefills without cached context (q_len == kv_len for every sequence) map to B sequences
of one length with the same score pairs (a square causal prefill). Decodes are causal-free
(one query sees every key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter

import numpy as np
from fleetsim.hardware.specs import DTYPE_BYTES

from .ops import (
    BACKWARD_BYTES_FACTOR,
    BACKWARD_FLOPS_FACTOR,
    AttentionOp,
    CollectiveOp,
    ElementwiseOp,
    GemmOp,
    MemcpyOp,
    Op,
)


def split_by_kind(ops: Sequence[Op]) -> dict[type, tuple[list[int], list[Op]]]:
    """Positions and operators of each kind, in input order."""
    types = list(map(type, ops))
    groups: dict[type, tuple[list[int], list[Op]]] = {}
    for kind in set(types):
        pos = [i for i, t in enumerate(types) if t is kind]
        groups[kind] = (pos, [ops[i] for i in pos])
    return groups


def _f(values: list) -> np.ndarray:
    return np.asarray(values, dtype=float)


_GEMM_SHAPE = attrgetter("m", "n", "k", "batch")
_ATTN_HEADS = attrgetter("num_heads", "num_kv_heads", "head_dim", "v_head_dim")
_DTYPE = attrgetter("dtype")


def _dtype_bytes(dtypes: list[str]) -> np.ndarray:
    return np.fromiter(map(DTYPE_BYTES.__getitem__, dtypes), dtype=float, count=len(dtypes))


@dataclass
class GemmArrays:
    m: np.ndarray
    n: np.ndarray
    k: np.ndarray
    batch: np.ndarray
    dtype: list[str]
    flops: np.ndarray
    bytes: np.ndarray
    layout: list[str] | None = None
    """Operand layout per GEMM (``GemmOp.layout``); None: all "tn"."""


def gemm_arrays(ops: Sequence[GemmOp]) -> GemmArrays:
    shape = np.fromiter(chain.from_iterable(map(_GEMM_SHAPE, ops)), dtype=float,
                        count=4 * len(ops)).reshape(-1, 4)
    m, n, k, batch = shape[:, 0], shape[:, 1], shape[:, 2], shape[:, 3]
    dtype = list(map(_DTYPE, ops))
    b = _dtype_bytes(dtype)
    out_b = np.where(np.isin(np.asarray(dtype), ["fp8", "int8", "fp4"]), 2.0, b)
    flops = 2.0 * m * n * k * batch
    nbytes = batch * ((m * k + k * n) * b + m * n * out_b)
    layout = [o.layout for o in ops]
    return GemmArrays(m, n, k, batch, dtype, flops, nbytes,
                      layout if any(x != "tn" for x in layout) else None)


@dataclass
class AttentionArrays:
    batch: np.ndarray
    q_eq: np.ndarray
    kv_eq: np.ndarray
    heads: np.ndarray
    kv_heads: np.ndarray
    head_dim: np.ndarray
    v_head_dim: np.ndarray
    causal: list[bool]
    phase: np.ndarray
    """0: decode (every q_len 1), 1: prefill without cached context, 2: prefill on a context,
    3: backward of a causal self-attention (``AttentionOp.backward``)."""
    dtype: list[str]
    flops: np.ndarray
    bytes: np.ndarray


def attention_arrays(ops: Sequence[AttentionOp]) -> AttentionArrays:
    qls = [o.q_lens for o in ops]
    kvls = [o.kv_lens for o in ops]
    lens = np.fromiter(map(len, qls), dtype=float, count=len(ops))
    q_tok = np.fromiter(map(sum, qls), dtype=float, count=len(ops))
    kv_tok = np.fromiter(map(sum, kvls), dtype=float, count=len(ops))
    causal = [o.causal for o in ops]
    causal_arr = np.asarray(causal, dtype=bool)
    decode = q_tok == lens
    # Decode (every q_len is 1): score pairs = sum of kv_len. Prefill: per-sequence sums.
    sp = kv_tok.copy()
    pre = np.flatnonzero(~decode)
    if pre.size:
        plens = lens[pre].astype(np.int64)
        total = int(plens.sum())
        q = np.fromiter(chain.from_iterable(qls[i] for i in pre), dtype=float, count=total)
        kv = np.fromiter(chain.from_iterable(kvls[i] for i in pre), dtype=float, count=total)
        starts = np.zeros(pre.size, dtype=np.int64)
        np.cumsum(plens[:-1], out=starts[1:])
        causal_seq = np.repeat(causal_arr[pre], plens)
        pairs = q * kv - np.where(causal_seq, q * (q - 1.0) / 2.0, 0.0)
        sp[pre] = np.add.reduceat(pairs, starts)
    hh = np.fromiter(chain.from_iterable(map(_ATTN_HEADS, ops)), dtype=float,
                     count=4 * len(ops)).reshape(-1, 4)
    bwd = np.fromiter((o.backward for o in ops), dtype=bool, count=len(ops))
    return attention_from_sums(lens, q_tok, kv_tok, sp, hh[:, 0], hh[:, 1], hh[:, 2], hh[:, 3],
                               causal_arr, list(map(_DTYPE, ops)), [o.kv_dtype for o in ops],
                               backward=bwd if bwd.any() else None)


def attention_from_sums(lens: np.ndarray, q_tok: np.ndarray, kv_tok: np.ndarray, sp: np.ndarray,
                        heads: np.ndarray, kv_heads: np.ndarray, hd: np.ndarray, vhd: np.ndarray,
                        causal_arr: np.ndarray, dtype: list[str], kv_dtype: list[str],
                        backward: np.ndarray | None = None) -> AttentionArrays:
    """Attention arrays from per-operator sums: sequences, query and key tokens and score
    pairs (what a simulator can keep per batch without the ragged length tuples);
    ``backward`` flags gradient kernels (phase 3, FLOPs and bytes scaled as ``AttentionOp``)."""
    b = _dtype_bytes(dtype)
    kvb = _dtype_bytes(kv_dtype)
    decode = q_tok == lens
    flops = 2.0 * heads * (hd + vhd) * sp
    nbytes = q_tok * heads * (hd + vhd) * b + kv_tok * kv_heads * (hd + vhd) * kvb
    q_eq = q_tok / lens
    kv_eq = sp / (lens * q_eq) + np.where(causal_arr, (q_eq - 1.0) / 2.0, 0.0)
    square = ~decode & (kv_tok == q_tok)
    if square.any():  # prefills without cached context: B sequences of one length, same work
        per = sp[square] / lens[square]
        q_sq = np.where(causal_arr[square], (np.sqrt(1.0 + 8.0 * per) - 1.0) / 2.0, np.sqrt(per))
        q_eq[square] = q_sq
        kv_eq[square] = q_sq
    phase = np.where(decode, 0.0, np.where(square, 1.0, 2.0))
    if backward is not None:
        phase = np.where(backward, 3.0, phase)
        flops = np.where(backward, flops * BACKWARD_FLOPS_FACTOR, flops)
        nbytes = np.where(backward, nbytes * BACKWARD_BYTES_FACTOR, nbytes)
    return AttentionArrays(lens, q_eq, kv_eq, heads, kv_heads, hd, vhd,
                           list(causal_arr & ~decode), phase, dtype, flops, nbytes)


@dataclass
class ElementwiseArrays:
    kernel: list[str]
    dtype: list[str]
    flops: np.ndarray
    bytes: np.ndarray


def elementwise_arrays(ops: Sequence[ElementwiseOp]) -> ElementwiseArrays:
    return ElementwiseArrays([o.kernel for o in ops], [o.dtype for o in ops],
                             _f([o.flops for o in ops]), _f([o.bytes_moved for o in ops]))


@dataclass
class CollectiveArrays:
    kind: list[str]
    group: np.ndarray
    bytes: np.ndarray
    tier: list[str]
    link: list[str | None]


def collective_arrays(ops: Sequence[CollectiveOp]) -> CollectiveArrays:
    return CollectiveArrays([o.kind for o in ops], _f([o.group_size for o in ops]),
                            _f([o.bytes for o in ops]), [o.tier for o in ops], [o.link for o in ops])


@dataclass
class MemcpyArrays:
    direction: list[str]
    bytes: np.ndarray


def memcpy_arrays(ops: Sequence[MemcpyOp]) -> MemcpyArrays:
    return MemcpyArrays([o.direction for o in ops], _f([o.bytes for o in ops]))


def group_positions(keys: Sequence[object]) -> dict[object, np.ndarray]:
    """Positions of each distinct key."""
    groups: dict[object, list[int]] = {}
    for i, key in enumerate(keys):
        g = groups.get(key)
        if g is None:
            groups[key] = [i]
        else:
            g.append(i)
    return {k: np.asarray(v, dtype=np.int64) for k, v in groups.items()}


COLLECTIVE_STEPS = {
    "all_reduce": lambda n: 2.0 * (n - 1.0),
    "all_gather": lambda n: n - 1.0,
    "reduce_scatter": lambda n: n - 1.0,
    "all_to_all": lambda n: n - 1.0,
    "send_recv": lambda n: np.ones_like(n),
    "broadcast": lambda n: np.ceil(np.log2(np.maximum(n, 1.0))),
}
"""Latency terms of each collective (ring algorithms; broadcast is a binary tree)."""

COLLECTIVE_TRAFFIC = {
    "all_reduce": lambda n: 2.0 * (n - 1.0) / n,
    "all_gather": lambda n: (n - 1.0) / n,
    "reduce_scatter": lambda n: (n - 1.0) / n,
    "all_to_all": lambda n: (n - 1.0) / n,
    "send_recv": lambda n: np.ones_like(n),
    "broadcast": lambda n: np.ones_like(n),
}
"""Bytes each rank sends over its link, per byte of the logical tensor (ring algorithms)."""


GEMM_TILE_M: int | None = None
"""GEMM row tile for quantised work (None: off). cuBLAS picks tile shapes per problem, and
on the H100 held-out GEMMs rounding M up to 128 made the median error worse (2.2% -> 3.6%),
so GEMMs interpolate on their true M."""
ATTN_TILE = 128


def pad_m(m: np.ndarray) -> np.ndarray:
    """GEMM rows rounded up to ``GEMM_TILE_M`` above one tile (identity when off)."""
    if GEMM_TILE_M is None:
        return m
    return np.where(m > GEMM_TILE_M, np.ceil(m / GEMM_TILE_M) * GEMM_TILE_M, m)


GEMM_ALIGN_BYTES = 16
"""Operand alignment cuBLAS's fast Hopper kernels need: a GEMM whose N or K row (the
leading dimensions of ``y[M, N] = x[M, K] @ W[N, K]^T``) is not a multiple of 16 bytes
falls back to 1-element-aligned kernels (``cutlass_75 ... align1``), several times slower:
measured on the H100, 97 TFLOP/s for a (4096, 50257, 1024) LM head against ~700 aligned."""


def gemm_unaligned(n: np.ndarray, k: np.ndarray, elem_bytes: np.ndarray) -> np.ndarray:
    """1.0 where a GEMM's N or K row is not ``GEMM_ALIGN_BYTES``-aligned, else 0.0 (a family
    key: aligned and unaligned shapes never interpolate into each other)."""
    nb = np.rint(n * elem_bytes)
    kb = np.rint(k * elem_bytes)
    return ((np.mod(nb, GEMM_ALIGN_BYTES) != 0) | (np.mod(kb, GEMM_ALIGN_BYTES) != 0)).astype(float)


def pad_attention(phase: np.ndarray, q: np.ndarray, kv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prefill query and key lengths rounded up to the flash-attention tile (ATTN_TILE):
    a 700-token causal prefill computes 6 tiles of 128 queries, like 768 tokens. Decodes
    (phase 0) unchanged."""
    pre = phase > 0
    qp = np.where(pre & (q > ATTN_TILE), np.ceil(q / ATTN_TILE) * ATTN_TILE, q)
    kvp = np.where(pre & (kv > ATTN_TILE), np.ceil(kv / ATTN_TILE) * ATTN_TILE, kv)
    return qp, np.maximum(kvp, qp)


def attention_pairs(q: np.ndarray, kv: np.ndarray, causal: np.ndarray) -> np.ndarray:
    """Score pairs of one sequence of q queries over kv keys (bottom-right causal)."""
    return q * kv - np.where(causal, q * (q - 1.0) / 2.0, 0.0)
