"""Per-GPU memory of a training step: model state, activations, buffers, fragmentation.

Model state (bytes per parameter, before sharding):

=============  ==============================  ======================
component      ``precision="mixed"`` (Megatron)  ``precision="amp"``
=============  ==============================  ======================
weights        2 (bf16/fp16)                    4 (fp32)
gradients      4 (fp32 accumulation; 2 if bf16) 4
master copy    4 (fp32)                         0
Adam m and v   8 (fp32)                         8
=============  ==============================  ======================

"mixed" totals 18 bytes/parameter, the figure behind Korthikanti et al. 2022 fig. 1's
"parameters and optimizer state". ZeRO stage 1 shards master + Adam over the data-parallel
group (dp * cp ranks; dp * cp / ep for expert weights), stage 2 also the gradients, stage 3
(and FSDP) also the weights. Offloading moves master + Adam (``offload_optimizer``) or the
weights (``offload_params``, keeping two layers' gathered working copies) to host/NVMe.

Activations per transformer layer per micro-batch follow Korthikanti et al. 2022 sec. 4,
generalised to the model's shape (GQA, gated MLP, MoE): tensors outside the TP regions
(norm inputs, QKV/MLP inputs, dropout masks; ``10 sbh`` for GPT) are divided by ``t`` only
with sequence parallelism, tensors inside (Q, K, V, projection input, MLP intermediates;
``24 sbh`` for GPT) by ``t``; eager attention adds the softmax, its dropout mask and output
(``5 a s^2 b``, divided by ``t``), which selective recomputation and flash attention drop;
full recomputation keeps only each layer's 16-bit input (``2 sbh``, ``/t`` with SP). For a
GPT (MHA, ffn = 4h, dropout, eager attention) this reproduces the paper's
``sbh(10 + 24/t + 5as/(ht))`` and ``sbh/t (34 + 5as/h)`` exactly. The number of micro-batches
(chunks) in flight comes from the pipeline schedule's op order, which gives 1F1B's ``p`` on
the first stage and interleaving's ``1 + (p-1)/(pv)`` factor (paper sec. 4.2.3).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from fleetsim.hardware.errors import InfeasibleError
from fleetsim.workloads.models import LayerKind, ModelSpec

from .job import TrainJob, chunk_layers

GIB = 2.0**30

FRAGMENTATION_MARGIN = 0.05
"""Allocator slack: reserved = allocated * (1 + margin) (PyTorch caching allocator)."""
CUDA_CONTEXT_BYTES = 0.5 * GIB
"""CUDA context, cuBLAS/NCCL workspaces: HBM not available to tensors."""
LOGITS_BYTES_PER_ELEMENT = 10.0
"""Last stage, per logit element (s * b * vocab / t): 16-bit logits (2), fp32 softmax kept for
the cross-entropy backward (4), fp32 gradient of the logits during backward (4)."""
AMP_LOGITS_BYTES_PER_ELEMENT = 12.0
"""``amp`` (``F.cross_entropy(logits.float())``): the fp32 log-softmax output saved for
backward (4), its gradient (4) and the gradient of its input (4) at the start of backward."""


@dataclass(frozen=True, slots=True)
class StateBytes:
    """Bytes per parameter of each model-state component before sharding."""

    weights: float
    grads: float
    master: float
    adam: float


def state_bytes(job: TrainJob) -> StateBytes:
    r = job.recipe
    if r.precision == "amp":
        return StateBytes(weights=4.0, grads=4.0, master=0.0, adam=8.0)
    return StateBytes(weights=2.0, grads=4.0 if r.grad_dtype == "fp32" else 2.0, master=4.0, adam=8.0)


def layer_params_split(model: ModelSpec, kind: LayerKind) -> tuple[int, int]:
    """(non-expert, routed-expert) parameters of one layer."""
    if kind == "dense":
        return model.params_per_layer("dense"), 0
    experts = model.num_experts * model.expert_params()
    return model.params_per_layer("moe") - experts, experts


def stage_params(job: TrainJob, stage: int) -> tuple[float, float]:
    """(non-expert, expert) parameters held by one GPU of ``stage`` (TP- and EP-sharded).

    The first stage holds the token (and position) embedding, the last the final norm and
    the LM head; a tied head on pp > 1 is a second copy on the last stage (Megatron).
    """
    m, par = job.model, job.parallel
    dense = expert = 0.0
    for chunk in chunk_layers(job)[stage]:
        for i in chunk:
            d, e = layer_params_split(m, m.layer_kinds[i])
            dense += d
            expert += e
    if stage == 0:
        dense += m.embedding_params()
    if stage == par.pp - 1:
        dense += m.final_norm_params()
        head = m.lm_head_params()
        if head == 0 and par.pp > 1:
            head = m.vocab_size * m.hidden_size
        dense += head
    return dense / par.tp, expert / (par.tp * par.ep)


def activation_bytes_per_layer(job: TrainJob, kind: LayerKind) -> float:
    """Bytes one layer keeps for backward per micro-batch on one GPU (see module doc)."""
    m, par, r = job.model, job.parallel, job.recipe
    t = par.tp
    s = job.seq_len / par.cp
    b = job.micro_batch
    h = m.hidden_size
    amp = r.precision == "amp"
    resid = 4.0 if amp else 2.0  # autocast keeps the residual stream (norm inputs) in fp32
    if job.recompute == "full":
        return resid * s * b * h / (t if par.sequence_parallel else 1)
    mask = 1.0 if r.dropout else 0.0
    # outside the TP regions: 2 norm inputs, QKV input, MLP input (16-bit), 2 dropout masks
    outside = 2 * resid * h + 2 * h + 2 * h + 2 * mask * h
    kv_w = m.num_kv_heads * m.head_dim
    inside = 2 * (m.q_width + kv_w)  # Q and K
    inside += 2 * m.num_kv_heads * m.value_head_dim  # V
    inside += 2 * m.num_heads * m.value_head_dim  # output-projection input
    if amp:  # eager PyTorch: the attention kernel's own output and its head-merged copy
        inside += 2 * m.num_heads * m.value_head_dim
    if kind == "moe":
        k = m.num_experts_per_tok
        f = m.moe_intermediate_size
        per_expert = (8 * f if m.mlp_gated else 4 * f)
        inside += k * (2 * h + per_expert)  # tokens dispatched to this rank (balanced routing)
        outside += 4 * m.num_experts  # fp32 router logits
        if m.shared_ffn_size:
            inside += 8 * m.shared_ffn_size if m.mlp_gated else 4 * m.shared_ffn_size
    else:
        f = m.intermediate_size
        inside += 8 * f if m.mlp_gated else 4 * f
    per_token = outside / (t if par.sequence_parallel else 1) + inside / t
    if r.attention == "eager":
        if job.recompute != "selective":
            # softmax output (2), its dropout mask (1) and dropout output (2) per (head, key)
            per_token += (2 + 3 * mask) * m.num_heads * job.seq_len / t
    else:
        per_token += 4.0 * m.num_heads / t  # flash attention's fp32 log-sum-exp
    return s * b * per_token


@dataclass(frozen=True, slots=True)
class MemoryBreakdown:
    """Peak bytes on one GPU of ``stage``; ``host_bytes``/``nvme_bytes`` are offloaded state."""

    stage: int
    weights_bytes: float
    grads_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    embedding_logits_bytes: float
    comm_buffers_bytes: float
    fragmentation_bytes: float
    context_bytes: float
    host_bytes: float
    nvme_bytes: float
    weight_copies_bytes: float = 0.0
    """bf16 copies of fp32 weights that autocast keeps for backward (``amp`` only)."""

    @property
    def params_and_optimizer_bytes(self) -> float:
        return self.weights_bytes + self.grads_bytes + self.optimizer_bytes

    @property
    def allocated_bytes(self) -> float:
        """Peak tensor bytes (what ``torch.cuda.max_memory_allocated`` reports)."""
        return (self.params_and_optimizer_bytes + self.activations_bytes
                + self.embedding_logits_bytes + self.comm_buffers_bytes + self.weight_copies_bytes)

    @property
    def reserved_bytes(self) -> float:
        """Allocated plus allocator fragmentation (``max_memory_reserved``)."""
        return self.allocated_bytes + self.fragmentation_bytes

    @property
    def total_bytes(self) -> float:
        """Reserved plus CUDA context: what must fit in HBM."""
        return self.reserved_bytes + self.context_bytes

    def as_dict(self) -> dict[str, float]:
        d = asdict(self)
        d.update(params_and_optimizer_bytes=self.params_and_optimizer_bytes,
                 allocated_bytes=self.allocated_bytes, reserved_bytes=self.reserved_bytes,
                 total_bytes=self.total_bytes)
        return d


def stage_memory(job: TrainJob, stage: int, in_flight_chunks: int) -> MemoryBreakdown:
    """Memory of one GPU of ``stage`` holding ``in_flight_chunks`` chunks' activations."""
    m, par = job.model, job.parallel
    sb = state_bytes(job)
    z = job.zero_stage
    dense, expert = stage_params(job, stage)
    shard_d = par.dp * par.cp
    shard_e = max(1, shard_d // par.ep)

    def sharded(per_param: float, level: int) -> float:
        if z >= level:
            return per_param * (dense / shard_d + expert / shard_e)
        return per_param * (dense + expert)

    weights = sharded(sb.weights, 3)
    grads = sharded(sb.grads, 2)
    optim = sharded(sb.master + sb.adam, 1)
    host = nvme = 0.0
    chunks = chunk_layers(job)[stage]
    layers = [i for c in chunks for i in c]
    per_layer_params = max(sum(layer_params_split(m, m.layer_kinds[i])) for i in layers) / par.tp
    comm = 0.0
    if z >= 3:  # gathered 16-bit weights of the current and the prefetched layer
        comm += 2 * per_layer_params * 2.0
    if job.offload_optimizer is not None:
        if job.offload_optimizer == "cpu":
            host += optim
        else:
            nvme += optim
        optim = 0.0
    if job.offload_params is not None:
        if job.offload_params == "cpu":
            host += weights
        else:
            nvme += weights
        weights = 0.0
    s_loc, b, h = job.seq_len / par.cp, job.micro_batch, m.hidden_size
    if par.tp > 1:  # all-gathered activation buffer of sequence parallelism / TP
        comm += 2 * s_loc * b * h
    per_layer = sum(activation_bytes_per_layer(job, m.layer_kinds[i]) for i in layers) / len(layers)
    chunk_size = len(layers) / len(chunks)
    activations = in_flight_chunks * chunk_size * per_layer
    if job.recompute == "full":  # one layer rematerialised during its backward
        activations += max(activation_bytes_per_layer(job.model_copy(update={"recompute": "none"}), k)
                           for k in {m.layer_kinds[i] for i in layers})
    amp = job.recipe.precision == "amp"
    sp_div = par.tp if par.sequence_parallel else 1
    emb = 0.0
    if stage == 0 and job.recipe.dropout:  # embedding dropout mask per in-flight micro-batch
        emb += (in_flight_chunks / len(chunks)) * s_loc * b * h / sp_div
    if stage == par.pp - 1:
        emb += (4.0 + 2.0 if amp else 2.0) * s_loc * b * h / sp_div  # final norm and head inputs
        per_logit = AMP_LOGITS_BYTES_PER_ELEMENT if amp else LOGITS_BYTES_PER_ELEMENT
        emb += per_logit * s_loc * b * m.vocab_size / par.tp
    if amp:
        return _amp_peak(job, stage, layers, weights, grads, optim, activations, emb, comm, host, nvme)
    alloc = weights + grads + optim + activations + emb + comm
    return MemoryBreakdown(
        stage=stage, weights_bytes=weights, grads_bytes=grads, optimizer_bytes=optim,
        activations_bytes=activations, embedding_logits_bytes=emb, comm_buffers_bytes=comm,
        fragmentation_bytes=FRAGMENTATION_MARGIN * alloc, context_bytes=CUDA_CONTEXT_BYTES,
        host_bytes=host, nvme_bytes=nvme,
    )


def _amp_peak(job: TrainJob, stage: int, layers: list[int], weights: float, grads: float,
              optim: float, activations: float, emb: float, comm: float, host: float,
              nvme: float) -> MemoryBreakdown:
    """Peak of the PyTorch eager recipe (``precision="amp"``): gradients are allocated during
    backward (``zero_grad(set_to_none=True)``) as activations are freed, so the peak is the
    larger of the start of backward (all activations, the logits' loss buffers and the bf16
    weight copies autocast saved for backward) and the end of backward (all gradients).
    With data parallelism, DDP's gradient buckets are a second copy of the fp32 gradients."""
    from .flops import layer_matmul_weights

    m, par = job.model, job.parallel
    matmul = sum(layer_matmul_weights(m, m.layer_kinds[i]) for i in layers)
    if stage == par.pp - 1:
        matmul += m.vocab_size * m.hidden_size
    copies = 2.0 * matmul / par.tp
    if par.dp * par.cp > 1 and job.zero_stage == 0:
        comm += grads
    start = weights + optim + comm + copies + activations + emb
    end = weights + optim + comm + grads
    if start >= end:
        grads = 0.0
    else:
        activations = emb = copies = 0.0
    alloc = max(start, end)
    return MemoryBreakdown(
        stage=stage, weights_bytes=weights, grads_bytes=grads, optimizer_bytes=optim,
        activations_bytes=activations, embedding_logits_bytes=emb, comm_buffers_bytes=comm,
        fragmentation_bytes=FRAGMENTATION_MARGIN * alloc, context_bytes=CUDA_CONTEXT_BYTES,
        host_bytes=host, nvme_bytes=nvme, weight_copies_bytes=copies,
    )


def check_capacity(job: TrainJob, mem: MemoryBreakdown, hbm_bytes: float) -> None:
    """Raise ``InfeasibleError`` with the breakdown when ``mem`` does not fit in HBM or the
    offloaded state does not fit in host memory / NVMe of a node."""
    if mem.total_bytes > hbm_bytes:
        parts = ", ".join(
            f"{k.removesuffix('_bytes')} {v / GIB:.1f}"
            for k, v in mem.as_dict().items()
            if k.endswith("_bytes") and k not in ("host_bytes", "nvme_bytes") and v > 0
        )
        raise InfeasibleError(
            f"stage {mem.stage} needs {mem.total_bytes / GIB:.1f} GiB per GPU > "
            f"{hbm_bytes / GIB:.1f} GiB HBM (GiB: {parts})"
        )
    pool = job.cluster.pools[job.pool]
    per_node = pool.gpus_per_node or pool.node.gpus_per_node
    if mem.host_bytes * per_node > pool.node.host_memory_bytes:
        raise InfeasibleError(
            f"offloaded state {mem.host_bytes * per_node / GIB:.0f} GiB per node > host memory "
            f"{pool.node.host_memory_bytes / GIB:.0f} GiB of {pool.node.name!r}"
        )
    if mem.nvme_bytes * per_node > pool.node.nvme_bytes:
        raise InfeasibleError(
            f"offloaded state {mem.nvme_bytes * per_node / GIB:.0f} GiB per node > NVMe "
            f"{pool.node.nvme_bytes / GIB:.0f} GiB of {pool.node.name!r}"
        )
