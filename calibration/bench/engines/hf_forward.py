"""Forward-pass ground truth of Hugging Face ``transformers`` models (hf_forward.csv,
compile_forward.csv, hf_profile*.csv).

Models: ``LlamaForCausalLM`` (llama-3.1-8b's catalog config, 32 layers), ``Qwen2ForCausalLM``
(qwen2.5-7b, 28 layers) and ``MixtralForCausalLM`` (mixtral-8x7b truncated to
``MIXTRAL_LAYERS`` of its 32 layers), random bf16 weights, ``attn_implementation="sdpa"``,
built on the GPU with ``from_config``. Modes (column ``mode``):

* ``prefill_eager``: ``model(input_ids, use_cache=False)`` under ``inference_mode``, as HF
  returns it by default: logits for every position (``[batch, seq, vocab]`` in bf16);
* ``prefill_eager_last``: the same with ``logits_to_keep=1`` (last position only, as a serving
  engine computes it), llama only;
* ``decode_eager``: one new token per sequence at position ``context`` over a transformers
  ``StaticCache`` of ``context + 1`` slots (so attention reads ``context + 1`` positions),
  K/V filled with N(0,1), explicit ``cache_position`` / ``position_ids``, no attention mask;
* ``decode_graph``: the same step captured once with ``torch.cuda.CUDAGraph`` (after warm-up on
  a side stream) and timed by replay;
* ``prefill_compile`` (compile_forward.csv): ``prefill_eager`` with every decoder layer
  ``nn.Module.compile()``'d (torch.compile default mode, ``dynamic=False``, regional:
  embedding, final norm and LM head stay eager); ``compile_s`` is the first call's wall time.

Each point: ``--warmup`` calls, then the median / p10 / p90 of ``--reps`` calls timed with CUDA
events; ``peak_alloc_bytes`` is ``max_memory_allocated`` over the timed calls. ``--profile``
adds one ``torch.profiler`` pass at a few llama points (kernel counts and summed kernel time).

Usage: ``python3 calibration/bench/engines/hf_forward.py --out DIR --budget-s S``;
``--smoke`` one small shape per mode; ``--device cpu --smoke`` also shrinks the models.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hf_common as hc  # noqa: E402

COLUMNS = ("impl", "model", "config_layers", "layers", "mode", "batch", "q_len", "context",
           "dtype", "attn_impl", "experts_impl", "logits", "cache", "graph_method", "time_s",
           "p10_s", "p90_s", "peak_alloc_bytes", "reps")
COMPILE_COLUMNS = COLUMNS + ("compile_scope", "compile_mode", "compile_s")
MIXTRAL_LAYERS = 4
MODELS = (("llama-3.1-8b", None), ("qwen2.5-7b", None), ("mixtral-8x7b", MIXTRAL_LAYERS))
PREFILL = ((1, 128), (1, 300), (2, 700), (1, 1500), (4, 1024), (8, 2048))
DECODE_BATCH = (1, 8, 32, 64)
DECODE_CTX = (512, 2048)
COMPILE_PREFILL = ((1, 128), (1, 1500), (4, 1024), (8, 2048))
PROFILE_PREFILL = ((1, 128), (4, 1024))
PROFILE_DECODE = ((8, 512),)


def _base(name: str, cfg: Any, full_layers: int, model: Any, mode: str, b: int, q: int,
          ctx: int) -> dict[str, Any]:
    return {"impl": "hf-transformers", "model": name, "config_layers": full_layers,
            "layers": cfg.num_hidden_layers, "mode": mode, "batch": b, "q_len": q, "context": ctx,
            "dtype": "bf16", "attn_impl": hc.ATTN_IMPL, "experts_impl": hc.experts_impl(model)}


def prefill_fn(model: Any, tokens: Any, last_only: bool) -> Any:
    import torch

    kw = {"logits_to_keep": 1} if last_only else {}

    def run() -> Any:
        with torch.inference_mode():
            return model(input_ids=tokens, use_cache=False, **kw).logits
    return run


def decode_step(model: Any, b: int, ctx: int, device: Any) -> tuple[Any, Any]:
    """A decode-step callable over a fresh ``StaticCache`` (``ctx + 1`` slots, K/V random) and
    the cache; the step writes position ``ctx`` and attends over all ``ctx + 1`` slots."""
    import torch
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=ctx + 1)
    vocab = model.config.vocab_size
    tokens = torch.randint(0, vocab, (b, 1), device=device)
    pos = torch.full((b, 1), ctx, dtype=torch.long, device=device)
    cpos = torch.tensor([ctx], dtype=torch.long, device=device)

    def run() -> Any:
        with torch.inference_mode():
            return model(input_ids=tokens, position_ids=pos, cache_position=cpos,
                         past_key_values=cache, use_cache=True).logits
    run()  # lazily allocates the cache layers
    with torch.inference_mode():
        for layer in getattr(cache, "layers", []):
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if isinstance(t, torch.Tensor):
                    t.normal_()
    return run, cache


def capture(run: Any, device: Any) -> Any:
    """``run`` captured in a CUDA graph (warm-up on a side stream first); returns ``replay``."""
    import torch

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            run()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        run()
    torch.cuda.synchronize()
    return g


def _measure(out: Path, path: Path, cols: tuple[str, ...], row: dict[str, Any], fn: Any,
             args: argparse.Namespace, device: Any, extra: dict[str, Any] | None = None) -> bool:
    import torch

    try:
        hc.warm(fn, args.warmup, device)
        hc.reset_peak(device)
        st = hc.time_calls(fn, args.reps, 0, device)
    except torch.cuda.OutOfMemoryError as exc:
        hc.note_skip(out, f"{row['model']} {row['mode']} b={row['batch']} q={row['q_len']} "
                     f"ctx={row['context']}", f"oom {exc}")
        hc.free_memory(device)
        return False
    row.update(time_s=st[0], p10_s=st[1], p90_s=st[2], peak_alloc_bytes=hc.peak_bytes(device)[0],
               reps=args.reps, **(extra or {}))
    hc.append_row(path, cols, row)
    print(f"{row['model']:>13} {row['mode']:<18} b={row['batch']:<3} q={row['q_len']:<5} "
          f"ctx={row['context']:<5} {st[0] * 1e3:9.3f} ms", file=sys.stderr)
    return True


def run_model(name: str, layers: int | None, args: argparse.Namespace, device: Any,
              deadline: float) -> None:
    import torch

    out = Path(args.out)
    cfg = hc.hf_config(name, layers, tiny=args.tiny)
    full_layers = hc.catalog_fields(name)["num_hidden_layers"] if not args.tiny else cfg.num_hidden_layers
    t0 = time.monotonic()
    model = hc.build_model(cfg, device, torch.bfloat16).eval()
    print(f"built {name} ({cfg.num_hidden_layers} layers, {hc.param_count(model) / 1e9:.2f} B params)"
          f" in {time.monotonic() - t0:.1f} s; experts={hc.experts_impl(model)!r}", file=sys.stderr)
    gen = torch.Generator(device=device)
    gen.manual_seed(1234)
    vocab = cfg.vocab_size
    prefill = ((1, 32), (2, 17)) if args.smoke else PREFILL
    modes = [("prefill_eager", False)]
    if name.startswith("llama"):
        modes.append(("prefill_eager_last", True))
    for b, s in hc.shapes_within(deadline, prefill):
        tokens = torch.randint(0, vocab, (b, s), device=device, generator=gen)
        for mode, last in modes:
            row = _base(name, cfg, full_layers, model, mode, b, s, 0)
            row.update(logits="last" if last else "all", cache="none", graph_method="")
            _measure(out, out / "hf_forward.csv", COLUMNS, row, prefill_fn(model, tokens, last),
                     args, device)
        del tokens
    hc.free_memory(device)
    dbatch, dctx = ((2,), (40,)) if args.smoke else (DECODE_BATCH, DECODE_CTX)
    for b, ctx in hc.shapes_within(deadline, [(b, c) for c in dctx for b in dbatch]):
        decode_point(name, cfg, full_layers, model, b, ctx, args, device)
    del model
    hc.free_memory(device)


def decode_point(name: str, cfg: Any, full_layers: int, model: Any, b: int, ctx: int,
                 args: argparse.Namespace, device: Any) -> None:
    import torch

    out = Path(args.out)
    try:
        run, cache = decode_step(model, b, ctx, device)
    except torch.cuda.OutOfMemoryError as exc:
        hc.note_skip(out, f"{name} decode b={b} ctx={ctx}", f"oom {exc}")
        hc.free_memory(device)
        return
    row = _base(name, cfg, full_layers, model, "decode_eager", b, 1, ctx)
    row.update(logits="all", cache="StaticCache", graph_method="")
    _measure(out, out / "hf_forward.csv", COLUMNS, row, run, args, device)
    if device.type == "cuda":
        try:
            g = capture(run, device)
        except Exception as exc:  # noqa: BLE001 - any capture failure is a finding to record
            hc.note_skip(out, f"{name} decode_graph b={b} ctx={ctx}",
                         f"capture failed: {type(exc).__name__}: {exc}")
            torch.cuda.synchronize()
        else:
            row = _base(name, cfg, full_layers, model, "decode_graph", b, 1, ctx)
            row.update(logits="all", cache="StaticCache", graph_method="torch.cuda.CUDAGraph")
            _measure(out, out / "hf_forward.csv", COLUMNS, row, g.replay, args, device)
            del g
    del run, cache
    hc.free_memory(device)


def run_compile(args: argparse.Namespace, device: Any, deadline: float) -> None:
    """Llama prefill with each decoder layer torch.compile'd (default mode, dynamic=False)."""
    import torch

    out = Path(args.out)
    _raise_recompile_limit()
    name = "llama-3.1-8b"
    cfg = hc.hf_config(name, None, tiny=args.tiny)
    full_layers = cfg.num_hidden_layers
    model = hc.build_model(cfg, device, torch.bfloat16).eval()
    for layer in model.model.layers:
        layer.compile(dynamic=False)
    shapes = ((1, 32),) if args.smoke else COMPILE_PREFILL
    for b, s in hc.shapes_within(deadline, shapes):
        tokens = torch.randint(0, cfg.vocab_size, (b, s), device=device)
        fn = prefill_fn(model, tokens, False)
        t0 = time.monotonic()
        try:
            fn()
            hc.sync(device)
        except Exception as exc:  # noqa: BLE001 - a compile failure is a finding to record
            hc.note_skip(out, f"{name} prefill_compile b={b} q={s}", f"{type(exc).__name__}: {exc}")
            continue
        compile_s = time.monotonic() - t0
        row = _base(name, cfg, full_layers, model, "prefill_compile", b, s, 0)
        row.update(impl="torch-compile", logits="all", cache="none", graph_method="")
        _measure(out, out / "compile_forward.csv", COMPILE_COLUMNS, row, fn, args, device,
                 {"compile_scope": "decoder_layer", "compile_mode": "default",
                  "compile_s": float(compile_s)})
        if args.profile and ((b, s) in PROFILE_PREFILL or args.smoke):
            hc.write_profile(out, _pkey("torch-compile", name, full_layers, "prefill_compile", b, s, 0),
                             hc.profile_kernels(fn, device))
    del model
    hc.free_memory(device)


