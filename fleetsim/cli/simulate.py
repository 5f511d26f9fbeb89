"""``fleetsim simulate``: discrete-event simulation of LLM serving on a cluster."""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Any

from fleetsim.cli.args import (
    check_out_dir,
    fraction,
    nonneg_float,
    nonneg_int,
    plural,
    positive_float,
    positive_int,
)
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads import DEFAULT_NUM_REQUESTS


def _pd(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)p(\d+)d\s*", text.lower())
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"expected XpYd with X, Y >= 1 (e.g. 2p6d), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def parse_spec_decode(text: str) -> dict[str, Any]:
    """``ngram[:k=4,alpha=0.7]`` or ``DRAFT_MODEL[:k=4,alpha=0.7]`` -> SpecDecode fields."""
    head, _, rest = text.partition(":")
    head = head.strip()
    out: dict[str, Any] = ({"method": "ngram"} if head.lower() == "ngram"
                           else {"method": "draft", "draft_model": head})
    if not head:
        raise ConfigError(f"--spec-decode {text!r}: expected ngram or a draft model name before ':'")
    keys = {"k": ("num_speculative_tokens", positive_int), "alpha": ("acceptance_rate", fraction)}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, val = part.partition("=")
        if not eq or key.strip() not in keys:
            raise ConfigError(f"--spec-decode: bad parameter {part!r} (known: k=, alpha=)")
        field, kind = keys[key.strip()]
        try:
            out[field] = kind(val)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"--spec-decode: {part!r}: {exc}") from None
    return out


