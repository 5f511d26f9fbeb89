"""Lower layers never import higher ones (docs/ARCHITECTURE.md gives the order)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS = {
    "hardware": 0,
    "calibration": 1,
    "workloads": 2,
    "traces": 3,
    "sim": 4,
    "planner": 5,
    "fleetsim": 6,
    "dashboard": 7,
}
FOLDER_OF_SUBPACKAGE = {name: name for name in LAYERS}


def _layer_of_import(name: str) -> int | None:
    parts = name.split(".")
    if parts[0] != "fleetsim":
        return None
    if len(parts) == 1:
        return LAYERS["fleetsim"]
    sub = parts[1]
    return LAYERS.get(sub, LAYERS["fleetsim"])


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _python_files() -> list[tuple[str, Path]]:
    files = []
    for folder in LAYERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            files.append((folder, path))
    return files


def test_every_layer_has_code() -> None:
    for folder in LAYERS:
        assert (ROOT / folder / "__init__.py").exists(), folder


@pytest.mark.parametrize("folder,path", _python_files(), ids=lambda v: str(v).split("main/")[-1])
def test_no_upward_imports(folder: str, path: Path) -> None:
    own = LAYERS[folder]
    for lineno, name in _imports(path):
        layer = _layer_of_import(name)
        if layer is not None:
            assert layer <= own, (
                f"{path.relative_to(ROOT)}:{lineno} imports {name} (layer {layer}) "
                f"from layer {own} ({folder})"
            )


def test_checker_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from fleetsim.sim.serving import x\nimport numpy\n")
    layers = [_layer_of_import(n) for _, n in _imports(bad)]
    assert layers == [LAYERS["sim"], None]
