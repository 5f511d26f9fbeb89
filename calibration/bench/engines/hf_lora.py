"""Whole-model ground truth of multi-tenant LoRA decode (hf_lora.csv).

Hugging Face ``LlamaForCausalLM`` (llama-3.1-8b's catalog config, all 32 layers, random bf16
weights, SDPA), one decode step at batch ``b`` over a ``StaticCache`` of ``context + 1`` slots
(``hf_forward.decode_step``), captured in a CUDA graph (``hf_forward.capture``) and timed by
replay with CUDA events, without LoRA and with LoRA on the q, k, v, o, gate, up and down
projections of every layer (224 applications per step).

LoRA is a forward hook on each projection: ``y += grouped_mm(grouped_mm(x, A), B)`` with
``torch._grouped_mm`` over adapter-sorted token segments (``offs``: segment ends), the data flow
of ``calibration/bench/lora.py``'s ``sgmv_grouped_mm`` (Punica SGMV-style), with each layer's
own A ``[n, in, r]`` and B ``[n, r, out]`` at the projection's real in/out features. The ``b``
tokens are split as evenly as possible over ``n`` adapters (``lora.segments``). The first
config checks one hooked projection against an fp32 reference (``rel_err``).

Per (b, n, r) the row also holds, measured in the same process:

* ``base_time_s``: the step without LoRA, measured just before (hooks off, own graph);
* ``alone_<proj>_s``: the 32 layers' applications of one projection alone (no model), captured
  in one graph of 32 applications (each layer's own weights, so nothing is reused from L2),
  per step; ``alone_sum_s`` their sum over the 7 projections;
* ``table_app_s``: one application at the square ``h x h`` shape (h = 4096) that ``lora.csv``
  tabulates, re-measured with ``calibration/bench/lora.py``'s ``measure`` (L2-evicting rotation).

Usage: ``python3 calibration/bench/engines/hf_lora.py --out DIR --budget-s 240``.
Needs a CUDA GPU and ``torch._grouped_mm``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hf_common as hc  # noqa: E402
from hf_forward import capture, decode_step  # noqa: E402

try:
    from fleetsim.calibration.bench import lora as bl
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import lora as bl  # type: ignore[no-redef]

MODEL = "llama-3.1-8b"
PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
BATCHES = (1, 8, 32, 64)
RANKS = (16, 64)
CONTEXT = 512
TABLE_HIDDEN = 4096
COLUMNS = ("impl", "model", "layers", "mode", "batch", "context", "rank", "adapters", "projections",
           "lora_impl", "time_s", "p10_s", "p90_s", "base_time_s", "base_p10_s", "base_p90_s",
           "delta_s") + tuple(f"alone_{p.removesuffix('_proj')}_s" for p in PROJ) + (
           "alone_sum_s", "table_app_s", "rel_err", "reps", "peak_alloc_bytes")


def adapter_counts(b: int) -> tuple[int, ...]:
    """Distinct adapters of a batch of ``b``: 1, min(b, 8) and b (each once)."""
    return tuple(sorted({1, min(b, 8), b}))


class LoraHooks:
    """Forward hooks adding a multi-adapter LoRA term to every adapted projection."""

    def __init__(self, model: Any) -> None:
        self.active = False
        self.offs: Any = None
        self.weights: dict[Any, tuple[Any, Any]] = {}
        self.mods: list[tuple[int, str, Any]] = []
        for li, layer in enumerate(model.model.layers):
            for name in PROJ:
                mod = getattr(layer.self_attn if name in ATTN else layer.mlp, name)
                self.mods.append((li, name, mod))
                mod.register_forward_hook(self._hook)

    def _hook(self, mod: Any, inp: tuple[Any, ...], out: Any) -> Any:
        if not self.active:
            return None
        import torch

        a, b = self.weights[mod]
        x = inp[0].reshape(-1, a.shape[1])
        t = torch._grouped_mm(x, a, offs=self.offs, out_dtype=torch.bfloat16)
        return out.add_(torch._grouped_mm(t, b, offs=self.offs, out_dtype=torch.bfloat16).view_as(out))

    def allocate(self, n_max: int, rank: int, device: Any, seed: int) -> dict[Any, tuple[Any, Any]]:
        """Each projection's stacked adapters A ``[n_max, in, r]`` and B ``[n_max, r, out]``."""
        import torch

        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        full = {}
        for _, _, mod in self.mods:
            i, o = mod.in_features, mod.out_features
            a = torch.randn(n_max, i, rank, device=device, dtype=torch.bfloat16, generator=gen) / math.sqrt(i)
            b = torch.randn(n_max, rank, o, device=device, dtype=torch.bfloat16, generator=gen) / math.sqrt(rank)
            full[mod] = (a, b)
        return full

    def select(self, full: dict[Any, tuple[Any, Any]], n: int, offs: Any) -> None:
        """Use the first ``n`` adapters of ``full`` over segments ending at ``offs``."""
        self.weights = {m: (a[:n], b[:n]) for m, (a, b) in full.items()}
        self.offs = offs


