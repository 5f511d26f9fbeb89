"""`fleetsim validate` counts training misses per (source, GPU, metric) group."""

from __future__ import annotations

import pandas as pd
import pytest

from fleetsim.cli.validate import training_groups


def test_groups_count_points_within_target() -> None:
    rows = pd.DataFrame({
        "source": ["a", "a", "a", "b"],
        "gpu": ["X", "X", "X", "Y"],
        "metric": ["t", "t", "t", "m"],
        "error": [0.05, -0.2, 0.01, 0.0],
        "target": [0.1, 0.1, 0.1, 0.1],
        "within_target": [True, False, True, True],
    })
    g = training_groups(rows).set_index("source")
    assert g.loc["a", "n"] == 3 and g.loc["a", "within"] == 2
    assert g.loc["a", "mean_abs_error"] == pytest.approx((0.05 + 0.2 + 0.01) / 3)
    assert g.loc["a", "max_abs_error"] == pytest.approx(0.2)
    assert g.loc["b", "within"] == 1
