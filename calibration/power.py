"""Board power per operator class, from a profile's ``power.csv``.

The calibration harness runs each operator class back to back for about two seconds and
records the mean board power (``power_w_mean``) and the SM clock it settled at. An
operator's energy is that class power times its time: ``E = P(class) x t``. Classes:
GEMMs by dtype (``gemm_bf16``, ``gemm_fp8``), attention by phase (``attention_prefill``,
``attention_decode``), and streaming kernels, copies and collectives (``memory_copy``).
The class powers are those of sustained full-size kernels, so for short, under-occupied
kernels the energy is an upper bound (the board then draws less, down to ``idle``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from fleetsim.hardware.errors import ProfileError

from .ops import AttentionOp, GemmOp, Op
from .profile import Profile

GEMM_CLASS = {"fp8": "gemm_fp8", "int8": "gemm_fp8", "fp4": "gemm_fp8"}
"""GEMM dtype -> power class (other dtypes: ``gemm_bf16``)."""


@dataclass(frozen=True)
class PowerModel:
    """Mean board power (W) per operator class, plus the idle power."""

    class_power_w: dict[str, float]
    idle_w: float

    @staticmethod
    def from_profile(profile: Profile) -> PowerModel | None:
        """The profile's power table, or None when it has no ``power.csv``."""
        df = profile.tables.get("power")
        if df is None or df.empty:
            return None
        table = {str(c): float(p) for c, p in zip(df["op_class"], df["power_w_mean"], strict=True)}
        need = ("gemm_bf16", "memory_copy")
        missing = [c for c in need if c not in table]
        if missing:
            raise ProfileError(f"{profile.root / 'power.csv'}: lacks op_class row(s) {', '.join(missing)}")
        idle = table.get("idle", min(table.values()))
        return PowerModel(table, idle)

    def op_class(self, op: Op) -> str:
        """Power class of an operator."""
        if isinstance(op, GemmOp):
            return GEMM_CLASS.get(op.dtype, "gemm_bf16")
        if isinstance(op, AttentionOp):
            return "attention_decode" if op.phase == "decode" else "attention_prefill"
        return "memory_copy"

    def power_w(self, op: Op) -> float:
        """Board power while ``op`` runs; an unmeasured class falls back to bf16 GEMM power
        for compute classes and to the copy power otherwise."""
        cls = self.op_class(op)
        if cls in self.class_power_w:
            return self.class_power_w[cls]
        fallback = "gemm_bf16" if cls.startswith(("gemm", "attention_prefill")) else "memory_copy"
        return self.class_power_w[fallback]

    def energies_j(self, ops: Sequence[Op], times_s: np.ndarray) -> np.ndarray:
        """Energy (J) of one instance of each operator given its time."""
        return np.array([self.power_w(op) for op in ops]) * np.asarray(times_s, dtype=float)
