"""fleetsim's current predictions against published vLLM / SGLang / TensorRT-LLM serving
figures and Megatron / Llama 3 training figures (issue 10, section 3). No model is changed.

Serving rows run ``fleetsim.simulate_serving`` on ``{num_gpus}x{gpu}`` with one replica of
the row's TP/PP/EP and weight/KV dtypes:

* a ``request_rate`` row: ``poisson:rate=R,isl=..,osl=..`` with 200 requests;
* a ``concurrency`` row: ``closed:clients=N,think=0,isl=..,osl=..`` with max(4N, 200);
* an offline row (neither): a closed loop of ``OFFLINE_CLIENTS[engine]`` clients (the
  engine's batch cap, also fleetsim's ``max_num_seqs``) with 4x that many requests; this
  stands in for "every request queued at once" in steady state.

Lengths are fixed at the row's ``isl``/``osl`` (the row notes say where the source drew
them from a distribution). ``itl_mean_s`` is compared with fleetsim's ``tpot_mean_s``
(the mean inter-token gap of a request is its TPOT). Training rows run
``fleetsim.estimate_train_step`` with the row's layout, batch, sequence length and dtype
(recompute ``none`` where the source does not state it).

Usage: ``python3 benchmarks/published_gap.py [--engine NAME] [--split fit|test] [--csv OUT]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import pandas as pd

OFFLINE_CLIENTS = {"vllm": 256, "sglang": 512, "trtllm": 512}
MAX_SIM_S = 20.0
METRIC_KEY = {"output_tok_s": "output_tokens_per_s", "req_s": "requests_per_s", "itl_mean_s": "tpot_mean_s"}


def _workload(row: pd.Series) -> tuple[str, int, int | None]:
    """(workload spec, number of requests, batch cap or None) for one serving row."""
    lengths = f"isl={int(row['isl'])},osl={int(row['osl'])}"
    if np.isfinite(row["request_rate"]):
        return f"poisson:rate={row['request_rate']:g},{lengths}", 200, None
    clients = int(row["concurrency"]) if np.isfinite(row["concurrency"]) else OFFLINE_CLIENTS[row["engine"]]
    clients = min(clients, int(row["num_prompts"]))
    cap = None if np.isfinite(row["concurrency"]) else clients
    return f"closed:clients={clients},think=0,{lengths}", max(4 * clients, 200), cap


def predict_serving(row: pd.Series) -> tuple[float, float]:
    """(predicted value, wall seconds) of one serving row."""
    from fleetsim import simulate_serving

    spec, n, cap = _workload(row)
    engine: dict[str, Any] = {"dtype": row["dtype"], "kv_dtype": row["kv_dtype"]}
    if cap is not None:
        engine["scheduler"] = {"kind": "vllm", "max_num_seqs": max(cap, 256)}
    pool = {"gpu": row["gpu"], "tp": int(row["tp"]), "pp": int(row["pp"]), "ep": int(row["ep"]), "replicas": 1,
            "engine": engine}
    t0 = time.perf_counter()
    res = simulate_serving(row["model"], f"{int(row['num_gpus'])}x{row['gpu']}", spec, {"pools": [pool]},
                           num_requests=n)
    key = METRIC_KEY.get(row["metric"], row["metric"])
    return float(res.summary[key]), time.perf_counter() - t0


def predict_training(row: pd.Series) -> tuple[float, float]:
    """(predicted value, wall seconds) of one training row."""
    from fleetsim import estimate_train_step

    opts: dict[str, Any] = {"tp": int(row["tp"]), "pp": int(row["pp"]), "dp": int(row["dp"]), "cp": int(row["cp"]),
                            "ep": int(row["ep"]), "dtype": row["dtype"], "fsdp": bool(row["fsdp"]),
                            "recompute": row["recompute"] or "none"}
    if np.isfinite(row["vpp"]) and row["vpp"] > 1:
        opts["vpp"] = int(row["vpp"])
    mb = int(row["micro_batch"]) if np.isfinite(row["micro_batch"]) else 1
    t0 = time.perf_counter()
    est = estimate_train_step(row["model"], f"{int(row['num_gpus'])}x{row['gpu']}", micro_batch=mb,
                              global_batch=int(row["global_batch"]), seq_len=int(row["seq_len"]),
                              record_timeline=False, **opts)
    value = {"mfu": est.mfu, "flops_per_s_per_gpu": est.model_flops_per_s_per_gpu,
             "tokens_per_s_per_gpu": est.tokens_per_s / est.num_gpus, "step_time_s": est.time_s}[row["metric"]]
    return float(value), time.perf_counter() - t0


def run(df: pd.DataFrame, predict: Any, group: str) -> pd.DataFrame:
    """Predict every row; a failure (infeasible layout, unsupported feature) is kept as a note."""
    out = []
    for i, row in df.iterrows():
        try:
            pred, wall = predict(row)
            note = f"slow ({wall:.0f} s)" if wall > MAX_SIM_S else ""
        except Exception as exc:  # noqa: BLE001 - one failing row must not hide the others
            pred, note = float("nan"), f"{type(exc).__name__}: {' '.join(str(exc).split())[:90]}"
        out.append({"row": i, group: row[group], "model": row["model"], "gpu": row["gpu"].split("-")[0],
                    "tp": int(row["tp"]), "isl/osl": f"{row.get('isl', '')}/{row.get('osl', '')}",
                    "metric": row["metric"], "split": row["split"], "measured": row["value"], "predicted": pred,
                    "err_pct": 100 * (pred / row["value"] - 1), "note": note})
    return pd.DataFrame(out)


def mape(res: pd.DataFrame, group: str) -> pd.DataFrame:
    ok = res.dropna(subset=["predicted"])
    g = ok.groupby([group, "metric", "split"])["err_pct"]
    return pd.DataFrame({"rows": g.size(), "mape_pct": g.apply(lambda e: e.abs().mean()),
                         "mean_err_pct": g.mean(), "worst_pct": g.apply(lambda e: e[e.abs().idxmax()])}).round(1)


def main(argv: list[str] | None = None) -> None:
    from fleetsim.published_engines import serving_table, training_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", help="only this serving engine (vllm, sglang, trtllm)")
    ap.add_argument("--split", choices=("fit", "test"))
    ap.add_argument("--csv", help="write the per-row table here")
    args = ap.parse_args(argv)
    serving, training = serving_table(), training_table()
    if args.engine:
        serving = serving[serving["engine"] == args.engine]
    if args.split:
        serving, training = serving[serving["split"] == args.split], training[training["split"] == args.split]
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 500)
    s = run(serving, predict_serving, "engine")
    t = run(training, predict_training, "framework")
    fmt = {"measured": "{:.4g}".format, "predicted": "{:.4g}".format, "err_pct": "{:+.1f}".format}
    print("Serving rows (err = predicted / measured - 1)")
    print(s.to_string(index=False, formatters=fmt))
    print("\nServing MAPE per engine, metric and split")
    print(mape(s, "engine").to_string())
    print("\nTraining rows")
    print(t.drop(columns=["isl/osl"]).to_string(index=False, formatters=fmt))
    print("\nTraining MAPE per framework, metric and split")
    print(mape(t, "framework").to_string())
    if args.csv:
        pd.concat([s, t], ignore_index=True).to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