def check_hook(hooks: LoraHooks, b: int, n: int, device: Any) -> float:
    """Relative error of layer 0's hooked q_proj LoRA term against fp32 (``lora._reference``)."""
    import torch

    mod = hooks.mods[0][2]
    a, bw = hooks.weights[mod]
    counts = bl.segments(b, n)
    idx = torch.repeat_interleave(torch.arange(n, device=device), torch.tensor(counts, device=device))
    x = torch.randn(b, mod.in_features, device=device, dtype=torch.bfloat16)
    with torch.inference_mode():
        base = torch.nn.functional.linear(x, mod.weight)
        hooks.active = True
        y = mod(x)
        hooks.active = False
    ref = bl._reference(x, a, bw, idx)
    return float((y.float() - base.float() - ref).norm() / ref.norm())


def alone(hooks: LoraHooks, b: int, n: int, offs: Any, device: Any) -> dict[str, float]:
    """Per-step seconds of each projection's 32 applications alone (one graph each)."""
    import torch

    counts = bl.segments(b, n)
    res: dict[str, float] = {}
    for name in PROJ:
        mods = [m for _, p, m in hooks.mods if p == name]
        i, o = mods[0].in_features, mods[0].out_features
        x = torch.randn(b, i, device=device, dtype=torch.bfloat16)
        y = torch.zeros(b, o, device=device, dtype=torch.bfloat16)
        fns = [bl._apply_fn("sgmv_grouped_mm", x, y, *hooks.weights[m], None, counts, offs) for m in mods]
        med, _, _ = bl._time_graph(fns, "cuda")
        res[f"alone_{name.removesuffix('_proj')}_s"] = med * len(mods)
    res["alone_sum_s"] = sum(res.values())
    return res


