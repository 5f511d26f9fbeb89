"""Profile loading: corrupt or partial CSVs raise ProfileError naming the file and row."""

from __future__ import annotations

from pathlib import Path

import _cost_synth as S
import pytest
from fleetsim.calibration import load_profile
from fleetsim.hardware.errors import ProfileError

HEADER = "dtype,m,n,k,batch,time_s,p10_s,p90_s\n"


def _write(tmp: Path, body: str, header: str = HEADER) -> Path:
    d = tmp / "G"
    d.mkdir(exist_ok=True)
    (d / "gemm.csv").write_text(header + body)
    return d


@pytest.mark.parametrize("body,match", [
    ("bf16,1,2,3,1,1e-5,,\nbf16,2,2,3,1,abc,,\n", r"gemm\.csv: row 3: column 'time_s' is not a number: 'abc'"),
    ("bf16,1,2,3,1,-1e-5,,\n", r"gemm\.csv: row 2: column 'time_s' must be > 0"),
    ("bf16,1,2,3,1,0,,\n", r"gemm\.csv: row 2: column 'time_s' must be > 0"),
    ("bf16,1,2,3,1,1e-5,,\nbf16,4,2\n", r"gemm\.csv: row 3 has 3 fields, header has 8 \(partial row\)"),
    ("bf16,1,2,3,1,nan,,\n", r"gemm\.csv: row 2: column 'time_s' is not finite"),
    (",1,2,3,1,1e-5,,\n", r"gemm\.csv: row 2: column 'dtype' is empty"),
])
def test_corrupt_rows_name_file_and_row(tmp_path: Path, body: str, match: str) -> None:
    with pytest.raises(ProfileError, match=match):
        load_profile(_write(tmp_path, body))


def test_missing_column_names_file(tmp_path: Path) -> None:
    d = _write(tmp_path, "bf16,1,2,3,1e-5\n", header="dtype,m,n,k,time_s\n")
    with pytest.raises(ProfileError, match=r"gemm\.csv: header lacks column\(s\) batch, p10_s, p90_s"):
        load_profile(d)


def test_bad_boolean_and_meta(tmp_path: Path) -> None:
    d = tmp_path / "G"
    d.mkdir()
    (d / "memcpy.csv").write_text("direction,bytes,pinned,time_s,p10_s,p90_s\nh2d,100,maybe,1e-5,,\n")
    with pytest.raises(ProfileError, match=r"memcpy\.csv: row 2: column 'pinned' is not a boolean"):
        load_profile(d)
    (d / "memcpy.csv").unlink()
    (d / "launch.csv").write_text("mode,kernels,time_s\neager,100,5e-6\n")
    (d / "meta.json").write_text("{not json")
    with pytest.raises(ProfileError, match=r"meta\.json: not valid JSON"):
        load_profile(d)


def test_empty_and_missing_directories(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProfileError, match="holds none of"):
        load_profile(tmp_path / "empty")


def test_synthetic_profile_loads(tmp_path: Path) -> None:
    p = load_profile(S.write_profile(tmp_path, S.gpu()))
    assert p.gpu_name == "TestH100"
    assert set(p.tables) == {"gemm", "attention", "elementwise", "collective", "launch"}
    assert len(p.tables["gemm"]) == len(S.NK) * len(S.M_GRID)
    assert p.launch_s("eager") == S.EAGER_S and p.launch_s("graph") == S.GRAPH_S
