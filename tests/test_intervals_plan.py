"""80% intervals on serving-plan rows, the serving summary and the training summary."""

from __future__ import annotations

import json
import math
import shlex

import pytest
from fleetsim.calibration import MeasuredCostModel, get_cost_model
from fleetsim.calibration.engines import get_engine
from fleetsim.calibration.intervals import interval_for
from fleetsim.hardware.catalog import get_gpu
from fleetsim.sim.iteration import price_iteration
from fleetsim.workloads.models import load_model
from fleetsim.workloads.parallel import ParallelConfig, Seq

from fleetsim import plan_serving

ARGS = dict(model="llama-3.1-70b", cluster="8xH100", tpot_s=0.05, rate_rps=10.0)
CLI = "plan --analytic --model llama-3.1-70b --cluster 8xH100 --tpot-s 0.05 --rate 10"


@pytest.fixture(scope="module")
def plan():  # type: ignore[no-untyped-def]
    return plan_serving(ARGS["model"], ARGS["cluster"], tpot_s=0.05, rate_rps=10.0)


def _roofline(model: str, gpu: str, tp: int, pp: int, batch: list[Seq]) -> float:
    """Roofline share of one iteration priced afresh (the oracle's own pricing)."""
    g = get_gpu(gpu)
    it = price_iteration(load_model(model), g, batch, ParallelConfig(tp=tp, pp=pp), get_cost_model(g),
                         get_engine("vllm"))
    return it.source_share.get("roofline", 0.0)


def test_plan_row_interval_is_interval_for_of_its_point(plan) -> None:  # type: ignore[no-untyped-def]
    t = plan.first.targets
    for r in plan.rows:
        own = isinstance(get_cost_model(get_gpu(r.gpu)), MeasuredCostModel)
        b = r.batch // r.pp
        prompt = [Seq(t.isl, 0)] * (round(b * t.isl / t.osl) // t.isl)
        rem = round(b * t.isl / t.osl) % t.isl
        mixed = [Seq(1, t.isl + t.osl // 2)] * b + prompt + ([Seq(rem, 0)] if rem else [])
        s_tpot = _roofline(ARGS["model"], r.gpu, r.tp, r.pp, mixed)
        s_ttft = _roofline(ARGS["model"], r.gpu, r.tp, r.pp, [Seq(t.isl, 0)])
        assert 0.0 < s_tpot < 1.0  # the widening is exercised
        tpot = interval_for(r.tpot_s, r.gpu, "decode_graph", own_profile=own, roofline_share=s_tpot)
        ttft = interval_for(r.ttft_s, r.gpu, "prefill_eager", own_profile=own, roofline_share=s_ttft)
        assert (r.tpot_s_p10, r.tpot_s_p90) == pytest.approx(tpot, rel=1e-12)
        assert (r.ttft_s_p10, r.ttft_s_p90) == pytest.approx(ttft, rel=1e-12)
        # throughput scales with 1 / TPOT
        assert r.output_tok_s_p10 == pytest.approx(r.output_tok_s * r.tpot_s / tpot[1], rel=1e-12)
        assert r.output_tok_s_p90 == pytest.approx(r.output_tok_s * r.tpot_s / tpot[0], rel=1e-12)
        # both classes straddle zero on H100 (q10 < 0 < q90 for own and cross), so the point is inside
        assert r.tpot_s_p10 <= r.tpot_s <= r.tpot_s_p90
        assert r.ttft_s_p10 <= r.ttft_s <= r.ttft_s_p90
        assert r.output_tok_s_p10 <= r.output_tok_s <= r.output_tok_s_p90


def test_plan_table_columns_and_cli_agree(plan, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from fleetsim.cli import main

    df = plan.table()
    for col in ("ttft_ms", "tpot_ms", "out_tok_s"):
        assert (df[f"{col}_p10"] <= df[f"{col}_p90"]).all()
    r = plan.rows[0]
    assert df.loc[0, "tpot_ms_p90"] == round(r.tpot_s_p90 * 1e3, 2)
    assert main(shlex.split(CLI)) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:1] == ["rank"])
    cols = lines[head].split()
    for i, row in df.iterrows():
        cells = dict(zip(cols, lines[head + 1 + i].split(), strict=False))
        assert cells["tpot_ms_80"] == f"{row.tpot_ms_p10:.2f}-{row.tpot_ms_p90:.2f}"
        assert cells["ttft_ms_80"] == f"{row.ttft_ms_p10:.1f}-{row.ttft_ms_p90:.1f}"
        assert cells["out_tok_s_80"] == f"{row.out_tok_s_p10}-{row.out_tok_s_p90}"
        assert float(cells["tpot_ms"]) == row.tpot_ms


def test_plan_without_profile_takes_the_cross_spread() -> None:
    from fleetsim.calibration.intervals import load_table

    p = plan_serving("llama-3.1-8b", "1xL4", isl=512, osl=128)
    r = p.rows[0]
    lo, hi = load_table().quantiles("L4", "decode_graph", "cross")  # all-roofline: no own blend
    assert (r.tpot_s_p10, r.tpot_s_p90) == pytest.approx((r.tpot_s * math.exp(lo), r.tpot_s * math.exp(hi)))


def test_simulate_summary_and_json_carry_the_interval(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from fleetsim.calibration.intervals import load_table

    from fleetsim.cli import main

    out = tmp_path / "out"
    assert main(["simulate", "--model", "llama-3.1-8b", "--cluster", "1xH100", "--num-requests", "30",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summ = json.loads((out / "summary.json").read_text())
    t = load_table()
    for key, cls in (("ttft_p50_s", "prefill_eager"), ("tpot_p50_s", "decode_graph")):
        lo, hi = summ[f"{key}_p10"], summ[f"{key}_p90"]
        assert math.isfinite(lo) and math.isfinite(hi) and lo <= hi
        q = t.quantiles("H100-SXM", cls, "own")
        assert (lo, hi) == pytest.approx((summ[key] * math.exp(q[0]), summ[key] * math.exp(q[1])))
        assert f"{key.removesuffix('_s')} {lo:.4g}-{hi:.4g} s" in printed  # the printed line reads the same keys


def test_training_summary_rows_are_numbers(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    from fleetsim import estimate_train_step
    from fleetsim.cli import main

    tr = estimate_train_step("llama-3.1-8b", "8xH100-SXM", micro_batch=1, global_batch=16, zero=3)
    rows = tr.summary().set_index("metric")["value"]
    assert rows["step time p10"] == tr.time_s_p10 and rows["step time p90"] == tr.time_s_p90
    assert main(["train", "--model", "llama-3.1-8b", "--cluster", "8xH100-SXM", "--micro-batch", "1",
                 "--global-batch", "16", "--zero", "3", "--out", str(tmp_path)]) == 0
    csv = pd.read_csv(tmp_path / "summary.csv").set_index("metric")["value"]
    assert float(csv["step time p10"]) == pytest.approx(tr.time_s_p10)
    assert float(csv["step time p90"]) == pytest.approx(tr.time_s_p90)
    assert float(csv["step time p10"]) < float(csv["step time"]) < float(csv["step time p90"])
