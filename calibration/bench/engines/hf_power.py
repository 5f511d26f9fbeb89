"""Average board power and time per iteration of whole Hugging Face ``transformers`` forward
passes and training steps (hf_power.csv, hf_power_samples.csv, hf_power_meta.json).

The ground truth for fleetsim's power model: software fleetsim did not write, run as a user
runs it, with the board's energy counter read over each window. The iterations are the ones
``hf_forward.py`` and ``hf_train.py`` time (their functions, imported):

* ``phase=decode``, ``mode=graph``: one decode step of every sequence over a ``StaticCache`` of
  ``ctx + 1`` slots, captured once in a CUDA graph and replayed (``hf_forward.decode_step`` and
  ``capture``); ``mode=eager`` on a CPU, where there are no graphs;
* ``phase=prefill``, ``mode=eager``: ``model(input_ids, use_cache=False)`` under
  ``inference_mode`` with every position's logits, HF's default (``hf_forward.prefill_fn``);
* ``phase=train``, ``mode=train``: forward + backward + fused AdamW step + ``zero_grad`` with fp32
  parameters under bf16 autocast, with or without gradient checkpointing (``hf_train.Trainer``);
* ``phase=idle_start`` / ``idle_end``: ``--idle-s`` seconds of nothing before the first and after
  the last point (cold and hot idle power).

Each point: ``--warmup`` iterations (allocation, cuBLAS heuristics), a few timed ones to size the
window, ``--warm-s`` seconds of the same iterations (clocks and temperature settle), then
``iterations`` of them back to back for about ``--window-s`` seconds with the host synchronising
with the device only at the window's two ends. ``time_s`` is the window over ``iterations``;
``p10_s`` / ``p90_s`` come from CUDA events recorded between iterations (they do not
synchronise); ``busy_fraction`` is the events' summed time over the window.
``power_w_mean`` is the board energy counter's rate over the window, the least-squares slope
``power_occupancy._window_power`` takes (the primary figure); ``energy_j_per_iter`` is that power
times the window over ``iterations``. ``power_w_p90`` / ``power_w_instant_p90`` are the 90th
percentiles of ``nvmlDeviceGetPowerUsage`` samples and of the instant-power field; clocks,
utilization and temperature are the samples' medians; ``power_limit_w`` is the enforced limit,
read (never set) at the window's end.

Usage (repo root): ``python3 calibration/bench/engines/hf_power.py --out DIR --budget-s 400``;
``--device cpu --smoke`` runs every code path on shrunk models with no NVML (power cells empty,
numbers meaningless).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hf_common as hc  # noqa: E402
import hf_forward as hf  # noqa: E402
import hf_train as ht  # noqa: E402

try:
    from fleetsim.calibration.bench.bench_io import append_row, note_skip
    from fleetsim.calibration.bench.common import (
        catalog_name_for,
        collect_meta,
        quantile,
        summarize,
    )
    from fleetsim.calibration.bench.nvml_sampler import Sampler, write_samples
    from fleetsim.calibration.bench.power_occupancy import _window_power
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench_io import append_row, note_skip  # type: ignore[no-redef]
    from common import (  # type: ignore[no-redef]
        catalog_name_for,
        collect_meta,
        quantile,
        summarize,
    )
    from nvml_sampler import Sampler, write_samples  # type: ignore[no-redef]
    from power_occupancy import _window_power  # type: ignore[no-redef]

COLUMNS = ("impl", "model", "config_layers", "layers", "mode", "phase", "batch", "q", "ctx",
           "seq_len", "tokens", "gradient_checkpointing", "dtype", "logits", "iterations",
           "window_s", "time_s", "p10_s", "p90_s", "busy_fraction", "power_w_mean",
           "power_w_sampled_mean", "power_w_p90", "power_w_instant_p90", "energy_j_per_iter",
           "sm_clock_mhz", "mem_clock_mhz", "gpu_util_pct", "temp_c", "samples", "power_limit_w",
           "peak_alloc_bytes")
"""Columns of hf_power.csv. ``q``: new tokens per sequence (1 for decode, the prompt for
prefill, ``seq_len`` for training); ``ctx``: cached positions a decode step attends to besides
its own; ``tokens``: tokens processed per iteration (``batch * q``). Empty cells: not measured."""

LLAMA = "llama-3.1-8b"
EXTRA = "qwen2.5-7b"
TRAIN_LAYERS = ht.LLAMA_LAYERS
DECODE_BATCHES = (1, 4, 16, 64, 256)
DECODE_CTX = 1024
PREFILL_SHAPES = ((1, 8192), (4, 2048), (1, 512))
TRAIN_SHAPES = ((1, 4096), (2, 4096))
SMOKE_LAYERS = 2


@dataclass(frozen=True)
class Point:
    """One measured row. ``layers=None``: the model's full depth; ``optional``: measured only when
    the budget has room after every required point."""

    phase: str
    model: str = ""
    layers: int | None = None
    batch: int = 0
    q: int = 0
    ctx: int = 0
    ckpt: bool = False
    optional: bool = False

    @property
    def seq_len(self) -> int:
        return self.q if self.phase == "train" else 0

    @property
    def tokens(self) -> int:
        return self.batch * self.q

    def label(self) -> str:
        if self.phase.startswith("idle"):
            return self.phase
        return (f"{self.model} L={self.layers or 'full'} {self.phase} b={self.batch} q={self.q} "
                f"ctx={self.ctx} ckpt={int(self.ckpt)}")


def plan(smoke: bool) -> list[Point]:
    """The points in run order: cold idle, llama-3.1-8b decode (CUDA graph) and prefill (eager) at
    full depth, optional qwen2.5-7b inference points, llama-3.1-8b training steps on
    ``TRAIN_LAYERS`` layers without and with recomputation, hot idle. ``smoke`` keeps every phase
    and model on tiny shapes and ``SMOKE_LAYERS`` layers.

    Training comes after all inference: with transformers 5.25 (seen on a CPU), enabling gradient
    checkpointing on one model leaves the decoder layers of models built later checkpointed, and a
    StaticCache decode step through them writes past the cache."""
    if smoke:
        L = SMOKE_LAYERS
        return [Point("idle_start"),
                Point("decode", LLAMA, L, 2, 1, 40), Point("decode", LLAMA, L, 4, 1, 40),
                Point("prefill", LLAMA, L, 1, 32), Point("prefill", LLAMA, L, 2, 17),
                Point("decode", EXTRA, L, 2, 1, 40, optional=True),
                Point("prefill", EXTRA, L, 1, 32, optional=True),
                Point("train", LLAMA, L, 1, 32), Point("train", LLAMA, L, 2, 32, ckpt=True),
                Point("idle_end")]
    pts = [Point("idle_start")]
    pts += [Point("decode", LLAMA, None, b, 1, DECODE_CTX) for b in DECODE_BATCHES]
    pts += [Point("prefill", LLAMA, None, b, s) for b, s in PREFILL_SHAPES]
    pts += [Point("decode", EXTRA, None, b, 1, DECODE_CTX, optional=True) for b in (1, 64)]
    pts += [Point("prefill", EXTRA, None, 1, 2048, optional=True)]
    pts += [Point("train", LLAMA, TRAIN_LAYERS, b, s, ckpt=ck) for ck in (False, True)
            for b, s in TRAIN_SHAPES]
    pts += [Point("idle_end")]
    return pts


def mode_of(p: Point, device_type: str) -> str:
    """'graph' for decode on a GPU (eager on a CPU), 'eager' for prefill, 'train', 'idle'."""
    if p.phase.startswith("idle"):
        return "idle"
    if p.phase == "decode":
        return "graph" if device_type == "cuda" else "eager"
    return "eager" if p.phase == "prefill" else "train"


def base_row(p: Point, device_type: str, config_layers: int, layers: int) -> dict[str, Any]:
    """The identifying columns of ``p``'s row, every measured column NaN."""
    row: dict[str, Any] = {c: math.nan for c in COLUMNS}
    idle = p.phase.startswith("idle")
    row.update(impl="" if idle else "hf-transformers", model=p.model, config_layers=config_layers,
               layers=layers, mode=mode_of(p, device_type), phase=p.phase, batch=p.batch, q=p.q,
               ctx=p.ctx, seq_len=p.seq_len, tokens=p.tokens, gradient_checkpointing=int(p.ckpt),
               dtype="" if idle else ("fp32-params-bf16-autocast" if p.phase == "train" else "bf16"),
               logits="" if idle else "all", iterations=0)
    return row


