"""Multi-tenant LoRA workloads: which adapter each request runs with, and its rank.

An ``AdapterPopulation`` is ``num_adapters`` fine-tuned LoRA adapters of one base model.
Each adapter gets a rank once (a fixed number or a draw from a length distribution, e.g.
``uniform(8,64)``); each request picks an adapter by a popularity law:

* ``uniform`` - every adapter equally likely;
* ``zipf``    - adapter ``i`` (0 = most popular) with probability ``(i+1)^-a / H(N, a)``,
  the finite Zipf law of S-LoRA's and Punica's workloads (``a = 0`` is uniform);
* a power law fitted to a trace column (``AdapterPopulation.from_trace``): the exponent of
  the least-squares line through log(count) against log(popularity rank) of the ids.

Adapter ids are popularity ranks for the built-in laws. A request with ``lora_rank == 0``
runs the base model only, whatever its ``adapter_id``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.lengths import FixedLength, LengthDist, min_tokens
from fleetsim.workloads.models import ModelSpec
from fleetsim.workloads.requests import RequestStream
from fleetsim.workloads.tracefile import load_trace_cached
from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_ADAPTERS = 10_000_000


class AdapterPopulation(BaseModel):
    """``num_adapters`` LoRA adapters, their ranks and how often each is asked for."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    num_adapters: int = Field(ge=1, le=MAX_ADAPTERS)
    popularity: str = "uniform"
    """``uniform`` or ``zipf`` (exponent ``zipf_a``)."""
    zipf_a: float = Field(1.0, ge=0.0, le=10.0)
    rank: LengthDist = Field(default_factory=lambda: FixedLength(tokens=16))
    """Rank of each adapter: drawn once per adapter from this distribution."""

    @model_validator(mode="after")
    def _check(self) -> AdapterPopulation:
        if self.popularity not in ("uniform", "zipf"):
            raise ValueError(f"popularity must be 'uniform' or 'zipf', got {self.popularity!r}")
        low = min_tokens(self.rank)
        if low is not None and low < 1:
            raise ValueError(f"lora_rank must be >= 1, got a {self.rank.kind} rank that can draw {low}")
        return self

    @classmethod
    def from_trace(cls, path: str | Path, column: str = "adapter_id", *,
                   rank: LengthDist | None = None) -> AdapterPopulation:
        """A Zipf population whose size is the distinct ids of ``column`` in the trace
        ``path`` and whose exponent is fitted to their rank-frequency curve."""
        stream = load_trace_cached(path)
        if column not in stream.to_frame().columns or column == "req_id":
            raise ConfigError(f"adapter trace {path}: no id column {column!r}")
        ids = np.asarray(stream.column(column))
        ids = ids[ids >= 0].astype(np.int64)
        if not len(ids):
            raise ConfigError(f"adapter trace {path}: column {column!r} holds no adapter ids")
        a = fit_zipf_exponent(np.unique(ids, return_counts=True)[1])
        return cls(num_adapters=len(np.unique(ids)), popularity="zipf", zipf_a=a,
                   rank=rank if rank is not None else FixedLength(tokens=16))

    def probabilities(self) -> np.ndarray:
        """Probability that a request asks for adapter ``i``, for every ``i``."""
        n = self.num_adapters
        if self.popularity == "uniform" or self.zipf_a == 0.0:
            return np.full(n, 1.0 / n)
        w = np.arange(1, n + 1, dtype=float) ** -self.zipf_a
        return w / w.sum()

    def adapter_ranks(self, rng: np.random.Generator) -> np.ndarray:
        """One rank per adapter (drawn before any request, so ranks do not depend on how
        many requests are drawn)."""
        return self.rank.sample(rng, self.num_adapters)

    def assign(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(adapter id, rank) of ``n`` requests."""
        ranks = self.adapter_ranks(rng)
        cdf = np.cumsum(self.probabilities())
        ids = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), self.num_adapters - 1)
        return ids.astype(np.int64), ranks[ids]

    def label(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Ranks of requests whose adapter ids are given (a trace's ``adapter_id``)."""
        bad = ids >= self.num_adapters
        if bad.any():
            raise ConfigError(f"adapter_id {int(ids[np.argmax(bad)])} is outside the population of "
                              f"{self.num_adapters} adapters (ids 0..{self.num_adapters - 1})")
        ranks = self.adapter_ranks(rng)
        return np.where(ids >= 0, ranks[np.maximum(ids, 0)], 0)


def fit_zipf_exponent(counts: np.ndarray) -> float:
    """Exponent ``a`` of ``count ~ rank^-a``: least squares of log count on log rank
    (ranks 1.. in descending count order); 0 for fewer than two distinct ids."""
    c = np.sort(np.asarray(counts, dtype=float))[::-1]
    if len(c) < 2:
        return 0.0
    x = np.log(np.arange(1, len(c) + 1, dtype=float))
    slope = float(np.polyfit(x, np.log(c), 1)[0])
    return min(10.0, max(0.0, -slope))


def with_adapters(stream: RequestStream, population: AdapterPopulation | None,
                  rng: np.random.Generator, source: str) -> RequestStream:
    """``stream`` with adapters: ids drawn from ``population`` where the stream has none,
    ranks from the population where the stream gives none. Without a population, a row
    with an adapter id but no rank is an error naming ``source``."""
    ids = stream.column("adapter_id")
    ranks = stream.column("lora_rank")
    unranked = (ids >= 0) & (ranks == 0)
    if population is None:
        if unranked.any():
            i = int(np.argmax(unranked))
            raise ConfigError(f"{source}: request {int(stream.req_id[i])} has adapter_id {int(ids[i])} but "
                              "no lora_rank and there is no adapter population (give adapters=N / "
                              "lora_rank=r, or a lora_rank column)")
        return stream
    cols = {name: stream.column(name) for name in ("arrival_s", "prompt_tokens", "output_tokens", "session_id",
                                                   "prefix_id", "prefix_tokens", "system_prefix_id",
                                                   "system_prefix_tokens", "client_id", "think_s")}
    if (ids >= 0).any():
        new_ranks = population.label(ids, rng)
        cols["adapter_id"] = ids
        cols["lora_rank"] = np.where(ranks > 0, ranks, new_ranks)
    else:
        cols["adapter_id"], cols["lora_rank"] = population.assign(rng, len(stream))
    return RequestStream.from_columns(cols, req_id=stream.req_id, validate=False)


def check_lora_ranks(stream: RequestStream, hidden_size: int, model: str) -> None:
    """A LoRA rank larger than the model's hidden size is an error naming the request."""
    ranks = stream.column("lora_rank")
    bad = ranks > hidden_size
    if bad.any():
        i = int(np.argmax(bad))
        raise ConfigError(f"request {int(stream.req_id[i])}: lora_rank {int(ranks[i])} exceeds {model}'s "
                          f"hidden size {hidden_size}")


def adapter_params_per_rank(model: ModelSpec) -> tuple[int, int]:
    """(parameters per unit of rank over the whole model, adapted projections per layer).

    LoRA adapts q, k, v, o and the MLP's gate, up, down (up, down when not gated) of every
    layer - vLLM's and PEFT's usual ``target_modules``; a projection ``in -> out`` of rank
    ``r`` holds ``r x (in + out)`` parameters (A is in x r, B is r x out). MoE layers are
    counted with the dense ``intermediate_size`` (adapters on experts are not modelled).
    llama-3.1-8b: 81,920 per layer per rank, as ``calibration/bench/lora.py`` loads."""
    h = model.hidden_size
    kv = model.num_kv_heads * model.head_dim
    kv_v = model.num_kv_heads * model.value_head_dim
    attn = (h + model.q_width) + (h + kv) + (h + kv_v) + (model.num_heads * model.value_head_dim + h)
    mlp_n = 3 if model.mlp_gated else 2
    mlp = mlp_n * (h + model.intermediate_size)
    return (attn + mlp) * model.num_layers, 4 + mlp_n


def projection_shapes(model: ModelSpec) -> tuple[tuple[int, int], ...]:
    """(in, out) features of each adapted projection of one layer, in the order q, k, v, o,
    then the MLP's (gate,) up, down: the shapes ``adapter_params_per_rank`` counts
    (llama-3.1-8b: (4096, 4096), (4096, 1024) x 2, (4096, 4096), (4096, 14336) x 2, (14336, 4096))."""
    h = model.hidden_size
    kv = model.num_kv_heads * model.head_dim
    kv_v = model.num_kv_heads * model.value_head_dim
    f = model.intermediate_size
    attn = ((h, model.q_width), (h, kv), (h, kv_v), (model.num_heads * model.value_head_dim, h))
    mlp = ((h, f), (h, f), (f, h)) if model.mlp_gated else ((h, f), (f, h))
    return attn + mlp


def adapter_bytes(model: ModelSpec, rank: int, dtype_bytes: float = 2.0) -> float:
    """Bytes of one rank-``rank`` adapter of ``model`` (all layers, unsharded)."""
    return float(adapter_params_per_rank(model)[0] * rank * dtype_bytes)


def top_share_ids(ids: np.ndarray, share: float = 0.1) -> set[int]:
    """The most requested ``share`` of the distinct adapter ids in ``ids`` (at least one;
    ties broken by the lower id)."""
    ids = ids[ids >= 0]
    if not len(ids):
        return set()
    uniq, counts = np.unique(ids, return_counts=True)
    order = np.lexsort((uniq, -counts))
    k = max(1, math.ceil(share * len(uniq)))
    return {int(x) for x in uniq[order[:k]]}


__all__ = ["AdapterPopulation", "adapter_bytes", "adapter_params_per_rank", "check_lora_ranks", "fit_zipf_exponent",
           "projection_shapes", "top_share_ids", "with_adapters"]
