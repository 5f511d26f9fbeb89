"""Point lists, CSV schemas and time budgets of the multi-GPU measurements (standard library only).

The device scripts beside this file (``collectives.py``, ``tp_forward.py``,
``train_parallel.py``) and the driver ``run_multi.py`` take their grids from here, so the
tests check them on a machine without torch or GPUs. Sizes are bytes, times seconds.

Collective sizes follow nccl-tests' "size" (see ``calibration/bench/collective.py``): the
per-rank buffer of all_reduce / all_to_all / send_recv, the gathered output of all_gather,
the input of reduce_scatter. Bus bandwidth is ``bytes / time`` times ``bus_factor``.
"""

from __future__ import annotations

import math
from typing import Any

COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")
COLLECTIVE_MODES = ("eager", "graph", "oneshot", "twoshot")
"""``eager``: one NCCL call per launch; ``graph``: the NCCL call captured in a CUDA graph and
replayed; ``oneshot`` / ``twoshot``: PyTorch symmetric-memory all-reduce
(``torch.ops.symm_mem.one_shot_all_reduce`` / ``two_shot_all_reduce_``, peer loads over NVLink,
no multicast)."""
COLLECTIVE_BYTES = tuple(1 << e for e in range(10, 33, 2))
"""1 KiB .. 4 GiB in powers of 4 (12 sizes)."""
SMOKE_BYTES = (1 << 10, 1 << 14)
SYMM_MAX_BYTES = 1 << 30
"""Largest symmetric-memory all-reduce measured: one-shot reads every peer's whole buffer,
so it is a small-message algorithm; past 1 GiB it only costs time."""
COLLECTIVE_COLUMNS = ("op", "group_size", "bytes", "time_s", "p10_s", "p90_s", "mode")
"""``collective.csv``'s columns plus ``mode``; the eager rows are collective.csv rows as they are."""
WORLDS = (2, 4, 8)

FORWARD_COLUMNS = ("model", "mode", "batch", "q_len", "context", "tp", "time_s", "p10_s", "p90_s",
                   "layers")
"""``forward.csv``'s columns plus ``layers``: the decoder layers actually built (a 70B shape is
truncated to fit the time budget; every layer is identical, so the prediction uses the same count)."""
TP_DEGREES = (2, 4, 8)
TP_MODELS = {"llama-3.1-8b": 32, "llama-3.1-70b": 8}
"""Catalog model -> decoder layers built (8B whole, 70B truncated to 8 of its 80 layers)."""
PREFILL_POINTS = ((1, 512), (1, 2048), (4, 1024), (16, 512), (64, 256), (256, 128))
"""(batch, prompt tokens) of eager prefill passes."""
DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DECODE_CONTEXTS = (1024, 4096)
SMOKE_PREFILL = ((1, 24), (2, 12))
SMOKE_DECODE = ((1, 32), (4, 32))

TRAIN_COLUMNS = ("model", "layers", "hidden", "heads", "seq_len", "vocab", "ffn", "micro_batch",
                 "grad_accum", "recompute", "world_size", "dp", "params", "status", "time_s", "p10_s",
                 "p90_s", "peak_alloc_bytes", "peak_reserved_bytes", "host_s", "device_s", "comm_s",
                 "kernels", "launch_s", "fsdp", "pp", "schedule")
"""``training.csv``'s columns (``train_bench.COLUMNS``) plus ``fsdp`` (1: FSDP2 ``fully_shard``,
ZeRO-3), ``pp`` (pipeline stages) and ``schedule`` (``gpipe``/``1f1b``, empty without pipeline).
A pipeline row's ``grad_accum`` is its number of micro-batches per step."""
TRAIN_MODELS = {"gpt2-1.3b": (24, 2048, 16, 1024), "gpt2-2.7b": (32, 2560, 20, 2048),
                "gpt-6.7b": (32, 4096, 32, 2048)}
"""name -> (layers, hidden, heads, seq_len) of GPT-2-style models (``torch_models.make_train_model``)."""
SMOKE_TRAIN = {"smoke": (4, 64, 2, 32)}
TRAIN_VOCAB = 50257
FSDP_MICRO_BATCHES = (1, 2, 4)
PP_STAGES = (2, 4)
PP_SCHEDULES = ("gpipe", "1f1b")
PP_MICROBATCHES = (4, 8)
PP_MICRO_BATCH = 2
DDP_WORLDS = (4, 8)

