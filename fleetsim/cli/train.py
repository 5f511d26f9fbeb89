"""``fleetsim train``: estimate one training step (time, MFU, memory) and the cost of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from fleetsim.cli.args import check_out_dir, positive_float, positive_int
from fleetsim.cli.table import print_frame
from fleetsim.hardware.errors import ConfigError

OFFLOAD = ("none", "cpu", "nvme")
DIMS = ("tp", "cp", "pp", "dp")


def _offload(text: str) -> str | None:
    return None if text == "none" else text


def _placement(text: str) -> tuple[str, ...]:
    order = tuple(x.strip().lower() for x in text.split(","))
    if sorted(order) != sorted(DIMS):
        raise argparse.ArgumentTypeError(f"expected tp, cp, pp, dp once each, comma-separated, got {text!r}")
    return order


def schedule_for(args: argparse.Namespace) -> str:
    """The pipeline schedule as the API resolves it (``training.resolve_schedule``), with
    the conflict of --vpp > 1 and a non-interleaved --schedule named in flags."""
    from fleetsim.training import resolve_schedule

    if args.vpp > 1 and args.schedule not in (None, "interleaved"):
        raise ConfigError(f"--vpp {args.vpp} needs --schedule interleaved, got --schedule {args.schedule}")
    return resolve_schedule(args.schedule, args.vpp)


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
    p.add_argument("--tp", type=positive_int, default=1)
    p.add_argument("--pp", type=positive_int, default=1)
    p.add_argument("--dp", type=positive_int, default=None, help="default: the GPUs left by tp*cp*pp")
    p.add_argument("--cp", type=positive_int, default=1, help="context parallel degree (ring attention)")
    p.add_argument("--ep", type=positive_int, default=1, help="expert parallel degree (divides dp)")
    p.add_argument("--vpp", type=positive_int, default=1,
                   help="virtual pipeline stages per GPU (needs the interleaved schedule, the default when > 1)")
    p.add_argument("--sp", action="store_true", help="Megatron sequence parallelism")
    p.add_argument("--micro-batch", type=positive_int, default=1, help="sequences per micro-batch")
    p.add_argument("--global-batch", type=positive_int, required=True, help="sequences per optimizer step")
    p.add_argument("--seq-len", type=positive_int, default=None,
                   help="tokens per sequence (default: 2048, or the model's context if shorter)")
    p.add_argument("--recompute", choices=("none", "selective", "full"), default="none")
    p.add_argument("--engine", default="megatron", metavar="NAME|YAML",
                   help="training engine profile (fleetsim specs engines) or a profile YAML (default megatron)")
    p.add_argument("--zero", type=int, choices=(0, 1, 2, 3), default=None,
                   help="ZeRO stage (default: 1 when the engine runs a distributed optimizer, else 0)")
    p.add_argument("--fsdp", action="store_true", help="PyTorch FSDP full sharding (ZeRO-3 data flow)")
    p.add_argument("--schedule", choices=("gpipe", "1f1b", "interleaved"), default=None,
                   help="pipeline schedule (default 1f1b, or interleaved when --vpp > 1)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp8"), default="bf16")
    p.add_argument("--precision", choices=("mixed", "amp"), default=None,
                   help="mixed: 16-bit weights + fp32 master (18 B/param); amp: fp32 weights under autocast "
                        "(16 B/param); default: the engine's training.param_dtype (fp32: amp)")
    p.add_argument("--attention", choices=("flash", "eager"), default="flash")
    p.add_argument("--execution", choices=("eager", "graph"), default=None,
                   help="eager: host dispatch cost per kernel; graph: CUDA graphs/compiled (default: the engine's)")
    p.add_argument("--dropout", action="store_true", help="store dropout masks (GPT-2/Megatron GPT)")
    p.add_argument("--offload", choices=OFFLOAD, default="none",
                   help="offload optimizer state to cpu or nvme (ZeRO-Offload/Infinity)")
    p.add_argument("--offload-params", choices=OFFLOAD, default="none",
                   help="offload parameters (needs --zero 3 or --fsdp)")
    p.add_argument("--placement", type=_placement, default=None, help="placement order innermost first, e.g. tp,cp,pp,dp")
    p.add_argument("--tokens", type=positive_float, default=None,
                   help="tokens to train: prints time, GPU-hours, cost, facility energy and its cost")
    p.add_argument("--failures", default=None, metavar="default|none|NAME|FILE",
                   help="with --tokens: simulate the run under this failure catalog (default: Llama 3 405B's "
                        "interruption rates) and print time-to-train, effective training time, lost GPU-hours")
    p.add_argument("--checkpoint-interval", default="auto", metavar="auto|S",
                   help="with --failures: seconds of training between checkpoints, or auto (simulated optimum)")
    p.add_argument("--checkpoint-mode", choices=("sync", "async"), default="sync",
                   help="with --failures: sync writes stall training; async snapshots to host memory")
    p.add_argument("--spare-nodes", type=int, default=None, metavar="N",
                   help="with --failures: hot spare nodes (default: replacements always available)")
    p.add_argument("--elastic", action="store_true",
                   help="with --failures: continue on fewer data-parallel replicas while short of nodes")
    p.add_argument("--seeds", type=positive_int, default=8, help="with --failures: simulated runs (default 8)")
    p.add_argument("--power-cap-w", type=positive_float, default=None, metavar="W",
                   help="board power limit of every GPU in watts (default: the GPU's TDP)")
    p.add_argument("--out", default=None, help="directory for summary.csv, memory.csv, timeline.csv, trace.json and PNG figures "
                   "(pipeline timeline, memory per stage, step-time breakdown)")
    p.add_argument("--check", action="store_true", help="check the estimate's invariants (exit 2 on a violation)")
    p.set_defaults(func=run)


def check_power_cap(args: argparse.Namespace) -> None:
    """--power-cap-w against the range of the cluster's GPU (one line naming the flag)."""
    if args.power_cap_w is None:
        return
    from fleetsim.calibration.power import power_state
    from fleetsim.hardware.catalog import get_gpu
    from fleetsim.hardware.cluster import load_cluster

    cl = load_cluster(args.cluster)
    power_state(get_gpu(cl.pools[0].node.gpu), args.power_cap_w, "--power-cap-w")


