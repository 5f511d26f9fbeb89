"""Whether a serving replica layout runs on a pool, and what it holds: the one owner of it.

The planner (``fleetsim.planning``) and the simulator's deployment builder
(``sim.serving.cluster.plan_replicas``, ``default_deployment``) both call ``check_replica``,
so a layout one accepts the other accepts. The rules:

* placement: a tensor-parallel group needs the scale-up link, so ``tp`` GPUs sit in one
  node; a replica of ``tp * pp`` GPUs up to one node takes consecutive GPUs of one node, a
  larger one takes whole nodes (``tp * pp`` a multiple of the node size, pipeline stages
  split across them, the stage-to-stage sends over the scale-out link);
* memory: ``workloads.memory.memory_breakdown`` on the tightest stage (GPU memory times
  ``gpu_memory_utilization``, minus weights, minus the activation peak of a
  ``max_num_batched_tokens`` step or the engine's ``activation_reserve_bytes``), and the
  KV cache that fills the rest must hold at least one block of ``block_size`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetsim.hardware.checks import plural
from fleetsim.hardware.errors import ConfigError, InfeasibleError
from fleetsim.hardware.specs import GPUSpec, PoolSpec
from fleetsim.sim.serving.config import EngineConfig
from fleetsim.workloads.memory import kv_cache_bytes_per_token, memory_breakdown
from fleetsim.workloads.models import ModelSpec
from fleetsim.workloads.parallel import ParallelConfig

GiB = 2.0**30

__all__ = ["ReplicaFit", "check_replica", "gpus_per_node", "kv_blocks_for", "place_replicas"]


@dataclass(frozen=True)
class ReplicaFit:
    """A layout that runs: its KV cache (blocks of the engine's ``block_size``, and bytes
    per token on one GPU), the nodes one replica spans and how many replicas the pool holds."""

    parallel: ParallelConfig
    kv_blocks: int
    block_size: int
    kv_bytes_per_token_gpu: float
    nodes_per_replica: int
    max_replicas: int

    @property
    def kv_tokens(self) -> int:
        return self.kv_blocks * self.block_size


def gpus_per_node(pool: PoolSpec) -> int:
    return pool.gpus_per_node or pool.node.gpus_per_node


def _nodes_per_replica(tp: int, pp: int, per_node: int, gpu: str) -> int:
    """Nodes one replica spans (1 when it fits in one), or ``InfeasibleError``."""
    if tp > per_node:
        raise InfeasibleError(f"tp={tp} exceeds {plural(per_node, 'GPU')} per node of {gpu} "
                              "(a tensor-parallel group needs the scale-up link)")
    size = tp * pp
    if size <= per_node:
        return 1
    if size % per_node:
        raise InfeasibleError(f"replica of tp={tp} x pp={pp} = {size} GPUs spans nodes of {per_node} {gpu} "
                              f"without filling them (a multi-node replica takes whole nodes)")
    return size // per_node


def place_replicas(pool: PoolSpec, tp: int, pp: int, gpus_used: int = 0) -> list[int]:
    """First GPU index of every replica of ``tp x pp`` that fits in ``pool`` after its first
    ``gpus_used`` GPUs: consecutive GPUs of one node, or whole nodes for a larger replica."""
    per_node = gpus_per_node(pool)
    span = _nodes_per_replica(tp, pp, per_node, pool.node.gpu)
    size = tp * pp
    total = per_node * pool.num_nodes
    starts: list[int] = []
    at = gpus_used
    while True:
        if span > 1 and at % per_node:
            at += per_node - at % per_node  # a multi-node replica starts on a node boundary
        elif span == 1 and at % per_node + size > per_node:
            at += per_node - at % per_node  # do not straddle two nodes
        if at + size > total:
            return starts
        starts.append(at)
        at += size


def check_draft(model: ModelSpec, draft_name: str) -> ModelSpec:
    """The draft model of speculative decoding for ``model``, or ``ConfigError``: a draft
    must share the target's tokenizer (vocabularies within 5 %, padding differs) and be
    smaller than the target."""
    from fleetsim.workloads.models import load_model

    draft = load_model(draft_name)
    if abs(draft.vocab_size - model.vocab_size) > 0.05 * model.vocab_size:
        raise ConfigError(f"spec_decode draft_model {draft_name!r} has a vocabulary of "
                          f"{draft.vocab_size} tokens, the target {model.name!r} {model.vocab_size}; "
                          "a draft must share the target's tokenizer")
    if draft.params_total() >= model.params_total():
        raise ConfigError(f"spec_decode draft_model {draft_name!r} ({draft.params_total() / 1e9:.3g}B "
                          f"params) is not smaller than the target {model.name!r} "
                          f"({model.params_total() / 1e9:.3g}B)")
    return draft


def _draft_bytes(model: ModelSpec, par: ParallelConfig, eng: EngineConfig) -> tuple[float, float]:
    """(weight bytes, KV bytes per token) a draft model adds on one GPU of the replica: the
    draft runs beside the target with the same tensor-parallel degree (vLLM's default), its
    weights sharded over ``tp`` and its own KV cache kept for every token the target holds
    (both caches have the same number of blocks)."""
    spec = eng.spec_decode
    if spec is None or spec.method != "draft" or not spec.draft_model:
        return 0.0, 0.0
    from fleetsim.workloads.graph_common import act_dtype
    from fleetsim.workloads.memory import weight_bytes

    draft = check_draft(model, spec.draft_model)
    kvd = eng.kv_dtype if eng.kv_dtype is not None else act_dtype(eng.dtype)
    w = weight_bytes(draft, ParallelConfig(), eng.dtype) / par.tp
    return w, kv_cache_bytes_per_token(draft, ParallelConfig(), kvd) / par.tp


def lora_slot_bytes(model: ModelSpec, par: ParallelConfig, eng: EngineConfig) -> float:
    """GPU memory per GPU that LoRA adapter slots reserve off the KV cache (``slots``
    memory: ``slots`` adapters of ``max_lora_rank``, sharded over tp and pp; ``unified``
    memory reserves nothing, adapters take KV blocks as they load)."""
    lora = eng.lora
    if lora is None or lora.memory != "slots":
        return 0.0
    from fleetsim.calibration.ops import dtype_bytes
    from fleetsim.workloads.lora import adapter_bytes

    return lora.slots * adapter_bytes(model, lora.max_lora_rank, dtype_bytes(eng.dtype)) / (par.tp * par.pp)


def kv_blocks_for(model: ModelSpec, gpu: GPUSpec, par: ParallelConfig, eng: EngineConfig) -> int:
    """KV blocks one replica holds (``InfeasibleError`` when the weights leave no block).
    A draft model's weights come off the free memory and its KV rides on every block."""
    sch = eng.scheduler
    tokens = sch.max_num_batched_tokens if sch.kind == "vllm" else 8192
    mb = memory_breakdown(model, gpu, par, eng.dtype, eng.kv_dtype, eng.gpu_memory_utilization, tokens)
    draft_w, draft_tok = _draft_bytes(model, par, eng)
    draft_w += lora_slot_bytes(model, par, eng)
    per_tok = mb.kv_bytes_per_token + draft_tok
    if eng.activation_reserve_bytes is not None:
        kv_bytes = mb.usable_bytes - mb.weight_bytes - eng.activation_reserve_bytes - draft_w
        if kv_bytes < per_tok * eng.block_size:
            raise InfeasibleError(
                f"{model.name} tp={par.tp} pp={par.pp} on {gpu.name}: no room for KV cache after "
                f"{(mb.weight_bytes + draft_w) / GiB:.1f} GiB weights (and adapter slots) + "
                f"{eng.activation_reserve_bytes / GiB:.1f} GiB reserve")
        tokens_kv = int(kv_bytes // per_tok)
    elif draft_w or draft_tok:
        tokens_kv = int(max(mb.kv_bytes - draft_w, 0.0) // per_tok)
    else:
        tokens_kv = mb.max_kv_tokens
    blocks = tokens_kv // eng.block_size
    if blocks < 1 and eng.lora is not None and eng.lora.memory == "slots":
        raise InfeasibleError(f"{model.name} tp={par.tp} pp={par.pp} on {gpu.name}: {eng.lora.slots} LoRA "
                              f"slots of rank {eng.lora.max_lora_rank} "
                              f"({lora_slot_bytes(model, par, eng) / GiB:.2f} GiB per GPU) leave no KV cache")
    if blocks < 1:
        raise InfeasibleError(f"{model.name} tp={par.tp} pp={par.pp} on {gpu.name}: KV cache "
                              f"holds {tokens_kv} tokens, less than one block of {eng.block_size}")
    return blocks


def check_replica(model: ModelSpec, pool: PoolSpec, gpu: GPUSpec, par: ParallelConfig,
                  eng: EngineConfig) -> ReplicaFit:
    """The layout ``par`` of ``model`` on ``pool`` under ``eng``, or ``InfeasibleError``
    (``ConfigError`` when ``par`` does not divide the model) naming why."""
    par.validate_for(model)
    span = _nodes_per_replica(par.tp, par.pp, gpus_per_node(pool), gpu.name)
    blocks = kv_blocks_for(model, gpu, par, eng)
    n = len(place_replicas(pool, par.tp, par.pp))
    if n < 1:
        raise InfeasibleError(f"replica of tp={par.tp} x pp={par.pp} = {par.tp * par.pp} GPUs does not fit "
                              f"a pool of {pool.gpus} {gpu.name}")
    per_tok = kv_cache_bytes_per_token(model, par, eng.kv_dtype)
    return ReplicaFit(par, blocks, eng.block_size, per_tok, span, n)