def _pue(text: str) -> float:
    """A power usage effectiveness: a finite number >= 1 (facility power over IT power)."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v >= 1):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 1, got {text!r}")
    return v


def _spec_decode(text: str) -> dict[str, Any]:
    try:
        return parse_spec_decode(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("--spec-decode", "", 1).lstrip(": ")) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate LLM serving (replicas, batching, KV cache, routing, PD) on a cluster",
        description="Replay a workload through serving replicas (continuous batching with a "
        "vLLM-style scheduler or static batching, paged KV cache, preemption, prefix caching, "
        "speculative decoding, TP/PP/EP, prefill/decode disaggregation) and print latency "
        "percentiles, throughput and goodput.",
    )
    p.add_argument("--model", required=True, help="catalog name, HF config.json path or directory")
    p.add_argument("--cluster", required=True, help="shorthand such as 1xH100 or 2xDGX-H100, or a YAML path")
    p.add_argument("--workload", default="azure-conv",
                   help="built-in name (azure-conv, azure-code), trace/workload FILE, or a spec such as "
                   "poisson:rate=5,isl=1024,osl=256 (default azure-conv)")
    p.add_argument("--num-requests", type=positive_int, default=None,
                   help=f"requests to draw (default {DEFAULT_NUM_REQUESTS} unless --duration-s; a trace replays once)")
    p.add_argument("--duration-s", type=positive_float, default=None,
                   help="draw arrivals for this many seconds")
    p.add_argument("--gpu", default=None, help="GPU type (pool) for an explicit layout; default: first pool")
    p.add_argument("--tp", type=positive_int, default=None)
    p.add_argument("--pp", type=positive_int, default=None)
    p.add_argument("--ep", type=positive_int, default=None)
    p.add_argument("--replicas", type=positive_int, default=None, help="default: as many as the pool holds")
    p.add_argument("--pd", type=_pd, default=None, metavar="XpYd",
                   help="prefill/decode disaggregation: X prefill and Y decode replicas")
    p.add_argument("--scheduler", choices=("vllm", "static"), default="vllm")
    p.add_argument("--router", type=_router, default="least_outstanding_tokens",
                   help="round_robin, least_outstanding_tokens (default), prefix_aware or adapter_affinity "
                   "(hyphens or underscores)")
    p.add_argument("--max-num-seqs", type=positive_int, default=None)
    p.add_argument("--max-batched-tokens", type=positive_int, default=None)
    p.add_argument("--no-chunked-prefill", action="store_true")
    p.add_argument("--block-size", type=positive_int, default=16)
    p.add_argument("--gpu-memory-utilization", type=fraction, default=0.9)
    p.add_argument("--preemption", choices=("recompute", "swap"), default="recompute")
    p.add_argument("--swap-space-gib", type=nonneg_float, default=4.0)
    p.add_argument("--prefix-caching", action="store_true")
    p.add_argument("--spec-decode", type=_spec_decode, default=None, metavar="SPEC",
                   help="ngram[:k=4,alpha=0.7] or DRAFT_MODEL[:k=4,alpha=0.7]")
    p.add_argument("--dtype", default="bf16", help="weight dtype (bf16, fp8, ...)")
    p.add_argument("--kv-dtype", default=None, help="KV-cache dtype (default: activation dtype)")
    p.add_argument("--engine", default="vllm", metavar="NAME|YAML",
                   help="serving engine profile (fleetsim specs engines) or a profile YAML (default vllm)")
    p.add_argument("--sched-overhead-s", type=nonneg_float, default=None,
                   help="CPU seconds per engine iteration (default: the engine profile's)")
    p.add_argument("--power-cap-w", type=positive_float, default=None, metavar="W",
                   help="GPU board power limit (W), within the GPU's minimum limit and TDP (default: TDP)")
    p.add_argument("--pue", type=_pue, default=None,
                   help="facility power usage effectiveness (default: the cluster's, 1 for shorthand)")
    p.add_argument("--energy-price", type=nonneg_float, default=None, metavar="USD_PER_KWH",
                   help="energy price in US dollars per kWh (default: the cluster's, else the EIA 2023 average)")
    lora = p.add_argument_group("LoRA adapters (docs/lora.md)")
    lora.add_argument("--adapters", type=positive_int, default=None, metavar="N",
                      help="LoRA adapters of the base model the requests pick from (uniform unless --adapter-zipf)")
    lora.add_argument("--adapter-zipf", type=nonneg_float, default=None, metavar="A",
                      help="Zipf exponent of adapter popularity (0 = uniform)")
    lora.add_argument("--lora-rank", default=None, metavar="R|DIST",
                      help="rank of each adapter: a number or a distribution such as uniform(8,64) (default 16)")
    lora.add_argument("--max-loras", type=positive_int, default=None, metavar="K",
                      help="most distinct adapters per batch (vLLM max_loras; default 4)")
    lora.add_argument("--gpu-slots", type=positive_int, default=None, help="GPU adapter slots (default --max-loras)")
    lora.add_argument("--max-cpu-loras", type=positive_int, default=None,
                      help="adapters kept in pinned host memory (default all)")
    lora.add_argument("--max-lora-rank", type=positive_int, default=None, help="rank a slot is sized for (default 64)")
    lora.add_argument("--adapter-memory", choices=("slots", "unified"), default=None,
                      help="adapter memory: reserved slots (vLLM) or KV-cache blocks (S-LoRA unified paging)")
    lora.add_argument("--lora-kernel", choices=("sgmv_grouped_mm", "sgmv_loop", "bgmv_gather", "roofline"),
                      default=None, help="LoRA kernel priced (measured where the GPU has lora.csv; default grouped)")
    p.add_argument("--queue-limit", type=nonneg_int, default=None, help="most waiting requests per replica")
    p.add_argument("--max-sim-time-s", type=positive_float, default=None)
    p.add_argument("--ttft-slo-s", type=positive_float, default=None)
    p.add_argument("--tpot-slo-s", type=positive_float, default=None)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--no-fast-forward", action="store_true", help="price every decode iteration")
    p.add_argument("--progress", action="store_true", help="progress bar on stderr even when not a TTY")
    p.add_argument("--out", default=None, help="directory for requests/timeseries tables, summary, trace and PNG figures "
                   "(latency CDFs and histograms, throughput/queue/KV/power over time)")
    p.add_argument("--check", action="store_true", help="check the result's invariants (exit 2 on a violation)")
    p.add_argument("--load-profile", default=None, metavar="SPEC",
                   help="time-varying rate for --duration-s, e.g. diurnal:peak=20,trough=5[,peak_hour=14,weekend=0.6,"
                   "growth=0.1] or constant:rate=8 (the workload gives the lengths; docs/capacity_studies.md)")
    p.add_argument("--autoscale", default=None, metavar="POLICY",
                   help="autoscale replicas, e.g. utilization:target=0.7,max=8 | queue:target=8,max=8 | "
                   "slo:ttft=2,tpot=0.1,max=8 | rate:capacity=5,max=8; keys min, init, interval, up_delay, "
                   "down_delay, cold_start (s)")
    p.set_defaults(func=run)


def _router(text: str) -> str:
    name = text.strip().lower().replace("-", "_")
    known = ("round_robin", "least_outstanding_tokens", "prefix_aware", "adapter_affinity")
    if name not in known:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(known)}")
    return name


_LORA_FLAGS = ("max_loras", "gpu_slots", "max_cpu_loras", "max_lora_rank", "adapter_memory", "lora_kernel")


def _lora_config(args: argparse.Namespace, adapters: bool) -> Any:
    """The engine's ``LoraConfig`` from the LoRA flags (None without adapters or flags)."""
    from fleetsim.serving import LoraConfig

    given = {k: getattr(args, k, None) for k in _LORA_FLAGS}
    given = {k: v for k, v in given.items() if v is not None}
    if not given and not adapters:
        return None
    names = {"adapter_memory": "memory", "lora_kernel": "kernel"}
    return LoraConfig(**{names.get(k, k): v for k, v in given.items()})


