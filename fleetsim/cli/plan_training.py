"""``fleetsim plan --training``: a ranked training plan (flags and printing)."""

from __future__ import annotations

import argparse
import json

from fleetsim.cli.args import check_out_dir, positive_float, positive_int
from fleetsim.cli.table import print_frame


def add_training_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training plans (--training)")
    g.add_argument("--training", action="store_true",
                   help="plan a training job: parallelism, micro-batch, recomputation, ZeRO, offload")
    g.add_argument("--global-batch", type=positive_int, default=None, help="sequences per optimizer step")
    g.add_argument("--seq-len", type=positive_int, default=None, help="tokens per sequence")
    g.add_argument("--tokens", type=positive_float, default=None, help="tokens to train (time, cost, energy)")


def run_training(args: argparse.Namespace) -> int:
    from fleetsim.hardware.errors import ConfigError
    from fleetsim.training_plans import plan_training

    if args.global_batch is None:
        raise ConfigError("--training needs --global-batch (sequences per step)")
    objectives = ("throughput", "time", "cost", "energy", "time_to_train_failures")
    objective = args.objective or "throughput"
    if objective not in objectives:
        raise ConfigError(f"--objective {objective!r}: with --training one of {', '.join(objectives)}")
    if args.cluster is None:
        raise ConfigError("--training needs --cluster")
    check_out_dir(getattr(args, "out", None))
    plan = plan_training(args.model, args.cluster, global_batch=args.global_batch, seq_len=args.seq_len,
                         tokens=args.tokens, objective=objective, engine=args.engine or "megatron",
                         top=args.top, dtype=args.dtype, executor=getattr(args, "executor", None) or "local")
    files = None
    if getattr(args, "out", None):
        from fleetsim.cli.plan_out import write_training_plans

        files = write_training_plans(args.out, plan)
    if args.json:
        print(json.dumps(plan.as_dict(), indent=1, sort_keys=True))
        return 0
    if files is not None:
        from fleetsim.cli.plan_out import written

        print(written(files))
    print(plan.headline())
    print()
    print_frame(plan.table())
    if args.explain:
        best = plan.best
        print()
        print(f"Best plan: {best.candidate.label()} ({best.evaluation.priced_by})")
        for line in best.explain():
            print(line)
        print()
        print("Megatron-LM arguments (pretrain_gpt.py):")
        print("  " + " \\\n  ".join(flag_lines(best.megatron_args())))
        print()
        print("torchtitan config:")
        print(best.torchtitan_toml(), end="")
        for note in best.setting_notes():
            print(f"note: {note}")
    return 0


def flag_lines(argv: list[str]) -> list[str]:
    """An argument vector as one ``--flag value...`` group per line (shell-quoted)."""
    import shlex

    out: list[list[str]] = []
    for a in argv:
        if a.startswith("--") or not out:
            out.append([a])
        else:
            out[-1].append(a)
    return [shlex.join(g) for g in out]
