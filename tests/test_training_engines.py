"""Training engine profiles: ``estimate_train_step(engine=)`` / ``fleetsim train --engine``
select the launch mode, gradient buckets and overlap, distributed optimizer, norm kernels and
the compute slowdown under overlapped communication; every output names the profile."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fleetsim.calibration.engines import get_engine
from fleetsim.hardware.errors import ConfigError
from fleetsim.sim.training.step import comm_slowdown_of, simulate_step

from fleetsim.cli import main
from fleetsim.training import build_train_job, estimate_train_step

SMALL = dict(micro_batch=1, global_batch=4, seq_len=512)
DDP = ("gpt2-medium", "2xH100-SXM")


def _custom(tmp_path: Path, base: str, name: str, **training: object) -> Path:
    data = yaml.safe_load(Path(f"calibration/engines/training/{base}.yaml").read_text())
    data["name"] = name
    data["training"].update(training)
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_default_is_megatron_and_matches_the_profiles_numbers() -> None:
    default = estimate_train_step(*DDP, **SMALL)
    explicit = estimate_train_step(*DDP, engine="megatron", **SMALL)
    prof = get_engine("megatron", "training")
    assert default.job.engine.name == "megatron" and default.time_s == explicit.time_s
    assert prof.training is not None and prof.training.grad_bucket_bytes is not None
    assert default.job.grad_bucket_bytes == prof.training.grad_bucket_bytes.value
    assert default.job.execution == "eager" and default.job.zero == 0


def test_compiled_profile_is_the_eager_one_without_host_dispatch() -> None:
    """torch-compile differs from torch-eager in launch mode and kernel sequence only (same
    buckets, slowdown) and its fp32 parameters: its step is torch-eager's with its kernels,
    ``precision='amp'`` and ``execution='graph'``."""
    comp = estimate_train_step(*DDP, engine="torch-compile", **SMALL)
    kernels = get_engine("torch-compile", "training").kernels
    eager_prof = get_engine("torch-eager", "training").model_copy(update={"kernels": kernels})
    eager_as_graph = estimate_train_step(*DDP, engine=eager_prof, execution="graph", precision="amp", **SMALL)
    eager = estimate_train_step(*DDP, engine=eager_prof, precision="amp", **SMALL)
    assert comp.job.execution == "graph"
    assert comp.time_s == pytest.approx(eager_as_graph.time_s, rel=1e-12)
    assert comp.time_s < eager.time_s


def test_separate_norm_kernels_cost_host_dispatch() -> None:
    """Hugging Face's split kernels (8-kernel fp32 RMSNorm, rotate-half rotary, silu then
    mul) add device time, and in an eager, host-bound small step more host dispatch on top."""
    hf = estimate_train_step("gpt2-medium", "1xH100-SXM", engine="hf-transformers", grad_bucket_bytes=25 * 2**20,
                             **SMALL)
    te = estimate_train_step("gpt2-medium", "1xH100-SXM", engine="torch-eager", **SMALL)
    assert hf.time_s > te.time_s
    hf_g = estimate_train_step("gpt2-medium", "1xH100-SXM", engine="hf-transformers", execution="graph", **SMALL)
    te_g = estimate_train_step("gpt2-medium", "1xH100-SXM", engine="torch-eager", execution="graph", **SMALL)
    assert hf_g.time_s > te_g.time_s
    assert hf.time_s - te.time_s > hf_g.time_s - te_g.time_s


def test_distributed_optimizer_shards_the_optimizer_state(tmp_path: Path) -> None:
    path = _custom(tmp_path, "torch-eager", "dist-opt", distributed_optimizer=True)
    dist = estimate_train_step(*DDP, engine=str(path), **SMALL)
    zero1 = estimate_train_step(*DDP, engine="torch-eager", zero=1, **SMALL)
    assert dist.job.zero == 1 and dist.job.engine.name == "dist-opt"
    assert dist.time_s == pytest.approx(zero1.time_s, rel=1e-12)
    assert dist.peak_memory_bytes == pytest.approx(zero1.peak_memory_bytes, rel=1e-12)
    assert estimate_train_step(*DDP, engine=str(path), zero=0, **SMALL).job.zero == 0  # explicit wins


def test_comm_slowdown_is_read_from_the_profile(tmp_path: Path) -> None:
    path = _custom(tmp_path, "torch-eager", "no-slowdown",
                   comm_slowdown={"value": 0.0, "source": "default: no contention"})
    big = dict(micro_batch=4, global_batch=32, seq_len=1024, execution="graph")  # GPU-bound: overlap matters
    none = estimate_train_step(*DDP, engine=str(path), **big)
    job = build_train_job(*DDP, engine="torch-eager", **big)
    assert comm_slowdown_of(job.engine) == pytest.approx(0.371)
    assert none.time_s == pytest.approx(simulate_step(job, comm_slowdown=0.0, record=False).step_s, rel=1e-12)
    assert none.time_s < simulate_step(job, record=False).step_s


def test_bad_engines_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="serving profile"):
        estimate_train_step(*DDP, engine=get_engine("vllm"), **SMALL)
    with pytest.raises(ConfigError, match="did you mean 'megatron'"):
        estimate_train_step(*DDP, engine="megatrn", **SMALL)
    assert main(["train", "--model", "gpt2-medium", "--cluster", "2xH100-SXM", "--global-batch", "4",
                 "--engine", "vllm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'vllm'" in err[0]


def test_cli_header_and_summary_name_the_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model", "gpt2-medium", "--cluster", "2xH100-SXM", "--global-batch", "4",
                 "--seq-len", "512", "--engine", "torch-compile"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("gpt2-medium on 2xH100-SXM (engine torch-compile, graph):")
    assert any(ln.split()[:2] == ["engine", "torch-compile"] for ln in out[1:])
    api = estimate_train_step(*DDP, engine="torch-compile", **SMALL)
    assert api.summary().set_index("metric").loc["engine", "value"] == "torch-compile"
