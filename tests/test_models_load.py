"""Loading models: names, aliases, files, dicts, and the errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fleetsim.hardware.errors import SpecError
from fleetsim.workloads.models import ModelSpec, list_models, load_model
from pydantic import ValidationError


def test_alias_and_case() -> None:
    assert load_model("meta-llama/Llama-3.1-8B") == load_model("llama-3.1-8b")
    assert load_model("Qwen/Qwen3-235B-A22B").name == "qwen3-235b-a22b"


def test_catalog_has_required_models() -> None:
    need = {"llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.2-1b", "llama-3.2-3b",
            "qwen2.5-7b", "qwen2.5-72b", "qwen3-32b", "qwen3-235b-a22b", "mixtral-8x7b",
            "mixtral-8x22b", "deepseek-v3", "gpt3-175b", "gpt2", "gpt2-medium", "gpt2-large",
            "gpt2-xl", "megatron-22b", "turing-530b", "megatron-1t"}
    assert need <= set(list_models())


def test_unknown_name_suggests() -> None:
    with pytest.raises(SpecError, match=r"unknown model 'llama-3.1-7b'.*did you mean"):
        load_model("llama-3.1-7b")


def test_unsupported_model_type_named(tmp_path: Path) -> None:
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model_type": "mamba", "hidden_size": 8}))
    with pytest.raises(SpecError, match="unsupported model_type 'mamba'"):
        load_model(tmp_path)


def test_missing_field_names_key_and_file(tmp_path: Path) -> None:
    cfg = json.loads((Path(__file__).parents[1] / "workloads/catalog/llama-3.1-8b.json").read_text())
    del cfg["intermediate_size"]
    p = tmp_path / "m.json"
    p.write_text(json.dumps(cfg))
    with pytest.raises(SpecError, match=r"missing 'intermediate_size'") as e:
        load_model(str(p))
    assert str(p) in str(e.value)


def test_bad_json_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text("{nope")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_model(str(p))
    with pytest.raises(SpecError, match="not found"):
        load_model(str(tmp_path / "absent.json"))


def test_dir_and_dict_roundtrip(tmp_path: Path) -> None:
    src = Path(__file__).parents[1] / "workloads/catalog/mixtral-8x7b.json"
    (tmp_path / "config.json").write_text(src.read_text())
    m = load_model(tmp_path)
    assert m.params_total() == load_model("mixtral-8x7b").params_total()
    assert load_model(json.loads(src.read_text())).params_active() == m.params_active()


def test_gpt2_and_megatron_style_dicts() -> None:
    a = load_model({"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024})
    assert a.params_total() == 124_439_808
    b = load_model({"num_layers": 96, "hidden_size": 12288, "num_attention_heads": 96,
                    "seq_length": 2048, "padded_vocab_size": 51200})
    assert b.params_total() == load_model("gpt3-175b").params_total()


def test_gemma2_alternates_local_global() -> None:
    m = load_model("gemma-2-9b")
    assert m.sliding_window == 4096
    assert [m.is_local_layer(i) for i in range(4)] == [True, False, True, False]
    assert m.activation == "geglu" and m.sandwich_norm and m.tie_word_embeddings


def test_qwen2_moe_shared_expert_and_sparse_step() -> None:
    m = load_model("qwen1.5-moe-a2.7b")
    assert m.shared_ffn_size == 5632 and m.shared_expert_gate
    cfg = json.loads((Path(__file__).parents[1] / "workloads/catalog/qwen1.5-moe-a2.7b.json").read_text())
    cfg["decoder_sparse_step"] = 2
    cfg["mlp_only_layers"] = [3]
    m2 = load_model(cfg)
    # HF Qwen2-MoE: layer i is sparse iff i not in mlp_only_layers and (i + 1) % step == 0
    want = tuple("moe" if (i not in (3,) and (i + 1) % 2 == 0) else "dense" for i in range(24))
    assert m2.layer_kinds == want


def test_invalid_spec_rejected() -> None:
    with pytest.raises(SpecError, match="num_kv_heads"):
        ModelSpec(name="x", model_type="llama", hidden_size=64, num_layers=2, num_heads=6,
                  num_kv_heads=4, head_dim=8, intermediate_size=128, vocab_size=100,
                  max_position_embeddings=128)
    with pytest.raises(SpecError, match="num_experts_per_tok"):
        load_model({**json.loads((Path(__file__).parents[1] / "workloads/catalog/mixtral-8x7b.json").read_text()),
                    "num_experts_per_tok": 9})


def test_spec_is_frozen_and_hashable() -> None:
    m = load_model("gpt2")
    with pytest.raises(ValidationError):
        m.hidden_size = 1  # type: ignore[misc]
    assert {m: 1}[load_model("gpt2")] == 1


def test_qwen_sliding_window_flags() -> None:
    cfg = json.loads((Path(__file__).parents[1] / "workloads/catalog/qwen2.5-7b.json").read_text())
    assert load_model(cfg).sliding_window is None  # use_sliding_window false
    on = {**cfg, "use_sliding_window": True, "sliding_window": 4096}
    assert load_model({**on, "max_window_layers": 28}).sliding_window is None  # no layer >= 28
    m = load_model({**on, "max_window_layers": 0})
    assert m.sliding_window == 4096 and m.is_local_layer(5)
    with pytest.raises(SpecError, match="max_window_layers"):
        load_model({**on, "max_window_layers": 14})


def test_mistral_window_on_every_layer() -> None:
    cfg = json.loads((Path(__file__).parents[1] / "workloads/catalog/llama-3.1-8b.json").read_text())
    m = load_model({**cfg, "model_type": "mistral", "sliding_window": 4096})
    assert all(m.is_local_layer(i) for i in range(m.num_layers))
