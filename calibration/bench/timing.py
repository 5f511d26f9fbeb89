"""Kernel timing with CUDA events, plus a random-data pool that operands are carved from.

How a point is timed (``time_kernel``):

1. warm-up launches (cuBLAS heuristics, lazy module load, allocator growth stay out);
2. the GPU is held busy with ``torch.cuda._sleep`` while the host enqueues every timed
   launch, so the timed kernels run back to back with no launch gaps in between (what a
   CUDA-graph replay or a host running ahead of the GPU sees; the eager per-launch host
   cost is measured separately in launch.csv);
3. each repetition is a pair of events around ``inner`` launches (``inner`` > 1 only for
   kernels of a few microseconds, to stay above the event resolution); the per-kernel
   time of a repetition is its elapsed time over ``inner``;
4. the median and 10th/90th percentiles over repetitions are reported.

Operands cycle through ``sets`` distinct buffers (``common.rotation_count``) so small
kernels do not find their weights in L2. torch is imported inside functions: this module
is only loaded on a machine that runs the benchmarks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

try:
    from fleetsim.calibration.bench.common import summarize
except ImportError:  # run as a plain file on a GPU box without fleetsim installed
    from common import summarize  # type: ignore[no-redef]

SLEEP_CYCLES_PER_S = 2.0e9
"""GPU clock (upper bound, Hopper boosts to 1.98 GHz) used to size the ``_sleep`` that lets
the host run ahead; an over-long sleep only costs wall time, a short one times the host."""


def time_kernel(launch: Callable[[int], Any], *, est_s: float, device: str = "cuda",
                target_s: float = 0.02, min_reps: int = 5, max_reps: int = 40,
                warmup: int = 2) -> tuple[float, float, float]:
    """Time ``launch(i)`` (i selects the operand set) and return (median, p10, p90) seconds.

    ``est_s`` is a rough a-priori kernel time (roofline) that sizes repetitions so that one
    point costs about ``target_s`` of GPU time, with at least ``min_reps`` repetitions.
    On a CPU device (``--device cpu`` smoke runs) wall-clock timing is used instead.
    """
    import torch

    est_s = max(est_s, 2e-6)
    inner = 1 if est_s >= 50e-6 else min(20, math.ceil(50e-6 / est_s))
    reps = int(min(max_reps, max(min_reps, target_s / (est_s * inner))))
    counter = 0
    for _ in range(warmup):
        launch(counter)
        counter += 1
    if device == "cpu":
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(inner):
                launch(counter)
                counter += 1
            times.append((time.perf_counter() - t0) / inner)
        return summarize(times)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(3):  # host enqueue cost of one launch, once warm
        launch(counter)
        counter += 1
    host_per_launch_s = (time.perf_counter() - t0) / 3
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(reps)]
    host_ahead_s = 1.5 * reps * (inner * host_per_launch_s + 6e-6) + 1e-3
    torch.cuda._sleep(int(min(host_ahead_s, 1.0) * SLEEP_CYCLES_PER_S))
    for start, end in events:
        start.record()
        for _ in range(inner):
            launch(counter)
            counter += 1
        end.record()
    torch.cuda.synchronize()
    times = [s.elapsed_time(e) * 1e-3 / inner for s, e in events]
    return summarize(times)


class RandomPool:
    """One large buffer of N(0, 1) bf16 values; operands are views carved from it.

    Carving views costs nothing, so thousands of grid points need no per-point random
    fill, and distinct offsets give the distinct operand sets that defeat L2 reuse.
    Values are never zero (a product on zeros runs faster than on real data).
    """

    def __init__(self, numel: int, device: str, seed: int = 0) -> None:
        import torch

        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        self.device = device
        self.data = torch.randn(numel, generator=gen, device=device, dtype=torch.bfloat16)
        self.numel = numel
        self._cache: dict[Any, Any] = {}

    def as_dtype(self, dtype: Any, numel: int) -> Any:
        """A flat random tensor of ``dtype`` with ``numel`` elements (converted once, cached)."""
        import torch

        if dtype == torch.bfloat16:
            return self.data[: min(numel, self.numel)]
        key = (dtype, numel)
        if key not in self._cache:
            self._cache.clear()
            n = min(numel, self.numel)
            if str(dtype).startswith("torch.float8"):
                self._cache[key] = self.data[:n].clamp(-8, 8).to(dtype)
            else:
                self._cache[key] = self.data[:n].to(dtype)
        return self._cache[key]

    def carve(self, shapes: Sequence[Sequence[int]], sets: int, dtype: Any = None,
              flat: Any = None) -> list[list[Any]]:
        """``sets`` lists of tensors of the given shapes, each set at its own offset.

        Raises MemoryError when even one set does not fit the pool; reduces ``sets`` when
        several do not.
        """
        import torch

        src = flat if flat is not None else self.data
        sizes = [math.prod(s) for s in shapes]
        per_set = sum(sizes)
        total = src.numel()
        if per_set > total:
            raise MemoryError(f"operand set of {per_set} elements exceeds pool of {total}")
        sets = max(1, min(sets, total // per_set))
        out: list[list[Any]] = []
        for j in range(sets):
            off = j * per_set
            views = []
            for shape, size in zip(shapes, sizes, strict=True):
                views.append(src[off: off + size].view(*shape))
                off += size
            out.append(views)
        if dtype is not None and dtype != src.dtype:
            out = [[t.to(dtype) for t in group] for group in out]
        del torch
        return out


def device_props(device: str) -> dict[str, Any]:
    """L2 size, SM count, memory of the current device (fixed small values on CPU)."""
    import torch

    if device == "cpu":
        return {"l2_bytes": 4 << 20, "sms": 1, "mem_bytes": 8 << 30, "name": "cpu"}
    p = torch.cuda.get_device_properties(0)
    return {"l2_bytes": int(getattr(p, "L2_cache_size", 50 << 20)), "sms": p.multi_processor_count,
            "mem_bytes": int(p.total_memory), "name": p.name}


def sync(device: str) -> None:
    import torch

    if device != "cpu":
        torch.cuda.synchronize()


class BenchContext:
    """What every suite needs: device, random pool, writer, budget and device properties."""

    def __init__(self, *, device: str, writer: Any, budget: Any, pool: RandomPool,
                 props: dict[str, Any], quick: bool, log: Callable[[str], None]) -> None:
        self.device = device
        self.writer = writer
        self.budget = budget
        self.pool = pool
        self.props = props
        self.quick = quick
        self.log = log
        self.suite_deadline_s = float("inf")
        self.skipped: list[str] = []

    def out_of_time(self) -> bool:
        return self.budget.exhausted() or self.budget.elapsed_s() >= self.suite_deadline_s

    def sets_for(self, set_bytes: int) -> int:
        from_l2 = rotation_count_l2(set_bytes, int(self.props["l2_bytes"]))
        return from_l2


def rotation_count_l2(set_bytes: int, l2_bytes: int) -> int:
    try:
        from fleetsim.calibration.bench.common import rotation_count
    except ImportError:
        from common import rotation_count  # type: ignore[no-redef]
    return rotation_count(max(1, set_bytes), l2_bytes)


def run_rows(ctx: BenchContext, kind: str, rows: list[dict[str, Any]],
             measure: Callable[[dict[str, Any]], tuple[float, float, float] | None],
             suite: str | None = None) -> int:
    """Measure each row not already on disk, append it, stop at the suite's deadline.

    ``measure`` returns (median, p10, p90) seconds, or None when the point cannot run on
    this device (unsupported dtype, out of memory): such points are logged and skipped.
    Returns the number of rows written.
    """
    try:
        from fleetsim.calibration.bench.common import Progress
    except ImportError:
        from common import Progress  # type: ignore[no-redef]
    todo = [r for r in rows if not ctx.writer.done(kind, r)]
    prog = Progress(suite or kind, len(todo))
    written = 0
    for row in todo:
        if ctx.out_of_time():
            ctx.log(f"[{suite or kind}] budget reached: {written}/{len(todo)} rows written")
            break
        try:
            res = measure(row)
        except (RuntimeError, NotImplementedError, ValueError, TypeError, MemoryError) as exc:
            # torch.cuda.OutOfMemoryError is a RuntimeError; unsupported shapes raise the others
            res = None
            msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            ctx.skipped.append(f"{kind} {row} ({type(exc).__name__}: {msg})")
            if type(exc).__name__ == "OutOfMemoryError":
                _empty_cache()
        if res is not None:
            med, p10, p90 = res
            ctx.writer.write(kind, {**row, "time_s": med, "p10_s": p10, "p90_s": p90})
            written += 1
        prog.step()
    return written


def _empty_cache() -> None:
    import torch

    torch.cuda.empty_cache()
