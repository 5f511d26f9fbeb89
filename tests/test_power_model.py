"""The occupancy power model (``calibration.power``): its fit re-derived from the committed
NVML rows, its closed form, the iteration energy bookkeeping and the power-cap oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fleetsim.calibration.engines import get_engine
from fleetsim.calibration.measured import PROFILE_ROOT, get_cost_model
from fleetsim.calibration.ops import ElementwiseOp, GemmOp
from fleetsim.calibration.power import (
    POWER_MODEL_FILE,
    PowerParams,
    PowerState,
    derived_params,
    power_params,
    power_state,
    refit,
)
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.errors import ConfigError
from fleetsim.sim.iteration import price_ops

from fleetsim import estimate_forward

H200 = get_gpu("H200-SXM")
H100 = get_gpu("H100-SXM")


@pytest.mark.parametrize("gpu", ["H200-SXM", "H100-SXM"])
def test_committed_power_model_is_refitted_from_its_occupancy_rows(gpu: str) -> None:
    root = PROFILE_ROOT / gpu
    fitted = refit(root, get_gpu(gpu))
    assert json.loads(fitted.to_json()) == json.loads((root / POWER_MODEL_FILE).read_text())
    fit = fitted.fit or {}
    assert fit["fitted"]["mape_pct"] < 5.0 and fit["held_out"]["mape_pct"] < 8.0, fit


def test_fit_recovers_known_parameters_from_synthetic_rows() -> None:
    """Rows generated from known parameters (power = busy x demand + (1 - busy) x gap) give
    those parameters back."""
    import pandas as pd

    base, mem, comp, gap = 150.0, 500.0, 900.0, 110.0
    rows = [{"workload": "idle", "shape": "", "dtype": "bf16", "duty": 0, "busy_fraction": 0.0, "flop_per_s": np.nan,
             "bytes_per_s": np.nan, "power_w_mean": 80.0, "sm_clock_mhz": 345}]
    for i, (uc, um, busy) in enumerate([(0.0, 0.3, 1), (0.0, 0.8, 1), (0.3, 0.1, 1), (0.05, 0.6, 1),
                                        (0.4, 0.05, 0.3), (0.4, 0.05, 0.6)]):
        p = busy * (base + mem * um + comp * uc) + (1 - busy) * gap
        rows.append({"workload": "duty_gemm" if busy < 1 else ("copy" if uc == 0 else "gemm_bf16"), "shape": str(i),
                     "dtype": "bf16", "duty": busy, "busy_fraction": busy, "flop_per_s": uc * H200.peak_flops["bf16"],
                     "bytes_per_s": um * H200.memory_bw_bps, "power_w_mean": p, "sm_clock_mhz": 1980})
    got = refit_from(pd.DataFrame(rows))
    assert (got.base_w, got.memory_w, got.compute_w, got.gap_w) == pytest.approx((base, mem, comp, gap), abs=1e-2)
    assert got.idle_w == pytest.approx(80.0)


def refit_from(df):  # noqa: ANN001, ANN201
    from fleetsim.calibration.power import fit_power_params

    return fit_power_params(df, H200)


def test_derived_model_scales_the_reference_to_the_gpu_spec() -> None:
    ref = power_params(H200)
    a100 = get_gpu("A100-SXM-80GB")
    d = derived_params(ref, a100)
    assert d.source.startswith("derived") and d.idle_w == a100.idle_power_w
    scale = (a100.tdp_w - a100.idle_power_w) / (ref.tdp_w - ref.idle_w)
    assert d.memory_w == pytest.approx(ref.memory_w * scale, abs=1e-3)
    assert d.base_w == pytest.approx(a100.idle_power_w + (ref.base_w - ref.idle_w) * scale, abs=1e-3)
    from dataclasses import replace

    got = power_params(a100)
    assert replace(got, issue_w=d.issue_w, source=d.source) == d  # plus the issue term borrowed from the H100
    h100 = power_params(H100)
    assert h100.issue_w is not None and h100.issue_w > 100
    assert got.issue_w == pytest.approx(h100.issue_w * (a100.tdp_w - a100.idle_power_w) / (h100.tdp_w - h100.idle_w),
                                        abs=1e-3)
    assert "issue_w from H100-SXM" in got.source


def _iteration(gpu=H200, cap=None):  # noqa: ANN001, ANN202
    ops = [GemmOp("big", 8192, 8192, 8192, count=4), ElementwiseOp("norm", "rmsnorm", 10 ** 8, 4e8, count=8),
           GemmOp("skinny", 1, 4096, 4096, count=16)]
    return price_ops(ops, gpu, get_cost_model(gpu), get_engine("vllm"), False, power=power_state(gpu, cap))


def test_iteration_energy_is_limited_kernel_energy_plus_gap_energy() -> None:
    """Conservation: energy = min(sum count x time x demand, settle x kernel time)
    + (iteration time - kernel time) x gap power, by hand from the operator table."""
    it = _iteration()
    st = power_state(H200)
    demand_j = float((it.ops["total_s"] * it.ops["power_w"]).sum())
    busy = float(it.ops["total_s"].sum())
    want = min(demand_j, st.settle_w * busy) + (it.time_s - busy) * st.gap_w()
    assert it.energy_j == pytest.approx(want, rel=1e-12)
    assert it.time_s > busy  # eager host gaps exist, and are charged at gap power
    assert st.params.idle_w < it.power_w <= st.settle_w


def test_cap_at_tdp_equals_uncapped_and_lower_caps_are_slower_and_draw_less() -> None:
    free = _iteration()
    at_tdp = _iteration(cap=H200.tdp_w)
    assert at_tdp.time_s == free.time_s and at_tdp.energy_j == free.energy_j and at_tdp.power_cap_w is None
    prev = free
    for cap in (650, 550, 450, 350, 250):
        it = _iteration(cap=cap)
        assert it.time_s >= prev.time_s and it.power_w <= prev.power_w + 1e-9, cap
        assert it.power_w <= power_state(H200, cap).settle_w + 1e-9
        prev = it


def test_compute_bound_work_slows_more_under_a_cap_than_memory_bound_work() -> None:
    pre = [estimate_forward("llama-3.1-8b", "H200", 8192, engine="vllm", power_cap_w=c).time_s for c in (None, 400)]
    dec = [estimate_forward("llama-3.1-8b", "H200", (8, 1, 1024), engine="vllm", power_cap_w=c).time_s
           for c in (None, 400)]
    assert pre[1] / pre[0] > dec[1] / dec[0] >= 1.0
    assert pre[1] / pre[0] > 1.1


@pytest.mark.parametrize("cap", [199.0, 701.0, float("nan"), -5.0])
def test_a_cap_outside_the_gpus_range_is_one_line_naming_it(cap: float) -> None:
    with pytest.raises(ConfigError, match=r"^power_cap_w=.*H200-SXM accepts power limits from 200 W to 700 W$"):
        estimate_forward("llama-3.1-8b", "H200", 512, power_cap_w=cap)


def test_power_params_reject_a_file_for_another_gpu(tmp_path) -> None:  # noqa: ANN001
    from fleetsim.calibration.power import load_power_params
    from fleetsim.hardware.errors import ProfileError

    (tmp_path / POWER_MODEL_FILE).write_text((PROFILE_ROOT / "H200-SXM" / POWER_MODEL_FILE).read_text())
    with pytest.raises(ProfileError, match="fitted on H200-SXM, not H100-SXM"):
        load_power_params(tmp_path, H100)
    (tmp_path / POWER_MODEL_FILE).write_text("{}")
    with pytest.raises(ProfileError, match="not a power model"):
        load_power_params(tmp_path, H100)


def test_state_is_plain_data() -> None:
    p = PowerParams(gpu="x", tdp_w=700, min_cap_w=200, idle_w=80, gap_w=100, base_w=150, memory_w=500,
                    compute_w=1000, limit_share=0.99, source="test")
    st = PowerState(p, 700.0)
    assert not st.capped and st.settle_w == pytest.approx(693.0) and st.gap_w() == 100
    assert st.iteration_j(1000.0, 1.0, 2.0) == pytest.approx(693.0 + 100.0)


def test_whole_iterations_against_nvml() -> None:
    """Held-out check against the committed NVML rows (hf_power.csv): training steps and long
    prefills within 5%, CUDA-graph decode rows within 15% each and 10% on average (the
    repeat_kv copy priced by its SM issue rate and drawing ``issue_w``)."""
    from fleetsim.power_validation import power_rows, summary

    rows = power_rows()
    assert len(rows) >= 10
    train = rows[rows["phase"] == "train"]
    assert len(train) and (train["power_err"].abs() < 0.05).all(), train
    long_pre = rows[(rows["phase"] == "prefill") & (rows["pred_time_s"] > 0.05)]
    assert len(long_pre) and (long_pre["power_err"].abs() < 0.05).all(), long_pre
    dec = rows[rows["phase"] == "decode"]
    assert len(dec) >= 5 and (dec["power_err"].abs() < 0.15).all(), dec
    summ = summary(rows).set_index("phase")
    assert summ.loc["decode", "power_mape_pct"] < 10 and summ.loc["train", "power_mape_pct"] < 5


def test_validate_power_section_prints_the_three_tables(capsys) -> None:  # noqa: ANN001
    from fleetsim.cli import main

    rc = main(["validate", "--only", "power"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "kernel power by occupancy" in out and "Zeus traces" in out and "whole Hugging Face iterations" in out


def test_clock_model_against_the_boards_own_limiter() -> None:
    """Held out: the pooled Zeus clock model predicts the throughput a 1 kW GEMM keeps under
    the 700 W limit on the H200 (measured 0.841) within 0.03 and on the H100 (0.877) within 0.08."""
    from fleetsim.power_validation import limiter_rows

    rows = limiter_rows().set_index("gpu")
    assert abs(rows.loc["H200-SXM", "ratio_err"]) < 0.03
    assert abs(rows.loc["H100-SXM", "ratio_err"]) < 0.08
    assert (rows["demand_w"] > 900).all() and (rows["clock_mhz_pred"] < 1980).all()


def test_host_power_is_charged_per_gpu_slot_and_budget_below_idle_is_refused() -> None:
    from fleetsim.hardware import catalog
    from fleetsim.hardware.cluster import (
        cluster_from_mapping,
        host_power_w,
        idle_power_w,
        node_host_power_w,
    )
    from fleetsim.hardware.errors import SpecError

    dgx = catalog.get_system("DGX-H100")
    assert node_host_power_w(dgx) == pytest.approx(0.5 * (10200 - 8 * 700))  # half the non-GPU maximum
    assert host_power_w(dgx, 8) == pytest.approx(2300.0) and host_power_w(dgx, 1) == pytest.approx(287.5)
    spec = {"pools": [{"system": "DGX-H100", "num_nodes": 2}], "pue": 1.3}
    cl = cluster_from_mapping(spec)
    assert idle_power_w(cl) == pytest.approx((16 * H100.idle_power_w + 2 * 2300.0) * 1.3)
    with pytest.raises(SpecError, match=r"power_budget_w=1000 W is below the cluster's idle draw of 7,"):
        cluster_from_mapping({**spec, "power_budget_w": 1000.0})
    with pytest.raises(SpecError, match="pue"):
        cluster_from_mapping({**spec, "pue": 0.9})
