"""Plain PyTorch transformer models with random weights, for validation timings.

``Decoder`` is an inference model in bf16: Llama-style (RMSNorm, rotary, GQA, SwiGLU,
untied LM head) or GPT-2-style (LayerNorm with bias, learned positions, GELU, biases,
tied LM head). Tensor parallelism is Megatron-style: the fused QKV and gate/up
projections are column-parallel (heads and FFN columns split), the attention output and
down projections are row-parallel followed by an NCCL all-reduce, and the LM head is
vocab-parallel followed by an all-gather. Prefill computes logits of the last position
only (as serving engines do); decode appends one token into static KV-cache tensors and
attends over the first ``context + 1`` positions.

``TrainGPT`` is a GPT-2-style ``nn.Module`` with fp32 master weights for bf16-autocast
training benchmarks, with optional per-block activation recomputation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    style: str  # "llama" or "gpt2"
    max_pos: int = 8192

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


LLAMA_8B = ModelShape("llama-3.1-8b", 32, 4096, 32, 8, 14336, 128256, "llama")
GPT2_XL = ModelShape("gpt2-xl", 48, 1600, 25, 25, 6400, 50257, "gpt2", max_pos=8192)
SMOKE = ModelShape("smoke-llama", 2, 256, 4, 2, 512, 1000, "llama")
SMOKE_GPT2 = ModelShape("smoke-gpt2", 2, 128, 2, 2, 512, 1000, "gpt2")
SHAPES = {s.name: s for s in (LLAMA_8B, GPT2_XL, SMOKE, SMOKE_GPT2)}


def _rand(shape: tuple[int, ...], device: Any, dtype: Any, std: float = 0.02) -> Any:
    import torch

    return torch.empty(shape, device=device, dtype=dtype).normal_(0.0, std)


class Decoder:
    """Random-weight decoder; ``tp``/``rank`` shard it, ``group`` is the NCCL group (or None)."""

    def __init__(self, shape: ModelShape, device: Any, *, tp: int = 1, group: Any = None) -> None:
        import torch

        if shape.heads % tp or shape.kv_heads % tp or shape.ffn % tp:
            raise ValueError(f"{shape.name}: heads/kv_heads/ffn not divisible by tp={tp}")
        self.s, self.tp, self.group, self.device = shape, tp, group, device
        dt = torch.bfloat16
        d = shape.head_dim
        self.h, self.hkv = shape.heads // tp, shape.kv_heads // tp
        qkv_out = (self.h + 2 * self.hkv) * d
        self.vocab_local = math.ceil(shape.vocab / tp)
        H = shape.hidden  # noqa: N806
        self.embed = _rand((shape.vocab, H), device, dt)
        self.lm_head = _rand((self.vocab_local, H), device, dt)
        gpt2 = shape.style == "gpt2"
        self.layers = []
        for _ in range(shape.layers):
            lay = {
                "wqkv": _rand((qkv_out, H), device, dt), "wo": _rand((H, self.h * d), device, dt),
                "n1": 1.0 + _rand((H,), device, dt), "n2": 1.0 + _rand((H,), device, dt),
            }
            if gpt2:
                lay.update({"w1": _rand((shape.ffn // tp, H), device, dt),
                            "w2": _rand((H, shape.ffn // tp), device, dt),
                            "bqkv": _rand((qkv_out,), device, dt), "bo": _rand((H,), device, dt),
                            "b1": _rand((shape.ffn // tp,), device, dt), "b2": _rand((H,), device, dt),
                            "nb1": _rand((H,), device, dt), "nb2": _rand((H,), device, dt)})
            else:
                lay.update({"w1": _rand((2 * shape.ffn // tp, H), device, dt),
                            "w2": _rand((H, shape.ffn // tp), device, dt)})
            self.layers.append(lay)
        self.nf = 1.0 + _rand((H,), device, dt)
        self.nfb = _rand((H,), device, dt)
        if gpt2:
            self.pos = _rand((shape.max_pos, H), device, dt)
        inv = 1.0 / (500000.0 ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))
        ang = torch.outer(torch.arange(shape.max_pos, device=device, dtype=torch.float32), inv)
        self.cos = torch.cat((ang.cos(), ang.cos()), -1).to(dt)
        self.sin = torch.cat((ang.sin(), ang.sin()), -1).to(dt)

    # -- pieces -----------------------------------------------------------------------------
    def _norm(self, x: Any, w: Any, b: Any) -> Any:
        import torch.nn.functional as F  # noqa: N812

        if self.s.style == "gpt2":
            return F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)
        return F.rms_norm(x, (x.shape[-1],), w, 1e-5)

    def _allreduce(self, x: Any) -> Any:
        if self.tp > 1:
            import torch.distributed as dist

            dist.all_reduce(x, group=self.group)
        return x

    @staticmethod
    def _rope(x: Any, cos: Any, sin: Any) -> Any:
        import torch

        half = x.shape[-1] // 2
        rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rot * sin

    def _block(self, x: Any, lay: dict[str, Any], positions: Any, cache: tuple[Any, Any] | None,
               pos0: int) -> Any:
        import torch
        import torch.nn.functional as F  # noqa: N812

        b, t, _ = x.shape
        d = self.s.head_dim
        gpt2 = self.s.style == "gpt2"
        h = self._norm(x, lay["n1"], lay.get("nb1"))
        qkv = F.linear(h, lay["wqkv"], lay.get("bqkv"))
        q, k, v = qkv.split([self.h * d, self.hkv * d, self.hkv * d], dim=-1)
        q = q.view(b, t, self.h, d).transpose(1, 2)
        k = k.view(b, t, self.hkv, d).transpose(1, 2)
        v = v.view(b, t, self.hkv, d).transpose(1, 2)
        if not gpt2:
            cos, sin = self.cos[positions], self.sin[positions]
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
        gqa = self.hkv != self.h
        if cache is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            kc, vc = cache
            kc[:, :, pos0: pos0 + t].copy_(k)
            vc[:, :, pos0: pos0 + t].copy_(v)
            o = F.scaled_dot_product_attention(q, kc, vc, enable_gqa=gqa)
        o = o.transpose(1, 2).reshape(b, t, self.h * d)
        x = x + self._allreduce(F.linear(o, lay["wo"], lay.get("bo") if self._rank0() else None))
        h = self._norm(x, lay["n2"], lay.get("nb2"))
        if gpt2:
            a = F.gelu(F.linear(h, lay["w1"], lay["b1"]), approximate="tanh")
        else:
            g, u = F.linear(h, lay["w1"]).chunk(2, dim=-1)
            a = F.silu(g) * u
        x = x + self._allreduce(F.linear(a, lay["w2"], lay.get("b2") if self._rank0() else None))
        del torch
        return x

    def _rank0(self) -> bool:
        if self.tp == 1:
            return True
        import torch.distributed as dist

        return dist.get_rank(self.group) == 0

    def _logits_argmax(self, x_last: Any) -> Any:
        import torch
        import torch.nn.functional as F  # noqa: N812

        x_last = self._norm(x_last, self.nf, self.nfb)
        logits = F.linear(x_last, self.lm_head)
        if self.tp > 1:
            import torch.distributed as dist

            rows, cols = logits.shape
            full = torch.empty((self.tp * rows, cols), device=logits.device, dtype=logits.dtype)
            dist.all_gather_into_tensor(full, logits.contiguous(), group=self.group)
            logits = full.view(self.tp, rows, cols).permute(1, 0, 2).reshape(rows, -1)
        return logits.argmax(-1)

    # -- entry points -----------------------------------------------------------------------
    def prefill(self, tokens: Any) -> Any:
        """Causal forward over ``tokens`` [b, s]; returns next-token ids of the last position."""
        import torch

        b, s = tokens.shape
        positions = torch.arange(s, device=tokens.device)
        x = self.embed[tokens]
        if self.s.style == "gpt2":
            x = x + self.pos[positions]
        for lay in self.layers:
            x = self._block(x, lay, positions, None, 0)
        return self._logits_argmax(x[:, -1])

    def new_cache(self, batch: int, length: int) -> list[tuple[Any, Any]]:
        """Static K/V tensors [b, kv_heads, length, head_dim] per layer, random-filled."""
        d = self.s.head_dim
        import torch

        return [(_rand((batch, self.hkv, length, d), self.device, torch.bfloat16, 1.0),
                 _rand((batch, self.hkv, length, d), self.device, torch.bfloat16, 1.0))
                for _ in self.layers]

    def decode(self, tokens: Any, cache: list[tuple[Any, Any]], context: int) -> Any:
        """One decode step: tokens [b, 1] at position ``context``; cache holds context+1 slots."""
        import torch

        positions = torch.full((1,), context, device=tokens.device, dtype=torch.long)
        x = self.embed[tokens]
        if self.s.style == "gpt2":
            x = x + self.pos[positions]
        for lay, kv in zip(self.layers, cache, strict=True):
            x = self._block(x, lay, positions, kv, context)
        return self._logits_argmax(x[:, -1])

    def weight_bytes(self) -> int:
        n = self.embed.numel() + self.lm_head.numel()
        n += sum(t.numel() for lay in self.layers for t in lay.values())
        return 2 * n


def make_train_model(layers: int, hidden: int, heads: int, vocab: int, seq: int) -> Any:
    """GPT-2-style causal LM (pre-LayerNorm, GELU 4h MLP, learned positions, tied head).

    Set ``model.recompute = True`` to checkpoint every block (full activation recomputation).
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F  # noqa: N812
    from torch.utils.checkpoint import checkpoint

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
            self.qkv, self.proj = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
            self.fc1, self.fc2 = nn.Linear(hidden, 4 * hidden), nn.Linear(4 * hidden, hidden)

        def forward(self, x: Any) -> Any:
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, heads, hidden // heads).unbind(2)
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), is_causal=True)
            x = x + self.proj(o.transpose(1, 2).reshape(b, t, hidden))
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, hidden), nn.Embedding(seq, hidden)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(hidden)
            self.recompute = False

        def forward(self, idx: Any, targets: Any) -> Any:
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
            for blk in self.blocks:
                x = checkpoint(blk, x, use_reentrant=False) if self.recompute else blk(x)
            logits = F.linear(self.ln_f(x), self.wte.weight)
            return F.cross_entropy(logits.float().view(-1, vocab), targets.view(-1))

    return GPT()
