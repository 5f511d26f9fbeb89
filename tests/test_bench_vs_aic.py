"""``benchmarks/bench_vs_aiconfigurator.py``: imports without AIConfigurator, reports a missing venv
as absent (no subprocess, no traceback), and reads AIConfigurator's ``best_config_topn.csv``
rows into common units (oracle: hand-written rows and hand arithmetic)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_vs_aic", ROOT / "benchmarks" / "bench_vs_aiconfigurator.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_absent_venv_is_reported_not_run(tmp_path: Path, capsys) -> None:
    b = _bench()
    assert "aiconfigurator" not in (ROOT / "pyproject.toml").read_text().lower()
    missing = tmp_path / "no-venv"
    assert b.aic_python(missing) is None
    why = b.run_aic(b.SCENARIOS[0], missing)
    assert isinstance(why, str) and why.startswith("AIConfigurator absent") and str(missing) in why
    assert b.main(["--venv", str(missing), "--no-fleetsim", "--scenario", b.SCENARIOS[0].name]) == 0
    out = capsys.readouterr().out
    assert f"AIConfigurator absent at {missing}" in out and b.SCENARIOS[0].model in out


def test_parse_agg_and_disagg_rows(tmp_path: Path) -> None:
    b = _bench()
    agg = tmp_path / "agg.csv"
    agg.write_text("request_rate,bs,ttft,tpot,tokens/s/gpu,num_total_gpus,tp,pp,dp,backend\n"
                   "2.0,32,900.0,40.0,500.0,4,4,1,1,vllm\n"
                   "2.75,64,1476.6,44.2,686.4,2,2,1,1,vllm\n")
    r = b.parse_aic_csv(agg, "agg", 8)
    # best row by tokens/s/gpu; a row is one 2-GPU replica: 8 / 2 = 4 replicas, 4 x 2.75 req/s; ms -> s
    assert r["layout"] == "4 x TP2 PP1 bs64" and r["tok_s_per_gpu"] == 686.4 and r["rate_rps"] == 11.0
    assert abs(r["ttft_s"] - 1.4766) < 1e-12 and abs(r["tpot_s"] - 0.0442) < 1e-12
    dis = tmp_path / "disagg.csv"
    dis.write_text("request_rate,ttft,tpot,tokens/s/gpu,num_total_gpus,(p)workers,(p)tp,(p)pp,(p)dp,"
                   "(d)workers,(d)tp,(d)pp,(d)dp,(d)bs,backend\n"
                   "8.65,749.1,18.9,540.7,8,2,1,1,1,1,2,1,1,168,vllm\n")
    d = b.parse_aic_csv(dis, "disagg", 8)
    # one 8-GPU xPyD replica fills 8 GPUs: 1 replica at its own rate
    assert d["layout"] == "1 x [2P TP1 + 1D TP2 bs168]" and d["rate_rps"] == 8.65 and d["gpus"] == 8
