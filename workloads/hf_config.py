"""Parse Hugging Face ``config.json`` files and Megatron/GPT-2-style dicts into ``ModelSpec``.

Supported ``model_type``: llama, mistral, qwen2, qwen3, gemma2, gpt2, mixtral, qwen2_moe,
qwen3_moe, deepseek_v2, deepseek_v3, and Megatron-style dicts (``num_layers``/``hidden_size``/
``num_attention_heads`` with optional ``ffn_hidden_size``, ``padded_vocab_size``, ``seq_length``).
Every error names the missing or bad key and where the config came from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from fleetsim.hardware.checks import integer
from fleetsim.hardware.errors import SpecError, suggest
from fleetsim.workloads.models import ModelSpec

CATALOG_DIR = Path(__file__).parent / "catalog"

ALIASES: dict[str, str] = {
    "meta-llama/llama-3.1-8b": "llama-3.1-8b",
    "meta-llama/llama-3.1-8b-instruct": "llama-3.1-8b",
    "meta-llama/meta-llama-3.1-8b": "llama-3.1-8b",
    "meta-llama/meta-llama-3.1-8b-instruct": "llama-3.1-8b",
    "llama3-8b": "llama-3.1-8b",
    "meta-llama/llama-3.1-70b": "llama-3.1-70b",
    "meta-llama/llama-3.1-70b-instruct": "llama-3.1-70b",
    "meta-llama/meta-llama-3.1-70b-instruct": "llama-3.1-70b",
    "llama3-70b": "llama-3.1-70b",
    "meta-llama/llama-3.1-405b": "llama-3.1-405b",
    "meta-llama/llama-3.1-405b-instruct": "llama-3.1-405b",
    "meta-llama/llama-3.2-1b": "llama-3.2-1b",
    "meta-llama/llama-3.2-1b-instruct": "llama-3.2-1b",
    "meta-llama/llama-3.2-3b": "llama-3.2-3b",
    "meta-llama/llama-3.2-3b-instruct": "llama-3.2-3b",
    "qwen/qwen2.5-7b": "qwen2.5-7b",
    "qwen/qwen2.5-7b-instruct": "qwen2.5-7b",
    "qwen/qwen2.5-72b": "qwen2.5-72b",
    "qwen/qwen2.5-72b-instruct": "qwen2.5-72b",
    "qwen/qwen3-32b": "qwen3-32b",
    "qwen/qwen3-235b-a22b": "qwen3-235b-a22b",
    "qwen/qwen1.5-moe-a2.7b": "qwen1.5-moe-a2.7b",
    "mistralai/mixtral-8x7b-v0.1": "mixtral-8x7b",
    "mistralai/mixtral-8x7b-instruct-v0.1": "mixtral-8x7b",
    "mistralai/mixtral-8x22b-v0.1": "mixtral-8x22b",
    "mistralai/mixtral-8x22b-instruct-v0.1": "mixtral-8x22b",
    "deepseek-ai/deepseek-v3": "deepseek-v3",
    "deepseek-ai/deepseek-v3-base": "deepseek-v3",
    "deepseek-ai/deepseek-r1": "deepseek-v3",
    "deepseek-ai/deepseek-v2-lite": "deepseek-v2-lite",
    "deepseek-ai/deepseek-v2": "deepseek-v2",
    "qwen/qwen2-57b-a14b": "qwen2-57b-a14b",
    "google/gemma-2-9b": "gemma-2-9b",
    "google/gemma-2-9b-it": "gemma-2-9b",
    "google/gemma-2-27b": "gemma-2-27b",
    "google/gemma-2-27b-it": "gemma-2-27b",
    "openai-community/gpt2": "gpt2",
    "gpt2-small": "gpt2",
    "openai-community/gpt2-medium": "gpt2-medium",
    "openai-community/gpt2-large": "gpt2-large",
    "openai-community/gpt2-xl": "gpt2-xl",
    "gpt3": "gpt3-175b",
    "gpt-3": "gpt3-175b",
    "gpt3-175b": "gpt3-175b",
    "mt-nlg-530b": "turing-530b",
    "megatron-turing-530b": "turing-530b",
}


def catalog_names() -> list[str]:
    return sorted(p.stem for p in CATALOG_DIR.glob("*.json"))


@cache
def _load_catalog(name: str) -> ModelSpec:
    path = CATALOG_DIR / f"{name}.json"
    return parse_config(_read_json(path), name=name, where=str(path))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SpecError(f"cannot read model config {path}: {e.strerror or type(e).__name__}") from None
    except UnicodeDecodeError:
        raise SpecError(f"model config {path} is not a text (UTF-8 JSON) file") from None
    except json.JSONDecodeError as e:
        raise SpecError(f"model config {path} is not valid JSON: {e.msg} at line {e.lineno}") from None
    except RecursionError:
        raise SpecError(f"model config {path} is nested too deeply to be a config") from None
    if not isinstance(data, dict):
        kind = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(data), "null")
        raise SpecError(f"model config {path} must hold a JSON object, got a JSON {kind}")
    return data


def load_model_source(source: object) -> ModelSpec:
    if isinstance(source, ModelSpec):
        return source
    if isinstance(source, Mapping):
        d = dict(source)
        return parse_config(d, name=str(d.get("name", d.get("_name_or_path", "custom"))), where="dict")
    if isinstance(source, Path) or (isinstance(source, str) and _looks_like_path(source)):
        path = Path(source).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise SpecError(f"model directory {path} has no config.json")
            path = path / "config.json"
        if not path.exists():
            raise SpecError(f"model config not found: {path}")
        name = path.parent.name if path.name == "config.json" else path.stem
        return parse_config(_read_json(path), name=name, where=str(path))
    if isinstance(source, str):
        key = source.strip().lower()
        names = catalog_names()
        if key in names:
            return _load_catalog(key)
        if key in ALIASES:
            return _load_catalog(ALIASES[key])
        raise SpecError(f"unknown model {source!r}" + suggest(source, names + list(ALIASES)))
    raise SpecError(f"cannot load a model from {type(source).__name__}")


def _looks_like_path(s: str) -> bool:
    if s.endswith(".json") or s.startswith((".", "/", "~")):
        return True
    try:
        return Path(s).exists()
    except (OSError, ValueError):  # names too long for the OS, embedded NUL bytes
        return False


class _Cfg:
    """Key access that names the missing key and the config's origin."""

    def __init__(self, d: dict[str, Any], where: str, model_type: str) -> None:
        self.d, self.where, self.model_type = d, where, model_type

    def req(self, *keys: str) -> Any:
        for k in keys:
            if self.d.get(k) is not None:
                return self.d[k]
        raise SpecError(
            f"{self.model_type} config ({self.where}) is missing " + " or ".join(repr(k) for k in keys)
        )

    def opt(self, key: str, default: Any) -> Any:
        v = self.d.get(key)
        return default if v is None else v

    def _name(self, key: str) -> str:
        return f"{self.model_type} config ({self.where}): {key!r}"

    def _key(self, keys: tuple[str, ...]) -> str:
        return next((k for k in keys if self.d.get(k) is not None), keys[0])

    def size(self, *keys: str) -> int:
        """A required size: an integer >= 1 (``4096.0`` accepted; ``4096.7``, ``"32"``, ``true`` not)."""
        value = self.req(*keys)
        return integer(value, self._name(self._key(keys)), minimum=1, error=SpecError)

    def int_opt(self, key: str, default: int) -> int:
        """An optional count: an integer >= 0, ``default`` when absent."""
        v = self.d.get(key)
        return default if v is None else integer(v, self._name(key), minimum=0, error=SpecError)

    def flag(self, key: str, default: bool) -> bool:
        """An optional JSON boolean (``true``/``false``; 0 and 1 accepted)."""
        v = self.d.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)):
            return bool(v)
        raise SpecError(f"{self._name(key)} must be true or false, got {v!r}")

    def int_list(self, key: str) -> tuple[int, ...]:
        v = self.d.get(key)
        if v is None:
            return ()
        if not isinstance(v, list):
            raise SpecError(f"{self._name(key)} must be a list of integers, got {v!r}")
        return tuple(integer(i, self._name(key), minimum=0, error=SpecError) for i in v)

    def head_dim(self, hidden: int, heads: int, key: str = "head_dim") -> int:
        """``key`` when given, else hidden / heads, which must then divide evenly."""
        if self.d.get(key) is not None:
            return self.size(key)
        if hidden % heads:
            raise SpecError(
                f"{self.model_type} config ({self.where}): hidden size {hidden} is not divisible by "
                f"{heads} attention heads (and no {key!r} is given)"
            )
        return hidden // heads