def apply_adapters(args: argparse.Namespace, workload: Any) -> Any:
    """The workload with ``--adapters/--adapter-zipf/--lora-rank`` applied."""
    from fleetsim.workloads.lora import AdapterPopulation
    from fleetsim.workloads.spec import _Spec

    n, a, r = getattr(args, "adapters", None), getattr(args, "adapter_zipf", None), getattr(args, "lora_rank", None)
    if n is None and a is None and r is None:
        return workload
    pop = workload.adapters
    if n is None and pop is None:
        raise ConfigError("--adapter-zipf/--lora-rank need --adapters N (or adapters=N in the workload spec)")
    fields: dict[str, Any] = pop.model_dump() if pop is not None else {}
    if n is not None:
        fields["num_adapters"] = n
    if a is not None:
        fields["popularity"], fields["zipf_a"] = "zipf", a
    if r is not None:
        try:
            if float(r) < 1:
                raise ConfigError(f"--lora-rank must be >= 1, got {r}")
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
        fields["rank"] = _Spec(f"--lora-rank {r}").length(f"--lora-rank={r}", r, "lora_rank")
    return workload.model_copy(update={"adapters": AdapterPopulation(**fields)})


def build_deployment(args: argparse.Namespace, adapters: bool = False) -> tuple[Any, Any]:
    """(Deployment or None, EngineConfig) from the parsed flags (``adapters``: the workload
    carries LoRA adapters, so the engine serves them)."""
    from fleetsim.serving import Deployment, EngineConfig, PoolDeployment, SpecDecode

    sch: dict[str, Any] = {"kind": args.scheduler}
    if args.max_num_seqs is not None:
        sch["max_num_seqs"] = args.max_num_seqs
    if args.scheduler == "vllm":
        if args.max_batched_tokens is not None:
            sch["max_num_batched_tokens"] = args.max_batched_tokens
        sch["chunked_prefill"] = not args.no_chunked_prefill
    elif args.max_batched_tokens is not None or args.no_chunked_prefill:
        raise ConfigError("--max-batched-tokens/--no-chunked-prefill apply to --scheduler vllm only")
    eng: dict[str, Any] = dict(
        scheduler=sch, block_size=args.block_size, gpu_memory_utilization=args.gpu_memory_utilization,
        preemption_mode=args.preemption, swap_space_bytes=args.swap_space_gib * 2**30,
        enable_prefix_caching=args.prefix_caching, dtype=args.dtype, sched_overhead_s=args.sched_overhead_s,
        fast_forward=not args.no_fast_forward, profile=args.engine, power_cap_w=args.power_cap_w)
    if args.kv_dtype:
        eng["kv_dtype"] = args.kv_dtype
    if args.spec_decode:
        eng["spec_decode"] = SpecDecode(**args.spec_decode)
    lora = _lora_config(args, adapters)
    if lora is not None:
        eng["lora"] = lora
    engine = EngineConfig(**eng)
    explicit = any(x is not None for x in (args.tp, args.pp, args.ep, args.replicas, args.pd, args.gpu))
    extra = {"router": args.router, "queue_limit": args.queue_limit,
             "max_sim_time_s": args.max_sim_time_s}
    if not explicit:
        if args.router == "least_outstanding_tokens" and args.queue_limit is None and args.max_sim_time_s is None:
            return None, engine
        return "default", (engine, extra)
    if args.pd and args.replicas is not None:
        raise ConfigError("--replicas and --pd both set the replica count; give one")
    layout = dict(gpu=args.gpu, tp=1 if args.tp is None else args.tp, pp=1 if args.pp is None else args.pp,
                  ep=1 if args.ep is None else args.ep, engine=engine)
    pools: tuple[Any, ...]
    if args.pd:
        x, y = args.pd
        pools = (PoolDeployment(**layout, replicas=x, role="prefill"),
                 PoolDeployment(**layout, replicas=y, role="decode"))
    else:
        pools = (PoolDeployment(**layout, replicas=args.replicas),)
    return Deployment(pools=pools, **extra), None


