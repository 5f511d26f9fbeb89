"""Bad inputs to ``fleetsim validate`` and to calibration-profile loading: each one is exit
code 2 with one line on stderr naming the flag or the file, never a traceback, an empty
table or a silent skip."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from fleetsim.calibration import get_cost_model
from fleetsim.calibration.measured import PROFILE_ROOT, VALIDATION_ROOT
from fleetsim.hardware.errors import FleetsimError, ProfileError

from fleetsim.cli import main

GPU = "H100-SXM"
BINARY = bytes(range(256)) * 4


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small valid tree: ``val/H100-SXM/`` (two rows of each ground-truth table),
    ``prof/H100-SXM/`` (the shipped profile) and ``pub/`` (a valid published folder)."""
    root = tmp_path_factory.mktemp("good")
    gdir = root / "val" / GPU
    gdir.mkdir(parents=True)
    for name in ("forward.csv", "ops_heldout.csv", "training.csv"):
        lines = (VALIDATION_ROOT / GPU / name).read_text().splitlines()
        (gdir / name).write_text("\n".join(lines[:3]) + "\n")
    shutil.copytree(PROFILE_ROOT / GPU, root / "prof" / GPU)
    pub = root / "pub"
    pub.mkdir()
    (pub / "korthikanti2022_table5.csv").write_text(
        "model,gpu,gpus,layers,hidden,heads,ffn,vocab,seq_len,micro_batch,global_batch,tp,pp,dp,"
        "pipeline_interleave,dtype,recompute,sequence_parallel,iteration_time_s\n"
        "22B,A100-SXM-80GB,8,48,6144,64,24576,51200,2048,4,4,8,1,1,1,bf16,full,false,1.42\n")
    (pub / "korthikanti2022_fig1_memory_gib.csv").write_text(
        "model,tp,pp,mode,params_and_optimizer_gib_per_gpu,activations_gib_per_gpu\n22B,8,1,none,40.0,10.0\n")
    return root


