"""Measurement grids of the calibration suites (pure Python, no torch).

The GEMM (N, K) pairs are the linear layers of the catalog models at tensor-parallel
degrees 1/2/4/8 (column-parallel layers split N, row-parallel layers split K), so the
cost model interpolates only along M (tokens) for the shapes that matter. Points whose
work is far beyond any serving or training step (very large M against the LM head) are
pruned by a FLOP cap.
"""

from __future__ import annotations

M_VALUES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
M_VALUES_REDUCED = (1, 8, 32, 128, 512, 2048, 8192, 32768)
M_VALUES_QUICK = (1, 16, 256, 4096)
TP_DEGREES = (1, 2, 4, 8)

# (hidden, qkv_out, ffn, vocab) of the catalog's dense models
_LLAMA_LIKE = {
    "llama-3.1-8b": (4096, 6144, 14336, 128256),
    "llama-3.1-70b": (8192, 10240, 28672, 128256),
    "qwen2.5-7b": (3584, 4608, 18944, 152064),
}
_GPT2_HIDDEN = (768, 1024, 1280, 1600)
_GPT2_VOCAB = 50257
SQUARES = (512, 1024, 2048, 4096, 8192, 16384)
GEMM_FLOP_CAP = 1.2e14
"""Largest 2*M*N*K measured (about 0.15 s of bf16 work on an H100)."""


