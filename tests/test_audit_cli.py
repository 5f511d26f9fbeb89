"""Every bad command line is one stderr line naming the flag, exit code 2; and the cases that
used to run with a silently wrong value now give the right output."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fleetsim.cli import main

PLAN = ["plan", "--model", "llama-3.1-8b", "--cluster", "1xH100"]
SIM = ["simulate", "--model", "llama-3.1-8b", "--cluster", "1xH100", "--num-requests", "5"]
TRAIN = ["train", "--model", "gpt2", "--cluster", "1xH100", "--global-batch", "8"]

# (command prefix, flag, bad values): each value alone must be rejected naming the flag
NUMERIC: list[tuple[list[str], str, list[str]]] = [
    (PLAN, "--isl", ["0", "-5", "abc", "1.5", "nan"]),
    (PLAN, "--osl", ["0", "-1", "x"]),
    (PLAN, "--rate", ["0", "-3", "inf", "nan", "abc", "-inf"]),
    (PLAN, "--ttft-s", ["0", "-1", "inf", "nan"]),
    (PLAN, "--tpot-s", ["0", "-0.5", "inf"]),
    (PLAN, "--top", ["0", "-1", "2.5", "x"]),
    (SIM, "--tp", ["0", "-1", "x"]),
    (SIM, "--pp", ["0"]),
    (SIM, "--ep", ["0"]),
    (SIM, "--replicas", ["0", "-2"]),
    (SIM, "--num-requests", ["0", "-1", "1.5"]),
    (SIM, "--duration-s", ["0", "-1", "inf", "nan"]),
    (SIM, "--max-num-seqs", ["0"]),
    (SIM, "--max-batched-tokens", ["0"]),
    (SIM, "--block-size", ["0", "-16", "x"]),
    (SIM, "--gpu-memory-utilization", ["0", "1.5", "-0.1", "nan"]),
    (SIM, "--swap-space-gib", ["-1", "inf"]),
    (SIM, "--sched-overhead-s", ["-1e-3", "nan"]),
    (SIM, "--queue-limit", ["-1"]),
    (SIM, "--max-sim-time-s", ["0", "-1"]),
    (SIM, "--ttft-slo-s", ["-1", "0"]),
    (SIM, "--tpot-slo-s", ["0", "inf"]),
    (SIM, "--seed", ["-1", "1.5"]),
    (SIM, "--pd", ["0p1d", "1p0d", "2x3", "p1d"]),
    (TRAIN, "--tp", ["0"]),
    (TRAIN, "--pp", ["0"]),
    (TRAIN, "--dp", ["0"]),
    (TRAIN, "--cp", ["0"]),
    (TRAIN, "--ep", ["0"]),
    (TRAIN, "--vpp", ["0"]),
    (TRAIN, "--micro-batch", ["0"]),
    (TRAIN, "--global-batch", ["0", "-8", "x"]),
    (TRAIN, "--seq-len", ["0", "-1"]),
    (TRAIN, "--tokens", ["-1", "nan", "inf", "0"]),
    (["dashboard"], "--port", ["0", "70000", "x"]),
]

CASES: list[tuple[list[str], str]] = [([*base, flag, v], flag) for base, flag, vals in NUMERIC for v in vals]
CASES += [
    ([*PLAN, "--dtype", "fp9"], "fp9"),
    (["plan", "--model", "llama-9000", "--cluster", "8xH100"], "llama-9000"),
    (["plan", "--model", "llama-3.1-8b", "--cluster", "8xH1000"], "H1000"),
    ([*PLAN, "--isl", "1000000000"], "isl"),
    ([*PLAN, "--workload", "nope"], "nope"),
    (["plan", "--cluster", "1xH100"], "--model"),
    ([*PLAN, "--bogus"], "--bogus"),
    ([*SIM, "--spec-decode", "ngram:k=0"], "--spec-decode"),
    ([*SIM, "--spec-decode", "ngram:alpha=1.5"], "--spec-decode"),
    ([*SIM, "--spec-decode", "ngram:alpha=0"], "--spec-decode"),
    ([*SIM, "--spec-decode", "ngram:k=x"], "--spec-decode"),
    ([*SIM, "--spec-decode", "ngram:foo=1"], "foo"),
    ([*SIM, "--spec-decode", ":k=2"], "--spec-decode"),
    ([*SIM, "--scheduler", "fifo"], "--scheduler"),
    ([*SIM, "--router", "random"], "--router"),
    ([*SIM, "--preemption", "drop"], "--preemption"),
    ([*SIM, "--pd", "1p1d", "--replicas", "2"], "--replicas"),
    ([*SIM, "--scheduler", "static", "--max-batched-tokens", "64"], "--max-batched-tokens"),
    ([*SIM, "--workload", "nope"], "nope"),
    (["simulate", "--model", "llama-3.1-8b"], "--cluster"),
    ([*TRAIN, "--placement", "garbage"], "--placement"),
    ([*TRAIN, "--placement", "tp,tp,pp,dp"], "--placement"),
    ([*TRAIN, "--placement", ""], "--placement"),
    ([*TRAIN, "--offload", "disk"], "--offload"),
    ([*TRAIN, "--offload-params", "x"], "--offload-params"),
    ([*TRAIN, "--zero", "4"], "--zero"),
    ([*TRAIN, "--schedule", "foo"], "--schedule"),
    ([*TRAIN, "--recompute", "half"], "--recompute"),
    ([*TRAIN, "--dtype", "fp4"], "--dtype"),
    (["train", "--model", "gpt2", "--cluster", "2xH100", "--pp", "2", "--global-batch", "8",
      "--vpp", "2", "--schedule", "1f1b"], "--vpp 2 needs --schedule interleaved"),
    ([*TRAIN[:-1], "3", "--micro-batch", "2"], "global_batch=3"),
    (["train", "--model", "gpt2", "--cluster", "1xH100"], "--global-batch"),
    (["specs", "show", "NOPE"], "NOPE"),
    (["specs", "show"], "NAME"),
    (["specs", "gpuz"], "gpuz"),
    (["specs", "gpus", "H100"], "H100"),
    (["specs", "cluster", "8xH1000"], "H1000"),
    (["nope"], "nope"),
    ([], "COMMAND"),
]


@pytest.mark.parametrize("argv,needle", CASES, ids=[" ".join(a[0:1] + a[5:]) or "(none)" for a, _ in CASES])
def test_bad_invocation_is_one_line_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("fleetsim"), lines[0]
    assert ": error: " in lines[0]
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err


def test_enough_bad_invocations() -> None:
    assert len(CASES) >= 90


@pytest.mark.parametrize("cmd", ["simulate", "train"])
def test_out_checked_before_running(cmd: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    base = SIM if cmd == "simulate" else TRAIN
    for out in (afile, afile / "sub"):
        assert main([*base, "--out", str(out)]) == 2
        cap = capsys.readouterr()
        assert cap.out == ""  # nothing ran
        assert cap.err.count("\n") == 1 and f"--out {out}" in cap.err


def test_help_still_works(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fleetsim train")
    assert "--offload {none,cpu,nvme}" in out and "None" not in out


def test_default_request_count_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    from fleetsim.cli.simulate import DEFAULT_NUM_REQUESTS

    spec = "poisson:rate=50,isl=64,osl=4"
    assert main(["simulate", "--model", "gpt2", "--cluster", "1xH100", "--workload", spec]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"workload: {spec}, {DEFAULT_NUM_REQUESTS} requests (default; "
                          "--num-requests/--duration-s to change)\n")
    assert "1 replica: " in out and "1 replicas" not in out


def test_same_seed_gives_byte_identical_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--model", "gpt2", "--cluster", "1xH100", "--workload", "poisson:rate=20,isl=64,osl=8",
            "--num-requests", "40", "--seed", "3"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    time.sleep(1.1)  # a header timestamp (whole seconds) would now differ
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    a = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "trace.json.gz" in a and a == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_plan_without_rate_shows_dash_and_singular_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*PLAN, "--analytic", "--isl", "512", "--osl", "64"]) == 0
    out = capsys.readouterr().out
    assert "on 1xH100 (1 GPU)" in out
    assert "True" not in out and "False" not in out
    assert main([*PLAN, "--isl", "512", "--osl", "64", "--rate", "1e300"]) == 2  # the full planner refuses it
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rate_rps=1e+300" in err[0]
    assert main([*PLAN, "--analytic", "--isl", "512", "--osl", "64", "--rate", "1e300"]) == 0
    out = capsys.readouterr().out
    note = next(ln for ln in out.splitlines() if "needs " in ln)
    assert "False" in note and "e+" in note.split("needs ", 1)[1] and len(note) < 250


def test_vpp_without_schedule_is_interleaved_and_printed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model", "gpt2", "--cluster", "2xH100", "--pp", "2", "--global-batch", "8",
                 "--vpp", "2"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert "vpp=2 " in head and "schedule=interleaved " in head


def test_warning_is_one_clean_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "unsorted.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,4\n"
                     "2023-11-16 18:15:45.68,396,9\n2023-11-16 18:15:47.68,100,2\n")
    assert main(["simulate", "--model", "gpt2", "--cluster", "1xH100", "--workload", str(trace)]) == 0
    err = capsys.readouterr().err
    assert err == f"fleetsim simulate: warning: {trace}: arrivals are not in time order; sorted the 3 requests by arrival time (req_id keeps the file order)\n"


def test_huge_numbers_print_short(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TRAIN, "--tokens", "1e300"]) == 0
    out = capsys.readouterr().out
    rows = {p[0]: p[1] for p in map(str.split, out.splitlines()[1:])
            if len(p) == 3 and (p[0], p[2]) in (("cost", "USD"), ("GPU-hours", "h"))}
    assert set(rows) == {"cost", "GPU-hours"}
    assert all("e+" in v and len(v) <= 12 for v in rows.values()), rows
