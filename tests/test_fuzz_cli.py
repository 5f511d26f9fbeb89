"""Fuzzed numeric flags of ``plan``, ``simulate`` and ``train`` run in-process: exit 0 with
the invariants checked (``--check``), or exit 2 with one error line (argparse's usage error
counts as a clean exit 2); never a traceback."""

from __future__ import annotations

from typing import Any

import pytest
from _fuzz import FUZZ, NUMBERS, outcome
from hypothesis import example, given
from hypothesis import strategies as st

from fleetsim.cli import main

KNOWN: dict[str, object] = {}
"""Signature -> failing input of bugs found here (see tests/_fuzz.py)."""

RAW = st.one_of(NUMBERS.map(str), st.sampled_from(["nan", "inf", "-inf", "1e309", "abc", "", "0x10", "1_000", " 3"]))

BASE = {
    "plan": ["plan", "--model", "gpt2", "--cluster", "2xH100", "--isl", "128", "--osl", "16"],
    "simulate": ["simulate", "--model", "gpt2", "--cluster", "1xH100", "--workload", "poisson:rate=20,isl=64,osl=4",
                 "--num-requests", "6", "--check"],
    "train": ["train", "--model", "gpt2", "--cluster", "2xH100", "--global-batch", "4", "--seq-len", "128", "--check"],
}
FLAGS = {
    "plan": ["--isl", "--osl", "--rate", "--ttft-s", "--tpot-s", "--top"],
    "simulate": ["--num-requests", "--duration-s", "--tp", "--pp", "--ep", "--replicas", "--max-num-seqs",
                 "--max-batched-tokens", "--block-size", "--gpu-memory-utilization", "--swap-space-gib",
                 "--sched-overhead-s", "--queue-limit", "--max-sim-time-s", "--ttft-slo-s", "--tpot-slo-s", "--seed"],
    "train": ["--tp", "--pp", "--dp", "--cp", "--ep", "--vpp", "--micro-batch", "--global-batch", "--seq-len", "--tokens"],
}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse rejected a value: usage + one error line, exit 2
        assert exc.code == 2, argv
        capsys.readouterr()
        return
    out, err = capsys.readouterr()
    assert rc in (0, 2), (argv, rc, err)
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"fleetsim {argv[0]}: error: "), (argv, err)
    else:
        assert "invariant violated" not in err, err
        assert "checks:" in out or argv[0] == "plan"


@FUZZ
@given(cmd=st.sampled_from(sorted(BASE)), data=st.data())
@example(cmd="simulate", data=None)
def test_numeric_flags(cmd: str, data: Any, capsys: pytest.CaptureFixture[str]) -> None:
    flags = data.draw(st.lists(st.sampled_from(FLAGS[cmd]), min_size=1, max_size=2, unique=True)) if data else []
    argv = list(BASE[cmd])
    for f in flags:
        argv += [f, data.draw(RAW)]
    outcome(lambda: run_cli(argv, capsys), KNOWN, argv)