def _csv(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
    return edit


def _column(rel: str, column: str, value: str) -> Callable[[Path], None]:
    """Set ``column`` of the first data row of ``rel`` to ``value``."""
    def edit(root: Path) -> None:
        path = root / rel
        lines = path.read_text().splitlines()
        head = lines[0].split(",")
        row = lines[1].split(",")
        row[head.index(column)] = value
        lines[1] = ",".join(row)
        path.write_text("\n".join(lines) + "\n")
    return edit


def _drop(rel: str, column: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / rel
        rows = [line.split(",") for line in path.read_text().splitlines()]
        i = rows[0].index(column)
        path.write_text("\n".join(",".join(r[:i] + r[i + 1:]) for r in rows) + "\n")
    return edit


def _remove(rel: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return edit


def _nothing(root: Path) -> None:
    return None


def _both(*edits: Callable[[Path], None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        for e in edits:
            e(root)
    return edit


FWD = f"val/{GPU}/forward.csv"
OPS = f"val/{GPU}/ops_heldout.csv"
TRN = f"val/{GPU}/training.csv"
GEMM = f"prof/{GPU}/gemm.csv"
V, P, Q = "--validation-dir={root}/val", "--profile-dir={root}/prof", "--published-dir={root}/pub"

# (id, edit of the good tree, arguments after ``validate``, text the error line must hold)
CASES: list[tuple[str, Callable[[Path], None], list[str], str]] = [
    # flags
    ("gpu-without-data", _nothing, ["--gpu", "L40S"], "--gpu 'L40S'"),
    ("gpu-unknown", _nothing, ["--gpu", "NOPE-9000"], "--gpu 'NOPE-9000'"),
    ("gpu-empty", _nothing, ["--gpu", ""], "--gpu ''"),
    ("gpu-second-bad", _nothing, ["--gpu", "H100-SXM", "--gpu", "B200"], "--gpu 'B200'"),
    ("gpu-not-in-dir", _nothing, [V, "--gpu", "H200-SXM"], "--gpu 'H200-SXM'"),
    ("only-typo", _nothing, ["--only", "forwrd"], "--only: unknown section 'forwrd'"),
    ("only-empty", _nothing, ["--only", ""], "--only: no section"),
    ("only-commas", _nothing, ["--only", ",,"], "--only: no section"),
    ("only-one-bad", _nothing, ["--only", "ops,bogus"], "'bogus'"),
    ("valdir-missing", _nothing, ["--validation-dir={root}/nope"], "--validation-dir"),
    ("valdir-is-file", _nothing, ["--validation-dir={root}/val/H100-SXM/forward.csv"], "is not a directory"),
    ("valdir-empty", _remove(f"val/{GPU}"), [V], "--validation-dir"),
    ("valdir-no-csv", _both(_remove(FWD), _csv(f"val/{GPU}/notes.txt", "x")), [V, "--only", "forward"],
     "--validation-dir"),
    ("valdir-section-absent", _remove(TRN), [V, "--only", "training"], "holds no ground truth"),
    ("valdir-csv-is-dir", _both(_remove(FWD), _csv(f"{FWD}/x", "")), [V, "--only", "forward"], "--validation-dir"),
    ("profdir-missing", _nothing, ["--profile-dir={root}/nope"], "--profile-dir"),
    ("profdir-is-file", _nothing, [f"--profile-dir={{root}}/{GEMM}"], "--profile-dir"),
    ("profdir-empty", _remove(f"prof/{GPU}"), [P], "--profile-dir"),
    ("pubdir-missing", _nothing, ["--published-dir={root}/nope", "--only", "training"], "--published-dir"),
    ("pubdir-is-file", _nothing, ["--published-dir={root}/pub/korthikanti2022_table5.csv"], "--published-dir"),
    ("pubdir-lacks-fig1", _remove("pub/korthikanti2022_fig1_memory_gib.csv"), [Q], "korthikanti2022_fig1"),
    ("csvdir-is-file", _nothing, [V, "--csv-dir={root}/val/H100-SXM/forward.csv"], "--csv-dir"),
    ("csvdir-under-file", _nothing, [V, "--csv-dir={root}/val/H100-SXM/forward.csv/out"], "--csv-dir"),
    # corrupt ground truth, found through --validation-dir
    ("forward-empty-file", _csv(FWD, ""), [V, "--only", "forward"], "forward.csv: empty file"),
    ("forward-header-only", _csv(FWD, "model,mode,batch,q_len,context,tp,time_s\n"), [V, "--only", "forward"],
     "forward.csv: no data rows"),
    ("forward-no-time", _drop(FWD, "time_s"), [V, "--only", "forward"], "lacks column(s) time_s"),
    ("forward-nan-time", _column(FWD, "time_s", "nan"), [V, "--only", "forward"], "column 'time_s' must be a positive number, got 'nan'"),
    ("forward-zero-time", _column(FWD, "time_s", "0"), [V, "--only", "forward"], "column 'time_s'"),
    ("forward-nan-batch", _column(FWD, "batch", "NaN"), [V, "--only", "forward"], "row 2: column 'batch'"),
    ("forward-text-tp", _column(FWD, "tp", "two"), [V, "--only", "forward"], "column 'tp'"),
    ("forward-binary", _csv(FWD, BINARY), [V, "--only", "forward"], "forward.csv"),
    ("forward-unknown-model", _column(FWD, "model", "no-such-model"), [V, "--only", "forward"],
     "forward.csv: row 2"),
    ("forward-unknown-gpu-dir", _csv("val/NOT-A-GPU/forward.csv", "x\n1\n"), [V, "--only", "forward"],
     "NOT-A-GPU"),
    ("ops-unknown-op", _column(OPS, "op", "conv"), [V, "--only", "ops"], "ops_heldout.csv: row 2"),
    ("ops-text-m", _column(OPS, "m", "big"), [V, "--only", "ops"], "column 'm'"),
    ("ops-binary", _csv(OPS, b"\x00\x01\xff\xfe" * 64), [V, "--only", "ops"], "ops_heldout.csv"),
    ("training-no-hidden", _drop(TRN, "hidden"), [V, "--only", "training"], "lacks column(s) hidden"),
    ("training-nan-layers", _column(TRN, "layers", "nan"), [V, "--only", "training"], "column 'layers'"),
    ("training-zero-time", _column(TRN, "time_s", "0"), [V, "--only", "training"], "column 'time_s'"),
    ("training-binary", _csv(TRN, BINARY), [V, "--only", "training"], "training.csv"),
    ("training-empty", _csv(TRN, ""), [V, "--only", "training"], "training.csv: empty file"),
    ("training-json-bad", _csv(f"val/{GPU}/training.json", "{not json"), [V, "--only", "training"],
     "training.json"),
    ("training-json-list", _csv(f"val/{GPU}/training.json", "[1, 2]"), [V, "--only", "training"],
     "training.json: expected a JSON object"),
    ("training-bad-recipe", _csv(f"val/{GPU}/training.json", '{"precision": "fp3"}'), [V, "--only", "training"],
     "training.csv: row 2"),
    ("repeat-no-device", _csv(f"val/{GPU}/repeat/training.csv", "model,micro_batch,recompute,world_size,time_s\n"
                              "m,1,0,1,0.1\n"), [V, "--only", "training"], "lacks column(s) device_s"),
    ("published-nan", _column("pub/korthikanti2022_table5.csv", "hidden", "nan"), [Q, "--only", "training"],
     "korthikanti2022_table5.csv: row 2"),
    ("published-fig1-model", _column("pub/korthikanti2022_fig1_memory_gib.csv", "model", "9T"),
     [Q, "--only", "training"], "model '9T'"),
    # corrupt calibration profiles, found through --profile-dir
    ("profile-binary", _csv(GEMM, BINARY), [V, P, "--only", "ops"], "gemm.csv"),
    ("profile-nul", _csv(GEMM, "dtype,m,n,k,batch,time_s,p10_s,p90_s\nbf16,1\x00,1,1,1,1e-6,1e-6,1e-6\n"),
     [V, P, "--only", "ops"], "gemm.csv: row 2"),
    ("profile-nan", _column(GEMM, "time_s", "nan"), [V, P, "--only", "ops"], "gemm.csv: row 2"),
    ("profile-no-time", _drop(GEMM, "time_s"), [V, P, "--only", "ops"], "gemm.csv: header lacks"),
    ("profile-empty", _csv(GEMM, ""), [V, P, "--only", "ops"], "gemm.csv: empty file"),
    ("profile-meta-bad", _csv(f"prof/{GPU}/meta.json", "{"), [V, P, "--only", "ops"], "meta.json"),
]


@pytest.mark.parametrize(("edit", "args", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str], edit: Callable[[Path], None],
                               args: list[str], needle: str) -> None:
    monkeypatch.delenv("FLEETSIM_PUBLISHED_DIR", raising=False)
    root = tmp_path / "t"
    shutil.copytree(good, root)
    edit(root)
    rc = main(["validate", *(a.replace("{root}", str(root)) for a in args)])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fleetsim validate: error: ") and needle in err, err


@pytest.mark.parametrize("value", ["/no/such/folder", __file__])
def test_published_env_is_checked(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                  value: str) -> None:
    monkeypatch.setenv("FLEETSIM_PUBLISHED_DIR", value)
    assert main(["validate", "--only", "training"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "$FLEETSIM_PUBLISHED_DIR" in err and value in err


def test_missing_published_rows_are_reported(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Without the published tables the training section still runs on the shipped rows and
    says what is missing and how to point to it."""
    monkeypatch.delenv("FLEETSIM_PUBLISHED_DIR", raising=False)
    assert main(["validate", "--only", "training", "--gpu", "H100"]) == 0
    out = capsys.readouterr().out
    assert "--published-dir" in out and "FLEETSIM_PUBLISHED_DIR" in out
    assert "(no rows)" not in out and "H200-SXM" not in out.split("== training")[1].split("repeatab")[0]


def test_gpu_filters_the_training_section(good: Path, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    """``--gpu`` selects the published A100 rows only, or our H100 rows only."""
    rc = main(["validate", f"--validation-dir={good}/val", f"--published-dir={good}/pub", "--only", "training",
               "--gpu", "A100-SXM-80GB", f"--csv-dir={tmp_path}"])
    assert rc == 0
    rows = pd.read_csv(tmp_path / "training_points.csv")
    assert set(rows["gpu"]) == {"A100-SXM-80GB"} and len(rows) == 3
    capsys.readouterr()


@pytest.mark.parametrize(("profile_root", "needle"), [
    ("nope", "does not exist"),
    ("file", "is not a directory"),
])
def test_get_cost_model_bad_root(tmp_path: Path, profile_root: str, needle: str) -> None:
    path = tmp_path / profile_root
    if profile_root == "file":
        path.write_text("x")
    with pytest.raises(ProfileError, match=needle) as info:
        get_cost_model("H100-SXM", path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("gemm.csv", BINARY, "gemm.csv: not a text CSV"),
    ("gemm.csv", "dtype,m,n,k,batch,time_s,p10_s,p90_s\nbf16,1,1,1,1,inf,1,1\n", "not finite"),
    ("attention.csv", "", "attention.csv: empty file"),
])
def test_get_cost_model_corrupt_profile(tmp_path: Path, name: str, content: str | bytes, needle: str) -> None:
    prof = tmp_path / "profiles"
    shutil.copytree(PROFILE_ROOT / GPU, prof / GPU)
    target = prof / GPU / name
    target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    with pytest.raises(FleetsimError) as info:
        get_cost_model("H100-SXM", prof)
    msg = str(info.value)
    assert needle in msg and str(target) in msg and "\n" not in msg