def parse_config(d: dict[str, Any], *, name: str, where: str) -> ModelSpec:
    """Turn a config dict into a ``ModelSpec``; ``where`` names the origin in errors."""
    mt = d.get("model_type")
    if mt is not None and not isinstance(mt, str):
        raise SpecError(f"model config ({where}): 'model_type' must be a string, got {mt!r}")
    if mt is None or mt == "megatron_gpt":
        if any(k in d for k in ("n_layer", "num_layers", "num_hidden_layers")):
            mt = "gpt2" if "n_layer" in d else "megatron_gpt"
        else:
            raise SpecError(f"model config ({where}) has no 'model_type' and no layer count key")
    parser = _PARSERS.get(mt)
    if parser is None:
        raise SpecError(
            f"unsupported model_type {mt!r} in {where} (supported: {', '.join(sorted(_PARSERS))})"
        )
    fields = parser(_Cfg(d, where, mt))
    try:
        return ModelSpec(name=name, model_type=mt, **fields)
    except SpecError as e:
        raise SpecError(f"{e} (in {where})") from None


def _llama_like(c: _Cfg) -> dict[str, Any]:
    h = c.size("hidden_size")
    nh = c.size("num_attention_heads")
    hd = c.head_dim(h, nh)
    act = str(c.opt("hidden_act", "silu"))
    return dict(
        hidden_size=h,
        num_layers=c.size("num_hidden_layers"),
        num_heads=nh,
        num_kv_heads=c.int_opt("num_key_value_heads", nh),
        head_dim=hd,
        intermediate_size=c.size("intermediate_size"),
        vocab_size=c.size("vocab_size"),
        max_position_embeddings=c.size("max_position_embeddings"),
        tie_word_embeddings=c.flag("tie_word_embeddings", False),
        activation="geglu" if act.startswith("gelu") else "swiglu",
        qkv_bias=c.flag("attention_bias", False),
        o_bias=c.flag("attention_bias", False),
        mlp_bias=c.flag("mlp_bias", False),
    )


