"""The wheel holds exactly one top-level import, ``fleetsim``, with every subpackage and data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the checkout (no build outputs, no network)."""
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
    return wheels[0]


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
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


def test_every_data_file_is_in_the_wheel(wheel_names: list[str]) -> None:
    """Each file under the data folders the code reads ships, whatever its extension or depth."""
    data = {"hardware": ["catalog"], "workloads": ["catalog", "defaults"],
            "calibration": ["profiles", "validation", "engines"]}
    names = set(wheel_names)
    expected = [f"fleetsim/{pkg}/{p.relative_to(ROOT / pkg).as_posix()}"
                for pkg, subs in data.items() for sub in subs
                for p in sorted((ROOT / pkg / sub).rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    assert len(expected) > 100
    engines = [n for n in expected if n.startswith("fleetsim/calibration/engines/")]
    for role, name in (("serving", "vllm"), ("training", "megatron")):
        assert f"fleetsim/calibration/engines/{role}/{name}.yaml" in engines, (role, name)
    expected.append("fleetsim/calibration/intervals.csv")
    missing = [n for n in expected if n not in names]
    assert not missing, missing[:10]


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


def _run(exe: Path, args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_installed_wheel_runs_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    """The wheel installed into a fresh virtual environment (dependencies from the system,
    offline), run from a folder outside the checkout, finds its catalog, profiles and
    validation data through the package: validate's sections have rows, plan and specs work."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True,
                   capture_output=True)
    bindir = venv / ("Scripts" if sys.platform == "win32" else "bin")
    py = bindir / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLEETSIM_PUBLISHED_DIR")}
    # the venv's copy shadows any editable install of the system python (its finder is a fallback)
    where = _run(py, ["-c", "import fleetsim, fleetsim.calibration.measured as m; "
                            "print(fleetsim.__file__); print(m.PROFILE_ROOT)"], work, env)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(venv.resolve()), line
        assert not Path(line).resolve().is_relative_to(ROOT), line
    fleetsim = bindir / "fleetsim"

    val = _run(fleetsim, ["validate", "--csv-dir", str(work / "tables")], work, env)
    assert val.returncode == 0, val.stderr[-2000:]
    assert "== training\n(no rows)" not in val.stdout
    for table in ("ops_points", "forward_points", "training_points", "training_repeatability"):
        df = pd.read_csv(work / "tables" / f"{table}.csv")
        assert len(df) > 0, table
    training = pd.read_csv(work / "tables" / "training_points.csv")
    assert set(training["source"]) == {"measured"}
    assert {"H100-SXM", "H200-SXM"} <= set(training["gpu"])
    assert "--published-dir" in val.stdout  # the skipped published rows say how to add them

    bad = _run(fleetsim, ["validate", "--gpu", "L40S"], work, env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--gpu" in bad.stderr

    plan = _run(fleetsim, ["plan", "--model", "llama-3.1-8b", "--cluster", "1xH100"], work, env)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "Serving plans for llama-3.1-8b" in plan.stdout and "engine profile: vllm" in plan.stdout
    assert any(line.split()[:1] == ["1"] and "H100-SXM" in line for line in plan.stdout.splitlines())
    # the shipped H100 profile is found: operator costs are not all roofline
    assert "operator costs on H100-SXM: measured" in plan.stdout and "measured 0%" not in plan.stdout
    specs = _run(fleetsim, ["specs", "gpus"], work, env)
    assert specs.returncode == 0, specs.stderr[-2000:]
    assert "H100-SXM" in specs.stdout and "H200-SXM" in specs.stdout
    engines = _run(fleetsim, ["specs", "engines"], work, env)
    assert engines.returncode == 0, engines.stderr[-2000:]
    rows = {tuple(line.split()[:2]) for line in engines.stdout.splitlines()}
    assert {("serving", "vllm"), ("training", "megatron"), ("training", "torch-eager")} <= rows


def test_every_subpackage_is_listed_in_pyproject() -> None:
    """A folder with an __init__.py under a top-level folder must be shipped (it is missing from
    the wheel otherwise, while an editable install still finds it)."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    dirs = {v: k for k, v in cfg["package-dir"].items()}
    found = set()
    for folder, pkg in dirs.items():
        for init in (root / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(root / folder)
            found.add(".".join([pkg, *rel.parts]) if rel.parts else pkg)
    assert found <= listed, sorted(found - listed)
