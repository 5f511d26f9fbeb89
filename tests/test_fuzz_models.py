"""Fuzzed HF config dicts and config files: a one-line FleetsimError or a sane ModelSpec."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from _fuzz import FUZZ, VALUES, known_cases, outcome
from fleetsim.workloads.models import load_model
from hypothesis import example, given
from hypothesis import strategies as st

BASE = {
    "gpt2": json.loads((Path(__file__).parents[1] / "workloads/catalog/gpt2.json").read_text()),
    "llama": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
              "intermediate_size": 688, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 2048,
              "tie_word_embeddings": False},
}
KNOWN: dict[str, object] = {}
"""Signature -> failing input of open bugs found here (see tests/_fuzz.py)."""
FOUND: dict[str, object] = {
    "ValueError@workloads/hf_config.py:_llama_like": ("llama", {"hidden_size": float("nan")}),
    "TypeError@workloads/hf_config.py:_llama_like": ("llama", {"vocab_size": {"": 4}}),
    "ZeroDivisionError@workloads/hf_config.py:_llama_like": ("llama", {"num_attention_heads": 1e-37}),
    "TypeError@workloads/hf_config.py:parse_config": ("gpt2", {"model_type": [1]}),
    "TypeError@workloads/hf_config.py:_gpt2": ("gpt2", {"n_embd": {"": 1}}),
    "ValueError@workloads/hf_config.py:_gpt2": ("gpt2", {"n_embd": ""}),
    "ZeroDivisionError@workloads/hf_config.py:_gpt2": ("gpt2", {"n_head": 0.0}),
    "TypeError@workloads/hf_config.py:_megatron": ("llama", {"model_type": None, "num_hidden_layers": [1, 1, 0]}),
    "UnicodeDecodeError@workloads/hf_config.py:_read_json": b"\xa1",
}
"""Fixed bugs the fuzzers found (workloads/hf_config.py read config values with ``int()``/
``float()`` and no type or range check): each input must now give a one-line error."""
KEYS = sorted({k for d in BASE.values() for k in d} | {"head_dim", "num_local_experts", "num_experts_per_tok",
                                                       "sliding_window", "torch_dtype", "n_positions"})


def _sane(spec: Any) -> None:
    for name in ("hidden_size", "num_layers", "num_heads", "vocab_size"):
        v = getattr(spec, name)
        assert isinstance(v, int) and v > 0, (name, v)
    p = spec.total_params() if hasattr(spec, "total_params") else None
    if p is not None:
        assert math.isfinite(p) and p > 0


@FUZZ
@given(base=st.sampled_from(sorted(BASE)), edits=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3),
       drop=st.lists(st.sampled_from(KEYS), max_size=2))
@example(base="gpt2", edits={"n_embd": 0}, drop=[])
@example(base="llama", edits={"num_attention_heads": 3}, drop=[])
def test_config_dict(base: str, edits: dict[str, Any], drop: list[str]) -> None:
    cfg = {**BASE[base], **edits}
    for k in drop:
        cfg.pop(k, None)
    spec = outcome(lambda: load_model(cfg), KNOWN, cfg)
    if spec is not None:
        _sane(spec)


@FUZZ
@given(text=st.one_of(st.binary(max_size=64),
                      st.text(max_size=40),
                      st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4).map(json.dumps),
                      st.just("[1, 2]"), st.just("null"), st.just('{"model_type": "gpt2"}')))
def test_config_file(tmp_path_factory: Any, text: str | bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    spec = outcome(lambda: load_model(str(path)), KNOWN, text)
    if spec is not None:
        _sane(spec)


@pytest.mark.parametrize("sig,case", known_cases(KNOWN, FOUND))
def test_known_bug_regressions(sig: str, case: Any, tmp_path: Path) -> None:
    """Each input must give a one-line FleetsimError or a model (xfail until fixed)."""
    if isinstance(case, bytes):
        path = tmp_path / "config.json"
        path.write_bytes(case)
        call = lambda: load_model(str(path))  # noqa: E731
    else:
        base, edits = case  # type: ignore[misc]
        cfg = {k: v for k, v in {**BASE[base], **edits}.items() if v is not None}
        call = lambda: load_model(cfg)  # noqa: E731
    outcome(call)