def _cluster(args: argparse.Namespace) -> Any:
    """The cluster with ``--pue`` / ``--energy-price`` applied, ``--power-cap-w`` checked
    against the GPUs it would apply to (``--gpu``'s pool, else every pool)."""
    from fleetsim.calibration.power import power_params
    from fleetsim.hardware.catalog import get_gpu
    from fleetsim.hardware.cluster import load_cluster

    cl = load_cluster(args.cluster)
    update = {k: v for k, v in (("pue", args.pue), ("energy_price_usd_per_kwh", args.energy_price)) if v is not None}
    if update:
        cl = cl.model_copy(update=update)
    if args.power_cap_w is not None:
        gpus = [get_gpu(args.gpu)] if args.gpu else [get_gpu(p.node.gpu) for p in cl.pools]
        for g in gpus:
            power_params(g).check_cap(args.power_cap_w, "--power-cap-w")
    return cl


def energy_line(result: Any) -> str:
    """One line of the energy figures: J per output token and per request, mean and peak GPU
    draw, facility draw (hosts and PUE) and the energy cost."""
    from fleetsim.hardware.cluster import energy_price

    s = result.summary
    cap = result.replicas["power_cap_w"].iloc[0] if len(result.replicas) else math.nan
    return (f"energy: {_fmt(s['j_per_output_token'])} J/output token, {_fmt(s['j_per_request'])} J/request (GPU); "
            f"GPU power mean {_fmt(s['avg_power_w'])} W, peak {_fmt(s['peak_power_w'])} W (limit {cap:g} W per GPU); "
            f"facility mean {_fmt(s['avg_facility_power_w'])} W (hosts, PUE {s['pue']:g}); "
            f"cost ${s['energy_cost_usd']:.4g} at ${energy_price(result.cluster):g}/kWh"
            + ("" if math.isnan(s["power_budget_w"]) else
               f"; peak facility {_fmt(s['peak_facility_power_w'])} W vs budget {s['power_budget_w']:g} W: "
               f"over for {s['power_budget_exceeded_s']:.4g} s"))


def lora_line(result: Any) -> str:
    """One line of the LoRA figures (docs/lora.md)."""
    s = result.summary
    gib = 2.0**30
    return (f"LoRA: {s['lora_requests']} requests over {s['lora_adapters_seen']} adapters, hit rate "
            f"{_fmt(s['lora_hit_rate'])}, {s['lora_loads']} loads stalling {s['lora_load_stall_s']:.4g} s; "
            f"TTFT p50 top-10% adapters {_fmt(s['lora_top10_ttft_p50_s'])} s vs rest {_fmt(s['lora_rest_ttft_p50_s'])} s, "
            f"TPOT p50 {_fmt(s['lora_top10_tpot_p50_s'])} vs {_fmt(s['lora_rest_tpot_p50_s'])} s; GPU memory per GPU: "
            f"adapters {s['lora_adapter_bytes_per_gpu'] / gib:.3g} GiB, KV {s['kv_bytes_per_gpu'] / gib:.4g} GiB")


def scaling_line(result: Any) -> str:
    """GPU-hours, cost, replicas and cold starts of an autoscaled run, per deployment entry."""
    parts = []
    for row in result.scaling.entries.itertuples(index=False):
        parts.append(f"entry {row.entry} ({row.role}, {row.gpu}): {row.gpu_hours:.4g} GPU-h, ${row.cost_usd:.4g}, "
                     f"mean {row.mean_replicas:.3g} replicas in [{row.min_replicas}, {row.max_replicas}], "
                     f"{row.cold_starts} cold starts of {row.cold_start_s:.3g} s")
    s = result.summary
    return ("autoscaling: " + "; ".join(parts) +
            f"; {s['delayed_by_cold_start']} requests delayed by cold starts")


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.4g}"
    return str(v)


