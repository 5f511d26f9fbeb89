"""``fleetsim calibrate`` without PyTorch or without a GPU: one clear error line, exit code 2."""

from __future__ import annotations

import argparse
import sys
import types

import pytest
from fleetsim.calibration.bench import harness
from fleetsim.hardware.errors import FleetsimError

from fleetsim.cli import calibrate


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    calibrate.register(sub)
    return p.parse_args(["calibrate", *argv])


def test_missing_torch_names_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    args = _args()
    with pytest.raises(FleetsimError, match="PyTorch is not installed"):
        args.func(args)


def test_no_cuda_gpu_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("torch")
    fake.cuda = types.SimpleNamespace(is_available=lambda: False)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", fake)
    args = _args("--budget-s", "10")
    with pytest.raises(FleetsimError, match="no CUDA GPU"):
        args.func(args)


def test_cli_main_prints_one_line_and_exits_2(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    from fleetsim.cli import __init__ as cli_pkg  # noqa: F401 - the package's main()

    # build only our subcommand so the test does not depend on other commands existing
    parser = argparse.ArgumentParser(prog="fleetsim")
    sub = parser.add_subparsers(dest="command")
    calibrate.register(sub)
    monkeypatch.setattr("fleetsim.cli.build_parser", lambda: parser)
    from fleetsim.cli import main

    assert main(["calibrate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PyTorch" in err[0] and "Traceback" not in err[0]


def test_bad_only_and_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("torch")
    fake.cuda = types.SimpleNamespace(is_available=lambda: True)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", fake)
    args = _args("--only", "gemm,nccl")
    with pytest.raises(FleetsimError, match="nccl"):
        args.func(args)
    args = _args("--budget-s", "0")
    with pytest.raises(FleetsimError, match="budget"):
        args.func(args)


def test_plain_file_entry_reports_missing_torch(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    assert harness.main(["--budget-s", "5"]) == 2
    assert "PyTorch" in capsys.readouterr().err


def test_calibrate_module_does_not_import_torch_at_import_time() -> None:
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = [root / "fleetsim" / "cli" / "calibrate.py", *sorted((root / "calibration" / "bench").glob("*.py"))]
    for f in files:
        tree = ast.parse(f.read_text())
        for node in tree.body:  # module level only: torch must be imported inside functions
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "torch" for a in node.names), f
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "torch", f
