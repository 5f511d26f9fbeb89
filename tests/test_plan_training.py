"""Training planner: integer program vs brute force, bound vs simulator, branch and bound vs
exhaustive simulation, API vs estimate vs CLI, Korthikanti 2022 layouts, infeasible and bad input."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fleetsim.hardware.errors import ConfigError, InfeasibleError
from fleetsim.planner.executor import LocalExecutor
from fleetsim.planner.flags import TrainingLayout, megatron_args, torchtitan_toml
from fleetsim.planner.stage_layers import assign_layers, brute_force
from fleetsim.planner.training import TrainEvaluation, search
from fleetsim.sim.training.job import TrainJob

from fleetsim.cli import main as cli_main
from fleetsim.training import build_train_job, estimate_train_step
from fleetsim.training_plans import Simulate, plan_training

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT.parent / "shared" / "data" / "published"
needs_published = pytest.mark.skipif(not (PUBLISHED / "korthikanti2022_table5.csv").is_file(),
                                     reason="../shared/data/published (Korthikanti et al. 2022 table 5) is absent")


def test_stage_layers_equals_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(40):
        p = rng.randint(1, 4)
        L = rng.randint(p, 12)
        t = [rng.choice([1.0, 1.5, 2.0, 3.3]) for _ in range(p)]
        cap = [rng.randint(1, L) for _ in range(p)]
        fixed = [rng.choice([0.0, 0.7]) for _ in range(p)]
        sol = assign_layers(t, cap, L, fixed)
        bf = brute_force(t, cap, L, fixed)
        if bf is None:
            assert sol is None
        else:
            assert sol is not None and sum(sol.layers) == L
            assert all(1 <= x <= c for x, c in zip(sol.layers, cap, strict=True))
            assert sol.max_stage_s == pytest.approx(bf, rel=1e-9)


def test_slower_stage_gets_fewer_layers() -> None:
    sol = assign_layers([2.0, 1.0], [32, 32], 30)
    assert sol is not None and sol.layers == (10, 20)


def _base(model: str = "gpt2-medium", cluster: str = "8xH100-SXM", batch: int = 16, seq: int = 1024):
    job = build_train_job(model, cluster, None, 1, int(cluster.split("x")[0]), seq)
    return job.model_copy(update={"global_batch": batch})


class Memo:
    """``Simulate(None)`` once per job (the exhaustive searches below share their simulations)."""

    def __init__(self) -> None:
        self.sim = Simulate(None)
        self.seen: dict[str, TrainEvaluation] = {}

    def __call__(self, job: TrainJob, bound_s: float) -> TrainEvaluation:
        key = job.model_dump_json()
        if key not in self.seen:
            self.seen[key] = self.sim(job, 0.0)
        return self.seen[key].model_copy(update={"bound_s": bound_s})


@pytest.fixture(scope="module")
def exhaustive() -> tuple[TrainJob, Memo, dict]:
    base, memo = _base(), Memo()
    return base, memo, {o: search(base, memo, o, top=10_000) for o in ("throughput", "energy")}


def test_bound_below_simulation(exhaustive: tuple[TrainJob, Memo, dict]) -> None:
    every = exhaustive[2]["throughput"]
    assert every.simulated == every.candidates > 20
    for ev in every.plans:
        assert ev.bound_s <= ev.time_s * (1 + 1e-9), ev.candidate.label()


@pytest.mark.parametrize("objective,key", [("throughput", "time_s"), ("energy", "facility_j_per_token")])
def test_branch_and_bound_equals_exhaustive(exhaustive: tuple[TrainJob, Memo, dict], objective: str,
                                            key: str) -> None:
    base, memo, every = exhaustive
    for top in (1, 3):
        got = search(base, memo, objective, top=top)
        assert got.simulated < every[objective].simulated
        want = sorted(every[objective].plans, key=lambda e: (getattr(e, key), e.candidate.sort_key()))[:top]
        assert [e.candidate for e in got.plans] == [e.candidate for e in want]


@pytest.fixture(scope="module")
def small_plan():  # noqa: ANN201
    return plan_training("gpt2-medium", "8xH100-SXM", global_batch=16, seq_len=1024, top=3, tokens=1e9)


def test_api_matches_estimate(small_plan) -> None:  # noqa: ANN001
    best = small_plan.best
    est = estimate_train_step("gpt2-medium", "8xH100-SXM", best.parallel, best.micro_batch, 16, 1024,
                              recompute=best.recompute, zero=best.zero, record_timeline=False)
    assert best.time_s == est.time_s and best.mfu == est.mfu
    assert best.train_time_s == pytest.approx(est.train_cost(1e9)["time_s"])
    assert [e.time_s for e in small_plan.plans] == sorted(e.time_s for e in small_plan.plans)
    assert any(line.startswith("bottleneck:") for line in best.explain())


def test_engine_settings_are_planner_flags(small_plan) -> None:  # noqa: ANN001
    """The entry's Megatron-LM arguments and torchtitan config are ``planner.flags``' of a
    layout written out by hand from the entry's own fields (one flag mapping, not two)."""
    for e in small_plan.plans:
        p = e.parallel
        hand = TrainingLayout(model="gpt2-medium", tp=p.tp, pp=p.pp, dp=p.dp, cp=p.cp, ep=p.ep, vpp=p.vpp,
                              micro_batch=e.micro_batch, global_batch=16, seq_len=1024, recompute=e.recompute,
                              zero=e.zero, offload=False, dtype="bf16")
        assert e.megatron_args() == list(megatron_args(hand))
        assert e.torchtitan_toml() == torchtitan_toml(hand)
        d = e.as_dict()
        assert d["megatron_args"] == e.megatron_args() and d["torchtitan_toml"] == e.torchtitan_toml()
    assert "--tensor-model-parallel-size" in small_plan.best.megatron_args()


