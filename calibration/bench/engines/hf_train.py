"""Training-step ground truth of Hugging Face ``transformers`` models (hf_train.csv,
compile_train.csv, hf_profile*.csv).

Models: ``LlamaForCausalLM`` with llama-3.1-8b's catalog config truncated to ``LLAMA_LAYERS``
of 32 layers (full 8B training state, 16 bytes/param, would not leave room for activations on
one 141 GB GPU), ``Qwen2ForCausalLM`` (qwen2.5-7b) truncated likewise; embedding and untied LM
head are full size. The recipe is the HF ``Trainer``'s with ``bf16=True``: fp32 parameters,
forward and backward under ``torch.autocast(bfloat16)``, fp32 gradients, ``torch.optim.AdamW``
(``fused=True``, lr 1e-5, fp32 moments), loss from ``model(input_ids, labels=input_ids)``
(HF shifts the labels and computes cross-entropy over fp32-upcast logits of every position),
``zero_grad(set_to_none=True)``; SDPA attention, no dropout. A step is forward + backward +
optimizer step + zero_grad, timed with CUDA events; ``time_s`` is the median of ``--steps``
steps after ``--warmup`` (the first warm-up step allocates the AdamW state). Peak memory is
``max_memory_allocated`` / ``max_memory_reserved`` over the timed steps.

``gradient_checkpointing=1``: ``model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=
{"use_reentrant": False})``: every decoder layer's forward is recomputed in the backward pass.
``compile_train.csv``: llama with every decoder layer ``nn.Module.compile()``'d (default mode,
``dynamic=False``), no checkpointing; ``compile_s`` is the first step's wall time.

Usage: ``python3 calibration/bench/engines/hf_train.py --out DIR --budget-s S``; ``--smoke``
one small shape per mode; ``--device cpu --smoke`` also shrinks the models.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hf_common as hc  # noqa: E402

COLUMNS = ("impl", "model", "config_layers", "layers", "mode", "batch", "seq_len", "tokens",
           "param_dtype", "compute_dtype", "optimizer", "attn_impl", "gradient_checkpointing",
           "params", "time_s", "p10_s", "p90_s", "peak_alloc_bytes", "peak_reserved_bytes", "steps")
COMPILE_COLUMNS = COLUMNS + ("compile_scope", "compile_mode", "compile_s")
LLAMA_LAYERS = 8
QWEN_LAYERS = 8
# (micro_batch, seq_len): >= 4096 tokens per micro-batch, plus one small
LLAMA_SHAPES = ((1, 512), (2, 2048), (1, 4096), (4, 2048))
QWEN_SHAPES = ((1, 512), (2, 2048))
COMPILE_SHAPES = ((1, 512), (2, 2048), (1, 4096))
OPTIMIZER = "torch.optim.AdamW(fused={fused}, lr=1e-5), fp32 states"


class Trainer:
    """One model with its optimizer, stepping at a given (batch, seq_len)."""

    def __init__(self, name: str, layers: int, args: argparse.Namespace, device: Any,
                 ckpt: bool = False, compiled: bool = False) -> None:
        import torch

        self.name, self.device, self.args = name, device, args
        self.cfg = hc.hf_config(name, layers, tiny=args.tiny)
        self.model = hc.build_model(self.cfg, device, torch.float32).train()
        if ckpt:
            self.model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        if compiled:
            for layer in self.model.model.layers:
                layer.compile(dynamic=False)
        self.ckpt, self.compiled = ckpt, compiled
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-5,
                                     fused=device.type == "cuda")
        self.params = hc.param_count(self.model)

    def step_fn(self, b: int, s: int) -> Any:
        import torch

        ids = torch.randint(0, self.cfg.vocab_size, (b, s), device=self.device)
        dev = self.device.type

        def step() -> None:
            with torch.autocast(dev, dtype=torch.bfloat16):
                loss = self.model(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        return step

    def row(self, b: int, s: int) -> dict[str, Any]:
        full = hc.catalog_fields(self.name)["num_hidden_layers"]
        return {"impl": "torch-compile" if self.compiled else "hf-transformers", "model": self.name,
                "config_layers": full, "layers": self.cfg.num_hidden_layers, "mode": "train",
                "batch": b, "seq_len": s, "tokens": b * s, "param_dtype": "fp32",
                "compute_dtype": "bf16-autocast",
                "optimizer": OPTIMIZER.format(fused=self.device.type == "cuda"),
                "attn_impl": hc.ATTN_IMPL, "gradient_checkpointing": int(self.ckpt),
                "params": self.params}

    def close(self) -> None:
        del self.model, self.opt
        hc.free_memory(self.device)


def measure(tr: Trainer, b: int, s: int, out: Path, path: Path, cols: tuple[str, ...]) -> bool:
    import torch

    args = tr.args
    step = tr.step_fn(b, s)
    extra: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        step()
        hc.sync(tr.device)
        if tr.compiled:
            extra = {"compile_scope": "decoder_layer", "compile_mode": "default",
                     "compile_s": float(time.monotonic() - t0)}
        hc.warm(step, args.warmup - 1, tr.device)
        hc.reset_peak(tr.device)
        st = hc.time_calls(step, args.steps, 0, tr.device)
    except torch.cuda.OutOfMemoryError as exc:
        tr.opt.zero_grad(set_to_none=True)
        hc.note_skip(out, f"{tr.name} train b={b} s={s} ckpt={int(tr.ckpt)}", f"oom {exc}")
        hc.free_memory(tr.device)
        return False
    alloc, reserved = hc.peak_bytes(tr.device)
    row = tr.row(b, s)
    row.update(time_s=st[0], p10_s=st[1], p90_s=st[2], peak_alloc_bytes=alloc,
               peak_reserved_bytes=reserved, steps=args.steps, **extra)
    hc.append_row(path, cols, row)
    print(f"{row['impl']:>15} {tr.name:>13} L={row['layers']} b={b} s={s} ckpt={int(tr.ckpt)} "
          f"{st[0] * 1e3:9.2f} ms peak {alloc / 2**30:.1f} GiB", file=sys.stderr)
    if args.profile and (b, s) == args.profile_shape:
        key = {"impl": row["impl"], "model": tr.name, "layers": row["layers"], "mode": "train",
               "batch": b, "q_len": s, "context": 0, "gradient_checkpointing": int(tr.ckpt)}
        hc.write_profile(out, key, hc.profile_kernels(step, tr.device))
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--budget-s", type=float, default=120.0)
    ap.add_argument("--only", default="eager,compile", help="comma list of: eager, compile")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="torch.profiler pass at the profile shape of each llama configuration")
    args = ap.parse_args(argv)
    args.tiny = args.tiny or (args.smoke and args.device == "cpu")
    args.warmup = max(1, args.warmup)
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
    llama = ((1, 32), (2, 48)) if args.smoke else LLAMA_SHAPES
    args.profile_shape = llama[1]
    runs: list[tuple[str, int, bool, bool, tuple[tuple[int, int], ...]]] = []
    if "eager" in only:
        runs += [("llama-3.1-8b", LLAMA_LAYERS, False, False, llama),
                 ("llama-3.1-8b", LLAMA_LAYERS, True, False, llama)]
    if "compile" in only:
        runs.append(("llama-3.1-8b", LLAMA_LAYERS, False, True,
                     ((1, 32),) if args.smoke else COMPILE_SHAPES))
    if "eager" in only:
        qwen = ((1, 32),) if args.smoke else QWEN_SHAPES
        runs += [("qwen2.5-7b", QWEN_LAYERS, False, False, qwen),
                 ("qwen2.5-7b", QWEN_LAYERS, True, False, qwen)]
    if "compile" in only:
        import torch._dynamo as dynamo

        for key in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo.config, key):
                setattr(dynamo.config, key, 64)
    for name, layers, ckpt, compiled, shapes in runs:
        if time.monotonic() > deadline:
            break
        tr = Trainer(name, layers, args, device, ckpt=ckpt, compiled=compiled)
        path = out / ("compile_train.csv" if compiled else "hf_train.csv")
        for b, s in hc.shapes_within(deadline, shapes):
            measure(tr, b, s, out, path, COMPILE_COLUMNS if compiled else COLUMNS)
        tr.close()
    hc.write_engine_meta(out, "hf_train", sys.argv[1:] if argv is None else argv, device, t_start,
                         {"train_recipe": "fp32 params, torch.autocast(bfloat16), fp32 grads, "
                                          + OPTIMIZER.format(fused=device.type == "cuda") + ", loss = model(ids, labels=ids).loss",
                          "train_layers": {"llama-3.1-8b": LLAMA_LAYERS, "qwen2.5-7b": QWEN_LAYERS},
                          "gradient_checkpointing_kwargs": {"use_reentrant": False}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
