"""Bad YAML becomes one-line SpecErrors naming the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fleetsim.hardware import catalog
from fleetsim.hardware.cluster import load_cluster
from fleetsim.hardware.errors import SpecError
from hypothesis import given, settings
from hypothesis import strategies as st

LINK = """\
name: TestLink
kind: scale_out
bandwidth_bps: 5.0e+10
latency_s: 2.0e-6
efficiency: 0.9
"""


def _write(tmp_path: Path, text: str, name: str = "part.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_line(exc: pytest.ExceptionInfo[SpecError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_valid_user_link_loads(tmp_path: Path) -> None:
    link = catalog.load_link_file(_write(tmp_path, LINK))
    assert link.bandwidth_bps == 50e9 and link.topology == "switch"


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    # Line 4 opens a flow sequence that never closes; the scanner fails on line 5.
    text = LINK.replace("latency_s: 2.0e-6", "latency_s: [1, 2") + "oops: here\n"
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as exc:
        catalog.load_link_file(path)
    msg = _one_line(exc)
    assert msg.startswith(f"{path}:")
    assert "malformed YAML" in msg
    line = int(msg.split(":")[1])
    assert line in (5, 6)


def test_tab_indentation_reports_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: X\nkind: host\n\tbandwidth_bps: 1\n")
    with pytest.raises(SpecError, match=rf"^{path}:3: malformed YAML"):
        catalog.load_link_file(path)


def test_unknown_key_names_key_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, LINK + "bandwith_bps: 3\n")
    with pytest.raises(SpecError) as exc:
        catalog.load_link_file(path)
    msg = _one_line(exc)
    assert msg.startswith(f"{path}:6: unknown key 'bandwith_bps'")
    assert "did you mean 'bandwidth_bps'" in msg


def test_negative_bandwidth_names_field_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, LINK.replace("5.0e+10", "-5.0e+10"))
    with pytest.raises(SpecError) as exc:
        catalog.load_link_file(path)
    msg = _one_line(exc)
    assert msg.startswith(f"{path}:3: field 'bandwidth_bps'")
    assert "greater than 0" in msg and "-50000000000.0" in msg


def test_missing_key(tmp_path: Path) -> None:
    path = _write(tmp_path, LINK.replace("latency_s: 2.0e-6\n", ""))
    with pytest.raises(SpecError, match=r"missing required key 'latency_s'"):
        catalog.load_link_file(path)


def test_nested_gpu_errors_point_inside_peak_flops(tmp_path: Path) -> None:
    src = catalog.source_file("gpu", "A100")
    assert src is not None
    lines = src.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if line.strip().startswith("int8:"))
    lines[i] = lines[i].replace("int8", "fp64")
    path = _write(tmp_path, "\n".join(lines) + "\n", "gpu.yaml")
    with pytest.raises(SpecError) as exc:
        catalog.load_gpu_file(path)
    msg = _one_line(exc)
    assert "unknown dtype 'fp64'" in msg and "peak_flops" in msg
    assert msg.startswith(f"{path}:")


def test_inconsistent_power_is_rejected(tmp_path: Path) -> None:
    src = catalog.source_file("gpu", "L4")
    assert src is not None
    data = yaml.safe_load(src.read_text())
    data["idle_power_w"] = 500.0
    path = _write(tmp_path, yaml.safe_dump(data), "l4.yaml")
    with pytest.raises(SpecError, match=r"idle_power_w \(500.0\) must be < tdp_w \(72.0\)"):
        catalog.load_gpu_file(path)


def test_non_mapping_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="expected a mapping"):
        catalog.load_link_file(_write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(SpecError, match="file not found"):
        catalog.load_gpu_file(tmp_path / "absent.yaml")
    with pytest.raises(SpecError, match="file not found"):
        load_cluster(str(tmp_path / "absent.yaml"))


def test_bad_system_domain(tmp_path: Path) -> None:
    src = catalog.source_file("system", "DGX-H100")
    assert src is not None
    data = yaml.safe_load(src.read_text())
    data["scale_up_domain"] = 3
    path = _write(tmp_path, yaml.safe_dump(data), "sys.yaml")
    with pytest.raises(SpecError, match="scale_up_domain .3. must divide"):
        catalog.load_system_file(path)


@settings(max_examples=60, deadline=None)
@given(bw=st.floats(max_value=0.0, allow_nan=False, allow_infinity=False))
def test_any_non_positive_bandwidth_is_a_spec_error(tmp_path_factory: pytest.TempPathFactory, bw: float) -> None:
    path = tmp_path_factory.mktemp("bw") / "link.yaml"
    path.write_text(LINK.replace("5.0e+10", repr(bw)))
    with pytest.raises(SpecError, match="bandwidth_bps"):
        catalog.load_link_file(path)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200))
def test_garbage_yaml_is_only_ever_a_spec_error(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("g") / "x.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        catalog.load_gpu_file(path)
    except SpecError as exc:
        assert "\n" not in str(exc)
