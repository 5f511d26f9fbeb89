"""What a chosen training plan hands over: Megatron-LM arguments, a torchtitan-style config,
and the bottleneck of its simulated step.

Megatron-LM flag names are those of ``megatron/training/arguments.py``; the torchtitan keys
those of its ``job_config`` sections (``[parallelism]``, ``[training]``,
``[activation_checkpoint]``). Both describe the same job that was priced.
"""

from __future__ import annotations

from fleetsim.sim.training.job import TrainJob

from .training import TrainEvaluation


def megatron_args(job: TrainJob) -> list[str]:
    """Megatron-LM command-line arguments of ``job``'s layout and recipe."""
    p, m = job.parallel, job.model
    args = [f"--tensor-model-parallel-size {p.tp}", f"--pipeline-model-parallel-size {p.pp}"]
    if p.cp > 1:
        args.append(f"--context-parallel-size {p.cp}")
    if p.ep > 1:
        args.append(f"--expert-model-parallel-size {p.ep}")
    if p.vpp > 1:
        args.append(f"--num-layers-per-virtual-pipeline-stage {m.num_layers // (p.pp * p.vpp)}")
    if p.layer_split is not None and len(set(p.layer_split)) > 1:
        first, last = p.layer_split[0], p.layer_split[-1]
        mid = set(p.layer_split[1:-1])
        if len(mid) <= 1:
            args += [f"--decoder-first-pipeline-num-layers {first}", f"--decoder-last-pipeline-num-layers {last}"]
        else:
            args.append("# uneven stages " + "/".join(map(str, p.layer_split))
                        + ": Megatron-LM sets only the first and last stage; use a custom pipeline layout")
    if p.sequence_parallel:
        args.append("--sequence-parallel")
    args += [f"--micro-batch-size {job.micro_batch}", f"--global-batch-size {job.global_batch}",
             f"--seq-length {job.seq_len}", f"--num-layers {m.num_layers}", f"--hidden-size {m.hidden_size}",
             f"--num-attention-heads {m.num_heads}"]
    if job.recompute == "selective":
        args.append("--recompute-granularity selective")
    elif job.recompute == "full":
        args += ["--recompute-granularity full", "--recompute-method uniform", "--recompute-num-layers 1"]
    z = job.zero_stage
    if z == 1 or z == 2:
        args.append("--use-distributed-optimizer")
        if z == 2:
            args.append("# ZeRO-2 has no Megatron-LM flag: the distributed optimizer (ZeRO-1) is the closest")
    elif z == 3:
        args.append("--use-torch-fsdp2")
    if job.offload_optimizer == "cpu":
        args += ["--optimizer-cpu-offload", "--overlap-cpu-optimizer-d2h-h2d"]
    if job.recipe.dtype == "fp16":
        args.append("--fp16")
    else:
        args.append("--bf16")
        if job.recipe.dtype == "fp8":
            args.append("--fp8-format hybrid")
    if job.overlap_grad_reduce and p.dp * p.cp > 1:
        args.append("--overlap-grad-reduce")
    return args


def torchtitan_toml(job: TrainJob) -> str:
    """A torchtitan-style job config (TOML text) of ``job``'s layout and recipe."""
    p = job.parallel
    shard = p.dp if job.zero_stage >= 3 else 1
    replicate = p.dp // shard
    schedule = "Interleaved1F1B" if p.vpp > 1 else "1F1B"
    ac = {"none": "none", "selective": "selective", "full": "full"}[job.recompute]
    lines = [
        "[training]",
        f"global_batch_size = {job.global_batch}",
        f"local_batch_size = {job.global_batch // p.dp}",
        f"seq_len = {job.seq_len}",
        f'mixed_precision_param = "{"float16" if job.recipe.dtype == "fp16" else "bfloat16"}"',
        "",
        "[parallelism]",
        f"data_parallel_replicate_degree = {replicate}",
        f"data_parallel_shard_degree = {shard}",
        f"tensor_parallel_degree = {p.tp}",
        f"context_parallel_degree = {p.cp}",
        f"pipeline_parallel_degree = {p.pp}",
        f"expert_parallel_degree = {p.ep}",
        f'pipeline_parallel_schedule = "{schedule}"',
        f"pipeline_parallel_microbatch_size = {job.micro_batch}",
        f"enable_async_tensor_parallel = {'true' if p.sequence_parallel else 'false'}",
        "",
        "[activation_checkpoint]",
        f'mode = "{ac}"',
    ]
    if job.offload_optimizer or job.offload_params:
        lines += ["", "# offload: torchtitan has no optimizer offload key; FSDP2 CPUOffloadPolicy moves "
                  "parameters, gradients and optimizer state to the host"]
    return "\n".join(lines) + "\n"


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