TINY: dict[str, Any] = {"model": "gpt2", "cluster": "2xH100-SXM", "global_batch": 8, "seq_len": 1024, "top": 4, "tokens": 1e9}
"""A search of two waves (7 candidates simulated, 4 then 3): each wave is one ``map``."""


@pytest.fixture(scope="module")
def tiny_plan():  # noqa: ANN201
    return plan_training(**TINY)


def test_same_plan_whichever_executor(tiny_plan) -> None:  # noqa: ANN001
    assert tiny_plan.simulated > TINY["top"]
    pool = plan_training(**TINY, executor=LocalExecutor(2))
    assert pool.as_dict() == tiny_plan.as_dict()
    assert pool.simulated == tiny_plan.simulated
    assert plan_training(**TINY, executor="local", workers=1).as_dict() == tiny_plan.as_dict()


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is not installed (pip install 'fleetsim[ray]')")
def test_same_plan_on_ray(tiny_plan) -> None:  # noqa: ANN001
    import ray
    from fleetsim.planner.executor import ray_runtime_env

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=ray_runtime_env())
    try:
        got = plan_training(**TINY, executor="ray")
    finally:
        ray.shutdown()
    assert got.as_dict() == tiny_plan.as_dict()


def test_bad_executor_one_line() -> None:
    with pytest.raises(ConfigError, match=r"--executor 'rya' is not one of local, ray"):
        plan_training("gpt2", "8xH100-SXM", global_batch=8, executor="rya")


def test_cli_json_equals_api() -> None:
    out = subprocess.run([sys.executable, "-m", "fleetsim", "plan", "--training", "--model", "gpt2-medium",
                          "--cluster", "8xH100-SXM", "--global-batch", "16", "--seq-len", "1024", "--top", "2",
                          "--json"], capture_output=True, text=True, cwd=ROOT, check=True)
    got = json.loads(out.stdout)
    api = plan_training("gpt2-medium", "8xH100-SXM", global_batch=16, seq_len=1024, top=2)
    assert [p["time_s"] for p in got["plans"]] == [e.time_s for e in api.plans]
    assert got["plans"][0]["tp"] == api.best.parallel.tp
    assert got["plans"][0]["megatron_args"] == api.best.megatron_args()


@pytest.mark.parametrize("argv,needle", [
    (["--global-batch", "3", "--cluster", "64xA100-SXM-80GB"], "global_batch=3"),
    (["--global-batch", "8", "--objective", "fast"], "--objective"),
    (["--global-batch", "8", "--seq-len", "0"], "--seq-len"),
])
def test_cli_bad_input_one_line_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--model", "gpt2", "--cluster", "8xA100-SXM-80GB"] + argv
    assert cli_main(["plan", "--training"] + args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err


def test_bad_objective_api() -> None:
    with pytest.raises(ConfigError, match="objective"):
        plan_training("gpt2", "8xH100-SXM", global_batch=8, objective="fast")


def test_infeasible_names_binding_constraint_and_closest_miss() -> None:
    with pytest.raises(InfeasibleError) as err:
        plan_training("llama-3.1-405b", "8xA100-SXM-80GB", global_batch=8, seq_len=2048, top=1)
    msg = str(err.value)
    assert "binding constraint GPU memory" in msg and "closest miss" in msg and "GiB more per GPU" in msg


def test_mixed_types_slower_gpu_gets_fewer_layers() -> None:
    plan = plan_training("llama-3.1-8b", "8xA100-SXM-80GB+8xH100-SXM", global_batch=64, seq_len=2048, top=20)
    mixed = [e for e in plan.plans if e.evaluation.priced_by == "per-stage estimate"]
    assert mixed and any("per-stage" in n for n in plan.notes)
    for e in mixed:
        split = e.candidate.layer_split
        assert split is not None and sum(split) == 32
        gpus = e.evaluation.gpu.split("+")
        if e.candidate.pp == 2:  # one stage per type: the H100 stage holds more layers
            h100 = 0 if gpus[0].endswith("H100-SXM") else 1
            assert split[h100] > split[1 - h100]


@needs_published
def test_korthikanti_layouts_are_matched_or_beaten() -> None:
    """On each table 5 configuration (same GPUs, batch, recipe) the planner's best step is at
    most the simulator's time of the published layout (selective recomputation + SP rows)."""
    from fleetsim.training_validate import _korthikanti_args

    df = pd.read_csv(PUBLISHED / "korthikanti2022_table5.csv")
    rows = df[df.recompute == "selective"]
    assert len(rows) == 4
    for _, r in rows.iterrows():
        a = _korthikanti_args(r, "selective", True)
        published = estimate_train_step(**a, record_timeline=False).time_s
        plan = plan_training(a["model"], a["cluster"], global_batch=a["global_batch"], seq_len=a["seq_len"],
                             top=1, dtype=a["dtype"], attention="eager", dropout=True)
        assert plan.best.time_s <= published * (1 + 1e-9), (r["model"], plan.best.candidate.label(), published)