PHASES = ("coll", "tp", "ddp", "fsdp", "pp")
PHASE_WEIGHTS = {"coll": 1.0, "tp": 2.0, "ddp": 2.0, "fsdp": 2.0, "pp": 2.0}
"""Share of a call's budget per phase (relative). A whole collective sweep of one world size is
estimated at ~13 s of collectives (``collective_budget_s``), so ``coll`` needs the least."""
CALLS = (("coll", "tp"), ("ddp", "fsdp"), ("pp",))
"""The phases of each ~9-minute call that together cover the issue (``run_multi_gpu.sh TAG`` alone
runs the first)."""
MIN_SHARE_S = 30.0
RUN_OVERHEAD_S = 25.0
"""Per sub-run start cost: process spawn, NCCL communicator set-up, model build."""
GRACE_S = 40.0
"""A sub-run is killed ``GRACE_S`` after its budget (its own deadline normally ends it first)."""


def bus_factor(op: str, n: int) -> float:
    """nccl-tests' bus-bandwidth factor: 2(n-1)/n all_reduce, (n-1)/n all_gather,
    reduce_scatter and all_to_all, 1 send_recv."""
    if n < 2:
        raise ValueError(f"group size {n} < 2")
    if op == "all_reduce":
        return 2.0 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) / n
    if op == "send_recv":
        return 1.0
    raise ValueError(f"unknown collective {op!r}")


def estimate_collective_s(op: str, nbytes: int, n: int, *, bus_bps: float = 300e9,
                          latency_s: float = 20e-6) -> float:
    """A-priori time of one collective (sizes repetitions and budgets, never reported):
    ``latency + bytes * bus_factor / bus bandwidth``."""
    return latency_s + nbytes * bus_factor(op, n) / bus_bps


def collective_points(world: int, *, smoke: bool = False, modes: tuple[str, ...] = COLLECTIVE_MODES
                      ) -> list[dict[str, Any]]:
    """Rows to measure at ``world`` ranks: every op in eager and graph mode at every size,
    plus one-shot / two-shot all-reduce up to ``SYMM_MAX_BYTES``."""
    if world < 2:
        raise ValueError(f"collectives need at least 2 ranks, got {world}")
    bad = [m for m in modes if m not in COLLECTIVE_MODES]
    if bad:
        raise ValueError(f"unknown collective mode(s) {bad}; known: {', '.join(COLLECTIVE_MODES)}")
    sizes = SMOKE_BYTES if smoke else COLLECTIVE_BYTES
    rows: list[dict[str, Any]] = []
    for op in COLLECTIVE_OPS:
        for mode in modes:
            if mode in ("oneshot", "twoshot") and op != "all_reduce":
                continue
            for b in sizes:
                if mode in ("oneshot", "twoshot") and b > SYMM_MAX_BYTES:
                    continue
                rows.append({"op": op, "group_size": world, "bytes": b, "mode": mode})
    return rows


def collective_buffer_bytes(op: str, nbytes: int, mode: str) -> int:
    """Device memory one rank allocates for a point: input plus output buffer (all_gather's
    input is 1/n of ``bytes``, counted as ``bytes``; graph capture adds no copy)."""
    if op in ("all_to_all", "all_gather", "reduce_scatter"):
        return 2 * nbytes
    if mode in ("oneshot", "twoshot"):
        return 2 * nbytes
    return nbytes


def collective_budget_s(points: list[dict[str, Any]], *, reps: int = 25, warmup: int = 3,
                        per_point_s: float = 0.05, bus_bps: float = 300e9) -> float:
    """Wall time of measuring ``points``: each point runs ``warmup + reps`` collectives of its
    estimated time (``estimate_collective_s``) plus ``per_point_s`` of set-up (allocation,
    graph capture, barriers)."""
    total = 0.0
    for p in points:
        t = estimate_collective_s(str(p["op"]), int(p["bytes"]), int(p["group_size"]), bus_bps=bus_bps)
        total += (warmup + reps) * t + per_point_s
    return total


def tp_points(*, smoke: bool = False) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    """(prefill (batch, tokens) points, decode (batch, context) points)."""
    if smoke:
        return SMOKE_PREFILL, SMOKE_DECODE
    decode = tuple((b, c) for c in DECODE_CONTEXTS for b in DECODE_BATCHES
                   if c == DECODE_CONTEXTS[0] or b in (1, 16, 64, 256))
    return PREFILL_POINTS, decode


