"""One training step: price the per-layer operators once, lay out the pipeline, simulate.

``simulate_step(job)`` validates the job, computes the per-GPU memory of every pipeline
stage (raising ``InfeasibleError`` with the breakdown when it does not fit), prices each
distinct layer kind once with the cost model, groups layers into units, builds the stage
op orders of the schedule and runs the SimPy engine. The result carries the step time,
the MFU/HFU, the bubble fraction and exposed communication that emerged, the memory
breakdown and the timeline events.

Optimizer step (AdamW) is memory-bound: per parameter of the local optimizer shard it reads
the fp32 master weight, both moments and the gradient and writes master, moments and the
16-bit weight (26 bytes + gradient bytes; 28 bytes with ``amp``), priced as one elementwise
kernel by the cost model. With ``offload_optimizer`` (ZeRO-Offload) the gradients go to the
host over the host link, the CPU runs Adam at the host memory tier's bandwidth shared by the
node's GPUs, and the new 16-bit weights come back; ``nvme`` (ZeRO-Infinity) also streams the
fp32 optimizer state (12 bytes/parameter) in and out of the node's NVMe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fleetsim.calibration.engines import EngineProfile
from fleetsim.calibration.launch import Dispatch, from_kernels
from fleetsim.calibration.ops import ElementwiseOp, MemcpyOp
from fleetsim.calibration.power import PowerState, op_peaks, power_state
from fleetsim.hardware.specs import GPUSpec

from . import dispatch as dsp
from .energy import StepEnergy, step_energy
from .engine import EngineResult, EngineSpec, Unit, run_engine
from .flops import hardware_flops, model_flops
from .job import TrainJob, chunk_layers, validate_job
from .layer_ops import Kernels, LayerCoster
from .memory import MemoryBreakdown, check_capacity, stage_memory, stage_params, state_bytes
from .placement import CollectivePricer
from .schedule import max_in_flight, stage_orders

MAX_UNITS_PER_CHUNK = 16
"""Layers of a chunk are grouped into at most this many units (gather/bucket granularity)."""
HOST_MEMORY_TIER = "DDR5-host"
"""Memory tier whose bandwidth prices the CPU optimizer step under ZeRO-Offload."""


def comm_slowdown_of(engine: EngineProfile) -> float:
    """Compute slowdown while a data-parallel collective overlaps it: compute runs at
    ``1 / (1 + s)`` of its speed for the collective's duration (NCCL's blocks share the SMs
    and HBM). The profile's fitted ``training.comm_slowdown`` (its fit data named there), 0
    when the profile gives none."""
    assert engine.training is not None
    fitted = engine.training.comm_slowdown
    return 0.0 if fitted is None else fitted.value


@dataclass
class StepResult:
    """Outcome of ``simulate_step``; times in seconds, memory in bytes."""

    job: TrainJob
    gpu: GPUSpec
    step_s: float
    engine: EngineResult
    memory: list[MemoryBreakdown]
    model_flops: float
    hardware_flops: float
    mfu: float
    hfu: float
    bubble_fraction: float
    exposed_comm_s: float
    tp_comm_s: float
    optimizer_s: float
    stage_compute_s: list[float]
    sources: dict[str, int] = field(default_factory=dict)
    energy: StepEnergy | None = None

    @property
    def peak_memory(self) -> MemoryBreakdown:
        return max(self.memory, key=lambda mb: mb.total_bytes)


def _default_gpu_and_cost(job: TrainJob, gpu: GPUSpec | None, cost: Any) -> tuple[GPUSpec, Any]:
    if gpu is None:
        from fleetsim.hardware.catalog import get_gpu

        gpu = get_gpu(job.cluster.pools[job.pool].node.gpu)
    if cost is None:
        from fleetsim.calibration import get_cost_model

        cost = get_cost_model(gpu)
    return gpu, cost


def _units(job: TrainJob, coster: LayerCoster, launch_s: float | None
           ) -> tuple[list[list[list[Unit]]], float, float, int]:
    """Units per [stage][chunk], plus (TP/CP/EP comm, recompute) seconds per micro-batch of
    the busiest stage and the most parameter tensors on a stage. ``launch_s`` is the host's
    eager launch interval (None: no host dispatch term, i.e. CUDA-graph execution)."""
    m, par = job.model, job.parallel
    sb = state_bytes(job)
    layout = chunk_layers(job)
    last_g = par.pp * par.vpp - 1
    out: list[list[list[Unit]]] = []
    comm_worst = 0.0
    tensors_worst = 0
    ddp = job.recipe.precision == "amp" and par.dp * par.cp > 1 and job.zero_stage == 0
    eager = launch_s is not None
    layer_disp: dict[tuple[str, bool], tuple[Dispatch, Dispatch]] = {}

    def disp(k: Kernels) -> Dispatch:
        assert launch_s is not None
        return from_kernels(k.host_intervals() * launch_s, k.device)

    def layer_dispatch(kind: str, local: bool) -> tuple[Dispatch, Dispatch]:
        hit = layer_disp.get((kind, local))
        if hit is None:
            lt = coster.layer(kind, local)
            assert lt.fwd_kernels is not None and lt.bwd_kernels is not None
            hit = layer_disp[(kind, local)] = (disp(lt.fwd_kernels), disp(lt.bwd_kernels))
        return hit

    def ddp_copy(params: float) -> tuple[float, float]:
        """(seconds, joules): PyTorch DDP (``gradient_as_bucket_view=False``) copies each fp32
        gradient into its bucket and divides it by the world size before the all-reduce:
        2 x (read 4 + write 4) bytes per parameter on the compute stream."""
        if not ddp or params <= 0:
            return 0.0, 0.0
        return coster.streaming("ddp_bucket_copy", params, 16.0)
    for s in range(par.pp):
        chunks: list[list[Unit]] = []
        comm_s = 0.0
        tensors_s = 0
        for k, rng in enumerate(layout[s]):
            g = k * par.pp + s
            layers = list(rng)
            n_units = min(MAX_UNITS_PER_CHUNK, len(layers))
            units: list[Unit] = []
            for u in range(n_units):
                sel = layers[u * len(layers) // n_units:(u + 1) * len(layers) // n_units]
                f = b = params = fj = bj = 0.0
                tensors = 0
                fd, bd = Dispatch(), Dispatch()
                runs: list[tuple[tuple[str, bool], int]] = []
                for i in sel:
                    key = (m.layer_kinds[i], m.is_local_layer(i))
                    lt = coster.layer(*key)
                    f += lt.fwd_s
                    b += lt.bwd_s
                    fj += lt.fwd_j
                    bj += lt.bwd_j
                    params += lt.params_local
                    tensors += lt.param_tensors
                    comm_s += lt.comm_fwd_s + lt.comm_bwd_s
                    if runs and runs[-1][0] == key:
                        runs[-1] = (key, runs[-1][1] + 1)
                    else:
                        runs.append((key, 1))
                if eager:
                    for key, n in runs:
                        lf, lb = layer_dispatch(*key)
                        fd, bd = fd.then(lf.repeat(n)), lb.repeat(n).then(bd)
                first, last = g == 0 and u == 0, g == last_g and u == n_units - 1
                if first:
                    (ef, efj), (eb, ebj) = coster.embedding_priced()
                    f, b, fj, bj = f + ef, b + eb, fj + efj, bj + ebj
                    params += m.embedding_params() / par.tp
                    tensors += 2
                if last:
                    (hf, hfj), (hb, hbj), _ = coster.head_priced()
                    f, b, fj, bj = f + hf, b + hb, fj + hfj, bj + hbj
                    head = m.lm_head_params() or (m.vocab_size * m.hidden_size if par.pp > 1 else 0)
                    params += (head + m.final_norm_params()) / par.tp
                    tensors += 2 + int(bool(m.lm_head_params()))
                extra, extra_j = ddp_copy(params)
                if eager:
                    if first or last:
                        kf_, kb_ = coster.edge_kernels(first, last)
                        ef_d, eb_d = disp(kf_), disp(kb_)
                        if first:  # embedding first in forward, last in backward
                            fd, bd = ef_d.then(fd), bd.then(eb_d)
                        else:  # head last in forward, first in backward
                            fd, bd = fd.then(ef_d), eb_d.then(bd)
                    rd = disp(Kernels.build([(dsp.DDP_KERNELS_PER_TENSOR * tensors, 0.0, extra)])) if ddp else None
                    units.append(Unit(f, b, params * sb.weights, params * sb.grads, extra, fd, bd, rd,
                                      fwd_j=fj, bwd_j=bj, reduce_extra_j=extra_j))
                else:
                    units.append(Unit(f, b, params * sb.weights, params * sb.grads, extra,
                                      fwd_j=fj, bwd_j=bj, reduce_extra_j=extra_j))
                tensors_s += tensors
            chunks.append(units)
        out.append(chunks)
        comm_worst = max(comm_worst, comm_s)
        tensors_worst = max(tensors_worst, tensors_s)
    return out, comm_worst, 0.0, tensors_worst


def _optimizer(job: TrainJob, gpu: GPUSpec, cost: Any, stage: int, power: PowerState,
               kf: float = 1.0) -> tuple[float, float, float]:
    """(seconds, board joules, GPU kernel seconds) of the optimizer step of ``stage``, every
    kernel time scaled by ``kf`` and by the power cap's time factor. Under offload the GPU
    only copies (DMA engines) while the CPU runs Adam: no kernel seconds, all at gap power."""
    par, sb, node = job.parallel, state_bytes(job), job.cluster.pools[job.pool].node
    dense, expert = stage_params(job, stage)
    if job.zero_stage >= 1:
        n = dense / (par.dp * par.cp) + expert / max(1, par.dp * par.cp // par.ep)
    else:
        n = dense + expert
    if job.offload_optimizer is None:
        bpp = 28.0 if job.recipe.precision == "amp" else 26.0 + sb.grads
        op = ElementwiseOp("adamw", "adamw_fused", max(1, int(n)), n * bpp, 12.0 * n, "fp32")
        ops = [op]
        if job.recipe.precision == "amp" and par.dp * par.cp > 1 and job.zero_stage == 0:
            # DDP copies the reduced bucket back into each .grad (read 4, write 4)
            ops.append(ElementwiseOp("ddp_grad_copy", "residual_add", max(1, int(n)), 8.0 * n, 0.0, "bf16"))
        t, _ = cost.op_times(ops, gpu)
        t = np.asarray(t, float)
        flops = np.fromiter((op.flops for op in ops), float, len(ops))
        moved = np.fromiter((op.bytes_moved for op in ops), float, len(ops))
        slow, watts = power.kernels(gpu, flops, moved, op_peaks(ops, gpu), kf * t)
        secs = kf * float((t * slow).sum())
        return secs, power.limited_j(kf * float((t * slow * watts).sum()), secs), secs
    from fleetsim.hardware.catalog import get_memory_tier

    pool = job.cluster.pools[job.pool]
    per_node = pool.gpus_per_node or node.gpus_per_node
    copies = [MemcpyOp("grads_d2h", "d2h", n * sb.grads), MemcpyOp("params_h2d", "h2d", n * 2.0)]
    t_copy, _ = cost.op_times(copies, gpu)
    ddr = get_memory_tier(HOST_MEMORY_TIER)
    cpu_adam = n * (12.0 + sb.grads + 14.0) / (ddr.bandwidth_bps / per_node)
    nvme = 0.0
    if job.offload_optimizer == "nvme":
        nvme = n * 24.0 / (node.nvme_bw_bps / per_node)
    return kf * (float(t_copy.sum()) + cpu_adam + nvme), 0.0, 0.0


def stage_memories(job: TrainJob) -> list[MemoryBreakdown]:
    """Memory of every pipeline stage, activations held as the schedule dictates."""
    validate_job(job)
    par = job.parallel
    orders = stage_orders(job.schedule, par.pp, job.grad_accum, par.vpp)
    return [stage_memory(job, s, max_in_flight(orders[s])) for s in range(par.pp)]


def simulate_step(job: TrainJob, gpu: GPUSpec | None = None, cost: Any = None, *,
                  record: bool = True, check_memory: bool = True,
                  comm_slowdown: float | None = None,
                  kernel_factor: float | None = None) -> StepResult:
    """Simulate one optimizer step of ``job`` (see module doc). Kernel times are the cost
    model's (burst) times: the profile's 10-second sustained-load slowdown
    (``sustained.csv``, x1.15-1.20 for large bf16 GEMMs at the 700 W cap) is NOT applied,
    because a training step is not continuous GEMM load. MEASURED
    (``calibration/validation/H100-SXM/train_kernels.csv``, 2.7B model, micro-batch 2): the
    step's backward GEMMs ran at 1.07x and its forward GEMMs (bias epilogue) at 1.16x their
    burst prices, and over all 71 measured single-GPU and DDP rows the summed kernel time is
    predicted within 6% (mean) from burst prices, against 15-21% too slow with the sustained
    ratios. ``kernel_factor`` scales every kernel uniformly (sensitivity studies).
    ``comm_slowdown``: compute slowdown under an overlapped data-parallel collective (None:
    the job's engine profile's ``training.comm_slowdown``, see ``comm_slowdown_of``). Board
    energy (``energy.py``) under the job's ``power_cap_w``, whose time factor also slows
    every kernel when below the TDP."""
    validate_job(job)
    gpu, cost = _default_gpu_and_cost(job, gpu, cost)
    if comm_slowdown is None:
        comm_slowdown = comm_slowdown_of(job.engine)
    par = job.parallel
    m_mb = job.grad_accum
    orders = stage_orders(job.schedule, par.pp, m_mb, par.vpp)
    memory = [stage_memory(job, s, max_in_flight(orders[s])) for s in range(par.pp)]
    if check_memory:
        check_capacity(job, max(memory, key=lambda x: x.total_bytes), gpu.memory_bytes)
    pricer = CollectivePricer(job, gpu, cost)
    kf = 1.0 if kernel_factor is None else kernel_factor
    power = power_state(gpu, job.power_cap_w)
    coster = LayerCoster(job, gpu, cost, pricer, kf, power)
    launch_s = dsp.launch_interval_s(cost, gpu) if job.execution == "eager" else None
    units, tp_comm_mb, _, n_tensors = _units(job, coster, launch_s)

    z = job.zero_stage
    dp_group = par.dp * par.cp
    sb = state_bytes(job)
    dp_reduce = None
    zero3_gather = None
    post: list[float] = []
    if dp_group > 1:
        kind = "all_reduce" if z == 0 else "reduce_scatter"

        def dp_reduce(nbytes: float) -> float:
            return pricer.time(kind, nbytes, "dpcp")  # type: ignore[arg-type]

        if z == 3:
            offload_tier = job.offload_params

            def zero3_gather(nbytes: float) -> float:
                t = pricer.time("all_gather", nbytes, "dpcp")
                if offload_tier is not None:  # fetch the local shard from host / NVMe first
                    shard = nbytes / dp_group
                    t += float(cost.op_times([MemcpyOp("param_h2d", "h2d", shard)], gpu)[0][0])
                    if offload_tier == "nvme":
                        node = job.cluster.pools[job.pool].node
                        t += shard / (node.nvme_bw_bps / (job.cluster.pools[job.pool].gpus_per_node or node.gpus_per_node))
                return t
        elif z in (1, 2):
            for s in range(par.pp):
                dense, expert = stage_params(job, s)
                post.append(pricer.time("all_gather", (dense + expert) * sb.weights, "dpcp"))
    opt_priced = [_optimizer(job, gpu, cost, s, power, kf) for s in range(par.pp)]
    opt = [o[0] for o in opt_priced]
    spec = EngineSpec(
        p=par.pp, v=par.vpp, m=m_mb, orders=orders, units=units,
        p2p_s=pricer.p2p_time(2.0 * job.micro_batch * job.seq_len / par.cp * job.model.hidden_size
                              / (par.tp if par.sequence_parallel else 1)),
        dp_reduce=dp_reduce, grad_sync_every_mb=z >= 2, zero3_gather=zero3_gather,
        bucket_bytes=job.grad_bucket_bytes, overlap_grad_reduce=job.overlap_grad_reduce,
        optimizer_s=opt, post_step_comm_s=post, optimizer_j=[o[1] for o in opt_priced],
        optimizer_kernel_s=[o[2] for o in opt_priced],
        optimizer_dispatch=None if launch_s is None else [
            Dispatch(h, o, h + o) for o in opt
            for h in [dsp.OPTIMIZER_HOST_RATIO_PER_TENSOR * n_tensors * launch_s]], comm_slowdown=comm_slowdown, record=record,
    )
    eng = run_engine(spec)
    mf = model_flops(job.model, job.global_batch, job.seq_len)
    hf = hardware_flops(job.model, job.global_batch, job.seq_len, job.recompute)
    peak = gpu.flops(job.recipe.dtype)
    denom = eng.step_s * par.world_size * peak
    busy = [st.busy_s for st in eng.stages]
    span = max(st.pipeline_end_s for st in eng.stages)
    # bubble: pipeline idle of the busiest stage (waits for activations/gradients plus the
    # drain after its last backward), over its busy time; lighter stages idle longer, which
    # is stage imbalance (reported apart); communication waits are not bubble
    top = max(range(len(busy)), key=busy.__getitem__)
    st_top = eng.stages[top]
    idle = st_top.pipeline_wait_s + span - st_top.pipeline_end_s
    bubble = idle / busy[top] if busy[top] > 0 else 0.0
    exposed = max(st.comm_wait_s for st in eng.stages) + tp_comm_mb * m_mb
    sources = dict(coster.sources)
    for name, n in pricer.sources.items():
        sources[name] = sources.get(name, 0) + n
    return StepResult(
        job=job, gpu=gpu, step_s=eng.step_s, engine=eng, memory=memory,
        model_flops=mf, hardware_flops=hf, mfu=mf / denom, hfu=hf / denom,
        bubble_fraction=bubble, exposed_comm_s=exposed, tp_comm_s=tp_comm_mb * m_mb,
        optimizer_s=max(opt) if opt else 0.0, stage_compute_s=busy, sources=sources,
        energy=step_energy(eng, power, par.world_size),
    )
