"""The CLI is thin: same numbers as the API, one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fleetsim.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetsim", *args], capture_output=True, text=True, timeout=300)


def test_plan_matches_api(capsys: pytest.CaptureFixture[str]) -> None:
    import fleetsim

    rc = main(["plan", "--model", "llama-3.1-8b", "--cluster", "2xH100", "--isl", "512", "--osl", "128"])
    out = capsys.readouterr().out
    assert rc == 0
    plan = fleetsim.plan_serving("llama-3.1-8b", "2xH100", isl=512, osl=128)
    best = plan.table().iloc[0]
    assert f"{best['out_tok_s']}" in out
    assert plan.best is not None and plan.best.gpus_used <= 2


@pytest.mark.parametrize(
    "args,needle",
    [
        (["plan", "--model", "llama-9000", "--cluster", "8xH100"], "llama-9000"),
        (["plan", "--model", "llama-3.1-8b", "--cluster", "8xH1000"], "H1000"),
        (["plan", "--model", "llama-3.1-8b", "--cluster", "8xH100", "--isl", "-5", "--osl", "10"], "isl"),
        (["plan", "--model", "llama-3.1-405b", "--cluster", "1xL4", "--isl", "100", "--osl", "10"], "infeasible"),
        (["plan", "--model", "llama-3.1-8b", "--cluster", "8xH100", "--dtype", "fp9"], "fp9"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], needle: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