def model_linear_shapes() -> list[tuple[int, int]]:
    """Sorted distinct (N, K) pairs of the catalog models' linear layers at TP 1/2/4/8."""
    pairs: set[tuple[int, int]] = set()
    for hidden, qkv, ffn, vocab in _LLAMA_LIKE.values():
        for tp in TP_DEGREES:
            pairs.add((qkv // tp, hidden))          # fused q,k,v projection, column-parallel
            pairs.add((hidden, hidden // tp))       # attention output, row-parallel
            pairs.add((2 * ffn // tp, hidden))      # fused gate+up, column-parallel
            pairs.add((hidden, ffn // tp))          # down projection, row-parallel
            pairs.add((vocab // tp, hidden))        # LM head, vocab-parallel
    for h in _GPT2_HIDDEN:
        pairs.update({(3 * h, h), (h, h), (4 * h, h), (h, 4 * h), (_GPT2_VOCAB, h)})
    pairs.update({(14336, 4096), (4096, 14336), (28672, 4096)})  # mixtral expert
    pairs.update({(s, s) for s in SQUARES})
    return sorted(pairs)


def reduced_linear_shapes() -> list[tuple[int, int]]:
    """A TP-1/TP-8 subset for the non-bf16 dtypes (fp16, tf32, fp8)."""
    pairs: set[tuple[int, int]] = set()
    for hidden, qkv, ffn, vocab in _LLAMA_LIKE.values():
        for tp in (1, 8):
            pairs.update({(qkv // tp, hidden), (hidden, hidden // tp), (2 * ffn // tp, hidden),
                          (hidden, ffn // tp), (vocab // tp, hidden)})
    pairs.update({(s, s) for s in (1024, 4096, 8192, 16384)})
    return sorted(pairs)


LAYOUT_HIDDEN = (1024, 2048, 2560, 4096)
LAYOUT_TOKENS = (2048, 4096, 8192, 16384)
LAYOUT_WGRAD_M = (256, 512, 1024, 2048, 4096, 8192, 16384)


def gemm_layout_grid(quick: bool = False) -> list[dict[str, object]]:
    """bf16 backward GEMMs of a linear layer ``y = x W^T`` (W [N, K]), in the operand layouts
    autograd issues them: the input gradient ``dx[M, K] = dy[M, N] @ W`` (layout ``nn``: both
    operands row-major, as GemmOp (M, K, N)) and the weight gradient ``dW[N, K] = dy^T @ x``
    (layout ``nt``: the first operand transposed, as GemmOp (K, N, M) with M the tokens), for
    the (N, K) of GPT-style blocks (QKV 3h x h, output h x h, MLP 4h x h and h x 4h)."""
    hs = (1024,) if quick else LAYOUT_HIDDEN
    toks = (2048,) if quick else LAYOUT_TOKENS
    ms = M_VALUES_QUICK if quick else M_VALUES
    rows: list[dict[str, object]] = []
    seen: set[tuple[str, int, int, int]] = set()

    def add(layout: str, m: int, n: int, k: int) -> None:
        if (layout, m, n, k) not in seen and 2.0 * m * n * k <= GEMM_FLOP_CAP:
            seen.add((layout, m, n, k))
            rows.append({"dtype": "bf16", "layout": layout, "m": m, "n": n, "k": k, "batch": 1})
    for h in hs:
        for n_f, k_f in ((3 * h, h), (h, h), (4 * h, h), (h, 4 * h)):
            for m in ms:
                add("nn", m, k_f, n_f)
            for t in toks:
                for m in ((1024,) if quick else LAYOUT_WGRAD_M):
                    add("nt", m, n_f, t)
    return rows


UNALIGNED_HIDDEN = (768, 1024, 1280, 1600, 2048, 2560)
UNALIGNED_TOKENS = (1024, 2048, 4096, 8192, 16384)


def gemm_unaligned_grid(quick: bool = False) -> list[dict[str, object]]:
    """bf16 GEMMs of a GPT-2-vocabulary (50257, not 16-byte aligned) LM head in training:
    the forward (M, V, h) at the hidden sizes the main grid lacks, its input gradient
    (M, h, V) (K unaligned) and its weight gradient (h, V, M) (M = the micro-batch's
    tokens). cuBLAS runs them with 1-element-aligned kernels, far below the aligned shapes'
    speed, so they form their own families (``opbatch.gemm_unaligned``)."""
    hs = (1024,) if quick else UNALIGNED_HIDDEN
    toks = (2048,) if quick else UNALIGNED_TOKENS
    ms = M_VALUES_QUICK if quick else M_VALUES
    rows: list[dict[str, object]] = []
    seen: set[tuple[int, int, int]] = set()

    def add(m: int, n: int, k: int) -> None:
        if (m, n, k) not in seen and 2.0 * m * n * k <= GEMM_FLOP_CAP:
            seen.add((m, n, k))
            rows.append({"dtype": "bf16", "m": m, "n": n, "k": k, "batch": 1})
    for h in hs:
        for m in ms:
            if h not in _GPT2_HIDDEN:
                add(m, _GPT2_VOCAB, h)     # forward
            add(m, h, _GPT2_VOCAB)         # input gradient
    for t in toks:
        for m in ms:
            add(m, _GPT2_VOCAB, t)         # weight gradient: m = hidden, k = tokens
    return rows


def gemm_grid(quick: bool = False, dtypes: tuple[str, ...] = ("bf16", "fp16", "tf32", "fp8")
              ) -> list[dict[str, object]]:
    """GEMM points as rows without times: dtype, m, n, k, batch (always 1)."""
    rows: list[dict[str, object]] = []
    for dtype in dtypes:
        ms: tuple[int, ...]
        pairs: list[tuple[int, int]]
        if quick:
            ms, pairs = M_VALUES_QUICK, [(4096, 4096), (6144, 4096), (128256, 4096)]
        elif dtype == "bf16":
            ms, pairs = M_VALUES, model_linear_shapes()
        else:
            ms, pairs = M_VALUES_REDUCED, reduced_linear_shapes()
        for n, k in pairs:
            for m in ms:
                if dtype == "fp8" and (n % 16 or k % 16):
                    continue
                if 2.0 * m * n * k > GEMM_FLOP_CAP:
                    continue
                rows.append({"dtype": dtype, "m": m, "n": n, "k": k, "batch": 1})
    return rows


# (num_heads, num_kv_heads, head_dim, v_head_dim)
HEAD_CONFIGS = ((32, 8, 128, 128), (32, 32, 128, 128), (32, 4, 128, 128), (16, 16, 64, 64),
                (16, 16, 192, 128))
DECODE_HEAD_CONFIGS = ((32, 8, 128, 128), (64, 8, 128, 128), (32, 32, 128, 128), (25, 25, 64, 64))
PREFILL_SEQ = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PREFILL_BATCH = (1, 2, 4, 8, 16, 32)
PREFILL_TOKEN_CAP = 65536
DECODE_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DECODE_CTX = (128, 512, 1024, 2048, 4096, 8192, 16384, 32768)
DECODE_KV_BYTES_CAP = 6 << 30
CHUNK_Q = (256, 512, 1024, 2048)
CHUNK_KV = (1024, 4096, 16384)


def _attn_row(phase: str, b: int, q: int, kv: int, cfg: tuple[int, int, int, int],
              causal: bool) -> dict[str, object]:
    h, hkv, d, dv = cfg
    return {"backend": "sdpa", "phase": phase, "batch": b, "q_len": q, "kv_len": kv,
            "num_heads": h, "num_kv_heads": hkv, "head_dim": d, "v_head_dim": dv,
            "causal": causal, "dtype": "bf16"}


def attention_grid(quick: bool = False) -> list[dict[str, object]]:
    """Prefill (causal, q = kv), chunked prefill (q < kv, bottom-right causal) and decode."""
    rows: list[dict[str, object]] = []
    cfgs = HEAD_CONFIGS[:1] if quick else HEAD_CONFIGS
    seqs = (128, 1024) if quick else PREFILL_SEQ
    batches = (1, 4) if quick else PREFILL_BATCH
    for cfg in cfgs:
        for s in seqs:
            for b in batches:
                if b * s <= PREFILL_TOKEN_CAP:
                    rows.append(_attn_row("prefill", b, s, s, cfg, True))
    for q in (CHUNK_Q[:1] if quick else CHUNK_Q):
        for kv in (CHUNK_KV[:1] if quick else CHUNK_KV):
            for b in ((1,) if quick else (1, 4)):
                if kv > q:
                    rows.append(_attn_row("chunked_prefill", b, q, kv, HEAD_CONFIGS[0], True))
    dcfgs = DECODE_HEAD_CONFIGS[:1] if quick else DECODE_HEAD_CONFIGS
    for cfg in dcfgs:
        for b in ((1, 16) if quick else DECODE_BATCH):
            for ctx in ((128, 2048) if quick else DECODE_CTX):
                kv_bytes = 2 * b * ctx * cfg[1] * (cfg[2] + cfg[3])  # bf16 K and V
                if kv_bytes <= DECODE_KV_BYTES_CAP:
                    rows.append(_attn_row("decode", b, 1, ctx, cfg, False))
    return rows


DENSE_CHUNK_Q = (256, 384, 512, 768, 1024, 1536, 2048)
DENSE_CHUNK_KV = (1024, 1536, 2048, 3072, 4096, 6144, 8192)


def attention_dense_grid() -> list[dict[str, object]]:
    """Chunked prefill on a half-octave grid (q in 256..2048 < kv in 1024..8192, batch 1/4,
    32/8/128): the octave grid of ``attention_grid`` leaves cells with a missing corner
    (q = kv) where chunked prefills of a few thousand context tokens fall."""
    return [_attn_row("chunked_prefill", b, q, kv, HEAD_CONFIGS[0], True)
            for q in DENSE_CHUNK_Q for kv in DENSE_CHUNK_KV for b in (1, 4) if kv > q]


BACKWARD_HEAD_CONFIGS = ((32, 8, 128, 128), (32, 32, 128, 128), (16, 16, 64, 64),
                         (16, 16, 192, 128))
BACKWARD_SEQ = (256, 512, 1024, 2048, 4096, 8192, 16384)
BACKWARD_BATCH = (1, 2, 4, 8, 16)
BACKWARD_TOKEN_CAP = 32768


def attention_backward_grid(quick: bool = False) -> list[dict[str, object]]:
    """Causal self-attention backward (q = kv, phase ``backward``): the gradient of SDPA with
    respect to Q, K and V, as a training step runs it, for MHA, GQA, small-head and MLA-like
    head shapes up to ``BACKWARD_TOKEN_CAP`` tokens."""
    cfgs = BACKWARD_HEAD_CONFIGS[:1] if quick else BACKWARD_HEAD_CONFIGS
    seqs = (256, 1024) if quick else BACKWARD_SEQ
    batches = (1, 2) if quick else BACKWARD_BATCH
    return [_attn_row("backward", b, s, s, cfg, True) for cfg in cfgs for s in seqs for b in batches
            if b * s <= BACKWARD_TOKEN_CAP]


ELEMENTWISE_ROWS = (1, 8, 64, 256, 1024, 4096, 16384)
ELEMENTWISE_COLS = (1600, 4096, 8192)
VOCABS = (50257, 128256)


def elementwise_grid(quick: bool = False) -> list[dict[str, object]]:
    """Memory-bound kernels: (kernel, rows, cols) with dtype bf16 unless noted."""
    rows_v = (1, 1024) if quick else ELEMENTWISE_ROWS
    cols_v = (4096,) if quick else ELEMENTWISE_COLS
    out: list[dict[str, object]] = []
    for kernel in ("rmsnorm", "layernorm", "silu_mul", "gelu", "rotary", "residual_add",
                   "embedding"):
        for r in rows_v:
            for c in cols_v:
                out.append({"kernel": kernel, "rows": r, "cols": c, "dtype": "bf16"})
    for kernel in ("argmax", "sample", "cross_entropy"):
        for r in ((1, 256) if quick else (1, 8, 64, 256, 1024, 4096)):
            for c in ((128256,) if quick else VOCABS):
                out.append({"kernel": kernel, "rows": r, "cols": c, "dtype": "bf16"})
    for n in ((1 << 20,) if quick else (1 << 20, 1 << 24, 1 << 26, 1 << 28)):
        out.append({"kernel": "adamw_fused", "rows": 1, "cols": n, "dtype": "fp32"})
    for n in ((1 << 20, 1 << 26) if quick else tuple(1 << e for e in range(12, 31, 2))):
        out.append({"kernel": "copy", "rows": 1, "cols": n, "dtype": "uint8"})
    return out


MOE_CONFIGS = ((8, 2, 28672, 4096), (8, 2, 4096, 14336), (64, 6, 2816, 2048), (64, 6, 2048, 1408))
"""(experts, top_k, n, k): Mixtral-8x7B gate+up and down, DeepSeek-V2-Lite-like gate+up and down."""
MOE_TOKENS = (1, 16, 64, 256, 1024, 4096, 16384)


def moe_grid(quick: bool = False) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    cfgs = MOE_CONFIGS[:1] if quick else MOE_CONFIGS
    toks = (16, 1024) if quick else MOE_TOKENS
    for impl in ("grouped_mm", "loop"):
        for e, topk, n, k in cfgs:
            for t in toks:
                out.append({"impl": impl, "tokens": t, "experts": e, "top_k": topk, "n": n,
                            "k": k, "dtype": "bf16"})
    for e, topk in sorted({(c[0], c[1]) for c in cfgs}):
        for t in toks:
            out.append({"impl": "routing", "tokens": t, "experts": e, "top_k": topk, "n": 0,
                        "k": 0, "dtype": "bf16"})
    return out


COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")
COLLECTIVE_BYTES = tuple(1 << e for e in range(10, 31, 2))  # 1 KiB .. 1 GiB, powers of 4
MEMCPY_BYTES = tuple(1 << e for e in range(12, 31, 2))      # 4 KiB .. 1 GiB


def memcpy_grid(quick: bool = False) -> list[dict[str, object]]:
    sizes = (1 << 12, 1 << 24) if quick else MEMCPY_BYTES
    return [{"direction": d, "bytes": b, "pinned": p} for d in ("h2d", "d2h")
            for p in (True, False) for b in sizes]


def launch_grid(quick: bool = False) -> list[dict[str, object]]:
    counts = (100,) if quick else (100, 1000)
    return [{"mode": m, "kernels": c} for m in ("eager", "graph") for c in counts]


POWER_CLASSES = ("idle", "gemm_bf16", "gemm_fp8", "attention_prefill", "attention_decode",
                 "memory_copy")