def power_limit_w(sampler: Sampler) -> float:
    """The enforced board power limit (read only), NaN without NVML."""
    if not sampler.active:
        return math.nan
    try:
        return float(sampler.nvml.nvmlDeviceGetEnforcedPowerLimit(sampler.handle)) / 1000.0
    except Exception:  # noqa: BLE001 - query unsupported: leave the cell empty
        return math.nan


def window_stats(sampler: Sampler, t0: float, t1: float, e0: float, e1: float) -> dict[str, Any]:
    """Power, clocks and temperature over host window [t0, t1] with counter reads e0, e1 (J)."""
    power = _window_power(sampler, t0, t1, e1 - e0)
    st = sampler.window(t0, t1)
    return {"window_s": t1 - t0, "power_w_mean": power,
            **{k: st[k] for k in ("power_w_sampled_mean", "power_w_p90", "power_w_instant_p90",
                                  "sm_clock_mhz", "mem_clock_mhz", "gpu_util_pct", "temp_c",
                                  "samples")},
            "power_limit_w": power_limit_w(sampler)}


def run_window(fn: Callable[[], Any], device: Any, window_s: float, warm_s: float, warmup: int,
               sampler: Sampler) -> dict[str, Any]:
    """Warm ``fn`` up, then run it back to back for about ``window_s`` (synchronising at the
    window's ends only) and return the window's timing and power columns plus ``_t0``/``_t1``."""
    import torch

    cuda = device.type == "cuda"
    hc.warm(fn, warmup, device)
    t = time.perf_counter()
    hc.warm(fn, 2, device)
    est = max((time.perf_counter() - t) / 2, 1e-6)
    hc.warm(fn, max(0, math.ceil(warm_s / est)), device)
    n = max(3, math.ceil(window_s / est))
    hc.reset_peak(device)
    marks: list[Any] = []
    host: list[float] = []
    t0, e0 = time.perf_counter(), sampler.energy_j()
    for _ in range(n):
        if cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            marks.append(ev)
        else:
            host.append(time.perf_counter())
        fn()
    if cuda:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        marks.append(ev)
    hc.sync(device)
    t1, e1 = time.perf_counter(), sampler.energy_j()
    if cuda:
        per = [a.elapsed_time(b) * 1e-3 for a, b in zip(marks, marks[1:], strict=False)]
    else:
        host.append(t1)
        per = [b - a for a, b in zip(host, host[1:], strict=False)]
    _, p10, p90 = summarize(per)
    stats = window_stats(sampler, t0, t1, e0, e1)
    win = t1 - t0
    stats.update(_t0=t0, _t1=t1, iterations=n, time_s=win / n, p10_s=p10, p90_s=p90,
                 busy_fraction=sum(per) / win, peak_alloc_bytes=hc.peak_bytes(device)[0],
                 energy_j_per_iter=stats["power_w_mean"] * win / n)
    return stats


