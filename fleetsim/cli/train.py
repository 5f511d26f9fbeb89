"""``fleetsim train``: estimate one training step (time, MFU, memory) and the cost of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from fleetsim.cli.table import print_frame


def _offload(text: str) -> str | None:
    return None if text == "none" else text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="simulate one training step of a model on a cluster",
        description="Simulate one optimizer step (pipeline schedule, TP/PP/DP/CP/EP, ZeRO, "
        "recomputation, offload) and print step time, throughput, MFU/HFU, bubble, exposed "
        "communication and the per-GPU memory breakdown.",
    )
    p.add_argument("--model", required=True, help="catalog name, HF config.json path or directory")
    p.add_argument("--cluster", required=True, help="shorthand such as 2xH200-SXM or 64xA100-80GB, or a YAML path")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--dp", type=int, default=None, help="default: the GPUs left by tp*cp*pp")
    p.add_argument("--cp", type=int, default=1, help="context parallel degree (ring attention)")
    p.add_argument("--ep", type=int, default=1, help="expert parallel degree (divides dp)")
    p.add_argument("--vpp", type=int, default=1, help="virtual pipeline stages (interleaved schedule)")
    p.add_argument("--sp", action="store_true", help="Megatron sequence parallelism")
    p.add_argument("--micro-batch", type=int, default=1, help="sequences per micro-batch")
    p.add_argument("--global-batch", type=int, required=True, help="sequences per optimizer step")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--recompute", choices=("none", "selective", "full"), default="none")
    p.add_argument("--zero", type=int, choices=(0, 1, 2, 3), default=0)
    p.add_argument("--fsdp", action="store_true", help="PyTorch FSDP full sharding (ZeRO-3 data flow)")
    p.add_argument("--schedule", choices=("gpipe", "1f1b", "interleaved"), default="1f1b")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp8"), default="bf16")
    p.add_argument("--precision", choices=("mixed", "amp"), default="mixed",
                   help="mixed: 16-bit weights + fp32 master (18 B/param); amp: fp32 weights (16 B/param)")
    p.add_argument("--attention", choices=("flash", "eager"), default="flash")
    p.add_argument("--execution", choices=("eager", "graph"), default="eager",
                   help="eager: host dispatch cost per kernel (PyTorch default); graph: CUDA graphs/compiled")
    p.add_argument("--dropout", action="store_true", help="store dropout masks (GPT-2/Megatron GPT)")
    p.add_argument("--offload", type=_offload, choices=(None, "cpu", "nvme"), default=None,
                   help="offload optimizer state to cpu or nvme (ZeRO-Offload/Infinity); 'none' to disable")
    p.add_argument("--offload-params", type=_offload, choices=(None, "cpu", "nvme"), default=None,
                   help="offload parameters (needs --zero 3 or --fsdp)")
    p.add_argument("--placement", default=None, help="placement order innermost first, e.g. tp,cp,pp,dp")
    p.add_argument("--tokens", type=float, default=None, help="tokens to train: prints time, GPU-hours and cost")
    p.add_argument("--out", default=None, help="directory for summary.csv, memory.csv, timeline.csv, trace.json")
    p.add_argument("--check", action="store_true", help="check the estimate's invariants (exit 2 on a violation)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fleetsim.training import estimate_train_step

    placement = tuple(x.strip() for x in args.placement.split(",")) if args.placement else None
    est = estimate_train_step(
        args.model, args.cluster, None, args.micro_batch, args.global_batch, args.seq_len,
        recompute=args.recompute, zero=args.zero, fsdp=args.fsdp, schedule=args.schedule,
        dtype=args.dtype, tp=args.tp, pp=args.pp, dp=args.dp, cp=args.cp, ep=args.ep, vpp=args.vpp,
        sequence_parallel=args.sp, placement=placement, offload_optimizer=args.offload,
        offload_params=args.offload_params, precision=args.precision, attention=args.attention,
        dropout=args.dropout, execution=args.execution, record_timeline=args.out is not None,
    )
    job = est.job
    par = job.parallel
    print(f"{job.model.name} on {job.cluster.name}: tp={par.tp} cp={par.cp} pp={par.pp} dp={par.dp} "
          f"ep={par.ep} vpp={par.vpp} sp={par.sequence_parallel} schedule={job.schedule} "
          f"recompute={job.recompute} zero={job.zero_stage}{' (fsdp)' if job.fsdp else ''}")
    summary = est.summary(args.tokens)
    print_frame(summary)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        summary.to_csv(out / "summary.csv", index=False)
        est.memory.to_csv(out / "memory.csv", index=False)
        est.timeline.to_csv(out / "timeline.csv", index=False)
        est.to_chrome_trace(out / "trace.json")
        print(f"wrote {out}/summary.csv, memory.csv, timeline.csv, trace.json")
    if args.check:
        from fleetsim.cli.checks import report_checks

        return report_checks("train", est)
    return 0
