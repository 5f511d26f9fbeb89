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


def test_source_checkout_runs_without_install(tmp_path: Path) -> None:
    """``python3 -m fleetsim`` in the repository root resolves the subpackages from the
    checkout (the root is first on sys.path there), the same as an installed copy."""
    code = ("import importlib.util as u, fleetsim.hardware.errors as e; print(e.__file__); "
            "print(u.find_spec('fleetsim.sim.serving').origin)")
    proc = subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path[:0] = ['.']; " + code],
                          cwd=ROOT, capture_output=True, text=True)
    # -S drops site-packages: no installed fleetsim can answer instead of the checkout
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[0] == str(ROOT / "hardware" / "errors.py")
    assert lines[1] == str(ROOT / "sim" / "serving" / "__init__.py")
