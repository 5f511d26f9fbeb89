"""The wheel holds exactly one top-level import, ``fleetsim``, with every subpackage and data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src") / "fleetsim"
    ignore = shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", "out")
    shutil.copytree(ROOT, src, ignore=ignore)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.fail(f"wheel build failed: {proc.stderr[-2000:]}")
    wheels = list(out.glob("fleetsim-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as zf:
        return zf.namelist()


def test_only_fleetsim_is_top_level(wheel_names: list[str]) -> None:
    tops = {n.split("/")[0] for n in wheel_names}
    tops = {t for t in tops if not t.endswith(".dist-info")}
    assert tops == {"fleetsim"}


def test_subpackages_and_data_are_in_the_wheel(wheel_names: list[str]) -> None:
    for sub in ("sim", "hardware", "workloads", "planner", "calibration", "dashboard", "traces", "cli"):
        assert f"fleetsim/{sub}/__init__.py" in wheel_names, sub
    assert any(n.startswith("fleetsim/hardware/catalog/gpus/") and n.endswith(".yaml") for n in wheel_names)
    assert any(n.startswith("fleetsim/workloads/catalog/") for n in wheel_names)
