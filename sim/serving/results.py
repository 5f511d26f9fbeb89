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
from fleetsim.sim.serving.engine import SeqState


@dataclass
class RawTables:
    """Everything ``ServingResult`` is made of."""

    requests: pd.DataFrame
    timeseries: pd.DataFrame
    replicas: pd.DataFrame
    summary: dict[str, float | int | bool | str]
    itl_values: np.ndarray
    itl_weights: np.ndarray
    token_runs: dict[int, list[int]]
    iter_end: dict[int, np.ndarray]
    transfers: pd.DataFrame


def _token_times(seq: SeqState, ends: dict[int, np.ndarray]) -> np.ndarray:
    toks = seq.tokens
    parts = [ends[toks[i]][toks[i + 1]: toks[i + 2] + 1] for i in range(0, len(toks), 3)]
    if not parts:
        return np.zeros(0)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _sorted_pct(x: np.ndarray, q: float) -> float:
    """Percentile of sorted ``x`` with linear interpolation (numpy's default method)."""
    pos = q * (len(x) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(x) - 1)
    return float(x[lo] + (x[hi] - x[lo]) * (pos - lo))


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Quantile ``q`` of ``values`` repeated ``weights`` times (lower interpolation)."""
    mask = weights > 0
    v, w = values[mask], weights[mask]
    if not len(v):
        return math.nan
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cw = np.cumsum(w)
    k = int(np.searchsorted(cw, q * cw[-1], side="left"))
    return float(v[min(k, len(v) - 1)])


def collect(sim: ServingSimulation, ttft_slo_s: float | None, tpot_slo_s: float | None) -> RawTables:
    """Build the result tables of a finished simulation."""
    ends = {e.uid: np.frombuffer(e.iter_end, dtype=float) if len(e.iter_end) else np.zeros(0)
            for e in sim.engines}
    seqs = sim.seqs
    n = len(seqs)
    cols: dict[str, np.ndarray] = {
        "req_id": np.empty(n, np.int64), "arrival_s": np.empty(n), "replica": np.empty(n, np.int64),
        "prefill_replica": np.empty(n, np.int64), "prompt_tokens": np.empty(n, np.int64),
        "output_tokens": np.empty(n, np.int64), "generated_tokens": np.empty(n, np.int64),
        "queue_delay_s": np.empty(n), "ttft_s": np.empty(n), "tpot_s": np.empty(n),
        "e2e_s": np.empty(n), "itl_p50_s": np.empty(n), "itl_p99_s": np.empty(n),
        "itl_max_s": np.empty(n), "preemptions": np.empty(n, np.int64),
        "prefix_hit_tokens": np.empty(n, np.int64), "finished": np.empty(n, bool),
        "rejected": np.empty(n, bool),
    }
    reasons = []
    gaps: list[float] = []
    diff_counts = {uid: np.zeros(len(a) + 1, np.int64) for uid, a in ends.items()}
    for i, s in enumerate(seqs):
        fin = s.status == "finished"
        cols["req_id"][i] = s.req_id
        cols["arrival_s"][i] = s.arrival_s
        cols["replica"][i] = s.replica
        cols["prefill_replica"][i] = s.prefill_replica
        cols["prompt_tokens"][i] = s.prompt
        cols["output_tokens"][i] = s.output
        cols["generated_tokens"][i] = s.generated
        cols["queue_delay_s"][i] = s.admit_s - s.arrival_s
        cols["ttft_s"][i] = s.first_token_s - s.arrival_s
        cols["e2e_s"][i] = s.finish_s - s.arrival_s if fin else math.nan
        last_tok = math.nan
        toks = s.tokens
        p50 = p99 = mx = math.nan
        if len(toks) >= 3:
            times = _token_times(s, ends)
            last_tok = float(times[-1])
            if len(times) > 1:
                itl = np.sort(np.diff(times))
                p50, p99 = _sorted_pct(itl, 0.5), _sorted_pct(itl, 0.99)
                mx = float(itl[-1])
            prev_end = None
            for j in range(0, len(toks), 3):
                uid, a, b = toks[j], toks[j + 1], toks[j + 2]
                if prev_end is not None:
                    gaps.append(float(ends[uid][a]) - prev_end)
                if b > a:
                    dc = diff_counts[uid]
                    dc[a + 1] += 1
                    dc[b + 1] -= 1
                prev_end = float(ends[uid][b])
        cols["itl_p50_s"][i], cols["itl_p99_s"][i], cols["itl_max_s"][i] = p50, p99, mx
        g = s.generated
        cols["tpot_s"][i] = (last_tok - s.first_token_s) / (g - 1) if g > 1 and fin else math.nan
        cols["preemptions"][i] = s.preemptions
        cols["prefix_hit_tokens"][i] = s.hit_tokens
        cols["finished"][i] = fin
        cols["rejected"][i] = s.status == "rejected"
        reasons.append(s.rejected)
    req = pd.DataFrame(cols)
    req["reject_reason"] = reasons
    if n:
        req = req.sort_values("req_id", kind="stable").reset_index(drop=True)
    # pooled ITLs: iteration gaps weighted by the requests spanning them, plus run gaps
    vals, wts = [np.asarray(gaps)], [np.ones(len(gaps))]
    for uid, a in ends.items():
        if len(a) > 1:
            c = np.cumsum(diff_counts[uid])[: len(a)]
            vals.append(np.diff(a))
            wts.append(c[1:].astype(float))
    itl_v = np.concatenate(vals)
    itl_w = np.concatenate(wts)
    ts = _timeseries(sim)
    rep = _replica_table(sim, ts)
    tr = pd.DataFrame(sim.transfers, columns=["req_id", "start_s", "end_s", "bytes"])
    summary = _summary(sim, req, rep, itl_v, itl_w, ttft_slo_s, tpot_slo_s)
    runs = {s.req_id: list(s.tokens) for s in seqs} if n <= 200_000 else {}
    return RawTables(req, ts, rep, summary, itl_v, itl_w, runs, ends, tr)


def _timeseries(sim: ServingSimulation) -> pd.DataFrame:
    frames = []
    for e in sim.engines:
        s = e.seg
        k = len(s["start_s"])
        if not k:
            continue
        frames.append(pd.DataFrame({
            "replica": np.full(k, e.replica, np.int64), "engine": np.full(k, e.uid, np.int64),
            "start_s": np.frombuffer(s["start_s"]), "end_s": np.frombuffer(s["end_s"]),
            "iterations": np.frombuffer(s["iters"]).astype(np.int64),
            "batch_size": np.frombuffer(s["batch"]).astype(np.int64),
            "tokens": np.frombuffer(s["tokens"]).astype(np.int64),
            "kv_used_blocks": np.frombuffer(s["kv_used"]).astype(np.int64),
            "kv_capacity_blocks": np.full(k, e.kv.num_blocks, np.int64),
        }))
    if not frames:
        return pd.DataFrame(columns=["replica", "engine", "start_s", "end_s", "iterations", "batch_size",
                                     "tokens", "kv_used_blocks", "kv_capacity_blocks", "kv_occupancy"])
    ts = pd.concat(frames, ignore_index=True)
    ts["kv_occupancy"] = ts["kv_used_blocks"] / ts["kv_capacity_blocks"]
    return ts.sort_values(["start_s", "engine"], kind="stable").reset_index(drop=True)


def _span(sim: ServingSimulation, req: pd.DataFrame) -> tuple[float, float]:
    t0 = float(req["arrival_s"].min()) if len(req) else 0.0
    return t0, max(sim.end_s, t0)


def _replica_table(sim: ServingSimulation, ts: pd.DataFrame) -> pd.DataFrame:
    t0 = min((s.arrival_s for s in sim.seqs), default=0.0)
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


def _summary(sim: ServingSimulation, req: pd.DataFrame, rep: pd.DataFrame, itl_v: np.ndarray,
             itl_w: np.ndarray, ttft_slo_s: float | None, tpot_slo_s: float | None
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
    for q in (50, 90, 99):
        out[f"itl_p{q}_s"] = weighted_quantile(itl_v, itl_w, q / 100)
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