def _mistral(c: _Cfg) -> dict[str, Any]:
    f = _llama_like(c)
    if c.opt("sliding_window", None):
        f["sliding_window"] = c.size("sliding_window")
    return f


def _qwen2(c: _Cfg) -> dict[str, Any]:
    f = _llama_like(c)
    f.update(qkv_bias=True, o_bias=False)
    f.update(_qwen_window(c, f["num_layers"]))
    return f


def _qwen_window(c: _Cfg, layers: int) -> dict[str, Any]:
    """Qwen applies the window only with use_sliding_window, and then only on layers with
    index >= max_window_layers; a window on some layers only is not modelled."""
    if c.opt("use_sliding_window", False) and c.opt("sliding_window", None):
        first = c.int_opt("max_window_layers", 0)
        if first >= layers:
            return {}
        if first > 0:
            raise SpecError(
                f"{c.model_type} config ({c.where}): sliding window on layers {first}..{layers - 1} "
                "only (max_window_layers) is not supported"
            )
        return {"sliding_window": c.size("sliding_window")}
    return {}


def _qwen3(c: _Cfg) -> dict[str, Any]:
    f = _llama_like(c)
    f.update(qk_norm=True)
    f.update(_qwen_window(c, f["num_layers"]))
    return f


def _gemma2(c: _Cfg) -> dict[str, Any]:
    f = _llama_like(c)
    f.update(
        activation="geglu",
        sandwich_norm=True,
        tie_word_embeddings=c.flag("tie_word_embeddings", True),
        sliding_window=c.size("sliding_window"),
        sliding_window_period=2,
    )
    return f


def _moe_common(c: _Cfg, f: dict[str, Any], experts_key: str) -> dict[str, Any]:
    f.update(
        num_experts=c.size(experts_key),
        num_experts_per_tok=c.size("num_experts_per_tok"),
    )
    return f


def _mixtral(c: _Cfg) -> dict[str, Any]:
    f = _mistral(c)
    f = _moe_common(c, f, "num_local_experts")
    f["moe_intermediate_size"] = f["intermediate_size"]
    f["norm_topk_prob"] = True
    return f


def _qwen_moe(c: _Cfg, qwen3: bool) -> dict[str, Any]:
    f = _qwen3(c) if qwen3 else _qwen2(c)
    f = _moe_common(c, f, "num_experts")
    step = c.int_opt("decoder_sparse_step", 1)
    f.update(
        moe_intermediate_size=c.size("moe_intermediate_size"),
        moe_layer_freq=step,
        moe_layer_offset=step - 1,
        mlp_only_layers=c.int_list("mlp_only_layers"),
        norm_topk_prob=c.flag("norm_topk_prob", False),
    )
    if not qwen3:
        shared = c.int_opt("shared_expert_intermediate_size", 0)
        f.update(shared_expert_intermediate_size=shared, num_shared_experts=1 if shared else 0,
                 shared_expert_gate=bool(shared))
    return f