def idle_window(seconds: float, sampler: Sampler) -> dict[str, Any]:
    """``seconds`` of nothing: the board's idle power."""
    t0, e0 = time.perf_counter(), sampler.energy_j()
    time.sleep(seconds)
    t1, e1 = time.perf_counter(), sampler.energy_j()
    stats = window_stats(sampler, t0, t1, e0, e1)
    stats.update(_t0=t0, _t1=t1, busy_fraction=0.0)
    return stats


def model_key(p: Point) -> tuple[str, int | None, bool, bool]:
    """What a point needs on the device: (model, layers, training, recomputation)."""
    train = p.phase == "train"
    return p.model, p.layers, train, p.ckpt and train


class Models:
    """The one model on the device at a time: an inference model (bf16, eval) or a
    ``hf_train.Trainer``, rebuilt only when a point needs a different one."""

    def __init__(self, args: argparse.Namespace, device: Any) -> None:
        self.args, self.device = args, device
        self.key: tuple[Any, ...] | None = None
        self.obj: Any = None

    def get(self, p: Point) -> Any:
        import torch

        key = model_key(p)
        if key == self.key:
            return self.obj
        self.close()
        t0 = time.monotonic()
        if p.phase == "train":
            self.obj = ht.Trainer(p.model, p.layers if p.layers is not None else
                                  hc.catalog_fields(p.model)["num_hidden_layers"], self.args,
                                  self.device, ckpt=p.ckpt)
        else:
            cfg = hc.hf_config(p.model, p.layers, tiny=self.args.tiny)
            self.obj = hc.build_model(cfg, self.device, torch.bfloat16).eval()
        self.key = key
        print(f"built {p.model} layers={p.layers or 'full'} train={key[2]} ckpt={int(key[3])} "
              f"in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
        return self.obj

    def close(self) -> None:
        if self.obj is not None and hasattr(self.obj, "close"):
            self.obj.close()
        self.obj, self.key = None, None
        hc.free_memory(self.device)


def iteration(p: Point, models: Models, device: Any) -> tuple[Callable[[], Any], Any, list[Any]]:
    """(callable, model config, objects to keep alive) of one iteration of ``p``."""
    import torch

    obj = models.get(p)
    if p.phase == "train":
        return obj.step_fn(p.batch, p.q), obj.cfg, []
    cfg = obj.config
    if p.phase == "prefill":
        tokens = torch.randint(0, cfg.vocab_size, (p.batch, p.q), device=device)
        return hf.prefill_fn(obj, tokens, False), cfg, [tokens]
    run, cache = hf.decode_step(obj, p.batch, p.ctx, device)
    if device.type != "cuda":
        return run, cfg, [cache]
    graph = hf.capture(run, device)
    return graph.replay, cfg, [run, cache, graph]


def measure(p: Point, models: Models, args: argparse.Namespace, device: Any,
            sampler: Sampler) -> dict[str, Any]:
    """The row of one point."""
    if p.phase.startswith("idle"):
        row = base_row(p, device.type, 0, 0)
        row.update(idle_window(args.idle_s, sampler))
        return row
    fn, cfg, keep = iteration(p, models, device)
    full = (cfg.num_hidden_layers if args.tiny
            else int(hc.catalog_fields(p.model)["num_hidden_layers"]))
    row = base_row(p, device.type, full, int(cfg.num_hidden_layers))
    try:
        row.update(run_window(fn, device, args.window_s, args.warm_s, args.warmup, sampler))
    finally:
        del fn, keep
        hc.free_memory(device)
    return row


def estimate_s(p: Point, args: argparse.Namespace, current: tuple[Any, ...] | None) -> float:
    """Seconds ``p`` is expected to take: its windows, warm-up and a model build when needed."""
    if p.phase.startswith("idle"):
        return args.idle_s + 0.5
    build = 0.0 if model_key(p) == current else (2.0 if args.smoke else 25.0)
    return args.warm_s + args.window_s + (1.0 if args.smoke else 6.0) + build


def required_after_s(points: list[Point], args: argparse.Namespace) -> float:
    """Expected seconds of the required points among ``points[1:]``, each model built once."""
    total, key = 0.0, model_key(points[0])
    for p in points[1:]:
        if p.optional or p.phase == "idle_end":
            continue
        total += estimate_s(p, args, key)
        key = model_key(p)
    return total


def write_power_meta(out: Path, argv: list[str], device: Any, sampler: Sampler,
                     extra: dict[str, Any]) -> Path:
    """``hf_power_meta.json``: GPU, driver, CUDA, library versions, limits (read), invocation."""
    import torch

    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    meta_extra: dict[str, Any] = {**hc.library_versions(), **extra,
                                  "attn_implementation": hc.ATTN_IMPL, "script": "hf_power"}
    meta_extra.pop("torch", None)
    if sampler.active:
        n, h = sampler.nvml, sampler.handle
        for key, read in (("nvml_driver", lambda: n.nvmlSystemGetDriverVersion()),
                          ("power_limit_enforced_w", lambda: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1000),
                          ("power_limit_default_w",
                           lambda: n.nvmlDeviceGetPowerManagementDefaultLimit(h) / 1000)):
            try:
                meta_extra[key] = read()
            except Exception as exc:  # noqa: BLE001 - query unsupported by this driver
                meta_extra[key] = f"unavailable: {type(exc).__name__}"
        meta_extra["energy_counter_update_s"] = sampler.energy_update_s()
        ts = [s[0] for s in sampler.samples]
        gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
        meta_extra["sample_interval_achieved_s"] = quantile(gaps, 0.5) if gaps else None
        meta_extra["instant_power_field"] = sampler.instant_field is not None
    meta = collect_meta(catalog_gpu=catalog_name_for(name),
                        invocation="python3 calibration/bench/engines/hf_power.py " + " ".join(argv),
                        torch_version=torch.__version__, cuda_version=str(torch.version.cuda),
                        device_name=name, num_gpus=torch.cuda.device_count() if cuda else 0,
                        extra=meta_extra)
    path = out / "hf_power_meta.json"
    path.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="calibration/bench/engines/hf_power.py",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--budget-s", type=float, default=400.0,
                    help="wall-clock seconds for everything; points that would pass it are skipped")
    ap.add_argument("--window-s", type=float, default=None, help="measured seconds per point (2.5)")
    ap.add_argument("--warm-s", type=float, default=None,
                    help="seconds of the same iterations before each window (1.0)")
    ap.add_argument("--idle-s", type=float, default=None, help="seconds of each idle row (2.0)")
    ap.add_argument("--warmup", type=int, default=3, help="iterations before sizing the window")
    ap.add_argument("--sample-s", type=float, default=0.01, help="NVML sampling interval")
    ap.add_argument("--no-optional", action="store_true", help="skip the qwen2.5-7b points")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, 2 layers, short windows")
    ap.add_argument("--tiny", action="store_true",
                    help="shrunk model widths (implied by --device cpu --smoke)")
    args = ap.parse_args(argv)
    argv_l = argv if argv is not None else sys.argv[1:]
    args.tiny = args.tiny or (args.smoke and args.device == "cpu")
    args.window_s = args.window_s if args.window_s is not None else (0.1 if args.smoke else 2.5)
    args.warm_s = args.warm_s if args.warm_s is not None else (0.05 if args.smoke else 1.0)
    args.idle_s = args.idle_s if args.idle_s is not None else (0.1 if args.smoke else 2.0)
    args.warmup = max(1, args.warmup)
    t_start = time.monotonic()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("hf_power: no CUDA device visible", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "hf_power.csv"
    if path.exists():
        path.unlink()
    points = [p for p in plan(args.smoke) if not (p.optional and args.no_optional)]
    reserve = args.idle_s + 1.0  # the closing idle row always runs
    sampler = Sampler(args.device, args.sample_s)
    sampler.start()
    models = Models(args, device)
    windows: list[tuple[int, float, float]] = []
    for i, p in enumerate(points):
        left = args.budget_s - (time.monotonic() - t_start)
        need = estimate_s(p, args, models.key)
        if p.optional:  # only with room left for every required point after it
            need += required_after_s(points[i:], args)
        if p.phase != "idle_end" and need > left - reserve:
            note_skip(args.out, f"power {p.label()}", "budget reached")
            continue
        if p.phase == "idle_end":
            models.close()
        try:
            row = measure(p, models, args, device, sampler)
        except Exception as exc:  # noqa: BLE001 - OOM or a capture failure: skip, keep the rest
            note_skip(args.out, f"power {p.label()}", f"{type(exc).__name__}: {exc}")
            if args.device == "cuda":
                torch.cuda.synchronize()
            models.close()
            continue
        append_row(path, COLUMNS, row)
        windows.append((len(windows), row["_t0"], row["_t1"]))
        print(f"[hf_power] {p.label():<52} P={row['power_w_mean']:.0f} W "
              f"t={row['time_s'] * 1e3:.3f} ms n={row['iterations']} busy={row['busy_fraction']:.2f} "
              f"SM={row['sm_clock_mhz']} MHz T={row['temp_c']} C", file=sys.stderr, flush=True)
        gc.collect()
    models.close()
    sampler.stop()
    if sampler.samples:
        write_samples(args.out / "hf_power_samples.csv", sampler.samples, windows)
    write_power_meta(args.out, argv_l, device, sampler,
                     {"elapsed_s": round(time.monotonic() - t_start, 1), "rows_written": len(windows),
                      "smoke": args.smoke, "tiny": args.tiny, "window_s": args.window_s,
                      "warm_s": args.warm_s, "idle_s": args.idle_s, "warmup": args.warmup,
                      "sample_interval_s": args.sample_s, "train_recipe": ht.OPTIMIZER.format(
                          fused=device.type == "cuda") + ", fp32 params, bf16 autocast",
                      "decode_cache": "StaticCache(ctx + 1), K/V N(0,1)",
                      "prefill_logits": "all positions (HF default)"})
    print(f"hf_power: {len(windows)} rows in {time.monotonic() - t_start:.0f} s -> {path}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
