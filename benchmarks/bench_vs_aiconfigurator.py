"""fleetsim's serving planner beside NVIDIA AIConfigurator: same model, GPUs, lengths and SLOs.

fleetsim runs in-process (``plan_serving(..., objective="max_goodput", simulate=True).search``);
AIConfigurator (``aiconfigurator cli default``) runs in a subprocess of a separate virtual
environment, never a fleetsim dependency:

    python3 -m venv /tmp/aic-venv && /tmp/aic-venv/bin/pip install aiconfigurator
    PYTHONPATH=. python3 benchmarks/bench_vs_aiconfigurator.py [--venv /tmp/aic-venv] [--scenario NAME]

Without the venv the AIConfigurator column is reported absent and fleetsim still runs. Both
plans are printed side by side: parallelism, replicas (or xPyD), predicted output tokens/s per
GPU, request rate, TTFT and TPOT, and each tool's wall time.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_VENV = Path(os.environ.get("AIC_VENV", "/tmp/aic-venv"))


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str  # fleetsim catalog name
    hf_model: str  # AIConfigurator model path (its bundled configs cover these)
    cluster: str  # fleetsim shorthand
    system: str  # AIConfigurator system name
    gpus: int
    isl: int
    osl: int
    ttft_s: float
    tpot_s: float


SCENARIOS = (
    Scenario("qwen3-32b-8xH200", "qwen3-32b", "Qwen/Qwen3-32B", "8xH200", "h200_sxm", 8, 4000, 500, 2.0, 0.05),
    Scenario("qwen3-32b-8xH100", "qwen3-32b", "Qwen/Qwen3-32B", "8xH100", "h100_sxm", 8, 4000, 500, 2.0, 0.05),
    Scenario("llama70b-8xH100", "llama-3.1-70b", "meta-llama/Meta-Llama-3.1-70B", "8xH100", "h100_sxm", 8,
             2000, 300, 2.0, 0.08),
)


@dataclass(frozen=True)
class PlanRow:
    """One tool's best plan in common units (per-GPU figures are output tokens/s)."""

    tool: str
    layout: str
    gpus: int
    rate_rps: float
    tok_s_per_gpu: float
    ttft_s: float
    tpot_s: float
    wall_s: float
    note: str = ""


def aic_python(venv: Path) -> Path | None:
    """The venv's python when it has the ``aiconfigurator`` entry point, else None."""
    py, exe = venv / "bin" / "python", venv / "bin" / "aiconfigurator"
    return py if py.exists() and exe.exists() else None


def run_fleetsim(sc: Scenario, engine: str = "vllm") -> PlanRow:
    from fleetsim.planning import plan_serving

    t0 = time.perf_counter()
    res = plan_serving(sc.model, sc.cluster, isl=sc.isl, osl=sc.osl, ttft_s=sc.ttft_s, tpot_s=sc.tpot_s,
                       objective="max_goodput", engine=engine, simulate=True, seed=0).search
    wall = time.perf_counter() - t0
    if not res.plans:
        return PlanRow("fleetsim", f"infeasible: {res.reason}", 0, 0.0, 0.0, float("nan"), float("nan"), wall)
    pl = res.plans[0]
    c = pl.checked
    layout = " + ".join(f"{p.replicas} x {p.role} TP{p.tp} PP{p.pp}" + (f" EP{p.ep}" if p.ep > 1 else "")
                        + f" seqs{p.max_num_seqs}" for p in pl.pools)
    sims = ", ".join(f"TP{e.knobs.tp} PP{e.knobs.pp} seqs{e.knobs.max_num_seqs} "
                     f"{min(k.rps for k in e.capacity) * sc.osl / e.knobs.gpus:.0f}"
                     for e in res.evaluations if e.capacity)
    # steady state, as AIConfigurator counts it: requests/s x output tokens / GPUs
    return PlanRow("fleetsim", layout, pl.gpus, pl.predicted_goodput_rps, pl.predicted_goodput_rps * sc.osl / pl.gpus,
                   c.ttft_p90_s if c else float("nan"), c.tpot_p90_s if c else float("nan"), wall,
                   f"{engine}; p90 TTFT/TPOT re-simulated (seed 1), meets_slo={pl.meets_slo}; "
                   f"simulated candidates, output tok/s/GPU at capacity: {sims or 'none'}")


