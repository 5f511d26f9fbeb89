"""The CLI is thin: same numbers as the API, one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fleetsim.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetsim", *args], capture_output=True, text=True, timeout=300)


def test_plan_runs_the_full_planner_and_matches_api(capsys: pytest.CaptureFixture[str]) -> None:
    """Plain ``fleetsim plan`` is the full planner (simulated capacities, a re-simulated
    choice): the CLI's best row is the API's ``.search`` best plan, figure for figure."""
    import fleetsim

    rc = main(["plan", "--model", "llama-3.1-8b", "--cluster", "2xH100", "--isl", "512", "--osl", "128"])
    out = capsys.readouterr().out
    assert rc == 0
    res = fleetsim.plan_serving("llama-3.1-8b", "2xH100", isl=512, osl=128).search
    best = res.plans[0]
    assert res.simulations > 0 and best.checked is not None and best.checked.meets_slo
    assert f"{res.simulations} simulations" in out
    row = next(ln for ln in out.splitlines() if ln.strip().startswith("1 "))
    assert f"{best.checked.goodput_rps:.2f}" in row and f"{best.cost_per_hour:.2f}" in row
    assert best.gpus <= 2


def test_plan_analytic_matches_api(capsys: pytest.CaptureFixture[str]) -> None:
    import fleetsim

    rc = main(["plan", "--analytic", "--model", "llama-3.1-8b", "--cluster", "2xH100", "--isl", "512", "--osl", "128"])
    out = capsys.readouterr().out
    assert rc == 0
    plan = fleetsim.plan_serving("llama-3.1-8b", "2xH100", isl=512, osl=128)
    best = plan.table().iloc[0]
    assert f"{best['out_tok_s']}" in out
    assert plan.best is not None and plan.best.gpus_used <= 2
    assert main(["plan", "--analytic", "--model", "llama-3.1-8b", "--cluster", "2xH100", "--objective", "min_cost"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--objective" in err[0]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["plan", "--model", "llama-9000", "--cluster", "8xH100"], "llama-9000"),
        (["plan", "--model", "llama-3.1-8b", "--cluster", "8xH1000"], "H1000"),
        (["plan", "--model", "llama-3.1-8b", "--cluster", "8xH100", "--isl", "-5", "--osl", "10"], "isl"),
        (["plan", "--analytic", "--model", "llama-3.1-405b", "--cluster", "1xL4", "--isl", "100", "--osl", "10"],
         "infeasible"),
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


@pytest.mark.parametrize("args,words", [
    (("--model", "llama-3.1-405b", "--cluster", "1xL4", "--isl", "100", "--osl", "10"), ("memory", "does not fit")),
    (("--model", "llama-3.1-8b", "--cluster", "1xH100", "--tpot-s", "1e-9"), ("TPOT SLO", "even one sequence")),
])
def test_plan_nothing_fits_names_the_binding_constraint(args: tuple[str, ...], words: tuple[str, ...]) -> None:
    """A valid request with no feasible plan is an answer, not an input error: exit 1, the
    binding constraint and the closest miss, no traceback."""
    proc = run_cli("plan", *args)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "infeasible" in proc.stdout and "closest miss" in proc.stdout
    for w in words:
        assert w in proc.stdout, proc.stdout
