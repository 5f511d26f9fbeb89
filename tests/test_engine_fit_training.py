"""The hf-transformers training profile's fitted backward kernels re-derive from the H200
profile data (fleetsim/engine_fit_training.py), and the held-out qwen rows' kernel counts
come out within 3 %."""

from __future__ import annotations

import pytest
from fleetsim.calibration.engines import get_engine

from fleetsim.engine_fit_training import (
    fit_extra_backward_kernels,
    fitted_extra_backward,
    measured_step_kernels,
    predicted_step_kernels,
    without_extra,
)


def test_extra_backward_kernels_re_derive_from_the_profile():
    prof = get_engine("hf-transformers", "training")
    assert prof.kernels.extra_kernels_backward is not None
    assert prof.kernels.extra_kernels_backward.value == pytest.approx(fit_extra_backward_kernels(), abs=1e-6)
    assert prof.kernels.extra_kernels_backward == fitted_extra_backward()


def test_measured_step_kernels_leave_out_optimizer_and_ranges():
    rows = measured_step_kernels()
    llama = rows[(rows["model"] == "llama-3.1-8b") & (rows["gradient_checkpointing"] == 0)].iloc[0]
    assert llama["kernels"] - llama["step_kernels"] == 134 + 1  # fused AdamW launches + Optimizer.step range


def test_held_out_qwen_kernel_counts():
    prof = get_engine("hf-transformers", "training")
    rows = measured_step_kernels()
    qwen = rows[rows["model"] == "qwen2.5-7b"]
    assert len(qwen) == 2
    for _, r in qwen.iterrows():
        with_extra = predicted_step_kernels(r, prof)
        assert with_extra == pytest.approx(r["step_kernels"], rel=0.03)
        assert predicted_step_kernels(r, without_extra(prof)) < 0.75 * r["step_kernels"]