def kv_cache_bytes(layers: int, batch: int, context: int, kv_heads: int, head_dim: int, tp: int,
                   dtype_bytes: int = 2) -> int:
    """Bytes of one rank's static K and V tensors for ``context + 1`` positions."""
    if kv_heads % tp:
        raise ValueError(f"{kv_heads} KV heads do not split over tp={tp}")
    return 2 * layers * batch * (context + 1) * (kv_heads // tp) * head_dim * dtype_bytes


def train_points(kind: str, world: int, *, smoke: bool = False, models: tuple[str, ...] = ()
                 ) -> list[dict[str, Any]]:
    """Training points of ``kind`` (``fsdp`` or ``pp``) on ``world`` GPUs: model shape,
    micro-batch, and for pipelines the stages (= world), schedule and micro-batches per step."""
    table = SMOKE_TRAIN if smoke else {k: v for k, v in TRAIN_MODELS.items() if not models or k in models}
    unknown = set(models) - set(TRAIN_MODELS)
    if unknown and not smoke:
        raise ValueError(f"unknown training model(s) {sorted(unknown)}; known: {', '.join(TRAIN_MODELS)}")
    out: list[dict[str, Any]] = []
    for name, (layers, hidden, heads, seq) in table.items():
        base = {"model": name, "layers": layers, "hidden": hidden, "heads": heads, "seq_len": seq}
        if kind == "fsdp":
            for mb in ((1, 2) if smoke else FSDP_MICRO_BATCHES):
                out.append({**base, "micro_batch": mb, "grad_accum": 1, "dp": world, "fsdp": 1, "pp": 1,
                            "schedule": ""})
        elif kind == "pp":
            if layers % world:
                continue
            for sched in PP_SCHEDULES:
                for m in ((2, 4) if smoke else PP_MICROBATCHES):
                    out.append({**base, "micro_batch": 1 if smoke else PP_MICRO_BATCH, "grad_accum": m,
                                "dp": 1, "fsdp": 0, "pp": world, "schedule": sched})
        else:
            raise ValueError(f"unknown training kind {kind!r} (fsdp or pp)")
    return out


def pipeline_bubble(stages: int, microbatches: int) -> float:
    """Idle share of a GPipe or 1F1B step with equal stages: (p - 1) / (m + p - 1)."""
    if stages < 1 or microbatches < 1:
        raise ValueError("stages and micro-batches must be positive")
    return (stages - 1) / (microbatches + stages - 1)


def sub_worlds(phase: str, gpus: int) -> list[int]:
    """GPU counts a phase runs at on a machine of ``gpus`` GPUs (each a separate sub-run on
    the first GPUs of the machine)."""
    if gpus < 2:
        return []
    if phase == "coll":
        return [w for w in WORLDS if w <= gpus]
    if phase == "tp":
        return [w for w in TP_DEGREES if w <= gpus]
    if phase == "ddp":
        return [w for w in DDP_WORLDS if w <= gpus] or [gpus]
    if phase == "fsdp":
        return [w for w in (4, 8) if w <= gpus] or [gpus]
    if phase == "pp":
        return [w for w in PP_STAGES if w <= gpus]
    raise ValueError(f"unknown phase {phase!r}; known: {', '.join(PHASES)}")


def phase_budgets(phases: list[str], gpus: int, total_s: float) -> dict[str, list[tuple[int, float]]]:
    """Split one call's ``total_s`` over the selected phases (``PHASE_WEIGHTS``) and each
    phase's sub-runs (equal shares), after reserving ``RUN_OVERHEAD_S`` of start cost per
    sub-run: phase -> [(world, budget_s)], whole seconds. Raises when a sub-run would get
    less than ``MIN_SHARE_S``."""
    bad = [p for p in phases if p not in PHASES]
    if bad:
        raise ValueError(f"unknown phase(s) {bad}; known: {', '.join(PHASES)}")
    runs = {p: sub_worlds(p, gpus) for p in phases}
    n_runs = sum(len(v) for v in runs.values())
    if n_runs == 0:
        return {p: [] for p in phases}
    usable = total_s - n_runs * RUN_OVERHEAD_S
    weight = sum(PHASE_WEIGHTS[p] for p in phases if runs[p])
    out: dict[str, list[tuple[int, float]]] = {}
    for p in phases:
        if not runs[p]:
            out[p] = []
            continue
        share = usable * PHASE_WEIGHTS[p] / weight / len(runs[p])
        if share < MIN_SHARE_S:
            raise ValueError(f"{total_s:.0f} s leave {share:.0f} s per {p} sub-run: select fewer phases "
                             "or raise the budget")
        out[p] = [(w, math.floor(share)) for w in runs[p]]
    return out
