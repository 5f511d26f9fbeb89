"""Operator graphs: what one GPU runs per serving iteration or per training micro-batch.

``serving_step_ops`` lives in ``graph_serving``, ``training_microbatch_ops`` in
``graph_training``; the shared conventions (dtypes, elementwise bytes, ``count`` grouping) in
``graph_common``. This module is the stable import point.
"""

from __future__ import annotations

from fleetsim.workloads.graph_common import matmul_flops, step_bytes, step_flops
from fleetsim.workloads.graph_serving import serving_step_ops
from fleetsim.workloads.graph_training import (
    ATTN_BWD_DIM_FACTOR,
    Recompute,
    training_microbatch_ops,
)

__all__ = [
    "ATTN_BWD_DIM_FACTOR",
    "Recompute",
    "matmul_flops",
    "serving_step_ops",
    "step_bytes",
    "step_flops",
    "training_microbatch_ops",
]
