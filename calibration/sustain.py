"""Whole-model execution on a profiled GPU: kernel slowdown under sustained load, and the
host dispatch cost of each eager PyTorch call.

Sustained load (``sustained.csv``). The profile's kernel times are bursts: about 15 ms of
back-to-back launches after an idle GPU, at the boost clock. A whole forward pass or a
training step keeps the GPU busy for tens to hundreds of milliseconds; a compute-bound
kernel then draws the board to its power limit and the SM clock falls (H100: 1980 ->
~1400 MHz under bf16 GEMMs at 700 W), so it runs slower than its burst time. HBM-bound
kernels hardly slow (the memory clock stays put). The calibration suite runs one kernel
class continuously and records ``ratio = sustained_s / burst_s``. A kernel's ratio is
interpolated in log arithmetic intensity (FLOP per byte) between the measured classes of
its kind (GEMMs among the ``gemm_*`` classes, attention among the ``attention_*`` ones),
held at the end values outside them; streaming kernels take the ``memory_copy`` ratio;
collectives and host copies 1. The burst times stay the microbenchmark truth (per-op
look-ups, held-out operator validation); ``estimate_ops`` applies the ratio to whole-model
execution and keeps both numbers in its table.

Host dispatch (``host_dispatch.csv``): host seconds per PyTorch call type, measured with
the GPU held busy. An eager operator issues a known sequence of calls (``SERVING_CALLS``
for fleetsim's serving graph; the validation decoder lists its own), and its host time is
the sum of theirs; without the table each launch costs the profile's eager launch interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from fleetsim.hardware.errors import ProfileError

from .opbatch import attention_arrays, gemm_arrays
from .ops import AttentionOp, ElementwiseOp, GemmOp, Op
from .profile import Profile

SERVING_CALLS: dict[str, tuple[str, ...]] = {
    "gemm": ("linear",),
    "attention_decode": ("sdpa_decode_gqa",),
    "attention_prefill": ("sdpa_prefill_gqa",),
    "rmsnorm": ("rms_norm",), "layernorm": ("layer_norm",), "silu_mul": ("silu_mul",),
    "gelu": ("gelu",), "rotary": ("rope",), "residual_add": ("add",), "embedding": ("index",),
    "argmax": ("argmax",), "copy": ("copy_",),
}
"""PyTorch calls one operator of the serving graph issues in eager mode (host_dispatch.csv
call names), by operator kind / elementwise kernel name."""


CALLS_IN = {"rope": 7, "silu_mul": 2, "linear_backward": 1}
"""PyTorch calls inside a composite host_dispatch.csv entry (rope: 2 slices, neg, cat, 2
mul, add; silu_mul: silu, mul); without a measured entry each costs one eager interval."""


@dataclass(frozen=True)
class SustainedLoad:
    """Measured sustained/burst time ratios per kernel class, indexed by arithmetic intensity."""

    gemm_ai: np.ndarray
    gemm_ratio: np.ndarray
    attn_ai: np.ndarray
    attn_ratio: np.ndarray
    stream_ratio: float

    @staticmethod
    def from_profile(profile: Profile) -> SustainedLoad | None:
        """The profile's sustained-load table, or None when it has no ``sustained.csv``."""
        df = profile.tables.get("sustained")
        if df is None or df.empty:
            return None
        cls = df["op_class"].astype(str)
        ai = (df["flops"] / df["bytes"]).to_numpy(dtype=float)
        ratio = df["ratio"].to_numpy(dtype=float)

        def table(prefix: str) -> tuple[np.ndarray, np.ndarray]:
            sel = cls.str.startswith(prefix).to_numpy() & (ai > 0)
            order = np.argsort(ai[sel])
            return np.log(ai[sel][order]), ratio[sel][order]

        g_ai, g_r = table("gemm")
        a_ai, a_r = table("attention")
        if not len(g_ai):
            raise ProfileError(f"{profile.root / 'sustained.csv'}: no gemm_* row")
        copy = ratio[(cls == "memory_copy").to_numpy()]
        return SustainedLoad(g_ai, g_r, a_ai, a_r, float(copy[0]) if len(copy) else 1.0)

    def ratios(self, ops: Sequence[Op]) -> np.ndarray:
        """Sustained/burst time ratio of each operator (1 for collectives and host copies)."""
        out = np.ones(len(ops))
        gi = [i for i, op in enumerate(ops) if isinstance(op, GemmOp)]
        if gi:
            g = gemm_arrays([ops[i] for i in gi])  # type: ignore[misc]
            out[gi] = np.interp(np.log(g.flops / g.bytes), self.gemm_ai, self.gemm_ratio)
        ai = [i for i, op in enumerate(ops) if isinstance(op, AttentionOp)]
        if ai:
            a = attention_arrays([ops[i] for i in ai])  # type: ignore[misc]
            xs, ys = (self.attn_ai, self.attn_ratio) if len(self.attn_ai) else (self.gemm_ai, self.gemm_ratio)
            out[ai] = np.interp(np.log(np.maximum(a.flops, 1.0) / a.bytes), xs, ys)
        for i, op in enumerate(ops):
            if isinstance(op, ElementwiseOp):
                out[i] = self.stream_ratio
        return out


def serving_calls(op: Op) -> tuple[str, ...] | None:
    """host_dispatch.csv call names of one serving-graph operator (None: not known)."""
    if isinstance(op, GemmOp):
        return SERVING_CALLS["gemm"]
    if isinstance(op, AttentionOp):
        return SERVING_CALLS["attention_decode" if op.phase == "decode" else "attention_prefill"]
    if isinstance(op, ElementwiseOp):
        return SERVING_CALLS.get(op.kernel)
    return None


def host_seconds(calls: Sequence[Sequence[str] | None], table: dict[str, float], call_fallback_s: float,
                 op_fallback_s: Sequence[float]) -> list[float]:
    """Host time of each operator: the sum of its calls' measured dispatch times (a call the
    table lacks costs ``call_fallback_s`` per PyTorch call in it, ``CALLS_IN``; no calls, e.g. a kernel another call launches,
    cost nothing); an operator whose calls are None takes its ``op_fallback_s`` (launches x
    eager launch interval)."""
    out = []
    for cs, fb in zip(calls, op_fallback_s, strict=True):
        out.append(float(fb) if cs is None else
                   float(sum(table.get(c, call_fallback_s * CALLS_IN.get(c, 1)) for c in cs)))
    return out
