"""LoRA adapters inside one serving engine: GPU residency, loads, batch limit, kernel time.

``AdapterCache`` is the engine's adapter memory (``LoraConfig``):

* ``slots``: at most ``slots`` adapters resident (memory reserved up front, so an adapter
  costs a slot whatever its rank);
* ``unified``: an adapter occupies ``ceil(bytes per GPU / KV block bytes)`` blocks of the
  engine's KV cache while resident (S-LoRA's unified paging); loading takes free blocks
  and evicts unused adapters when none are free.

Adapters used by running sequences are pinned; the others are evicted least-recently-used.
A sequence is admitted only when its adapter is already in the batch or the batch has
fewer than ``max_loras`` distinct adapters, and only when the adapter is resident or can be
made so. A load costs ``LoadModel.seconds(bytes per GPU, tensors)`` and is added to the
next iteration (the engine waits for it: vLLM activates adapters before the forward
pass), so with nothing else running a load of ``L`` seconds delays its request by ``L``.

Kernel time of an iteration: ``applications x kernel.cost(h, T, A, r)`` per pipeline
stage, with ``T`` the tokens of sequences that carry an adapter, ``A`` their distinct
adapters and ``r`` the largest of their ranks (vLLM pads a batch to one rank), and
``applications = n_proj x layers / pp``. Where the kernel model has per-projection pricing
(``LoraKernelModel.split``), each layer's applications are priced at their own (in, out)
shapes (``projections``) instead of ``n_proj`` square ``h x h`` ones.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING

from fleetsim.calibration.lora import LoadModel, LoraKernelModel
from fleetsim.sim.serving.config import LoraConfig
from fleetsim.sim.serving.kvcache import KVCache

if TYPE_CHECKING:
    from fleetsim.sim.serving.engine import SeqState


class AdapterCache:
    """Adapter memory, loads and statistics of one engine."""

    def __init__(self, cfg: LoraConfig, kernel: LoraKernelModel, loads: LoadModel, kv: KVCache, *,
                 hidden: int, params_per_rank: int, n_proj: int, layers_per_stage: int,
                 shards: int, dtype_bytes: float, block_bytes: float,
                 projections: tuple[tuple[int, int], ...] = ()) -> None:
        self.cfg = cfg
        self.kernel = kernel
        self.loads = loads
        self.kv = kv
        self.hidden = hidden
        self.params_per_rank = params_per_rank
        self.applications = n_proj * layers_per_stage
        self.projections = projections
        self.tensors = 2 * n_proj * layers_per_stage
        self.shards = shards
        self.dtype_bytes = dtype_bytes
        self.block_bytes = block_bytes
        self.unified = cfg.memory == "unified"
        self.resident: OrderedDict[int, int] = OrderedDict()
        """Adapter -> KV blocks it holds (0 in slots mode), least recently used first."""
        self.refs: dict[int, int] = {}
        """Adapter -> running sequences using it (the batch's distinct adapters)."""
        self.host: OrderedDict[int, None] = OrderedDict()
        self.pending_s = 0.0
        """Load time not yet charged to an iteration."""
        self.hits = 0
        self.misses = 0
        self.loads_n = 0
        self.load_s = 0.0
        self.evictions = 0
        self.blocks = 0
        self.peak_blocks = 0
        self._costs: dict[tuple[int, int, int], float] = {}

    # -- memory -------------------------------------------------------------------------
    def gpu_bytes(self, rank: int) -> float:
        """Bytes of one rank-``rank`` adapter on one GPU of the replica."""
        return self.params_per_rank * rank * self.dtype_bytes / self.shards

    def blocks_for(self, rank: int) -> int:
        return max(1, math.ceil(self.gpu_bytes(rank) / self.block_bytes)) if self.unified else 0

    def _evict_one(self) -> bool:
        for a, blocks in self.resident.items():
            if a not in self.refs:
                del self.resident[a]
                if blocks:
                    self.kv.release(blocks)
                    self.blocks -= blocks
                self.evictions += 1
                return True
        return False

    def _make_room(self, rank: int, reserve: int) -> int:
        """Blocks taken for a new adapter of ``rank`` (0 in slots mode), evicting idle
        adapters least-recently-used first."""
        if not self.unified:
            while len(self.resident) >= self.cfg.slots:
                if not self._evict_one():
                    raise RuntimeError("no idle adapter slot (scheduler bug)")
            return 0
        need = self.blocks_for(rank)
        while self.kv.available() < need + reserve:
            if not self._evict_one():
                raise RuntimeError("no KV room for the adapter (scheduler bug)")
        self.kv.allocate(need)
        self.blocks += need
        self.peak_blocks = max(self.peak_blocks, self.blocks)
        return need

    def _load(self, adapter: int, rank: int) -> None:
        limit = self.cfg.max_cpu_loras
        pinned = limit is None or adapter in self.host
        if limit is not None:
            self.host[adapter] = None
            self.host.move_to_end(adapter)
            while len(self.host) > limit:
                self.host.popitem(last=False)
        model = self.loads if pinned else self.pageable
        t = model.seconds(self.gpu_bytes(rank), self.tensors)
        self.pending_s += t
        self.load_s += t
        self.loads_n += 1

    pageable: LoadModel
    """Load model for adapters outside the pinned host cache (set by the builder)."""

    # -- admission ----------------------------------------------------------------------
    def blocks_needed(self, seq: SeqState) -> int:
        """KV blocks ``seq``'s adapter would newly take (0 when resident or in slots mode),
        or -1 when the batch already runs ``max_loras`` other adapters."""
        a = seq.adapter
        if a in self.refs:
            return 0
        if len(self.refs) >= self.cfg.max_loras:
            return -1
        return 0 if a in self.resident else self.blocks_for(seq.lora_rank)

    def idle_blocks(self) -> int:
        """KV blocks held by resident adapters no running sequence uses (evictable)."""
        if not self.unified:
            return 0
        return sum(b for a, b in self.resident.items() if a not in self.refs)

    def admit(self, seq: SeqState, reserve: int = 0) -> None:
        """Put ``seq``'s adapter in the batch, loading it (and evicting idle adapters, LRU)
        when not resident, keeping ``reserve`` KV blocks available for the sequence itself.
        The caller checked ``blocks_needed`` and the KV space first."""
        a = seq.adapter
        r = self.refs.get(a)
        if r is None:
            if a in self.resident:
                self.resident.move_to_end(a)
            else:
                self.resident[a] = self._make_room(seq.lora_rank, reserve)
                self._load(a, seq.lora_rank)
                if seq.lora_state == 0:
                    seq.lora_state = 2
            r = 0
        self.refs[a] = r + 1
        if seq.lora_state != 1:
            if seq.lora_state == 2:
                self.misses += 1
            else:
                self.hits += 1
            seq.lora_state = 1

    def release(self, seq: SeqState) -> None:
        """``seq`` left the batch (finished or preempted)."""
        a = seq.adapter
        r = self.refs[a] - 1
        if r:
            self.refs[a] = r
        else:
            del self.refs[a]

    def holds(self, adapter: int) -> bool:
        return adapter in self.resident

    # -- time ---------------------------------------------------------------------------
    def kernel_s(self, tokens: int, adapters: int, rank: int) -> float:
        """LoRA kernel seconds of one iteration on one pipeline stage."""
        if not adapters:
            return 0.0
        key = (tokens, adapters, rank)
        t = self._costs.get(key)
        if t is None:
            t = kernel_seconds(self.kernel, self.hidden, self.applications, tokens, adapters, rank,
                               self.projections)
            if len(self._costs) < 1_000_000:
                self._costs[key] = t
        return t

    def take_pending(self) -> float:
        t = self.pending_s
        self.pending_s = 0.0
        return t


def kernel_seconds(kernel: LoraKernelModel, hidden: int, applications: int, tokens: int, adapters: int,
                   rank: int, projections: tuple[tuple[int, int], ...] = ()) -> float:
    """LoRA kernel seconds of ``applications`` applications over ``tokens`` tokens of
    ``adapters`` distinct adapters padded to ``rank``: the one formula the engine and the
    planner's analytic stage (``planner.serving.lora``) both use. With ``projections`` (one
    layer's (in, out) shapes, ``workloads.lora.projection_shapes``) and a kernel model that
    prices shapes (``split``), ``applications / len(projections)`` layers each cost the sum
    of their projections' ``projection_cost``; otherwise every application is a square
    ``hidden x hidden`` one."""
    if not adapters or tokens <= 0:
        return 0.0
    if projections and kernel.split is not None:
        layer = sum(kernel.projection_cost(i, o, tokens, adapters, rank).seconds for i, o in projections)
        return applications / len(projections) * layer
    return applications * kernel.cost(hidden, tokens, adapters, rank).seconds


def batch_shape(items: list[tuple[SeqState, int]]) -> tuple[int, int, int]:
    """(tokens with an adapter, distinct adapters, largest rank) of an iteration's items."""
    tokens = 0
    rank = 0
    seen: set[int] = set()
    for seq, n in items:
        if seq.adapter >= 0:
            tokens += n
            seen.add(seq.adapter)
            if seq.lora_rank > rank:
                rank = seq.lora_rank
    return tokens, len(seen), rank


__all__ = ["AdapterCache", "batch_shape", "kernel_seconds"]
