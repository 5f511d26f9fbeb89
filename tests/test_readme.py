"""README's Python API example runs as written, and its quick start matches .ci/run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "step.json").exists()


def test_quick_start_has_two_commands_and_ci_runs_the_test_one() -> None:
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"```\n(.*?)```", quick, flags=re.S)[0].strip().splitlines()
    assert len(commands) == 2
    assert "fleetsim plan" in commands[0]
    assert "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def _documented_commands() -> list[str]:
    """Every ``fleetsim ...`` command line in a code block of README.md and docs/*.md
    (``\\`` continuations joined, ``# comments`` dropped, only the ``$ `` lines of a
    transcript); synopsis lines with ``|`` or ``[...]`` placeholders are left out."""
    cmds = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        blocks = re.findall(r"^```[a-z]*\n(.*?)^```$", path.read_text(), flags=re.S | re.M)
        for block in blocks:
            lines = block.replace("\\\n", " ").splitlines()
            if any(ln.startswith("$ ") for ln in lines):  # a transcript: commands, then output
                lines = [ln[2:] for ln in lines if ln.startswith("$ ")]
            for line in lines:
                line = line.split("  #", 1)[0].strip()
                if line.startswith("fleetsim ") and "|" not in line and "[" not in line:
                    cmds.append(" ".join(line.split()))
    return cmds


def test_documented_commands_parse() -> None:
    from fleetsim.cli import build_parser

    cmds = _documented_commands()
    assert any(c.startswith("fleetsim simulate") for c in cmds)
    assert any(c.startswith("fleetsim train") for c in cmds)
    parser = build_parser()
    for cmd in cmds:
        try:
            parser.parse_args(shlex.split(cmd)[1:])
        except SystemExit:
            pytest.fail(f"documented command does not parse: {cmd}")


def test_worked_plan_example_is_real_output(capsys: pytest.CaptureFixture[str]) -> None:
    from fleetsim.cli import main

    block = README.split("## Worked example", 1)[1].split("```", 2)[1].strip("\n").splitlines()
    assert block[0].startswith("$ fleetsim plan ")
    assert main(shlex.split(block[0])[2:]) == 0
    got = [ln.rstrip() for ln in capsys.readouterr().out.strip("\n").splitlines()]
    assert [_untimed(ln) for ln in got] == [_untimed(ln.rstrip()) for ln in block[1:]]


def test_quick_start_output_is_real(capsys: pytest.CaptureFixture[str]) -> None:
    """The output printed under the quick start is what its first command prints today."""
    from fleetsim.cli import main

    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", quick, flags=re.S)
    cmd = blocks[0].strip().splitlines()[0].split("python3 -m fleetsim ", 1)[1]
    assert main(shlex.split(cmd)) == 0
    got = [_untimed(ln.rstrip()) for ln in capsys.readouterr().out.strip("\n").splitlines()]
    assert got == [_untimed(ln.rstrip()) for ln in blocks[1].strip("\n").splitlines()]


def _untimed(line: str) -> str:
    """A printed line with the planner's wall time masked (the only figure that varies)."""
    return re.sub(r"simulations in [0-9.]+ s", "simulations in <t> s", line)


def test_serving_doc_simulate_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from fleetsim.cli import main

    cmd = next(c for c in _documented_commands() if c.startswith("fleetsim simulate") and "--out" in c)
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(cmd)[1:]) == 0
    out = capsys.readouterr().out
    assert out.startswith("workload: azure-conv, 2000 requests\n1 replica: ")
    assert (tmp_path / "out" / "trace.json.gz").exists()