def _deepseek(c: _Cfg, v3: bool) -> dict[str, Any]:
    h = c.size("hidden_size")
    nh = c.size("num_attention_heads")
    nope, rope = c.size("qk_nope_head_dim"), c.size("qk_rope_head_dim")
    q_lora = c.opt("q_lora_rank", None)
    n_routed = c.int_opt("n_routed_experts", 0)
    f: dict[str, Any] = dict(
        hidden_size=h,
        num_layers=c.size("num_hidden_layers"),
        num_heads=nh,
        num_kv_heads=c.int_opt("num_key_value_heads", nh),
        head_dim=nope + rope,
        v_head_dim=c.size("v_head_dim"),
        intermediate_size=c.size("intermediate_size"),
        vocab_size=c.size("vocab_size"),
        max_position_embeddings=c.size("max_position_embeddings"),
        tie_word_embeddings=c.flag("tie_word_embeddings", False),
        qkv_bias=c.flag("attention_bias", False),
        q_lora_rank=c.size("q_lora_rank") if q_lora else None,
        kv_lora_rank=c.size("kv_lora_rank"),
        qk_nope_head_dim=nope,
        qk_rope_head_dim=rope,
    )
    if n_routed:
        f.update(
            num_experts=n_routed,
            num_experts_per_tok=c.size("num_experts_per_tok"),
            moe_intermediate_size=c.size("moe_intermediate_size"),
            num_shared_experts=c.int_opt("n_shared_experts", 0),
            first_k_dense_replace=c.int_opt("first_k_dense_replace", 0),
            moe_layer_freq=c.int_opt("moe_layer_freq", 1),
            norm_topk_prob=c.flag("norm_topk_prob", False),
            router_bias=v3 and c.opt("topk_method", "noaux_tc") == "noaux_tc",
        )
    if v3:
        f["num_nextn_predict_layers"] = c.int_opt("num_nextn_predict_layers", 0)
    return f


def _gpt2(c: _Cfg) -> dict[str, Any]:
    h = c.size("n_embd", "hidden_size")
    nh = c.size("n_head", "num_attention_heads")
    return dict(
        hidden_size=h,
        num_layers=c.size("n_layer", "num_hidden_layers"),
        num_heads=nh,
        num_kv_heads=nh,
        head_dim=c.head_dim(h, nh),
        intermediate_size=c.int_opt("n_inner", 4 * h),
        vocab_size=c.int_opt("vocab_size", 50257),
        max_position_embeddings=c.size("n_positions", "max_position_embeddings"),
        tie_word_embeddings=c.flag("tie_word_embeddings", True),
        position_embedding="learned",
        norm="layernorm",
        activation="gelu",
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
    )


def _megatron(c: _Cfg) -> dict[str, Any]:
    """Megatron-LM GPT arguments (learned positions, LayerNorm, GeLU, biases, tied head)."""
    h = c.size("hidden_size")
    nh = c.size("num_attention_heads")
    seq = c.size("max_position_embeddings", "seq_length")
    norm = str(c.opt("normalization", "LayerNorm")).lower()
    swiglu = c.flag("swiglu", False) or str(c.opt("activation", "gelu")) == "swiglu"
    bias = c.flag("add_bias_linear", True)
    groups = c.int_opt("num_query_groups", nh) if c.opt("group_query_attention", True) else nh
    return dict(
        hidden_size=h,
        num_layers=c.size("num_layers", "num_hidden_layers"),
        num_heads=nh,
        num_kv_heads=groups,
        head_dim=c.head_dim(h, nh, "kv_channels"),
        intermediate_size=c.int_opt("ffn_hidden_size", 4 * h),
        vocab_size=c.size("padded_vocab_size", "vocab_size"),
        max_position_embeddings=seq,
        tie_word_embeddings=not c.flag("untie_embeddings_and_output_weights", False),
        position_embedding="rope" if c.opt("position_embedding_type", "learned_absolute") == "rope" else "learned",
        norm="rmsnorm" if norm == "rmsnorm" else "layernorm",
        activation="swiglu" if swiglu else "gelu",
        qkv_bias=bias,
        o_bias=bias,
        mlp_bias=bias,
    )


_PARSERS: dict[str, Callable[[_Cfg], dict[str, Any]]] = {
    "llama": _llama_like,
    "mistral": _mistral,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "gemma2": _gemma2,
    "gpt2": _gpt2,
    "megatron_gpt": _megatron,
    "mixtral": _mixtral,
    "qwen2_moe": lambda c: _qwen_moe(c, qwen3=False),
    "qwen3_moe": lambda c: _qwen_moe(c, qwen3=True),
    "deepseek_v2": lambda c: _deepseek(c, v3=False),
    "deepseek_v3": lambda c: _deepseek(c, v3=True),
}
