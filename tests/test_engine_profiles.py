"""Engine profiles: the shipped catalog loads, names resolve, bad YAML fails in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fleetsim.calibration.engines import ENGINE_DIR, engine_names, fitted_values, get_engine
from fleetsim.hardware.errors import ConfigError
from pydantic import ValidationError

SERVING = {"torch-eager", "torch-compile", "hf-transformers", "vllm", "vllm-0.6", "sglang", "trtllm",
           "fleetsim-harness"}
TRAINING = {"torch-eager", "torch-compile", "hf-transformers", "megatron"}


def test_catalog_has_the_issue_profiles_and_every_number_names_its_source() -> None:
    assert set(engine_names("serving")) == SERVING
    assert set(engine_names("training")) == TRAINING
    for role, names in (("serving", SERVING), ("training", TRAINING)):
        for name in names:
            prof = get_engine(name, role)  # type: ignore[arg-type]
            assert prof.name == name and prof.role == role
            for key, f in fitted_values(prof):
                assert f.source.split(":")[0] in ("fit", "spec", "engine docs", "default"), key
                if f.source.startswith("fit:"):
                    assert f.fit_rows and f.test_rows and f.date, (name, key)


def test_names_resolve_case_insensitively_and_unknown_ones_suggest() -> None:
    assert get_engine("VLLM").name == "vllm"
    assert get_engine(get_engine("vllm")) is get_engine("vllm")
    with pytest.raises(ConfigError, match=r"unknown serving engine 'vlm' \(did you mean 'vllm'"):
        get_engine("vlm")
    with pytest.raises(ConfigError, match="megatron' is a training profile"):
        get_engine(get_engine("megatron", "training"), "serving")


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("edit,msg", [
    (lambda d: d["kernels"].update(fused_qkvv=True), "unknown key 'kernels.fused_qkvv'"),
    (lambda d: d["launch"].pop("iteration_overhead_s"), "missing required key 'launch.iteration_overhead_s'"),
    (lambda d: d["launch"].update(mode="warp"), "field 'launch.mode'"),
    (lambda d: d["launch"].pop("max_capture_batch"), "graphs_decode_only' needs max_capture_batch"),
    (lambda d: d["launch"]["iteration_overhead_s"].update(source="fit: x"), "needs fit_rows, test_rows and date"),
    (lambda d: d["launch"]["iteration_overhead_s"].update(value=-1), "iteration_overhead_s.value"),
])
def test_user_yaml_errors_name_the_file_and_the_key(tmp_path: Path, edit, msg: str) -> None:
    data = yaml.safe_load((ENGINE_DIR / "serving" / "vllm.yaml").read_text())
    data["name"] = "mine"
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        get_engine(str(path))
    text = str(err.value)
    assert "\n" not in text and str(path) in text and msg in text


def test_user_yaml_loads_and_is_frozen(tmp_path: Path) -> None:
    data = yaml.safe_load((ENGINE_DIR / "serving" / "vllm.yaml").read_text())
    data["name"] = "my-vllm"
    data["launch"]["max_capture_batch"] = 64
    prof = get_engine(str(_write(tmp_path, data)))
    assert prof.name == "my-vllm" and prof.launch.max_capture_batch == 64
    with pytest.raises(ValidationError):
        prof.launch.mode = "eager"  # type: ignore[misc]
    with pytest.raises(ConfigError, match="does not exist"):
        get_engine(str(tmp_path / "nope.yaml"))


def test_cli_lists_and_shows_engines(capsys) -> None:
    from fleetsim.cli import main

    assert main(["specs", "engines"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in SERVING | TRAINING)
    assert main(["specs", "show-engine", "megatron", "--role", "training"]) == 0
    assert "training.comm_slowdown = 0.371" in capsys.readouterr().out
    assert main(["specs", "show-engine", "vlm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'vllm'" in err
