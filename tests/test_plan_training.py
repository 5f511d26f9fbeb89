"""Training planner: integer program vs brute force, bound vs simulator, branch and bound vs
exhaustive simulation, API vs estimate vs CLI, Korthikanti 2022 layouts, infeasible and bad input."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fleetsim.hardware.errors import ConfigError, InfeasibleError
from fleetsim.planner.stage_layers import assign_layers, brute_force
from fleetsim.planner.training import search

from fleetsim.plan_training import Simulate, plan_training
from fleetsim.training import build_train_job, estimate_train_step

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


def test_bound_below_simulation_and_branch_and_bound_is_exact() -> None:
    base = _base()
    every = search(base, Simulate(None), "throughput", top=10_000)
    assert every.simulated == every.candidates > 20
    for ev in every.plans:
        assert ev.bound_s <= ev.time_s * (1 + 1e-9), ev.candidate.label()
    best = search(base, Simulate(None), "throughput", top=1)
    assert best.simulated < every.simulated
    assert best.plans[0] == every.plans[0]
    energy_all = search(base, Simulate(None), "energy", top=10_000)
    energy_one = search(base, Simulate(None), "energy", top=1)
    assert energy_one.plans[0] == min(energy_all.plans, key=lambda e: (e.facility_j_per_token,
                                                                      e.candidate.sort_key()))


def test_api_matches_estimate_and_is_deterministic() -> None:
    a = plan_training("gpt2-medium", "8xH100-SXM", global_batch=16, seq_len=1024, top=3, tokens=1e9, workers=1)
    b = plan_training("gpt2-medium", "8xH100-SXM", global_batch=16, seq_len=1024, top=3, tokens=1e9, workers=2)
    assert a.as_dict() == b.as_dict()
    best = a.best
    est = estimate_train_step("gpt2-medium", "8xH100-SXM", best.parallel, best.micro_batch, 16, 1024,
                              recompute=best.recompute, zero=best.zero, record_timeline=False)
    assert best.time_s == est.time_s and best.mfu == est.mfu
    assert best.train_time_s == pytest.approx(est.train_cost(1e9)["time_s"])
    assert [e.time_s for e in a.plans] == sorted(e.time_s for e in a.plans)
    assert any("--tensor-model-parallel-size" in x for x in best.megatron_args())
    assert "[parallelism]" in best.torchtitan_toml()
    assert any(line.startswith("bottleneck:") for line in best.explain())


def test_cli_json_equals_api() -> None:
    out = subprocess.run([sys.executable, "-m", "fleetsim", "plan", "--training", "--model", "gpt2-medium",
                          "--cluster", "8xH100-SXM", "--global-batch", "16", "--seq-len", "1024", "--top", "2",
                          "--json"], capture_output=True, text=True, cwd=ROOT, check=True)
    got = json.loads(out.stdout)
    api = plan_training("gpt2-medium", "8xH100-SXM", global_batch=16, seq_len=1024, top=2)
    assert [p["time_s"] for p in got["plans"]] == [e.time_s for e in api.plans]
    assert got["plans"][0]["tp"] == api.best.parallel.tp


@pytest.mark.parametrize("argv,needle", [
    (["--global-batch", "3", "--cluster", "64xA100-SXM-80GB"], "global_batch=3"),
    (["--global-batch", "8", "--objective", "fast"], "--objective"),
    (["--global-batch", "8", "--seq-len", "0"], "--seq-len"),
])
def test_cli_bad_input_one_line_exit_2(argv: list[str], needle: str) -> None:
    args = ["--model", "gpt2", "--cluster", "8xA100-SXM-80GB"] + argv
    out = subprocess.run([sys.executable, "-m", "fleetsim", "plan", "--training"] + args,
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr


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
