"""Turn a finished ``ServingSimulation`` into tables: one row per arrived request, the
inter-token latencies, engine time series, and a summary.

Token times are stored compactly: each engine logs the end time of every iteration, and a
request keeps runs ``(engine, first iteration, last iteration)`` of consecutive iterations
that each emitted one of its tokens. Its token times are those iterations' end times; its
inter-token latencies (ITL) their differences. Pooled ITL percentiles weight each
iteration gap by the number of requests that had tokens on both sides of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from fleetsim.sim.serving.cluster import ServingSimulation
from fleetsim.sim.serving.energy import account
from fleetsim.sim.serving.reqlog import STATUS
from fleetsim.sim.serving.scaling_results import ScalingTables, scaling_tables


@dataclass
class RawTables:
    """Everything ``ServingResult`` is made of."""

    requests: pd.DataFrame
    timeseries: pd.DataFrame
    replicas: pd.DataFrame
    summary: dict[str, float | int | bool | str]
    token_runs: dict[int, tuple[int, int]]
    """req_id -> (start, stop) into ``runs`` (kept for runs up to 200,000 requests)."""
    runs: np.ndarray
    """Flat (engine, first iteration, last iteration) triples of every request."""
    iter_end: dict[int, np.ndarray]
    transfers: pd.DataFrame
    power: pd.DataFrame
    """Mean GPU draw per pool over time (``energy.power_table``)."""
    pools: pd.DataFrame
    """Energy per cluster pool (``energy.account``)."""
    scaling: ScalingTables | None = None
    """Replica timeline, GPU-hours and cost, SLO over time of an autoscaled run (else None)."""


def _sorted_pct(x: np.ndarray, q: float) -> float:
    """Percentile of sorted ``x`` with linear interpolation (numpy's default method)."""
    pos = q * (len(x) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(x) - 1)
    return float(x[lo] + (x[hi] - x[lo]) * (pos - lo))


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Quantiles ``qs`` of ``values`` repeated ``weights`` times (lower interpolation)."""
    mask = weights > 0
    if not mask.any():
        return [math.nan] * len(qs)
    v, w = (values, weights) if mask.all() else (values[mask], weights[mask])
    del mask
    order = np.argsort(v, kind="stable")
    cw = np.cumsum(w[order], dtype=np.int64)
    out = []
    for q in qs:
        k = int(np.searchsorted(cw, q * cw[-1], side="left"))
        out.append(float(v[order[min(k, len(v) - 1)]]))
    return out


def _itl_chunk(c0: int, c1: int, run_list: list[int], off_list: list[int], ends: dict[int, np.ndarray],
               itl: np.ndarray, last_tok: np.ndarray, gaps: list[float],
               diff_counts: dict[int, np.ndarray]) -> None:
    """Token times, per-request ITL percentiles and pooled-ITL counts for rows c0..c1."""
    for i in range(c0, c1):
        lo, hi = off_list[i - c0], off_list[i - c0 + 1]
        if hi == lo:
            continue
        parts = []
        prev_end = None
        for j in range(lo, hi, 3):
            uid, a, b = run_list[j], run_list[j + 1], run_list[j + 2]
            e = ends[uid]
            parts.append(e[a: b + 1])
            if prev_end is not None:
                gaps.append(float(e[a]) - prev_end)
            if b > a:
                dc = diff_counts[uid]
                dc[a + 1] += 1
                dc[b + 1] -= 1
            prev_end = float(e[b])
        times = parts[0] if len(parts) == 1 else np.concatenate(parts)
        last_tok[i] = times[-1]
        if len(times) > 1:
            d = np.sort(np.diff(times))
            itl[i] = (_sorted_pct(d, 0.5), _sorted_pct(d, 0.99), d[-1])


def collect(sim: ServingSimulation, ttft_slo_s: float | None, tpot_slo_s: float | None) -> RawTables:
    """Build the result tables of a finished simulation."""
    ends = {e.uid: np.frombuffer(e.iter_end, dtype=float) if len(e.iter_end) else np.zeros(0)
            for e in sim.engines}
    log = sim.final_log()
    n = len(log)
    li = {k: np.frombuffer(v, dtype=np.int64) if len(v) else np.zeros(0, np.int64) for k, v in log.ints.items()}
    lf = {k: np.frombuffer(v, dtype=float) if len(v) else np.zeros(0) for k, v in log.floats.items()}
    runs = np.frombuffer(log.runs, dtype=np.int64) if len(log.runs) else np.zeros(0, np.int64)
    off = np.frombuffer(log.run_off, dtype=np.int64)
    status = li["status"]
    fin = status == STATUS["finished"]
    arrival = lf["arrival_s"]
    itl = np.full((n, 3), math.nan)
    last_tok = np.full(n, math.nan)
    gaps: list[float] = []
    diff_counts = {uid: np.zeros(len(a) + 1, np.int64) for uid, a in ends.items()}
    chunk = 65536
    for c0 in range(0, n, chunk):
        c1 = min(n, c0 + chunk)
        base = int(off[c0])
        run_list = runs[base: int(off[c1])].tolist()
        off_list = (off[c0: c1 + 1] - base).tolist()
        _itl_chunk(c0, c1, run_list, off_list, ends, itl, last_tok, gaps, diff_counts)
    # pooled ITLs: iteration gaps weighted by the requests spanning them, plus run gaps
    vals, wts = [np.asarray(gaps)], [np.ones(len(gaps), np.int32)]
    for uid, a in ends.items():
        if len(a) > 1:
            c = np.cumsum(diff_counts[uid])[1: len(a)].astype(np.int32)
            keep = c > 0
            vals.append(np.diff(a)[keep])
            wts.append(c[keep])
    del diff_counts
    itl_v = np.concatenate(vals)
    itl_w = np.concatenate(wts)
    del vals, wts
    itl_q = weighted_quantiles(itl_v, itl_w, (0.5, 0.9, 0.99))
    del itl_v, itl_w
    gen = li["generated"]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(fin & (gen > 1), (last_tok - lf["first_token_s"]) / (gen - 1), math.nan)
    order = np.argsort(li["req_id"], kind="stable")
    cols = {
        "req_id": li["req_id"], "arrival_s": arrival, "replica": li["replica"],
        "prefill_replica": li["prefill_replica"], "prompt_tokens": li["prompt"],
        "output_tokens": li["output"], "generated_tokens": gen,
        "queue_delay_s": lf["admit_s"] - arrival, "ttft_s": lf["first_token_s"] - arrival,
        "tpot_s": tpot, "e2e_s": np.where(fin, lf["finish_s"] - arrival, math.nan),
        "itl_p50_s": itl[:, 0], "itl_p99_s": itl[:, 1], "itl_max_s": itl[:, 2],
        "preemptions": li["preemptions"], "prefix_hit_tokens": li["hit_tokens"],
        "finished": fin, "rejected": status == STATUS["rejected"], "energy_j": lf["energy_j"],
    }
    reasons = np.full(n, "", dtype=object)
    for k, v in log.reasons.items():
        reasons[k] = v
    cols["reject_reason"] = reasons
    lora = any(e.lora is not None for e in sim.engines) or bool((li["adapter"] >= 0).any())
    if lora:
        cols["adapter_id"] = li["adapter"]
    del itl
    req = pd.DataFrame({k: v[order] for k, v in cols.items()}, copy=False)
    del cols
    token_runs = {int(li["req_id"][i]): (int(off[i]), int(off[i + 1])) for i in range(n)} if n <= 200_000 else {}
    ts = _timeseries(sim)
    t0 = float(arrival.min()) if n else 0.0
    energy = account(sim, *_span(sim, req))
    rep = _replica_table(sim, t0).merge(energy.replicas, on="replica", how="left") if sim.replicas else \
        _replica_table(sim, t0)
    tr = pd.DataFrame(sim.transfers, columns=["req_id", "start_s", "end_s", "bytes"])
    summary = _summary(sim, req, rep, itl_q, ttft_slo_s, tpot_slo_s)
    summary.update(energy.summary)
    if lora:
        summary.update(lora_summary(sim, req))
    e = float(energy.summary["energy_j"])
    out_tok = int(req["generated_tokens"].sum())
    summary["j_per_output_token"] = e / out_tok if out_tok else math.nan
    summary["j_per_request"] = e / int(summary["finished"]) if summary["finished"] else math.nan
    scaling = None
    if sim.scaler is not None:
        scaling = scaling_tables(sim.scaler, req, *_span(sim, req), ttft_slo_s, tpot_slo_s)
        summary.update(scaling.summary)
        summary["num_replicas"] = int(scaling.summary["peak_replicas"])
    return RawTables(req, ts, rep, summary, token_runs, runs, ends, tr, energy.power, energy.pools, scaling)


def _timeseries(sim: ServingSimulation) -> pd.DataFrame:
    """One row per logged iteration run, in order of start time (then engine)."""
    engines = [e for e in sim.engines if len(e.seg["start_s"])]
    names = ("start_s", "end_s", "iters", "batch", "tokens", "kv_used", "energy_j")
    out_names = ("start_s", "end_s", "iterations", "batch_size", "tokens", "kv_used_blocks", "energy_j")
    if not engines:
        return pd.DataFrame(columns=["replica", "engine", *out_names, "kv_capacity_blocks", "kv_occupancy",
                                     "power_w"])
    sizes = [len(e.seg["start_s"]) for e in engines]
    cols: dict[str, np.ndarray] = {
        "replica": np.repeat(np.array([e.replica for e in engines], np.int32), sizes),
        "engine": np.repeat(np.array([e.uid for e in engines], np.int32), sizes),
    }
    for name, out_name in zip(names, out_names, strict=True):
        dt = np.float64 if name.endswith(("_s", "_j")) else np.int32
        cols[out_name] = np.concatenate([np.frombuffer(e.seg[name], dtype=dt) for e in engines])
    cap = np.repeat(np.array([e.kv.num_blocks for e in engines], np.int32), sizes)
    cols["kv_capacity_blocks"] = cap
    cols["kv_occupancy"] = (cols["kv_used_blocks"] / cap).astype(np.float32)
    del cap
    dur = cols["end_s"] - cols["start_s"]
    cols["power_w"] = np.divide(cols["energy_j"], dur, out=np.zeros_like(dur), where=dur > 0)
    order = np.lexsort((cols["engine"], cols["start_s"]))
    for k in list(cols):  # one column at a time keeps the peak small
        cols[k] = cols[k][order]
    return pd.DataFrame(cols, copy=False)


def _span(sim: ServingSimulation, req: pd.DataFrame) -> tuple[float, float]:
    t0 = float(req["arrival_s"].min()) if len(req) else 0.0
    return t0, max(sim.end_s, t0)


def _replica_table(sim: ServingSimulation, t0: float) -> pd.DataFrame:
    span = max(sim.end_s - t0, 1e-12)
    rows = []
    for r in sim.replicas:
        busy = sum(e.busy_s for e in r.engines) / len(r.engines)
        p = r.plan
        rows.append({"replica": r.index, "gpu": p.gpu.name, "pool": p.pool, "node": p.node,
                     "tp": p.parallel.tp, "pp": p.parallel.pp, "ep": p.parallel.ep, "role": r.role,
                     "kv_blocks": sum(e.kv.num_blocks for e in r.engines),
                     "busy_s": busy, "utilization": busy / span,
                     "preemptions": sum(e.preemptions for e in r.engines),
                     "iterations": sum(len(e.iter_end) for e in r.engines)})
    return pd.DataFrame(rows)


def _pct(x: pd.Series, q: float) -> float:
    x = x.dropna()
    return float(np.percentile(x, q)) if len(x) else math.nan


def _summary(sim: ServingSimulation, req: pd.DataFrame, rep: pd.DataFrame, itl_q: list[float],
             ttft_slo_s: float | None, tpot_slo_s: float | None
             ) -> dict[str, float | int | bool | str]:
    t0, t1 = _span(sim, req)
    span = max(t1 - t0, 1e-12)
    fin = req[req["finished"]]
    out: dict[str, float | int | bool | str] = {
        "num_requests": int(len(req)), "finished": int(len(fin)),
        "rejected": int(req["rejected"].sum()),
        "unfinished": int(len(req) - len(fin) - int(req["rejected"].sum())),
        "not_issued": int(sim.not_issued), "duration_s": span,
    }
    for name in ("ttft_s", "tpot_s", "e2e_s", "queue_delay_s"):
        col = fin[name] if name != "ttft_s" else req[name]
        for q in (50, 90, 99):
            out[f"{name[:-2]}_p{q}_s"] = _pct(col, q)
        out[f"{name[:-2]}_mean_s"] = float(col.mean()) if len(col.dropna()) else math.nan
    out.update(interval_keys(sim, out))
    for q, v in zip((50, 90, 99), itl_q, strict=True):
        out[f"itl_p{q}_s"] = v
    out["input_tokens_per_s"] = float(fin["prompt_tokens"].sum()) / span
    out["output_tokens_per_s"] = float(req["generated_tokens"].sum()) / span
    out["requests_per_s"] = len(fin) / span
    ok = req["finished"].copy()
    if ttft_slo_s is not None:
        ok &= req["ttft_s"] <= ttft_slo_s
    if tpot_slo_s is not None:
        ok &= req["tpot_s"].fillna(0.0) <= tpot_slo_s
    out["goodput_share"] = float(ok.mean()) if len(req) else math.nan
    out["goodput_rps"] = float(ok.sum()) / span
    out["ttft_slo_s"] = math.nan if ttft_slo_s is None else ttft_slo_s
    out["tpot_slo_s"] = math.nan if tpot_slo_s is None else tpot_slo_s
    q_tok = sum(e.kv.query_tokens for e in sim.engines)
    h_tok = sum(e.kv.hit_tokens for e in sim.engines)
    out["prefix_hit_rate"] = h_tok / q_tok if q_tok else 0.0
    out["preemptions"] = int(req["preemptions"].sum())
    out["mean_utilization"] = float(rep["utilization"].mean()) if len(rep) else 0.0
    out["num_replicas"] = len(sim.replicas)
    out["overloaded"] = _overloaded(req, int(out["unfinished"]))
    return out


def interval_keys(sim: ServingSimulation, summary: dict[str, float | int | bool | str]) -> dict[str, float]:
    """``ttft_p50_s_p10`` / ``_p90`` and ``tpot_p50_s_p10`` / ``_p90``: the 80% interval of the
    p50 latencies with every iteration time scaled by the first pool's GPU interval
    (``calibration.intervals``; why scaling holds below capacity: ``fleetsim.serving_intervals``).
    TTFT takes the prefill class, TPOT the decode class, each graph or eager as the engine
    profile launches it."""
    from fleetsim.calibration import MeasuredCostModel, get_cost_model
    from fleetsim.calibration.intervals import forward_class, load_table

    plan = sim.plans[0]
    launch = plan.entry.engine.engine_profile.launch
    own = isinstance(get_cost_model(plan.gpu), MeasuredCostModel)
    table = load_table()
    out = {}
    for key, cls in (("ttft_p50_s", forward_class(True, launch.mode == "graphs")),
                     ("tpot_p50_s", forward_class(False, launch.has_graphs))):
        lo, hi = table.log_bounds(plan.gpu.name, cls, own_profile=own)
        v = float(summary[key])
        out[f"{key}_p10"], out[f"{key}_p90"] = v * math.exp(lo), v * math.exp(hi)
    return out


def _overloaded(req: pd.DataFrame, unfinished: int) -> bool:
    """True when requests were left unfinished, or the queueing delay keeps growing: the
    mean delay of the last quarter of arrivals exceeds twice that of the second quarter
    plus one second (a stable queue has no trend)."""
    if unfinished > 0:
        return True
    d = req.sort_values("arrival_s")["queue_delay_s"].to_numpy()
    d = d[np.isfinite(d)]
    if len(d) < 8:
        return False
    k = len(d) // 4
    return bool(d[-k:].mean() > 2.0 * d[k: 2 * k].mean() + 1.0)


def lora_summary(sim: ServingSimulation, req: pd.DataFrame) -> dict[str, float | int]:
    """LoRA figures: adapter hit rate (admissions that found their adapter resident), loads
    and the seconds they stalled iterations, TTFT/TPOT of the most requested 10 % of
    adapters against the rest, and GPU memory per GPU given to adapters against KV
    (``slots``: the reserved slots; ``unified``: the peak blocks adapters held)."""
    from fleetsim.sim.serving.feasibility import lora_slot_bytes
    from fleetsim.workloads.lora import top_share_ids

    caches = [e.lora for e in sim.engines if e.lora is not None]
    hits = sum(c.hits for c in caches)
    misses = sum(c.misses for c in caches)
    out: dict[str, float | int] = {
        "lora_requests": int((req["adapter_id"] >= 0).sum()),
        "lora_adapters_seen": int(req.loc[req["adapter_id"] >= 0, "adapter_id"].nunique()),
        "lora_hit_rate": hits / (hits + misses) if hits + misses else math.nan,
        "lora_loads": sum(c.loads_n for c in caches),
        "lora_load_stall_s": float(sum(c.load_s for c in caches)),
        "lora_evictions": sum(c.evictions for c in caches),
    }
    top = top_share_ids(req["adapter_id"].to_numpy())
    is_top = req["adapter_id"].isin(top) & (req["adapter_id"] >= 0)
    rest = ~is_top & (req["adapter_id"] >= 0)
    for name, mask in (("top10", is_top), ("rest", rest)):
        part = req[mask]
        fin = part[part["finished"]]
        out[f"lora_{name}_requests"] = int(len(part))
        for col in ("ttft", "tpot"):
            src = part if col == "ttft" else fin
            out[f"lora_{name}_{col}_p50_s"] = _pct(src[f"{col}_s"], 50)
            out[f"lora_{name}_{col}_p99_s"] = _pct(src[f"{col}_s"], 99)
    adapter_b = 0.0
    kv_b = 0.0
    for rep in sim.replicas:
        plan = rep.plan
        eng = plan.entry.engine
        bb = plan.kv_bytes_per_token_gpu * eng.block_size
        kv_b += plan.kv_blocks * bb
        if eng.lora is not None and eng.lora.memory == "slots":
            adapter_b += lora_slot_bytes(sim.model, plan.parallel, eng)
        else:
            adapter_b += sum(e.lora.peak_blocks for e in rep.engines if e.lora is not None) * bb
    n = max(1, len(sim.replicas))
    out["lora_adapter_bytes_per_gpu"] = adapter_b / n
    out["kv_bytes_per_gpu"] = kv_b / n
    return out
