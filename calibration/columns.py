"""Columnar batch pricing: operator shapes as arrays, one group per operator kind.

``op_times`` takes operator objects; building and hashing them costs about a microsecond
each, which is most of a cold look-up. A simulator or planner that already holds its
operators as numbers (token counts, context sums, layer shapes) can skip the objects:
``OpColumns`` holds the shape arrays of GEMMs, attention calls and streaming kernels, and
``price_columns`` prices them with the same formulas and tables as ``op_times`` (tests
check the two agree to machine precision). Ragged attention batches are given by their
sums (sequences, query tokens, key tokens, score pairs), which is all the pricing uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from fleetsim.hardware.errors import ConfigError
from fleetsim.hardware.specs import GPUSpec

from .opbatch import (
    AttentionArrays,
    ElementwiseArrays,
    GemmArrays,
    attention_arrays,
    attention_from_sums,
    elementwise_arrays,
    gemm_arrays,
)
from .ops import AttentionOp, ElementwiseOp, GemmOp, Op

SOURCE_NAMES = np.array(["measured", "interpolated", "roofline", "roofline"], dtype=object)
"""Provenance by source code (measured, interpolated, fitted roofline, spec roofline)."""


def _arr(x: object, n: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 0 and n is not None:
        return np.full(n, float(a))
    return a


def _texts(x: str | Sequence[str], n: int) -> list[str]:
    return [x] * n if isinstance(x, str) else list(x)


def gemm_columns(m: object, n: object, k: object, dtype: str | Sequence[str] = "bf16",
                 batch: object = 1.0) -> GemmArrays:
    """GEMMs ``y[M,N] = x[M,K] W[N,K]^T`` (``batch`` of them), as arrays."""
    m_a = _arr(m)
    size = m_a.size
    n_a, k_a, b_a = _arr(n, size), _arr(k, size), _arr(batch, size)
    dt = _texts(dtype, size)
    if not (len(dt) == n_a.size == k_a.size == b_a.size == size):
        raise ConfigError("gemm_columns: m, n, k, batch and dtype must have one length")
    from .opbatch import _dtype_bytes

    eb = _dtype_bytes(dt)
    out_b = np.where(np.isin(np.asarray(dt), ["fp8", "int8", "fp4"]), 2.0, eb)
    return GemmArrays(m_a, n_a, k_a, b_a, dt, 2.0 * m_a * n_a * k_a * b_a,
                      b_a * ((m_a * k_a + k_a * n_a) * eb + m_a * n_a * out_b))


def attention_columns(seqs: object, q_tokens: object, kv_tokens: object, score_pairs: object,
                      heads: object, kv_heads: object, head_dim: object, v_head_dim: object = None,
                      causal: object = True, dtype: str | Sequence[str] = "bf16",
                      kv_dtype: str | Sequence[str] | None = None) -> AttentionArrays:
    """Attention calls from per-call sums: ``seqs`` sequences with ``q_tokens`` queries and
    ``kv_tokens`` keys in all, ``score_pairs`` (query, key) pairs in all (a decode: the key
    tokens; a causal prefill of one length s: s(s+1)/2 per sequence)."""
    lens = _arr(seqs)
    size = lens.size
    hd = _arr(head_dim, size)
    vhd = hd if v_head_dim is None else _arr(v_head_dim, size)
    causal_a = np.broadcast_to(np.asarray(causal, dtype=bool), (size,)).copy()
    dt = _texts(dtype, size)
    kdt = dt if kv_dtype is None else _texts(kv_dtype, size)
    cols = [_arr(q_tokens, size), _arr(kv_tokens, size), _arr(score_pairs, size),
            _arr(heads, size), _arr(kv_heads, size)]
    if any(c.size != size for c in cols) or len(dt) != size or len(kdt) != size:
        raise ConfigError("attention_columns: all columns must have one length")
    if np.any(lens < 1) or np.any(cols[0] < lens):
        raise ConfigError("attention_columns: every call needs >= 1 sequence and >= 1 query each")
    return attention_from_sums(lens, cols[0], cols[1], cols[2].copy(), cols[3], cols[4], hd, vhd,
                               causal_a, dt, kdt)


def elementwise_columns(kernel: str | Sequence[str], nbytes: object, flops: object = 0.0,
                        dtype: str | Sequence[str] = "bf16") -> ElementwiseArrays:
    """Streaming kernels by profile kernel name and bytes moved per call."""
    b = _arr(nbytes)
    size = b.size
    return ElementwiseArrays(_texts(kernel, size), _texts(dtype, size), _arr(flops, size), b)


@dataclass
class OpColumns:
    """Shape arrays of one batch, per operator kind (any may be None)."""

    gemm: GemmArrays | None = None
    attention: AttentionArrays | None = None
    elementwise: ElementwiseArrays | None = None

    def __len__(self) -> int:
        return sum(len(a.dtype) for a in (self.gemm, self.attention, self.elementwise) if a is not None)


def columns_of(ops: Sequence[Op]) -> tuple[OpColumns, dict[str, list[int]]]:
    """The columns of an operator list and, per kind, the positions of its operators
    (collectives and copies are not columnar: price them with ``op_times``)."""
    pos: dict[str, list[int]] = {"gemm": [], "attention": [], "elementwise": []}
    kinds = {GemmOp: "gemm", AttentionOp: "attention", ElementwiseOp: "elementwise"}
    for i, op in enumerate(ops):
        kind = kinds.get(type(op))
        if kind is None:
            raise ConfigError(f"columns_of: {type(op).__name__} has no columnar form")
        pos[kind].append(i)
    cols = OpColumns(
        gemm_arrays([ops[i] for i in pos["gemm"]]) if pos["gemm"] else None,  # type: ignore[misc]
        attention_arrays([ops[i] for i in pos["attention"]]) if pos["attention"] else None,  # type: ignore[misc]
        elementwise_arrays([ops[i] for i in pos["elementwise"]]) if pos["elementwise"] else None,  # type: ignore[misc]
    )
    return cols, pos


def price_columns(model: object, cols: OpColumns, gpu: GPUSpec, *, graphs: bool = False,
                  mode: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Seconds and provenance (arrays of 'measured' / 'interpolated' / 'roofline') of each
    kind's operators, one instance each; ``model`` is a ``RooflineCostModel`` (or the
    measured subclass), ``mode`` "eager", "graph" or "stream" (default from ``graphs``).
    Not cached: every call prices every row."""
    md = mode if mode is not None else ("graph" if graphs else "eager")
    measured_ok = getattr(model, "measured_gpu", None) == gpu.name
    names = SOURCE_NAMES if measured_ok else np.array(["roofline"] * 4, dtype=object)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind, arrays, fn in (("gemm", cols.gemm, "_gemm"), ("attention", cols.attention, "_attention"),
                             ("elementwise", cols.elementwise, "_elementwise")):
        if arrays is None or not len(arrays.dtype):
            continue
        t, code = getattr(model, fn)(arrays, gpu, md)
        out[kind] = (np.asarray(t, dtype=float), names[np.asarray(code, dtype=np.int64)])
    return out
