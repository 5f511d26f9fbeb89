"""User profiles: ``fleetsim calibrate`` writes outside the installed package, and
``$FLEETSIM_PROFILE_DIR`` makes the cost model use what it wrote."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fleetsim.calibration.bench.harness import default_out
from fleetsim.calibration.measured import PROFILE_ROOT, profile_dirs
from fleetsim.hardware.errors import ProfileError

from fleetsim.estimate import get_cost_model


def test_calibrate_never_writes_into_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FLEETSIM_PROFILE_DIR", raising=False)
    assert default_out("L40S") == Path("fleetsim-profiles") / "L40S"
    monkeypatch.setenv("FLEETSIM_PROFILE_DIR", str(tmp_path))
    assert default_out("L40S") == tmp_path / "L40S"
    assert PROFILE_ROOT not in default_out("L40S").parents


def test_user_profile_is_used_beside_the_shipped_ones(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shipped = profile_dirs()
    assert "H100-SXM" in shipped and "H200-SXM" in shipped
    # the user's own L40S profile: a copy of the H100 GEMM table stands in for a real run
    mine = tmp_path / "L40S"
    mine.mkdir()
    for name in ("gemm.csv", "meta.json"):
        shutil.copy(shipped["H100-SXM"] / name, mine / name)
    monkeypatch.setenv("FLEETSIM_PROFILE_DIR", str(tmp_path))
    dirs = profile_dirs()
    assert dirs["L40S"] == mine
    assert dirs["H100-SXM"] == shipped["H100-SXM"]
    model = get_cost_model("L40S")
    assert "L40S" in repr(model)


def test_profile_env_pointing_nowhere_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEETSIM_PROFILE_DIR", str(tmp_path / "missing"))
    with pytest.raises(ProfileError, match=r"FLEETSIM_PROFILE_DIR=.*does not exist"):
        profile_dirs()
