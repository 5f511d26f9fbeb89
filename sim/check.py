"""Invariants every simulation result satisfies by construction.

``check_serving_result(result)`` and ``check_train_estimate(est)`` return the violated
invariants, one line each naming the field and the requests or stages involved; an empty
list means the result is consistent. The ``assert_`` variants raise ``InvariantError``.
A violation is a simulator bug, never bad input: these checks assert only what the
bookkeeping guarantees (conservation of requests, causality of times, KV blocks within
capacity, rates equal to totals over the span, memory parts summing to the total), not
modelling expectations (an MFU below some bound, a bubble below one).

Both take results by duck typing: a serving result has ``requests``, ``summary``,
``timeseries`` and ``replicas`` tables; a training estimate is a ``TrainEstimate``
(``.result``) or a ``StepResult``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from fleetsim.hardware.errors import ConfigError, InvariantError

REL_TOL = 1e-9
"""Relative tolerance of equalities and orderings between float quantities."""
ABS_TOL = 1e-9
"""Absolute tolerance (seconds, tokens/s, ...) for sums of many small floats."""
MAX_LISTED = 5
"""Request ids or stages named per violated invariant."""
TOKEN_TIMES_CHECKED = 2000
"""Requests whose per-token times are checked (the first ones by id; the check is O(tokens))."""


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= ABS_TOL + REL_TOL * max(abs(a), abs(b))


def _le(a: Any, b: Any) -> Any:
    """``a <= b`` within tolerance (elementwise for arrays)."""
    return a <= b + ABS_TOL + REL_TOL * np.maximum(np.abs(a), np.abs(b))


def _ids(req: pd.DataFrame, mask: Any) -> str:
    ids = req.loc[np.asarray(mask), "req_id"].tolist()
    more = f" and {len(ids) - MAX_LISTED} more" if len(ids) > MAX_LISTED else ""
    return ", ".join(str(int(i)) for i in ids[:MAX_LISTED]) + more


def _finite_nonneg(name: str, x: float, out: list[str], scale: float = 0.0) -> None:
    """``x`` finite and >= 0, allowing round-off of a difference of quantities of size ``scale``."""
    if not (isinstance(x, (int, float)) and math.isfinite(x) and x >= -REL_TOL * scale):
        out.append(f"{name} = {x!r}, expected a finite number >= 0")


# -- serving ------------------------------------------------------------------------------

def _check_requests(req: pd.DataFrame, out: list[str]) -> None:
    fin = req["finished"].to_numpy(bool)
    rej = req["rejected"].to_numpy(bool)
    if (fin & rej).any():
        out.append(f"requests: finished and rejected at once: req {_ids(req, fin & rej)}")
    if req["req_id"].duplicated().any():
        out.append(f"requests: duplicate req_id {_ids(req, req['req_id'].duplicated())}")
    arr = req["arrival_s"].to_numpy(float)
    bad = ~(np.isfinite(arr) & (arr >= 0))
    if bad.any():
        out.append(f"requests.arrival_s: not finite or < 0 for req {_ids(req, bad)}")
    for col in ("prompt_tokens", "output_tokens", "generated_tokens", "preemptions", "prefix_hit_tokens"):
        neg = req[col].to_numpy() < 0
        if neg.any():
            out.append(f"requests.{col}: < 0 for req {_ids(req, neg)}")
    gen, osl = req["generated_tokens"].to_numpy(), req["output_tokens"].to_numpy()
    over = gen > osl
    if over.any():
        out.append(f"requests: generated_tokens > output_tokens for req {_ids(req, over)}")
    short = fin & (gen != osl)
    if short.any():
        out.append(f"requests: finished with generated_tokens != output_tokens for req {_ids(req, short)}")
    hit = req["prefix_hit_tokens"].to_numpy() > req["prompt_tokens"].to_numpy() + gen
    if hit.any():
        out.append(f"requests: prefix_hit_tokens > prompt + generated tokens for req {_ids(req, hit)}")
    # durations relative to arrival: NaN where the request never got that far, else >= 0
    for col in ("queue_delay_s", "ttft_s", "tpot_s", "e2e_s", "itl_p50_s", "itl_p99_s", "itl_max_s"):
        v = req[col].to_numpy(float)
        bad = np.isinf(v) | (v < 0)
        if bad.any():
            out.append(f"requests.{col}: infinite or < 0 for req {_ids(req, bad)}")
    q, ttft, e2e = (req[c].to_numpy(float) for c in ("queue_delay_s", "ttft_s", "e2e_s"))
    for name, mask in (
        ("finished without e2e_s", fin & np.isnan(e2e)),
        ("finished without ttft_s", fin & np.isnan(ttft)),
        ("e2e_s on a request that did not finish", ~fin & ~np.isnan(e2e)),
        ("first token before admission (ttft_s < queue_delay_s)", ~_le(q, ttft)),
        ("first token after finish (ttft_s > e2e_s)", ~_le(ttft, e2e)),
        ("token without admission (ttft_s set, queue_delay_s NaN)", ~np.isnan(ttft) & np.isnan(q)),
        ("token without first token (generated_tokens > 0, ttft_s NaN)", (gen > 0) & np.isnan(ttft)),
        ("ttft_s without a token (generated_tokens == 0)", (gen == 0) & ~np.isnan(ttft)),
    ):
        if np.any(mask):
            out.append(f"requests: {name} for req {_ids(req, mask)}")
    p50, p99, mx = (req[c].to_numpy(float) for c in ("itl_p50_s", "itl_p99_s", "itl_max_s"))
    has = ~np.isnan(p50) & ~np.isnan(p99) & ~np.isnan(mx)
    disorder = has & (~_le(p50, p99) | ~_le(p99, mx))
    if disorder.any():
        out.append(f"requests: itl_p50_s <= itl_p99_s <= itl_max_s broken for req {_ids(req, disorder)}")
    # an inter-token latency needs two tokens: none for one-token requests, all three for more
    partial = (np.isnan(p50) | np.isnan(p99) | np.isnan(mx)) & ~(np.isnan(p50) & np.isnan(p99) & np.isnan(mx))
    if partial.any():
        out.append(f"requests: ITL percentiles partly missing for req {_ids(req, partial)}")


def _check_token_times(result: Any, req: pd.DataFrame, out: list[str]) -> None:
    """Per-token times: non-decreasing, first = arrival + TTFT, last <= arrival + E2E."""
    token_times = getattr(result, "token_times", None)
    raw = getattr(result, "_raw", None)
    if token_times is None or raw is None or not raw.token_runs:
        return
    bad: dict[str, list[int]] = {}
    for row in req.head(TOKEN_TIMES_CHECKED).itertuples(index=False):
        if row.generated_tokens == 0:
            continue
        t = token_times(row.req_id)
        rid = int(row.req_id)
        if len(t) == 0 or len(t) > row.generated_tokens:
            bad.setdefault("iterations with tokens not in 1..generated_tokens", []).append(rid)
            continue
        if np.any(np.diff(t) < -ABS_TOL):
            bad.setdefault("token times decreasing", []).append(rid)
        first = row.arrival_s + row.ttft_s
        if getattr(row, "prefill_replica", -1) >= 0:
            # disaggregated: computed at prefill, delivered once the KV reached the decode replica
            if not (_le(float(t[0]), first) and (len(t) < 2 or _le(first, float(t[1])))):
                bad.setdefault("first token delivered outside [prefill, second token]", []).append(rid)
        elif not _close(float(t[0]), first):
            bad.setdefault("first token time != arrival_s + ttft_s", []).append(rid)
        if row.finished and not _le(float(t[-1]), row.arrival_s + row.e2e_s):
            bad.setdefault("last token after arrival_s + e2e_s", []).append(rid)
    for what, ids in bad.items():
        more = f" and {len(ids) - MAX_LISTED} more" if len(ids) > MAX_LISTED else ""
        out.append(f"token times: {what} for req {', '.join(map(str, ids[:MAX_LISTED]))}{more}")


def _check_timeseries(ts: pd.DataFrame, out: list[str]) -> None:
    if not len(ts):
        return
    a, b = ts["start_s"].to_numpy(float), ts["end_s"].to_numpy(float)
    rows = np.flatnonzero(~(np.isfinite(a) & np.isfinite(b) & (a >= 0) & _le(a, b)))
    if len(rows):
        out.append(f"timeseries: start_s/end_s not finite, < 0 or reversed at rows {rows[:MAX_LISTED].tolist()}")
    used, cap = ts["kv_used_blocks"].to_numpy(), ts["kv_capacity_blocks"].to_numpy()
    rows = np.flatnonzero((used < 0) | (used > cap))
    if len(rows):
        r = int(rows[0])
        out.append(f"timeseries: kv_used_blocks outside [0, kv_capacity_blocks] at {len(rows)} row(s), first "
                   f"row {r} (replica {int(ts['replica'].iloc[r])}, engine {int(ts['engine'].iloc[r])}, "
                   f"t={float(a[r]):.6g} s: {int(used[r])} > {int(cap[r])})")
    for col, lo in (("iterations", 1), ("batch_size", 0), ("tokens", 0)):
        rows = np.flatnonzero(ts[col].to_numpy() < lo)
        if len(rows):
            out.append(f"timeseries.{col}: < {lo} at rows {rows[:MAX_LISTED].tolist()}")
    if np.any(np.diff(a) < 0):
        out.append("timeseries: rows not in order of start_s")


def _check_replicas(rep: pd.DataFrame, span: float, out: list[str]) -> None:
    for row in rep.itertuples(index=False):
        if not (math.isfinite(row.busy_s) and row.busy_s >= 0 and _le(row.busy_s, span)):
            out.append(f"replicas: replica {row.replica} busy_s = {row.busy_s!r} outside [0, duration_s {span:.6g}]")
        if row.kv_blocks < 0:
            out.append(f"replicas: replica {row.replica} kv_blocks = {row.kv_blocks} < 0")


def _check_summary(s: dict[str, Any], req: pd.DataFrame, out: list[str]) -> float:
    """Counts and rates against the request table; returns the span (s) the rates use."""
    fin = req["finished"].to_numpy(bool)
    n, nf, nr = len(req), int(fin.sum()), int(req["rejected"].sum())
    for key, want in (("num_requests", n), ("finished", nf), ("rejected", nr), ("unfinished", n - nf - nr),
                      ("preemptions", int(req["preemptions"].sum()))):
        if s.get(key) != want:
            out.append(f"summary.{key} = {s.get(key)!r}, but the requests table gives {want}")
    if s.get("finished", 0) + s.get("rejected", 0) + s.get("unfinished", 0) != s.get("num_requests"):
        out.append("summary: finished + rejected + unfinished != num_requests")
    _finite_nonneg("summary.not_issued", s.get("not_issued", math.nan), out)
    span = s.get("duration_s", math.nan)
    if not (isinstance(span, float) and math.isfinite(span) and span > 0):
        out.append(f"summary.duration_s = {span!r}, expected a finite number > 0")
        return math.nan
    if n:
        last = np.nanmax(np.concatenate([req["arrival_s"].to_numpy(float),
                                         (req["arrival_s"] + req["e2e_s"]).to_numpy(float)]))
        first = float(req["arrival_s"].min())
        if not _le(last - first, span):
            out.append(f"summary.duration_s = {span:.6g} shorter than first arrival to last finish {last - first:.6g}")
    rates = (("output_tokens_per_s", float(req["generated_tokens"].sum())),
             ("input_tokens_per_s", float(req.loc[fin, "prompt_tokens"].sum())),
             ("requests_per_s", float(nf)))
    for key, total in rates:
        v = s.get(key, math.nan)
        if not (math.isfinite(v) and _close(v * span, total)):
            out.append(f"summary.{key} = {v!r}, but the requests table gives {total:.10g} / {span:.10g} s "
                       f"= {total / span:.10g}")
    good = s.get("goodput_rps", math.nan)
    if not (math.isfinite(good) and good >= 0 and _le(good, s.get("requests_per_s", math.nan))):
        out.append(f"summary.goodput_rps = {good!r} outside [0, requests_per_s {s.get('requests_per_s')!r}]")
    share = s.get("goodput_share", math.nan)
    if n and not (0 <= share <= 1 and _close(share * n, good * span)):
        out.append(f"summary.goodput_share = {share!r} is not goodput_rps * duration_s / num_requests")
    for key in ("prefix_hit_rate", "mean_utilization"):
        v = s.get(key, math.nan)
        if not (math.isfinite(v) and v >= 0 and _le(v, 1.0)):
            out.append(f"summary.{key} = {v!r} outside [0, 1]")
    for name in ("ttft", "tpot", "e2e", "queue_delay", "itl"):
        qs = [s.get(f"{name}_p{q}_s", math.nan) for q in (50, 90, 99)]
        if any(math.isinf(v) or v < 0 for v in qs):
            out.append(f"summary.{name}_p50/p90/p99_s = {qs} not finite >= 0 (or NaN)")
        elif all(math.isfinite(v) for v in qs) and not (_le(qs[0], qs[1]) and _le(qs[1], qs[2])):
            out.append(f"summary.{name} percentiles not ordered p50 <= p90 <= p99: {qs}")
    return span


def _expect(obj: Any, func: str, kind: str, fields: tuple[str, ...]) -> None:
    """Refuse, in one line, an argument that is not the result type ``func`` checks."""
    if not all(hasattr(obj, f) for f in fields):
        raise ConfigError(f"{func}: expected a {kind}, got {type(obj).__name__}")


def check_serving_result(result: Any) -> list[str]:
    """Violated invariants of a ``ServingResult`` (empty when consistent)."""
    _expect(result, "check_serving_result", "ServingResult", ("requests", "summary", "timeseries", "replicas"))
    out: list[str] = []
    req = result.requests
    _check_requests(req, out)
    span = _check_summary(result.summary, req, out)
    _check_timeseries(result.timeseries, out)
    if math.isfinite(span):
        _check_replicas(result.replicas, span, out)
    _check_token_times(result, req, out)
    return out


# -- training -----------------------------------------------------------------------------

def check_train_estimate(est: Any) -> list[str]:
    """Violated invariants of a ``TrainEstimate`` or ``StepResult`` (empty when consistent)."""
    r = getattr(est, "result", est)
    _expect(r, "check_train_estimate", "TrainEstimate or StepResult", ("step_s", "mfu", "memory"))
    out: list[str] = []
    step = r.step_s
    if not (math.isfinite(step) and step > 0):
        out.append(f"step_s = {step!r}, expected a finite number > 0")
        return out
    for name in ("bubble_fraction", "exposed_comm_s", "tp_comm_s", "optimizer_s", "model_flops", "hardware_flops"):
        _finite_nonneg(name, getattr(r, name), out)
    if not (math.isfinite(r.mfu) and r.mfu > 0):
        out.append(f"mfu = {r.mfu!r}, expected a finite number > 0")
    if not _le(r.model_flops, r.hardware_flops):
        out.append(f"model_flops {r.model_flops:.6g} > hardware_flops {r.hardware_flops:.6g}")
    if not _le(r.mfu, r.hfu):
        out.append(f"mfu {r.mfu!r} > hfu {r.hfu!r}")
    if not _le(r.optimizer_s, step):
        out.append(f"optimizer_s {r.optimizer_s:.6g} > step_s {step:.6g}")
    stages = r.engine.stages
    if len(stages) != r.job.parallel.pp or len(r.stage_compute_s) != len(stages) or len(r.memory) != len(stages):
        out.append(f"{len(stages)} engine stages, {len(r.stage_compute_s)} stage_compute_s, {len(r.memory)} "
                   f"memory rows for pp = {r.job.parallel.pp}")
    if not _close(step, max(st.end_s for st in stages)):
        out.append(f"step_s {step:.6g} != the last stage end {max(st.end_s for st in stages):.6g}")
    for i, st in enumerate(stages):
        for f in ("busy_s", "pipeline_wait_s", "comm_wait_s", "contention_s", "host_bound_s", "comm_busy_s",
                  "pipeline_end_s", "end_s"):
            _finite_nonneg(f"stage {i} {f}", getattr(st, f), out, step)
        # the compute stream is serial: its busy time and its waits are disjoint intervals
        serial = st.busy_s + st.pipeline_wait_s + st.comm_wait_s
        if not (_le(serial, st.end_s) and _le(st.pipeline_end_s, st.end_s) and _le(st.end_s, step)):
            out.append(f"stage {i}: busy + waits {serial:.6g} s, pipeline end {st.pipeline_end_s:.6g} s, "
                       f"end {st.end_s:.6g} s, step {step:.6g} s are not ordered")
        if i < len(r.stage_compute_s) and not _close(r.stage_compute_s[i], st.busy_s):
            out.append(f"stage {i}: stage_compute_s {r.stage_compute_s[i]:.6g} != busy_s {st.busy_s:.6g}")
    for m in r.memory:
        d = m.as_dict()
        parts = {k: v for k, v in d.items() if k.endswith("_bytes")}
        neg = [k for k, v in parts.items() if not (math.isfinite(v) and v >= 0)]
        if neg:
            out.append(f"memory stage {m.stage}: {', '.join(f'{k} = {parts[k]!r}' for k in neg)} not finite >= 0")
        total = sum(v for k, v in parts.items() if k not in (
            "params_and_optimizer_bytes", "allocated_bytes", "reserved_bytes", "total_bytes", "host_bytes",
            "nvme_bytes"))
        if not _close(total, d["total_bytes"]):
            out.append(f"memory stage {m.stage}: components sum to {total:.10g} B, total_bytes {d['total_bytes']:.10g}")
    events = getattr(r.engine, "events", [])
    bad = [e for e in events if not (0 <= e[3] and _le(e[3], e[4]) and _le(e[4], step))]
    if bad:
        e = bad[0]
        out.append(f"timeline: {len(bad)} event(s) outside [0, step_s], first stage {e[0]} {e[1]} {e[2]} "
                   f"[{e[3]!r}, {e[4]!r}]")
    return out


def _raise(what: str, violations: list[str]) -> None:
    if violations:
        raise InvariantError(f"{what}: {len(violations)} invariant(s) violated: " + " | ".join(violations))


def assert_serving_result(result: Any) -> None:
    """Raise ``InvariantError`` listing the violated invariants of a serving result."""
    _raise("serving result", check_serving_result(result))


def assert_train_estimate(est: Any) -> None:
    """Raise ``InvariantError`` listing the violated invariants of a training estimate."""
    _raise("training estimate", check_train_estimate(est))


SERVING_INVARIANTS = (
    "requests: req_id unique; finished and rejected disjoint",
    "requests: arrival_s finite >= 0; token counts >= 0; generated <= output, == output when finished",
    "requests: prefix hits <= prompt + generated tokens",
    "requests: queue delay, TTFT, TPOT, E2E, ITLs NaN or finite >= 0",
    "requests: arrival <= admission <= first token <= finish (queue delay <= TTFT <= E2E)",
    "requests: E2E set iff finished; TTFT set iff a token was generated; ITL p50 <= p99 <= max",
    "token times: non-decreasing, first = arrival + TTFT, last <= arrival + E2E",
    "timeseries: 0 <= start <= end, finite, in order of start; 0 <= KV used <= KV capacity",
    "timeseries: iterations >= 1, batch size and tokens >= 0",
    "replicas: 0 <= busy_s <= duration_s; KV blocks >= 0",
    "summary: counts equal the requests table; finished + rejected + unfinished = num_requests",
    "summary: duration_s > 0 covers first arrival to last finish",
    "summary: output/input tokens and requests per second = table totals / duration_s",
    "summary: 0 <= goodput_rps <= requests_per_s; goodput_share = goodput_rps * duration_s / num_requests",
    "summary: prefix hit rate and mean utilization in [0, 1]; percentiles finite >= 0, p50 <= p90 <= p99",
)
"""What ``check_serving_result`` checks, one line per group (docs/checks.md, ``--check``)."""
TRAINING_INVARIANTS = (
    "step_s finite > 0 and equal to the last stage's end",
    "bubble, exposed/TP comm, optimizer time, FLOPs finite >= 0; MFU > 0; model FLOPs <= hardware FLOPs; MFU <= HFU",
    "optimizer_s <= step_s; one engine stage, compute time and memory row per pipeline stage",
    "per stage: times finite >= 0; busy + pipeline wait + comm wait <= end; pipeline end <= end <= step_s",
    "per stage: stage_compute_s = the engine's busy time",
    "memory: every component finite >= 0 and the components sum to total_bytes",
    "timeline: every event within [0, step_s], start <= end",
)
"""What ``check_train_estimate`` checks, one line per group."""
