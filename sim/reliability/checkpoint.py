"""Checkpoint save/load times and the Young/Daly interval.

A checkpoint holds each rank's model state (weights and optimizer state). A *synchronous*
checkpoint stalls training for the whole write to shared storage. An *asynchronous* one
stalls only for the snapshot from HBM to host memory over the GPU's host link, then persists
in the background; the checkpoint is durable only when the write finishes. Writes are limited
by the store's aggregate bandwidth and by the job's nodes' network ports, whichever is lower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class CheckpointCost:
    bytes_per_rank: float
    total_bytes: float
    blocking_s: float
    """Training stalls this long per checkpoint (sync: the write; async: the snapshot)."""
    persist_s: float
    """Background write after the snapshot (async); 0 for sync."""
    write_s: float
    """Time to write the whole checkpoint to shared storage (the save time)."""
    load_s: float
    """Time to read it back on a restart."""
    mode: str


def checkpoint_cost(bytes_per_rank: float, ranks: int, nodes: int, *, write_bps: float, read_bps: float,
                    node_net_bps: float, snapshot_bps: float,
                    mode: Literal["sync", "async"] = "sync") -> CheckpointCost:
    """Save/load seconds of a checkpoint of ``bytes_per_rank`` on each of ``ranks`` GPUs.

    Write (and read) bandwidth is ``min(store aggregate, nodes * node_net_bps)``; the async
    snapshot moves ``bytes_per_rank`` over one GPU's host link at ``snapshot_bps`` (all GPUs
    in parallel, each on its own link)."""
    total = bytes_per_rank * ranks
    write_s = total / min(write_bps, nodes * node_net_bps)
    load_s = total / min(read_bps, nodes * node_net_bps)
    if mode == "sync":
        return CheckpointCost(bytes_per_rank, total, write_s, 0.0, write_s, load_s, mode)
    snap = bytes_per_rank / snapshot_bps
    return CheckpointCost(bytes_per_rank, total, snap, write_s, write_s, load_s, mode)


def young_daly_interval_s(blocking_s: float, mtbf_s: float) -> float:
    """Young's first-order optimum of compute time between checkpoints, sqrt(2 C M), for a
    checkpoint that stalls C seconds and failures with mean time between them M (J. W. Young,
    CACM 17(9), 1974; the leading term of Daly, FGCS 22(3), 2006). Valid for C << M."""
    return math.sqrt(2.0 * blocking_s * mtbf_s)
