"""The capacity-study examples run through the public API, print their table and save a figure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_there_are_four_studies() -> None:
    assert {p.stem for p in EXAMPLES} == {"week_autoscale", "gpu_mix_cost", "disagg_vs_colocated", "power_capped_fleet"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(path: Path, tmp_path: Path) -> None:
    out = tmp_path / f"{path.stem}.png"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(path), "--out", str(out)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.stat().st_size > 1000
    assert "wrote" in proc.stdout
