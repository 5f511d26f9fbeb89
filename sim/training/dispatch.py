"""Host dispatch of eager PyTorch training: what the CPU spends per kernel and per hook.

Eager execution (``job.execution == "eager"``, PyTorch's default and Megatron's) issues every
kernel from Python: the autocast/dispatcher/autograd-recording path in forward, the
autograd engine in backward. When kernels are shorter than that host cost the GPU starves
and the step is host-bound; ``fleetsim.calibration.launch`` turns the per-kernel host and
device times into the pipeline's end time. ``execution == "graph"`` (CUDA graphs,
``torch.compile`` with ``mode="reduce-overhead"``) replays the whole step without per-kernel
host work: no host term.

All host costs are expressed in units of the GPU profile's measured eager launch interval
(``launch.csv``: a Python loop of ``x.add_(1)``, 8.7 us on the H100 host, 6.8 us on the H200
host), so that they follow the host CPU that a profile was taken on. The ratios were
MEASURED, not fitted to validation rows, by ``benchmarks/train_dispatch_profile.py`` on an
H200 machine (PyTorch 2.11, launch interval there 9.21 us) running the exact
``calibration/bench/train_bench.py`` model with a 16-token sequence so that every kernel is
shorter than its launch (the phases are host-bound and their wall time is the host cost),
with torch.profiler counting the kernels of each phase. Nothing in this module is fitted
to ``calibration/validation/*/training.csv``.
"""

from __future__ import annotations

from typing import Any

from fleetsim.hardware.specs import GPUSpec

OP_HOST_RATIO = 2.0
"""Host time per kernel of an eager training op, in eager launch intervals. MEASURED
(``train_dispatch_profile.py``, GPT-2 350M shape, 16 tokens): forward 10.07 ms for 540
kernels = 18.6 us/kernel, backward 16.8 ms for 930 kernels = 18.1 us/kernel, against a
9.21 us launch interval on the same host: ratios 2.02 and 1.97. The extra over a bare
``add_`` launch is the nn.Module call, autocast's dtype dispatch and autograd's graph
recording (forward) and the autograd engine's per-node work (backward)."""
CHECKPOINT_FWD_HOST_RATIO = 75.0
"""Host time per checkpointed block in forward (``torch.utils.checkpoint``, non-reentrant:
saved-tensor hooks, RNG state capture), in launch intervals, beyond the block's kernels.
MEASURED: forward with minus without checkpointing over 24 blocks = 0.84 ms/block (350M
shape, 91 intervals) and 0.54 ms/block (1.3B shape, 59 intervals); their mean."""
CHECKPOINT_BWD_HOST_RATIO = 168.0
"""Host time per checkpointed block in backward beyond its recomputed kernels (unpack
hooks, re-entering autocast and the recomputation's own graph), in launch intervals.
MEASURED: backward with minus without checkpointing, less the recomputed forward kernels
at ``OP_HOST_RATIO``, over 24 blocks = 1.28 ms/block (350M, 139 intervals) and 1.81
ms/block (1.3B, 197 intervals); their mean."""
OPTIMIZER_HOST_RATIO_PER_TENSOR = 1.5
"""Host time of ``torch.optim.AdamW(fused=True).step()`` per parameter tensor (grouping the
tensor lists by device and dtype, then a few ``multi_tensor_apply`` launches: 21 kernels for
292 tensors), in launch intervals. MEASURED: 4.1 ms for the 292 tensors of the 350M shape
(its kernels are ~2 ms of HBM traffic, issued after the host work) = 13.7 us = 1.49."""
DDP_KERNELS_PER_TENSOR = 2
"""Extra backward kernels DDP launches per parameter tensor (the gradient copy into its
bucket view and the bucket's scaling), each at ``OP_HOST_RATIO``. MEASURED: DDP on two
GPUs launches 1551 backward kernels against 930 without it, 621 for 292 tensors (2.1)."""

# kernels launched per op by eager PyTorch (counted from the kernel names in the profile)
NORM_BWD_KERNELS = 2
"""LayerNorm/RMSNorm backward: the input-gradient kernel and the weight/bias reduction."""
FLASH_BWD_KERNELS = 4
"""SDPA flash backward (cuDNN): the dQ accumulator memset, ``dot(dO, O)``, the main kernel
and the dQ conversion to 16 bits."""
AMP_NORM_CASTS = 1
"""Under autocast the fp32 norm output is cast to bf16 for the next GEMM (one kernel forward,
its gradient cast back in backward)."""
EMBEDDING_KERNELS = (5, 8)
"""(forward, backward) kernels of token + learned-position embeddings (two gathers, the
position index, the add, a memset; two embedding backward passes of sort/segment kernels)."""
HEAD_KERNELS = (7, 10)
"""(forward, backward) kernels of the final norm, the LM head GEMM and the loss under
autocast (norm, cast, weight cast, GEMM, fp32 upcast, log-softmax, NLL; and their
gradients)."""


def launch_interval_s(cost: Any, gpu: GPUSpec) -> float:
    """Host seconds of one bare eager launch: the cost model's (profile's ``launch.csv``)
    when it has one, else the GPU spec's ``kernel_overhead_s``."""
    fn = getattr(cost, "host_launch_s", None)
    if fn is not None:
        return float(fn(gpu))
    return float(gpu.kernel_overhead_s)