def timed(run: Any, args: argparse.Namespace, device: Any) -> tuple[float, float, float]:
    g = capture(run, device)
    st = hc.time_calls(g.replay, args.reps, args.warmup, device)
    del g
    return st


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=240.0)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--layers", type=int, default=None, help="truncate the model (smoke runs)")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    deadline = t_start + args.budget_s
    import torch

    if not torch.cuda.is_available() or not hasattr(torch, "_grouped_mm"):
        print("hf_lora: needs a CUDA GPU and torch._grouped_mm", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = hc.hf_config(MODEL, args.layers)
    model = hc.build_model(cfg, device, torch.bfloat16).eval()
    hooks = LoraHooks(model)
    l2 = int(torch.cuda.get_device_properties(0).L2_cache_size)
    print(f"built {MODEL} ({cfg.num_hidden_layers} layers) in {time.monotonic() - t_start:.1f} s; "
          f"{len(hooks.mods)} adapted projections", file=sys.stderr, flush=True)
    rows = 0
    checked = math.nan
    for rank in RANKS:
        if time.monotonic() > deadline:
            hc.note_skip(out, f"rank {rank}", "budget reached")
            continue
        full = hooks.allocate(max(BATCHES), rank, device, seed=rank)
        for b in BATCHES:
            if time.monotonic() > deadline:
                hc.note_skip(out, f"rank {rank} b={b}", "budget reached")
                continue
            run, cache = decode_step(model, b, CONTEXT, device)
            hooks.active = False
            base = timed(run, args, device)
            print(f"b={b:<3} r={rank:<3} base {base[0] * 1e3:8.3f} ms", file=sys.stderr, flush=True)
            for n in adapter_counts(b):
                if time.monotonic() > deadline:
                    hc.note_skip(out, f"rank {rank} b={b} n={n}", "budget reached")
                    continue
                counts = bl.segments(b, n)
                offs = torch.tensor(counts, device=device).cumsum(0).to(torch.int32)
                hooks.select(full, n, offs)
                try:
                    if math.isnan(checked):
                        checked = check_hook(hooks, b, n, device)
                        if not checked < 3e-2:
                            raise ArithmeticError(f"hooked LoRA disagrees with fp32: rel_err {checked:.3g}")
                    hc.reset_peak(device)
                    hooks.active = True
                    st = timed(run, args, device)
                    hooks.active = False
                    peak = hc.peak_bytes(device)[0]
                    parts = alone(hooks, b, n, offs, device)
                    table = bl.measure({"impl": "sgmv_grouped_mm", "tokens": b, "hidden": TABLE_HIDDEN,
                                        "rank": rank, "adapters": n}, "cuda", l2)["time_s"]
                except Exception as exc:  # noqa: BLE001 - a failed point is a finding to record
                    hooks.active = False
                    traceback.print_exc()
                    hc.note_skip(out, f"rank {rank} b={b} n={n}", f"{type(exc).__name__}: {exc}")
                    torch.cuda.synchronize()
                    continue
                row = {"impl": "hf-transformers", "model": MODEL, "layers": cfg.num_hidden_layers,
                       "mode": "decode_graph_lora", "batch": b, "context": CONTEXT, "rank": rank,
                       "adapters": n, "projections": len(PROJ), "lora_impl": "sgmv_grouped_mm",
                       "time_s": st[0], "p10_s": st[1], "p90_s": st[2], "base_time_s": base[0],
                       "base_p10_s": base[1], "base_p90_s": base[2], "delta_s": st[0] - base[0],
                       **parts, "table_app_s": float(table), "rel_err": checked, "reps": args.reps,
                       "peak_alloc_bytes": peak}
                hc.append_row(out / "hf_lora.csv", COLUMNS, row)
                rows += 1
                print(f"b={b:<3} r={rank:<3} n={n:<3} lora {st[0] * 1e3:8.3f} ms  delta "
                      f"{(st[0] - base[0]) * 1e3:7.3f} ms  alone {parts['alone_sum_s'] * 1e3:7.3f} ms  "
                      f"table x224 {table * 224 * 1e3:7.3f} ms  at {time.monotonic() - t_start:.0f} s",
                      file=sys.stderr, flush=True)
            del run, cache
            hc.free_memory(device)
        del full
        hooks.weights = {}
        hc.free_memory(device)
    hc.write_engine_meta(out, "hf_lora", sys.argv[1:] if argv is None else argv, device, t_start,
                         {"rows_written": rows, "context": CONTEXT, "lora_projections": ",".join(PROJ),
                          "lora_impl": "forward hooks, torch._grouped_mm shrink + expand over "
                                       "adapter-sorted segments, y.add_ in place",
                          "decode_cache": "StaticCache(ctx + 1), K/V N(0,1)", "l2_bytes": l2,
                          "reps": args.reps, "warmup": args.warmup})
    print(f"hf_lora: {rows} rows in {time.monotonic() - t_start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