def parse_aic_csv(path: Path, mode: str, total_gpus: int) -> dict[str, float | str] | None:
    """Best row (by tokens/s/gpu) of an AIConfigurator ``best_config_topn.csv`` (``agg`` or
    ``disagg``) in common units. A row is one replica (``num_total_gpus`` GPUs, its
    ``request_rate``); the deployment is as many replicas as ``total_gpus`` holds."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    r = max(rows, key=lambda row: float(row["tokens/s/gpu"]))
    per = int(float(r["num_total_gpus"]))
    n = total_gpus // per
    if mode == "agg":
        layout = f"{n} x TP{r['tp']} PP{r['pp']} bs{r['bs']}"
    else:
        layout = (f"{n} x [{r['(p)workers']}P TP{r['(p)tp']} + {r['(d)workers']}D TP{r['(d)tp']} "
                  f"bs{r['(d)bs']}]")
    return {"mode": mode, "layout": layout, "gpus": n * per, "rate_rps": n * float(r["request_rate"]),
            "tok_s_per_gpu": float(r["tokens/s/gpu"]), "ttft_s": float(r["ttft"]) / 1e3,
            "tpot_s": float(r["tpot"]) / 1e3, "backend": r.get("backend", "")}


def run_aic(sc: Scenario, venv: Path, backend: str = "vllm", timeout_s: float = 1800) -> PlanRow | str:
    """AIConfigurator's best plan (agg or disagg, by its tokens/s/gpu), or why there is none."""
    py = aic_python(venv)
    if py is None:
        return (f"AIConfigurator absent: no {venv}/bin/aiconfigurator "
                f"(python3 -m venv {venv} && {venv}/bin/pip install aiconfigurator)")
    with tempfile.TemporaryDirectory(prefix="aic-") as out:
        cmd = [str(py), str(venv / "bin" / "aiconfigurator"), "cli", "default", "--model", sc.hf_model,
               "--total-gpus", str(sc.gpus), "--system", sc.system, "--backend", backend,
               "--isl", str(sc.isl), "--osl", str(sc.osl), "--ttft", f"{sc.ttft_s * 1e3:g}",
               "--tpot", f"{sc.tpot_s * 1e3:g}", "--save-dir", out, "--no-color"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return f"AIConfigurator failed (exit {proc.returncode}): {tail[0]}"
        best = [b for mode in ("agg", "disagg") for p in Path(out).rglob(f"{mode}/best_config_topn.csv")
                if (b := parse_aic_csv(p, mode, sc.gpus)) is not None]
    if not best:
        return "AIConfigurator found no configuration within the SLO"
    b = max(best, key=lambda x: float(x["tok_s_per_gpu"]))
    others = "; ".join(f"best {x['mode']} {float(x['tok_s_per_gpu']):.0f} tok/s/GPU" for x in best)
    return PlanRow("AIConfigurator", f"{b['mode']}: {b['layout']}", int(b["gpus"]), float(b["rate_rps"]),
                   float(b["tok_s_per_gpu"]), float(b["ttft_s"]), float(b["tpot_s"]), wall,
                   f"{b['backend']}; its own estimate (mean); {others}")


def table(sc: Scenario, rows: list[PlanRow]) -> str:
    head = (f"{sc.name}: {sc.model} on {sc.cluster}, ISL {sc.isl} OSL {sc.osl}, "
            f"TTFT <= {sc.ttft_s:g} s, TPOT <= {sc.tpot_s * 1e3:g} ms")
    lines = [head, f"  {'tool':<15} {'wall s':>7} {'req/s':>7} {'tok/s/GPU':>9} {'TTFT s':>7} {'TPOT ms':>8}  plan"]
    for r in rows:
        lines.append(f"  {r.tool:<15} {r.wall_s:7.1f} {r.rate_rps:7.2f} {r.tok_s_per_gpu:9.1f} {r.ttft_s:7.3f} "
                     f"{r.tpot_s * 1e3:8.1f}  {r.layout} ({r.gpus} GPUs)")
        if r.note:
            lines.append(f"  {'':<15} {r.note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--scenario", choices=[s.name for s in SCENARIOS], action="append")
    ap.add_argument("--engine", default="vllm", help="fleetsim engine profile and AIConfigurator backend")
    ap.add_argument("--no-fleetsim", action="store_true", help="only AIConfigurator")
    args = ap.parse_args(argv)
    if aic_python(args.venv) is None:
        print(f"AIConfigurator absent at {args.venv}: only fleetsim runs")
    for sc in SCENARIOS:
        if args.scenario and sc.name not in args.scenario:
            continue
        rows = [] if args.no_fleetsim else [run_fleetsim(sc, args.engine)]
        aic = run_aic(sc, args.venv, args.engine)
        if isinstance(aic, str):
            print(aic)
        else:
            rows.append(aic)
        print(table(sc, rows))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
