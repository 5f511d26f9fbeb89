"""Parameter counts of the catalog models against published model-card / checkpoint counts."""

from __future__ import annotations

import pytest
from fleetsim.workloads.models import list_models, load_model

# Exact safetensors parameter counts (Hugging Face "Model size" / summed tensor shapes).
EXACT = {
    "gpt2": 124_439_808,
    "gpt2-xl": 1_557_611_200,
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "qwen2.5-7b": 7_615_616_512,
}

# Published totals (model cards / papers), billions, with relative tolerance.
PUBLISHED_TOTAL = {
    "llama-3.1-70b": (70.6, 0.002),
    "llama-3.1-405b": (405.9, 0.002),
    "qwen2.5-72b": (72.7, 0.002),
    "qwen3-32b": (32.8, 0.002),
    "qwen3-235b-a22b": (235.0, 0.002),
    "mixtral-8x7b": (46.7, 0.002),
    "mixtral-8x22b": (141.0, 0.005),
    "deepseek-v3": (671.0, 0.002),
    "gpt2-medium": (0.355, 0.003),
    "gpt2-large": (0.774, 0.002),
    "gpt3-175b": (175.0, 0.005),
    "gemma-2-9b": (9.24, 0.002),
    "gemma-2-27b": (27.2, 0.002),
    "qwen1.5-moe-a2.7b": (14.3, 0.003),
    "deepseek-v2-lite": (15.7, 0.003),
    "deepseek-v2": (236.0, 0.002),
    "qwen2-57b-a14b": (57.4, 0.002),
}

PUBLISHED_ACTIVE = {
    "qwen3-235b-a22b": (22.0, 0.015),
    "mixtral-8x7b": (12.9, 0.005),
    "mixtral-8x22b": (39.0, 0.01),
    "deepseek-v3": (37.0, 0.02),
    "qwen1.5-moe-a2.7b": (2.7, 0.01),
    "deepseek-v2": (21.0, 0.02),
    "qwen2-57b-a14b": (14.0, 0.02),
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_checkpoint_counts(name: str) -> None:
    assert load_model(name).params_total() == EXACT[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED_TOTAL))
def test_published_totals(name: str) -> None:
    want, tol = PUBLISHED_TOTAL[name]
    assert load_model(name).params_total() / 1e9 == pytest.approx(want, rel=tol)


@pytest.mark.parametrize("name", sorted(PUBLISHED_ACTIVE))
def test_published_active(name: str) -> None:
    want, tol = PUBLISHED_ACTIVE[name]
    assert load_model(name).params_active() / 1e9 == pytest.approx(want, rel=tol)


def test_deepseek_v3_mtp_matches_hf_card_685b() -> None:
    m = load_model("deepseek-v3")
    assert m.params_total(include_mtp=True) / 1e9 == pytest.approx(685.0, rel=0.002)
    # the card: 671B main model + 14B MTP module
    assert m.mtp_params() / 1e9 == pytest.approx(13.5, abs=0.6)


def test_dense_models_active_equals_total() -> None:
    for name in list_models():
        m = load_model(name)
        if not m.is_moe:
            assert m.params_active() == m.params_total(), name


@pytest.mark.parametrize("name,layers,h", [("megatron-22b", 48, 6144), ("gpt3-175b", 96, 12288),
                                      ("turing-530b", 105, 20480), ("megatron-1t", 128, 25600)])
def test_megatron_sizes_match_narayanan_closed_form(name: str, layers: int, h: int) -> None:
    # Narayanan et al. 2021, section 5.1: P = 12 l h^2 (1 + 13/(12h) + (V + s)/(12 l h));
    # the formula leaves out the final LayerNorm (2h: scale and bias).
    V, s = 51200, 2048
    want = 12 * layers * h * h * (1 + 13 / (12 * h) + (V + s) / (12 * layers * h)) + 2 * h
    m = load_model(name)
    assert m.params_total() == pytest.approx(want, rel=1e-12)


def test_llama_8b_layer_breakdown_by_hand() -> None:
    m = load_model("llama-3.1-8b")
    h, kv = 4096, 8 * 128
    attn = h * h * 2 + h * kv * 2
    mlp = 3 * h * 14336
    assert m.attention_params() == attn
    assert m.params_per_layer("dense") == attn + mlp + 2 * h
    assert m.embedding_params() == 128256 * h == m.lm_head_params()


def test_deepseek_v3_layer_kinds() -> None:
    m = load_model("deepseek-v3")
    assert m.layer_kinds[:3] == ("dense",) * 3 and set(m.layer_kinds[3:]) == {"moe"}
    assert m.num_moe_layers == 58 and m.is_mla and m.head_dim == 192 and m.value_head_dim == 128
    assert m.kv_cache_width == 576


def test_summary_figures() -> None:
    s = load_model("deepseek-v3").summary()
    assert s["attention"] == "mla" and s["experts"] == "8/256"
    assert (s["dense_layers"], s["moe_layers"]) == (3, 58)
    assert s["kv_elements_per_token"] == 61 * 576
    assert load_model("llama-3.1-8b").summary()["attention"] == "gqa"
    assert load_model("gpt2").summary()["attention"] == "mha"