def interval_arg(text: str) -> str | float:
    """--checkpoint-interval: ``auto`` or seconds (one line naming the flag otherwise)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--checkpoint-interval must be auto or seconds, got {text!r}") from None


def run_failures(args: argparse.Namespace, est: object) -> None:
    """The run under failures (``fleetsim.reliability.estimate_training_run``), printed."""
    from fleetsim.reliability import estimate_training_run

    if args.tokens is None:
        raise ConfigError("--failures needs --tokens (the tokens to train)")
    run = estimate_training_run(None, None, tokens=args.tokens, failures=args.failures,
                                checkpoint_interval=interval_arg(args.checkpoint_interval),
                                checkpoint_mode=args.checkpoint_mode, spare_nodes=args.spare_nodes,
                                elastic=args.elastic, seeds=args.seeds, estimate=est)  # type: ignore[arg-type]
    print(f"training run under failures ({args.failures}):")
    print_frame(run.summary())
    print_frame(run.failures)
    if args.out:
        out = Path(args.out)
        run.summary().to_csv(out / "run_summary.csv", index=False)
        run.failures.to_csv(out / "run_failures.csv", index=False)


def run(args: argparse.Namespace) -> int:
    from fleetsim.training import estimate_train_step

    check_out_dir(args.out)
    check_power_cap(args)
    if args.failures is not None:
        interval_arg(args.checkpoint_interval)
        if args.failures.strip().lower() != "none":
            from fleetsim.hardware.failures import load_failures

            load_failures(args.failures)
        if args.tokens is None:
            raise ConfigError("--failures needs --tokens (the tokens to train)")
    est = estimate_train_step(
        args.model, args.cluster, None, args.micro_batch, args.global_batch, args.seq_len,
        recompute=args.recompute, zero=args.zero, fsdp=args.fsdp, schedule=schedule_for(args),
        dtype=args.dtype, tp=args.tp, pp=args.pp, dp=args.dp, cp=args.cp, ep=args.ep, vpp=args.vpp,
        sequence_parallel=args.sp, placement=args.placement, offload_optimizer=_offload(args.offload),
        offload_params=_offload(args.offload_params), precision=args.precision, attention=args.attention,
        dropout=args.dropout, execution=args.execution, engine=args.engine, record_timeline=args.out is not None,
        power_cap_w=args.power_cap_w,
    )
    job = est.job
    par = job.parallel
    print(f"{job.model.name} on {job.cluster.name} (engine {job.engine.name}, {job.execution}): tp={par.tp} cp={par.cp} pp={par.pp} dp={par.dp} "
          f"ep={par.ep} vpp={par.vpp} sp={par.sequence_parallel} schedule={job.schedule} seq_len={job.seq_len} "
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
        from fleetsim.figures import save_figures

        pngs = save_figures(est.figures(), out)
        print(f"wrote {out}/summary.csv, memory.csv, timeline.csv, trace.json, " + ", ".join(p.name for p in pngs))
    if args.failures is not None:
        run_failures(args, est)
    if args.check:
        from fleetsim.cli.checks import report_checks

        return report_checks("train", est)
    return 0
