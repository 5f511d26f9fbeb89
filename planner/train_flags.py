"""What a chosen training plan hands over, beside the engine settings of ``planner.flags``.

The Megatron-LM arguments and the torchtitan config are ``planner.flags``' (``megatron_args``,
``torchtitan_toml``: the one flag mapping); this module only builds their ``TrainingLayout``
from a planned job (``training_layout``), says what those settings cannot express
(``setting_notes``: uneven pipeline stages, ZeRO-2, what is offloaded) and explains the
bottleneck of the plan's simulated step (``explain``).
"""

from __future__ import annotations

from fleetsim.sim.training.job import TrainJob

from .flags import TrainingLayout
from .training import TrainEvaluation


def training_layout(job: TrainJob) -> TrainingLayout:
    """The engine-settings record of a planned job (``planner.flags.TrainingLayout``).
    ``offload`` is on when anything is offloaded (Megatron-LM's ``--optimizer-cpu-offload``;
    what else moves is in ``setting_notes``)."""
    p = job.parallel
    return TrainingLayout(model=job.model.name, tp=p.tp, pp=p.pp, dp=p.dp, cp=p.cp, ep=p.ep, vpp=p.vpp,
                          micro_batch=job.micro_batch, global_batch=job.global_batch, seq_len=job.seq_len,
                          recompute=job.recompute, zero=job.zero_stage,  # type: ignore[arg-type]
                          offload=bool(job.offload_optimizer or job.offload_params), dtype=job.recipe.dtype)


def setting_notes(job: TrainJob) -> list[str]:
    """What the plan does that its Megatron-LM / torchtitan settings do not say by themselves."""
    p = job.parallel
    notes = []
    if p.layer_split is not None and len(set(p.layer_split)) > 1:
        split = "/".join(map(str, p.layer_split))
        first, last, mid = p.layer_split[0], p.layer_split[-1], set(p.layer_split[1:-1])
        if len(mid) <= 1:
            notes.append(f"uneven stages {split}: add --decoder-first-pipeline-num-layers {first} "
                         f"--decoder-last-pipeline-num-layers {last}")
        else:
            notes.append(f"uneven stages {split}: Megatron-LM sets only the first and last stage's layers; "
                         "use a custom pipeline layout")
    if job.overlap_grad_reduce and p.dp * p.cp > 1:
        notes.append("the simulated step overlaps the gradient reduction with the backward: add "
                     "--overlap-grad-reduce (Megatron-LM)")
    if job.zero_stage == 2:
        notes.append("ZeRO-2 has no Megatron-LM flag: the distributed optimizer (ZeRO-1) is the closest")
    if job.offload_params:
        notes.append(f"parameters offloaded to {job.offload_params} as well as the optimizer: torchtitan's "
                     "FSDP2 CPUOffloadPolicy; Megatron-LM offloads only the optimizer")
    elif job.offload_optimizer == "nvme":
        notes.append("optimizer offloaded to NVMe: neither engine has a flag for it (DeepSpeed ZeRO-Infinity does)")
    return notes


def explain(ev: TrainEvaluation, job: TrainJob) -> list[str]:
    """Where the best plan's step goes, its largest overhead named as the bottleneck, and the
    memory-forced choices (the search keeps the least recomputation / ZeRO that fits)."""
    b = ev.breakdown
    step = ev.time_s
    compute = b.get("compute_s", 0.0)
    hfu = b.get("hfu", ev.mfu)
    recompute_s = compute * (1.0 - ev.mfu / hfu) if hfu > 0 else 0.0
    terms = {
        "pipeline bubble": b.get("bubble_fraction", 0.0) * compute,
        "exposed communication": b.get("exposed_comm_s", 0.0),
        "recomputation": recompute_s,
        "optimizer step": b.get("optimizer_s", 0.0),
        "host dispatch": b.get("host_bound_s", 0.0),
        "stage imbalance": b.get("stage_imbalance_s", 0.0),
    }
    useful = max(0.0, compute - recompute_s)
    lines = [f"step {step:.3f} s, MFU {ev.mfu:.1%}; busiest stage computes {compute:.3f} s "
             f"({compute / step:.0%} of the step), of it useful model FLOPs {useful:.3f} s"]
    for k, v in sorted(terms.items(), key=lambda kv: -kv[1]):
        if v > 0:
            lines.append(f"  {k}: {v:.3f} s ({v / step:.1%} of the step)")
    worst, worst_s = max(terms.items(), key=lambda kv: kv[1])
    if worst_s < 0.05 * step:
        lines.append("bottleneck: compute (every overhead is under 5% of the step)")
    else:
        lines.append(f"bottleneck: {worst} ({worst_s / step:.0%} of the step)")
    c = ev.candidate
    mem = []
    if c.recompute != "none":
        mem.append(f"recompute={c.recompute} (less recomputation does not fit this layout's memory)")
    if c.zero >= 2:
        mem.append(f"ZeRO-{c.zero} (ZeRO-1 needs recomputation or does not fit)")
    if c.offload_optimizer or c.offload_params:
        mem.append("offload (nothing else fits this layout)")
    lines.append(f"peak memory {ev.peak_memory_bytes / 2**30:.1f} GiB per GPU"
                 + ("; memory-bound choices: " + "; ".join(mem) if mem else "; no memory-forced choice"))
    return lines