def _raise_recompile_limit() -> None:
    import torch._dynamo as dynamo

    for key in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo.config, key):
            setattr(dynamo.config, key, 64)


def _pkey(impl: str, name: str, layers: int, mode: str, b: int, q: int, ctx: int
          ) -> dict[str, Any]:
    return {"impl": impl, "model": name, "layers": layers, "mode": mode, "batch": b, "q_len": q,
            "context": ctx, "gradient_checkpointing": 0}


def run_profile(args: argparse.Namespace, device: Any, deadline: float) -> None:
    """Kernel counts and summed kernel time of one call at a few llama points."""
    import torch

    out = Path(args.out)
    name = "llama-3.1-8b"
    cfg = hc.hf_config(name, None, tiny=args.tiny)
    L = cfg.num_hidden_layers
    model = hc.build_model(cfg, device, torch.bfloat16).eval()
    pre = ((1, 32),) if args.smoke else (PROFILE_PREFILL if args.profile_decode is None else ())
    for b, s in hc.shapes_within(deadline, pre):
        tokens = torch.randint(0, cfg.vocab_size, (b, s), device=device)
        for mode, last in (("prefill_eager", False), ("prefill_eager_last", True)):
            fn = prefill_fn(model, tokens, last)
            fn()
            hc.write_profile(out, _pkey("hf-transformers", name, L, mode, b, s, 0),
                             hc.profile_kernels(fn, device))
    dec = ((2, 40),) if args.smoke else (args.profile_decode or PROFILE_DECODE)
    for b, ctx in hc.shapes_within(deadline, dec):
        run, cache = decode_step(model, b, ctx, device)
        run()
        hc.write_profile(out, _pkey("hf-transformers", name, L, "decode_eager", b, 1, ctx),
                         hc.profile_kernels(run, device))
        if device.type == "cuda":
            try:
                g = capture(run, device)
            except Exception as exc:  # noqa: BLE001
                hc.note_skip(out, f"profile decode_graph b={b} ctx={ctx}", f"{exc}")
            else:
                hc.write_profile(out, _pkey("hf-transformers", name, L, "decode_graph", b, 1, ctx),
                                 hc.profile_kernels(g.replay, device))
                del g
        del run, cache
    del model
    hc.free_memory(device)


