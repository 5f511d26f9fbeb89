"""Transformer model architecture (``ModelSpec``) and its parameter counts.

A ``ModelSpec`` holds the shape of a decoder-only transformer: enough to count parameters,
build per-step operator graphs and size the KV cache. It is built from a Hugging Face
``config.json`` (see ``fleetsim.workloads.hf_config``), a Megatron/GPT-2-style dict, or a
built-in catalog name (``workloads/catalog/<name>.json``).

Parameter counts follow the Hugging Face module layout exactly (every weight, bias and norm
scale), so ``params_total()`` of a catalog model equals the safetensors parameter count.
DeepSeek-V3's multi-token-prediction (MTP) module is excluded by default, matching the
published 671B; ``include_mtp=True`` adds it (checkpoint total ~685B).
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

import numpy as np
from fleetsim.hardware.checks import validation_line
from fleetsim.hardware.errors import ConfigError, SpecError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

LayerKind = Literal["dense", "moe"]

MAX_LAYERS = 100_000
"""Most layers a model may have (the largest published models have a few hundred)."""
MAX_WIDTH = 2**24
"""Largest width, head count, vocabulary or expert count accepted (a bound, not a model)."""


class ModelSpec(BaseModel):
    """Decoder-only transformer shape. Sizes are element counts, not bytes.

    MoE layers: layer ``i`` is MoE when ``num_experts > 0``, ``i >= first_k_dense_replace``,
    ``i not in mlp_only_layers`` and ``i % moe_layer_freq == moe_layer_offset``.
    MLA (DeepSeek-V2/V3) is on when ``kv_lora_rank`` is set; then ``head_dim`` is
    ``qk_nope_head_dim + qk_rope_head_dim`` (query/key width) and ``v_head_dim`` the value width.
    Sliding window: layer ``i`` is local (attends to the last ``sliding_window`` keys) when
    ``sliding_window`` is set and ``i % sliding_window_period == 0`` (gemma2: period 2, even
    layers local); period 1 makes every layer local (Mistral-style).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str
    model_type: str
    hidden_size: int = Field(gt=0, le=MAX_WIDTH)
    num_layers: int = Field(gt=0, le=MAX_LAYERS)
    num_heads: int = Field(gt=0, le=MAX_WIDTH)
    num_kv_heads: int = Field(gt=0, le=MAX_WIDTH)
    head_dim: int = Field(gt=0, le=MAX_WIDTH)
    v_head_dim: int = Field(0, ge=0, description="value width per head; 0 means head_dim")
    intermediate_size: int = Field(gt=0, le=MAX_WIDTH)
    vocab_size: int = Field(gt=0, le=MAX_WIDTH)
    max_position_embeddings: int = Field(gt=0, le=2**40)
    tie_word_embeddings: bool = False
    position_embedding: Literal["rope", "learned"] = "rope"
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    activation: Literal["swiglu", "geglu", "gelu"] = "swiglu"
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    sandwich_norm: bool = False
    sliding_window: int | None = Field(None, gt=0)
    sliding_window_period: int = Field(1, gt=0)
    # MoE
    num_experts: int = Field(0, ge=0, le=MAX_WIDTH)
    num_experts_per_tok: int = Field(0, ge=0)
    moe_intermediate_size: int = Field(0, ge=0, le=MAX_WIDTH)
    num_shared_experts: int = Field(0, ge=0)
    shared_expert_intermediate_size: int = Field(0, ge=0)
    shared_expert_gate: bool = False
    first_k_dense_replace: int = Field(0, ge=0)
    moe_layer_freq: int = Field(1, gt=0)
    moe_layer_offset: int = Field(0, ge=0)
    mlp_only_layers: tuple[int, ...] = ()
    norm_topk_prob: bool = False
    router_bias: bool = False
    # MLA
    q_lora_rank: int | None = Field(None, gt=0)
    kv_lora_rank: int | None = Field(None, gt=0)
    qk_nope_head_dim: int = Field(0, ge=0)
    qk_rope_head_dim: int = Field(0, ge=0)
    # DeepSeek-V3 multi-token prediction
    num_nextn_predict_layers: int = Field(0, ge=0)

    def __init__(self, **data: object) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise SpecError(validation_line(e, f"model {data.get('name', '?')!r}")) from None

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        def bad(msg: str) -> SpecError:
            return SpecError(f"model {self.name!r}: {msg}")

        if not self.is_mla and self.num_heads % self.num_kv_heads:
            raise bad(f"num_heads {self.num_heads} not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.num_experts:
            if not 0 < self.num_experts_per_tok <= self.num_experts:
                raise bad(f"num_experts_per_tok {self.num_experts_per_tok} not in 1..{self.num_experts}")
            if self.moe_intermediate_size <= 0:
                raise bad("MoE model needs moe_intermediate_size > 0")
        if self.is_mla and (self.qk_nope_head_dim + self.qk_rope_head_dim != self.head_dim):
            raise bad("MLA head_dim must equal qk_nope_head_dim + qk_rope_head_dim")
        return self

    # --- derived shape ---------------------------------------------------------------

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def mlp_gated(self) -> bool:
        """Gated MLP (SwiGLU/GeGLU: gate, up, down) versus plain up/down."""
        return self.activation != "gelu"

    @property
    def value_head_dim(self) -> int:
        return self.v_head_dim or self.head_dim

    @property
    def q_width(self) -> int:
        """Query projection width: num_heads * head_dim."""
        return self.num_heads * self.head_dim

    @property
    def shared_ffn_size(self) -> int:
        """Intermediate width of the always-on shared expert MLP (0 if none)."""
        if self.shared_expert_intermediate_size:
            return self.shared_expert_intermediate_size
        return self.num_shared_experts * self.moe_intermediate_size

    def is_moe_layer(self, i: int) -> bool:
        return (
            self.num_experts > 0
            and i >= self.first_k_dense_replace
            and i not in self.mlp_only_layers
            and i % self.moe_layer_freq == self.moe_layer_offset % self.moe_layer_freq
        )

    def is_local_layer(self, i: int) -> bool:
        """True when layer ``i`` uses sliding-window attention."""
        return self.sliding_window is not None and i % self.sliding_window_period == 0

    @cached_property
    def layer_kinds(self) -> tuple[LayerKind, ...]:
        return tuple("moe" if self.is_moe_layer(i) else "dense" for i in range(self.num_layers))

    @property
    def num_moe_layers(self) -> int:
        return sum(1 for k in self.layer_kinds if k == "moe")

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    @property
    def kv_cache_width(self) -> int:
        """Elements cached per token per layer: 2*kv_heads*head_dim, or MLA's latent+rope."""
        if self.is_mla:
            assert self.kv_lora_rank is not None
            return self.kv_lora_rank + self.qk_rope_head_dim
        return self.num_kv_heads * (self.head_dim + self.value_head_dim)

    # --- parameter counts ------------------------------------------------------------

    def _norm_params(self, width: int) -> int:
        return 2 * width if self.norm == "layernorm" else width

    def _mlp_params(self, ffn: int) -> int:
        h = self.hidden_size
        mats = 3 if self.mlp_gated else 2
        bias = ((2 * ffn if self.mlp_gated else ffn) + h) if self.mlp_bias else 0
        return mats * h * ffn + bias

    def attention_params(self) -> int:
        """Attention block of one layer: projections, biases, q/k norms (not the input norm)."""
        h, hd, vhd = self.hidden_size, self.head_dim, self.value_head_dim
        nh = self.num_heads
        if self.is_mla:
            assert self.kv_lora_rank is not None
            r = self.kv_lora_rank
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * nh * hd
            else:
                q = h * nh * hd
            kv = h * (r + self.qk_rope_head_dim) + r + r * nh * (self.qk_nope_head_dim + vhd)
            return q + kv + nh * vhd * h
        kv_w = self.num_kv_heads * (hd + vhd)
        p = h * nh * hd + h * kv_w + nh * vhd * h
        if self.qkv_bias:
            p += nh * hd + kv_w
        if self.o_bias:
            p += h
        if self.qk_norm:
            p += 2 * self._norm_params(hd)
        return p

    def router_params(self) -> int:
        h = self.hidden_size
        p = h * self.num_experts + (self.num_experts if self.router_bias else 0)
        if self.shared_expert_gate:
            p += h
        return p

    def expert_params(self) -> int:
        """One routed expert's MLP."""
        return self._mlp_params(self.moe_intermediate_size)

    def dense_mlp_params(self) -> int:
        return self._mlp_params(self.intermediate_size)

    def shared_expert_params(self) -> int:
        f = self.shared_ffn_size
        return self._mlp_params(f) if f else 0

    def layer_norm_params(self) -> int:
        """Norm scales (and biases) of one layer outside the attention block."""
        n = 4 if self.sandwich_norm else 2
        return n * self._norm_params(self.hidden_size)

    def params_per_layer(self, kind: LayerKind) -> int:
        """All parameters of one ``"dense"`` or ``"moe"`` decoder layer."""
        p = self.attention_params() + self.layer_norm_params()
        if kind == "dense":
            return p + self.dense_mlp_params()
        return (
            p + self.router_params() + self.num_experts * self.expert_params()
            + self.shared_expert_params()
        )

    def active_params_per_layer(self, kind: LayerKind) -> int:
        """Parameters one token touches in a layer (top-k of the routed experts)."""
        if kind == "dense":
            return self.params_per_layer("dense")
        return (
            self.attention_params() + self.layer_norm_params() + self.router_params()
            + self.num_experts_per_tok * self.expert_params() + self.shared_expert_params()
        )

    def embedding_params(self) -> int:
        """Token embedding (+ learned position embedding)."""
        p = self.vocab_size * self.hidden_size
        if self.position_embedding == "learned":
            p += self.max_position_embeddings * self.hidden_size
        return p

    def lm_head_params(self) -> int:
        """Output projection; 0 when tied to the token embedding."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    def final_norm_params(self) -> int:
        return self._norm_params(self.hidden_size)

    def mtp_params(self) -> int:
        """DeepSeek-V3 MTP module(s) as stored in the checkpoint: enorm, hnorm, eh_proj (2h->h),
        one MoE decoder layer, shared_head norm, plus their own embedding and head copies."""
        if not self.num_nextn_predict_layers:
            return 0
        h = self.hidden_size
        one = (
            3 * self._norm_params(h) + 2 * h * h + self.params_per_layer("moe")
            + 2 * self.vocab_size * h
        )
        return self.num_nextn_predict_layers * one

    def params_total(self, include_mtp: bool = False) -> int:
        """Every parameter (MTP module excluded unless ``include_mtp``)."""
        layers = sum(self.params_per_layer(k) for k in ("dense", "moe") for _ in range(self._n(k)))
        p = self.embedding_params() + layers + self.final_norm_params() + self.lm_head_params()
        return p + (self.mtp_params() if include_mtp else 0)

    def params_active(self, include_mtp: bool = False) -> int:
        """Parameters used per token: embeddings and head plus top-k experts of each MoE layer."""
        layers = self.num_dense_layers * self.active_params_per_layer("dense")
        layers += self.num_moe_layers * self.active_params_per_layer("moe")
        p = self.embedding_params() + layers + self.final_norm_params() + self.lm_head_params()
        if include_mtp and self.num_nextn_predict_layers:
            extra = self.params_per_layer("moe") - self.active_params_per_layer("moe")
            p += self.mtp_params() - self.num_nextn_predict_layers * extra
        return p

    def _n(self, kind: LayerKind) -> int:
        return self.num_moe_layers if kind == "moe" else self.num_dense_layers

    def summary(self) -> dict[str, object]:
        """Key figures for listings (CLI, dashboard): sizes, layer mix, parameter counts."""
        return {
            "name": self.name,
            "model_type": self.model_type,
            "layers": self.num_layers,
            "dense_layers": self.num_dense_layers,
            "moe_layers": self.num_moe_layers,
            "hidden_size": self.hidden_size,
            "heads": self.num_heads,
            "kv_heads": 1 if self.is_mla else self.num_kv_heads,
            "attention": "mla" if self.is_mla else ("mha" if self.num_kv_heads == self.num_heads else "gqa"),
            "experts": f"{self.num_experts_per_tok}/{self.num_experts}" if self.is_moe else "",
            "sliding_window": self.sliding_window,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "params_total": self.params_total(),
            "params_active": self.params_active(),
            "kv_elements_per_token": self.num_layers * self.kv_cache_width,
        }

    def params_non_embedding(self) -> int:
        """Parameters excluding token/position embeddings and the LM head."""
        return self.params_total() - self.embedding_params() - self.lm_head_params()


def over_context(model: ModelSpec, tokens: np.ndarray) -> np.ndarray:
    """Which sequence lengths (prompt plus output, or a training sequence) exceed ``model``'s
    context (``max_position_embeddings``). The one owner of this limit: estimates, serving
    workloads, training and the planner all go through it (or ``check_context``)."""
    return np.asarray(tokens) > model.max_position_embeddings


def check_context(model: ModelSpec, tokens: int, what: str) -> None:
    """Raise ``ConfigError`` naming ``what`` when ``tokens`` exceed ``model``'s context."""
    if bool(over_context(model, np.asarray(tokens))):
        raise ConfigError(
            f"{what} = {tokens} tokens exceeds {model.name}'s context length of "
            f"{model.max_position_embeddings} tokens (max_position_embeddings)"
        )


def load_model(source: object) -> ModelSpec:
    """A ``ModelSpec`` from a catalog name/alias, a path to a ``config.json`` (or a directory
    holding one), a dict in HF or Megatron/GPT-2 style, or a ``ModelSpec`` (returned as is)."""
    from fleetsim.workloads.hf_config import load_model_source

    return load_model_source(source)


def list_models() -> list[str]:
    """Names of the built-in catalog models."""
    from fleetsim.workloads.hf_config import catalog_names

    return catalog_names()
