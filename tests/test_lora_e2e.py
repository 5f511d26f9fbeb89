"""LoRA pricing held out against a whole Hugging Face decode step (hf_lora.csv), and the
per-projection pricing (shrink(in) + expand(out), lora_split.csv) against whole applications.

Oracles: the committed measurements (none of them fitted anything), the figures docs/lora.md
states (recomputed here), and llama-3.1-8b's projection shapes as the bench script lists them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fleetsim.calibration.bench.lora import LLAMA8B_PROJ
from fleetsim.calibration.lora import SPLIT_FILE, kernel_model
from fleetsim.calibration.measured import PROFILE_ROOT
from fleetsim.hardware.catalog import get_gpu
from fleetsim.sim.serving.lora import kernel_seconds
from fleetsim.workloads.lora import adapter_params_per_rank, projection_shapes
from fleetsim.workloads.models import load_model

from fleetsim.lora_validation import lora_files, lora_rows, lora_summary

DOCS = Path(__file__).resolve().parents[1] / "docs" / "lora.md"
GPU = "H100-SXM"


@pytest.fixture(scope="module")
def summary() -> pd.DataFrame:
    assert GPU in lora_files(), "calibration/validation/H100-SXM/engines/hf_lora.csv is committed"
    return lora_summary(lora_rows()).set_index("pricing")


def _doc_row() -> str:
    rows = [ln for ln in DOCS.read_text().splitlines() if ln.startswith("| whole HF decode step with LoRA, H100-SXM")]
    assert len(rows) == 1, "docs/lora.md has one Validation row for the whole-step check"
    return rows[0]


def test_docs_state_the_recomputed_figures(summary: pd.DataFrame) -> None:
    """docs/lora.md's row: measured and predicted added ms per token at batch 1, the MAPE of the
    added time and of the whole step, per-projection pricing and the square one; each figure
    equals the recomputation to its printed digits."""
    row = _doc_row()
    nums = [float(x) for cell in row.split("|")[2:5] for x in re.findall(r"(\d+\.\d+)", cell)]
    shapes, square = summary.loc["shapes"], summary.loc["square"]
    want = [shapes["b1_delta_ms"], shapes["b1_pred_delta_ms"], shapes["delta_mape_pct"], shapes["time_mape_pct"],
            square["b1_pred_delta_ms"], square["delta_mape_pct"], square["time_mape_pct"]]
    assert len(nums) == len(want), (row, nums)
    for got, w in zip(nums, want, strict=True):
        assert got == pytest.approx(w, abs=0.051), (row, got, w)


def test_bounds(summary: pd.DataFrame) -> None:
    """The bounds docs/lora.md states: per-projection pricing within 5 % MAPE on the added time
    and on the whole step, no row past 12 %; the square pricing is worse on both."""
    rows = lora_rows()
    shapes = rows[rows["pricing"] == "shapes"]
    assert len(shapes) == 18
    assert summary.loc["shapes", "delta_mape_pct"] < 5.0
    assert summary.loc["shapes", "time_mape_pct"] < 5.0
    assert shapes["delta_err"].abs().max() < 0.12
    assert summary.loc["square", "delta_mape_pct"] > 3 * summary.loc["shapes", "delta_mape_pct"]


def test_projection_shapes_match_the_bench() -> None:
    """llama-3.1-8b's seven projections, as the bench script hard-codes them, and their
    in + out summing to adapter_params_per_rank's 81,920 per layer per rank."""
    m = load_model("llama-3.1-8b")
    assert projection_shapes(m) == tuple(LLAMA8B_PROJ.values())
    per_rank, n_proj = adapter_params_per_rank(m)
    assert n_proj == len(projection_shapes(m))
    assert per_rank == m.num_layers * sum(i + o for i, o in projection_shapes(m)) == 81_920 * 32


def test_split_sum_matches_whole_applications() -> None:
    """Each half measured alone, summed, against whole applications at llama-3.1-8b's four
    shapes (the ``apply`` rows, not used by the pricing): MAPE under 3 %, worst under 10 %."""
    d = pd.read_csv(PROFILE_ROOT / GPU / SPLIT_FILE)
    km = kernel_model(get_gpu(GPU))
    assert km.split is not None
    app = d[d["kind"] == "apply"]
    assert len(app) == 112
    err = np.array([km.projection_cost(r.in_features, r.out_features, r.tokens, r.adapters, r.rank).seconds
                    / r.time_s - 1 for r in app.itertuples()])
    assert np.mean(np.abs(err)) < 0.03 and np.max(np.abs(err)) < 0.10, err
    # at a measured grid point the cost is the two rows' sum exactly
    sh = d[(d["kind"] == "shrink") & (d["in_features"] == 14336) & (d["tokens"] == 32) & (d["rank"] == 16)
           & (d["adapters"] == 16)]["time_s"].item()
    ex = d[(d["kind"] == "expand") & (d["out_features"] == 4096) & (d["tokens"] == 32) & (d["rank"] == 16)
           & (d["adapters"] == 16)]["time_s"].item()
    c = km.projection_cost(14336, 4096, 32, 16, 16)
    assert c.seconds == pytest.approx(sh + ex, rel=1e-12)
    assert c.source.startswith("measured")


def test_kernel_seconds_prices_each_projection() -> None:
    """kernel_seconds with the model's shapes: layers x the sum of the seven projections'
    costs (by hand); without shapes, or on a GPU without lora_split.csv, the square pricing."""
    m = load_model("llama-3.1-8b")
    proj = projection_shapes(m)
    km = kernel_model(get_gpu(GPU))
    hand = 32 * sum(km.projection_cost(i, o, 8, 8, 16).seconds for i, o in proj)
    assert kernel_seconds(km, 4096, 224, 8, 8, 16, proj) == pytest.approx(hand, rel=1e-12)
    assert kernel_seconds(km, 4096, 224, 8, 8, 16) == pytest.approx(224 * km.cost(4096, 8, 8, 16).seconds, rel=1e-12)
    h200 = kernel_model(get_gpu("H200-SXM"))
    assert h200.split is None
    assert kernel_seconds(h200, 4096, 224, 8, 8, 16, proj) == kernel_seconds(h200, 4096, 224, 8, 8, 16)
    assert kernel_model(get_gpu(GPU), "sgmv_loop").split is None


def test_validate_cli_prints_the_lora_section(capsys: pytest.CaptureFixture[str]) -> None:
    from fleetsim.cli import main
    from fleetsim.lora_validation import lora_rows, lora_summary

    assert main(["validate", "--only", "lora"]) == 0
    out = capsys.readouterr().out
    summ = lora_summary(lora_rows())
    shapes = summ[summ["pricing"] == "shapes"].iloc[0]
    assert "== LoRA" in out and f"{shapes.delta_mape_pct:.3f}"[:4] in out and "all targets met" in out