def print_summary(result: Any) -> None:
    """The summary as a two-column rich table (plain text when not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.model.name} on {result.cluster.name}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.summary.items():
        table.add_row(k, _fmt(v))
    Console(width=100).print(table)


def resolve_workload(args: argparse.Namespace) -> tuple[Any, int | None, str]:
    """(Workload, num_requests, the line saying what is drawn): a built-in or spec workload
    given neither --num-requests nor --duration-s draws ``DEFAULT_NUM_REQUESTS``."""
    from fleetsim.workloads.arrivals import TraceArrivals
    from fleetsim.workloads.defaults import get_workload

    wl = get_workload(args.workload)
    n, dur = args.num_requests, args.duration_s
    replays = isinstance(wl.arrivals, TraceArrivals) and wl.sessions is None
    if n is None and dur is None:
        if replays:
            return wl, None, f"workload: {args.workload}, {plural(wl.arrivals.num_trace_requests(), 'request')} " \
                "(the trace once; --num-requests/--duration-s to change)"
        n = DEFAULT_NUM_REQUESTS
        return wl, n, f"workload: {args.workload}, {plural(n, 'request')} (default; --num-requests/--duration-s to change)"
    parts = ([plural(n, "request")] if n is not None else []) + ([f"{dur:g} s of arrivals"] if dur else [])
    return wl, n, f"workload: {args.workload}, " + " or ".join(parts) + (" (whichever ends first)" if len(parts) > 1 else "")


def run(args: argparse.Namespace) -> int:
    from fleetsim.serving import Deployment, default_deployment, simulate_serving
    from fleetsim.workloads.models import load_model

    check_out_dir(args.out)
    cluster = _cluster(args)
    workload, num_requests, drawn = resolve_workload(args)
    workload = apply_adapters(args, workload)
    dep, engine = build_deployment(args, workload.adapters is not None)
    if dep == "default":
        eng, extra = engine
        base = default_deployment(load_model(args.model), cluster, eng)
        dep, engine = Deployment(pools=base.pools, **extra), None
    autoscaler = None
    if args.autoscale is not None:
        from fleetsim.capacity import parse_autoscale

        autoscaler = parse_autoscale(args.autoscale)
    if args.load_profile is not None:
        if args.duration_s is None:
            raise ConfigError("--load-profile needs --duration-s (the horizon to draw arrivals for)")
        if args.num_requests is not None:
            raise ConfigError("--load-profile sets the number of requests; drop --num-requests")
        num_requests = None
        drawn = f"workload: {args.workload} lengths, arrivals {args.load_profile} for {args.duration_s:g} s"
    print(drawn, flush=True)
    slo = {k: v for k, v in (("ttft_slo_s", args.ttft_slo_s), ("tpot_slo_s", args.tpot_slo_s)) if v is not None}
    show = args.progress or sys.stderr.isatty()
    progress_cb = None
    bar = None
    if show:
        from rich.console import Console
        from rich.progress import Progress

        bar = Progress(console=Console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task("simulating", total=None)

        def progress_cb(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

    try:
        result = simulate_serving(args.model, cluster, workload, dep, seed=args.seed, slo=slo,
                                  num_requests=num_requests, duration_s=args.duration_s,
                                  engine=engine, progress=progress_cb, autoscaler=autoscaler,
                                  load_profile=args.load_profile)
    finally:
        if bar is not None:
            bar.stop()
    d = result.replicas
    print(f"{plural(len(d), 'replica')}: " + ", ".join(
        f"{n} x {g} tp={tp} pp={pp} {role}" for (g, tp, pp, role), n in
        d.groupby(["gpu", "tp", "pp", "role"]).size().items()))
    print_summary(result)
    print(energy_line(result))
    if "lora_hit_rate" in result.summary:
        print(lora_line(result))
    if result.scaling is not None:
        print(scaling_line(result))
    from fleetsim.serving_intervals import latency_intervals

    band = latency_intervals(result)
    print("80% interval (iteration times scaled, docs/intervals.md): " + ", ".join(
        f"{k.removesuffix('_s')} {a:.4g}-{b:.4g} s" for k, (a, b) in band.items()
        if math.isfinite(a) and math.isfinite(b)) or "none (no latency to scale)")
    if args.out:
        from fleetsim.figures import save_figures

        out = result.save(args.out)
        pngs = save_figures(result.figures(), out)
        print(f"wrote {out}/ (requests, timeseries, replicas, summary.json, trace.json.gz, "
              + ", ".join(p.name for p in pngs) + ")")
    if args.check:
        from fleetsim.cli.checks import report_checks

        return report_checks("simulate", result)
    return 0