def _shapes(text: str) -> tuple[tuple[int, int], ...]:
    """``B:CTX,B:CTX`` -> ((B, CTX), ...)."""
    return tuple((int(b), int(c)) for b, c in (part.split(":") for part in text.split(",") if part.strip()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--budget-s", type=float, default=150.0)
    ap.add_argument("--only", default="eager,compile,profile",
                    help="comma list of: eager (hf_forward.csv), compile, profile")
    ap.add_argument("--models", default=",".join(n for n, _ in MODELS))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="one or two small shapes per mode")
    ap.add_argument("--tiny", action="store_true",
                    help="shrunk model widths (implied by --device cpu --smoke)")
    ap.add_argument("--profile-decode", type=_shapes, default=None, metavar="B:CTX,...",
                    help="decode shapes to profile instead of PROFILE_DECODE (and no prefill shapes)")
    ap.add_argument("--profile", action="store_true", help="profile the compile shapes that are also PROFILE_PREFILL shapes")
    args = ap.parse_args(argv)
    args.tiny = args.tiny or (args.smoke and args.device == "cpu")
    t_start = time.monotonic()
    deadline = t_start + args.budget_s
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    # budget shares: eager 60% split evenly over the models still to run (unused time carries
    # to the next), compile 75% of what is then left, profile the rest
    if "eager" in only:
        eager_end = time.monotonic() + (deadline - time.monotonic()) * (0.6 if len(only) > 1 else 1.0)
        todo = [(n, k) for n, k in MODELS if n in wanted]
        for i, (name, layers) in enumerate(todo):
            per = (eager_end - time.monotonic()) / (len(todo) - i)
            run_model(name, layers, args, device, time.monotonic() + per)
    if "compile" in only and time.monotonic() < deadline:
        share = 0.75 if "profile" in only else 1.0
        run_compile(args, device, time.monotonic() + share * (deadline - time.monotonic()))
    if "profile" in only and time.monotonic() < deadline:
        run_profile(args, device, deadline)
    hc.write_engine_meta(out, "hf_forward", sys.argv[1:] if argv is None else argv, device, t_start,
                         {"mixtral_layers": MIXTRAL_LAYERS,
                          "hf_forward_modes": "prefill_eager (all logits, use_cache=False), "
                                              "prefill_eager_last (logits_to_keep=1), decode_eager / "
                                              "decode_graph (StaticCache ctx+1, CUDAGraph replay)"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
