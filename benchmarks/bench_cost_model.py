"""Throughput of batched cost look-ups: operator costs per second on one core.

Builds a realistic mixed operator list (serving iterations of several models, TP degrees
and batch shapes: decode batches with ragged contexts, prefills, mixed batches) and prices
it with ``op_times``:

* cold: a fresh model (empty cache) on the whole list, duplicates included as a simulator
  would send them;
* cold-unique: a fresh model on the de-duplicated list (every operator priced);
* cached: the same list again on a warm model;
* columnar: the same operators as shape arrays (``calibration.columns``: GEMM m/n/k,
  attention sums, kernel bytes) priced by ``price_columns``, the collectives of the batch
  by ``op_times`` on a fresh model, in one timed region; the columns are built from the
  operator list beforehand (a simulator keeps them as numbers). No cache: every call
  prices every row, so cold and repeated calls cost the same;
* per step: a simulator's pattern, one ``op_times`` call per decode iteration whose
  contexts grow by one token per step (one new attention operator per call, the rest
  cached).

Rates are operators per second of CPU time of this process (``time.process_time``), best
of five, so that other load on a shared machine does not distort them.

Run: ``python benchmarks/bench_cost_model.py [--ops N]``. Uses the committed H100-SXM
profile when there is one (measured model), else a synthetic profile written to a
temporary directory, and also reports the plain spec roofline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from fleetsim.calibration import MeasuredCostModel, RooflineCostModel, profile_dirs
from fleetsim.calibration.columns import columns_of
from fleetsim.calibration.ops import CollectiveOp
from fleetsim.hardware.catalog import get_gpu
from fleetsim.workloads.graph import serving_step_ops
from fleetsim.workloads.models import load_model
from fleetsim.workloads.parallel import ParallelConfig, Seq


def mixed_ops(n_target: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    models = [load_model(m) for m in ("llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b", "mixtral-8x7b")]
    ops: list = []
    while len(ops) < n_target:
        model = models[int(rng.integers(len(models)))]
        tp = int(rng.choice([1, 2, 4, 8]))
        if model.num_kv_heads % tp and tp > model.num_kv_heads:
            tp = 1
        n_dec = int(rng.integers(0, 128))
        batch = [Seq(1, int(c)) for c in rng.integers(16, 8192, size=n_dec)]
        if rng.random() < 0.4 or not batch:
            batch.append(Seq(int(rng.integers(16, 4096)), int(rng.integers(0, 2048))))
        try:
            ops.extend(serving_step_ops(model, batch, ParallelConfig(tp=tp)))
        except ValueError:
            continue
    return ops[:n_target]


def rate(model_factory, ops: list, gpu, graphs: bool = False, repeats: int = 5
         ) -> tuple[float, float, float]:
    """Best-of-``repeats`` ops/s: cold (fresh model), cold on distinct ops, cached."""
    uniq = list(dict.fromkeys(ops))
    cold = cold_u = cached = 0.0
    for _ in range(repeats):
        m = model_factory()
        t0 = time.process_time()
        m.op_times(ops, gpu, graphs=graphs)
        cold = max(cold, len(ops) / (time.process_time() - t0))
        t0 = time.process_time()
        m.op_times(ops, gpu, graphs=graphs)
        cached = max(cached, len(ops) / (time.process_time() - t0))
        m = model_factory()
        t0 = time.process_time()
        m.op_times(uniq, gpu, graphs=graphs)
        cold_u = max(cold_u, len(uniq) / (time.process_time() - t0))
    return cold, cold_u, cached


def columnar_rate(model_factory, ops: list, gpu, graphs: bool = False, repeats: int = 5
                  ) -> tuple[float, float]:
    """Best-of-``repeats`` ops/s of columnar pricing: (all operators as sent, distinct ones)."""
    out = []
    for batch in (ops, list(dict.fromkeys(ops))):
        coll = [op for op in batch if isinstance(op, CollectiveOp)]
        cols, _ = columns_of([op for op in batch if not isinstance(op, CollectiveOp)])
        best = 0.0
        for _ in range(repeats):
            m = model_factory()
            t0 = time.process_time()
            m.price_columns(cols, gpu, graphs=graphs)
            if coll:
                m.op_times(coll, gpu, graphs=graphs)
            best = max(best, len(batch) / (time.process_time() - t0))
        out.append(best)
    return out[0], out[1]


def per_step_rate(model, gpu, steps: int = 400) -> tuple[float, float]:
    """(operators/s, microseconds per call) over ``steps`` decode iterations of 64 sequences."""
    llama = load_model("llama-3.1-8b")
    graphs = [serving_step_ops(llama, [Seq(1, 1000 + i + 7 * j) for j in range(64)], ParallelConfig(tp=1))
              for i in range(steps)]
    t0 = time.process_time()
    for ops in graphs:
        model.op_times(ops, gpu, graphs=True)
    dt = time.process_time() - t0
    return sum(map(len, graphs)) / dt, dt / steps * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=200_000)
    args = ap.parse_args(argv)
    gpu = get_gpu("H100-SXM")
    ops = mixed_ops(args.ops)
    n_unique = len(set(ops))
    print(f"{len(ops)} operators ({n_unique} distinct) from random serving iterations")
    dirs = profile_dirs()
    if "H100-SXM" in dirs:
        profile, label = dirs["H100-SXM"], "measured (committed H100-SXM profile)"
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import _cost_synth  # type: ignore[import-not-found]

        tmp = Path(tempfile.mkdtemp())
        profile = _cost_synth.write_profile(tmp, _cost_synth.gpu("H100-SXM", arch=gpu.architecture))
        label = "measured (synthetic profile)"
    measured = MeasuredCostModel(profile, gpu)
    for name, factory in ((label, lambda: MeasuredCostModel(measured.profile, gpu)),
                          ("spec roofline", RooflineCostModel)):
        cold, cold_u, cached = rate(factory, ops, gpu)
        col, col_u = columnar_rate(factory, ops, gpu)
        step_rate, step_us = per_step_rate(factory(), gpu)
        print(f"{name}:\n  object API (op_times): cold {cold:12,.0f} ops/s   cold-unique {cold_u:12,.0f} ops/s   "
              f"cached {cached:12,.0f} ops/s   per step {step_rate:10,.0f} ops/s ({step_us:.0f} us/call)\n"
              f"  columnar (price_columns): cold {col:12,.0f} ops/s   cold-unique {col_u:12,.0f} ops/s   "
              f"(no cache: repeated calls cost the same)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
