"""``Workload``: an arrival process plus prompt/output length distributions (+ sessions).

``Workload.generate(seed, num_requests=None, duration_s=None) -> RequestStream`` is the
one way request streams are made. The seed is split into independent child streams
for arrivals, prompt lengths, output lengths and sessions (``SeedSequence.spawn``), so
changing the arrival rate leaves the sampled lengths untouched: two configurations
compared at the same seed see the same requests (common random numbers), and the same
seed always gives a bit-identical stream.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.arrivals import (
    Arrivals,
    ClosedLoopClients,
    ConstantArrivals,
    GammaArrivals,
    PoissonArrivals,
    TraceArrivals,
    tile_trace,
)
from fleetsim.workloads.lengths import LengthDist, TraceLength, min_tokens
from fleetsim.workloads.lora import AdapterPopulation, with_adapters
from fleetsim.workloads.requests import COLUMNS, RequestStream
from fleetsim.workloads.sessions import SYSTEM_PREFIX_ID, MultiTurnSessions, expand_sessions
from fleetsim.workloads.tracefile import COLUMN_ALIASES, load_trace_cached
from pydantic import BaseModel, ConfigDict, model_validator

SeedLike = int | np.random.Generator | np.random.SeedSequence


def child_rngs(seed: SeedLike, n: int) -> list[np.random.Generator]:
    """``n`` independent generators derived from one seed (or generator)."""
    if isinstance(seed, np.random.Generator):
        return list(seed.spawn(n))
    if isinstance(seed, np.random.SeedSequence):
        return [np.random.default_rng(s) for s in seed.spawn(n)]
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int or a numpy Generator, got {seed!r}")
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(n)]


class Workload(BaseModel):
    """A serving workload: how requests arrive and how long their prompts and answers are."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = "custom"
    description: str = ""
    arrivals: Arrivals
    prompt: LengthDist
    output: LengthDist
    sessions: MultiTurnSessions | None = None
    adapters: AdapterPopulation | None = None
    """LoRA adapters the requests run with (None: the base model, unless a replayed trace
    names adapters and ranks itself)."""

    @model_validator(mode="after")
    def _lengths_at_least_one(self) -> Workload:
        for role in ("prompt", "output"):
            low = min_tokens(getattr(self, role))
            if low is not None and low < 1:
                raise ValueError(f"{role} lengths must be >= 1 token, but this {role} distribution can draw {low}")
        return self

    @property
    def is_closed_loop(self) -> bool:
        """True when requests wait on earlier ones (closed-loop clients or session turns)."""
        return self.arrivals.is_closed_loop or (
            self.sessions is not None and self.sessions.closed_loop
        )

    def mean_rate_rps(self) -> float:
        """Offered request rate: arrival rate (x mean turns per session with sessions)."""
        rate = self.arrivals.mean_rate_rps()
        if self.sessions is not None and not self.arrivals.is_closed_loop:
            rate *= max(self.sessions.turns.mean(), 1.0)
        return rate

    def summary(self) -> dict[str, float | str | None]:
        """Headline numbers for listings: process, rate, CV, mean lengths, sessions."""
        a = self.arrivals
        mean_turns = self.sessions.turns.mean() if self.sessions is not None else None
        return {
            "name": self.name,
            "arrivals": a.kind,
            "rate_rps": a.mean_rate_rps() if not a.is_closed_loop else None,
            "cv": getattr(a, "cv", 1.0 if a.kind == "poisson" else None),
            "clients": getattr(a, "num_clients", None),
            "prompt_mean_tokens": self.prompt.mean(),
            "output_mean_tokens": self.output.mean(),
            "turns_mean": mean_turns,
        }

    def with_rate(self, rate_rps: float) -> Workload:
        """The same workload at another mean arrival rate (sessions: session start rate)."""
        if not (rate_rps > 0 and math.isfinite(rate_rps)):
            raise ConfigError(f"workload {self.name}: rate must be positive, got {rate_rps}")
        a = self.arrivals
        if isinstance(a, PoissonArrivals | GammaArrivals | ConstantArrivals):
            new = a.model_copy(update={"rate_rps": float(rate_rps)})
        elif isinstance(a, TraceArrivals):
            new = a.model_copy(update={"time_scale": a.time_scale * a.mean_rate_rps() / rate_rps})
        else:
            raise ConfigError(
                f"workload {self.name}: a closed-loop workload has no arrival rate to set; "
                "change num_clients or think_time_s"
            )
        return self.model_copy(update={"arrivals": new})

    def generate(
        self,
        seed: SeedLike = 0,
        num_requests: int | None = None,
        duration_s: float | None = None,
    ) -> RequestStream:
        """Draw a request stream: exactly ``num_requests`` and/or those before ``duration_s``.

        Open-loop rows are sorted by ``arrival_s``. Closed-loop rows (``client_id >= 0``)
        carry the zero-latency schedule in ``arrival_s`` and the think time before each
        request in ``think_s``; see docs/workloads.md for how the simulator issues them.
        """
        if num_requests is None and duration_s is None:
            raise ConfigError(f"workload {self.name}: give num_requests or duration_s")
        if num_requests is not None and (isinstance(num_requests, bool) or num_requests < 0):
            raise ConfigError(f"workload {self.name}: num_requests must be >= 0, got {num_requests}")
        rngs = child_rngs(seed, 4 if self.adapters is None else 5)
        stream = self._generate(rngs[0], rngs[1], rngs[2], rngs[3], num_requests, duration_s)
        if self.adapters is None and not (stream.column("adapter_id") >= 0).any():
            return stream
        return with_adapters(stream, self.adapters, rngs[-1], f"workload {self.name}")

    def _generate(self, r_arr: np.random.Generator, r_in: np.random.Generator, r_out: np.random.Generator,
                  r_sess: np.random.Generator, num_requests: int | None, duration_s: float | None
                  ) -> RequestStream:
        replay = self._replayed_trace()
        if replay is not None:
            return replay_stream(*replay, num_requests, duration_s)
        if self.sessions is not None:
            return self._generate_sessions(r_arr, r_in, r_out, r_sess, num_requests, duration_s)
        if isinstance(self.arrivals, ClosedLoopClients):
            t, client, think = self.arrivals.chains(r_arr, num_requests, duration_s)
        else:
            t = self.arrivals.generate(r_arr, num_requests, duration_s)
            client, think = None, None
        m = len(t)
        return RequestStream(
            arrival_s=t,
            prompt_tokens=self.prompt.sample(r_in, m),
            output_tokens=self.output.sample(r_out, m),
            client_id=client,
            think_s=think,
        )

    def _replayed_trace(self) -> tuple[RequestStream, float] | None:
        """The trace when this workload replays one file whole (arrivals and both lengths
        from the same trace, no sessions): then every column - sessions, prefixes,
        clients - is replayed too, not just arrivals and lengths."""
        a, p, o = self.arrivals, self.prompt, self.output
        if not (
            isinstance(a, TraceArrivals)
            and isinstance(p, TraceLength)
            and isinstance(o, TraceLength)
            and self.sessions is None
        ):
            return None
        if not (Path(a.path).resolve() == Path(p.path).resolve() == Path(o.path).resolve()):
            return None
        prompt_col = COLUMN_ALIASES.get(p.column.lower(), p.column)
        output_col = COLUMN_ALIASES.get(o.column.lower(), o.column)
        if (prompt_col, output_col) != ("prompt_tokens", "output_tokens"):
            return None
        return load_trace_cached(a.path), a.time_scale

    # -- sessions ---------------------------------------------------------------------
    def _session_turns(
        self,
        r_arr: np.random.Generator,
        r_sess: np.random.Generator,
        num_requests: int | None,
        duration_s: float | None,
        scale: float,
    ) -> tuple[np.ndarray, np.ndarray | None, bool]:
        """Turn counts per session, open-loop session start times (or None), and whether
        the time window ran out of session starts (so drawing more cannot help)."""
        s = self.sessions
        assert s is not None
        if isinstance(self.arrivals, ClosedLoopClients):
            if num_requests is not None:
                return s.sessions_for(r_sess, math.ceil(num_requests * scale)), None, False
            assert duration_s is not None
            per_session_s = (max(s.turns.mean(), 1.0) - 1.0) * s.think_time_s
            per_session_s += self.arrivals.think_time_s
            if per_session_s <= 0:
                raise ConfigError(
                    f"workload {self.name}: closed-loop sessions without think time need "
                    "num_requests (their zero-latency schedule puts every request at t=0)"
                )
            clients = self.arrivals.num_clients
            n_sessions = math.ceil(clients * (duration_s / per_session_s + 2) * 1.5 * scale)
            return s.draw_turns(r_sess, n_sessions), None, False
        if num_requests is not None:
            turns = s.sessions_for(r_sess, math.ceil(num_requests * scale))
            starts = self.arrivals.generate(r_arr, num_requests=len(turns), duration_s=duration_s)
            return turns[: len(starts)], starts, len(starts) < len(turns)
        starts = self.arrivals.generate(r_arr, duration_s=duration_s)
        return s.draw_turns(r_sess, len(starts)), starts, True

    def _generate_sessions(
        self,
        r_arr: np.random.Generator,
        r_in: np.random.Generator,
        r_out: np.random.Generator,
        r_sess: np.random.Generator,
        num_requests: int | None,
        duration_s: float | None,
    ) -> RequestStream:
        s = self.sessions
        assert s is not None
        scale = 1.0
        # Sessions cut short by max_context_tokens (or clients that run out of work before
        # duration_s) can leave too few rows; then draw more sessions and try again.
        for _ in range(16):
            turns, starts, exhausted = self._session_turns(
                r_arr, r_sess, num_requests, duration_s, scale
            )
            rows = int(turns.sum())
            cols = expand_sessions(
                s,
                turns,
                self.prompt.sample(r_in, rows),
                self.output.sample(r_out, rows),
                s.draw_think_s(r_sess, rows),
            )
            session = cols["session"]
            if isinstance(self.arrivals, ClosedLoopClients):
                arrival, client, think = self._closed_loop_schedule(r_arr, session, cols)
            else:
                assert starts is not None
                arrival = starts[session] + cols["offset_s"]
                client = session if s.closed_loop else np.full(len(session), -1, dtype=np.int64)
                think = cols["think_s"]
            keep = np.lexsort((cols["turn"], session, arrival))
            if duration_s is not None:
                keep = keep[arrival[keep] < duration_s]
            if num_requests is not None:
                enough = exhausted or len(keep) >= num_requests
                keep = keep[:num_requests]
            elif isinstance(self.arrivals, ClosedLoopClients):
                enough = self._clients_cover(arrival, client, duration_s)
            else:
                enough = True
            if enough:
                break
            scale *= 2.0
        else:
            raise ConfigError(
                f"workload {self.name}: could not draw enough session turns; is "
                "max_context_tokens smaller than a typical first turn?"
            )
        sys_id = SYSTEM_PREFIX_ID if s.system_prompt_tokens > 0 else -1
        return RequestStream(
            arrival_s=arrival[keep],
            prompt_tokens=cols["prompt_tokens"][keep],
            output_tokens=cols["output_tokens"][keep],
            session_id=session[keep],
            prefix_id=session[keep],
            prefix_tokens=cols["prefix_tokens"][keep],
            system_prefix_id=np.full(len(keep), sys_id, dtype=np.int64),
            system_prefix_tokens=cols["system_prefix_tokens"][keep],
            client_id=client[keep],
            think_s=think[keep],
        )

    def _closed_loop_schedule(
        self, r_arr: np.random.Generator, session: np.ndarray, cols: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Zero-latency schedule of sessions run back to back by closed-loop clients.

        Session ``s`` goes to client ``s mod C``; a client starts its next session one
        client think time after its previous session's last answer.
        """
        a = self.arrivals
        assert isinstance(a, ClosedLoopClients)
        c = a.num_clients
        client = session % c
        order = np.argsort(client, kind="stable")  # client-major, sessions then turns in order
        first_turn = cols["turn"] == 0
        think = cols["think_s"].copy()
        think[first_turn] = a.draw_think_s(r_arr, int(first_turn.sum()))
        ordered_client = client[order]
        ordered_think = think[order]
        head = np.ones(len(order), dtype=bool)
        head[1:] = ordered_client[1:] != ordered_client[:-1]
        ordered_think[head] = 0.0
        csum = np.cumsum(ordered_think)
        head_idx = np.flatnonzero(head)
        group_base = np.repeat(csum[head_idx], np.diff(np.append(head_idx, len(order))))
        starts = a.ramp_s * r_arr.random(c) if a.ramp_s > 0 else np.zeros(c)
        arrival = np.empty(len(order))
        arrival[order] = starts[ordered_client] + csum - group_base
        think[order] = ordered_think
        return arrival, client, think

    @staticmethod
    def _clients_cover(arrival: np.ndarray, client: np.ndarray, duration_s: float | None) -> bool:
        """Whether every client's chain reaches past ``duration_s`` (else draw more)."""
        if duration_s is None or len(arrival) == 0:
            return duration_s is None
        last = np.full(int(client.max()) + 1, -np.inf)
        np.maximum.at(last, client, arrival)
        return bool(np.all(last >= duration_s))


def replay_stream(
    trace: RequestStream, time_scale: float, num_requests: int | None, duration_s: float | None
) -> RequestStream:
    """A trace shifted to start at 0, times scaled, repeated end to end as needed.

    Copy ``k`` of the trace is shifted by ``k`` periods (see ``tile_trace``); its request,
    session, prefix and client ids are offset so that copies never share ids (they are
    different users), while the global system-prompt id stays shared.
    """
    n = len(trace)
    arrival = trace.column("arrival_s")
    base = (arrival - arrival[0]) * time_scale if n else arrival
    times = tile_trace(base, num_requests, duration_s, "replay")
    m = len(times)
    idx = np.arange(m) % n
    copy = (np.arange(m) // n).astype(np.int64)
    cols: dict[str, np.ndarray] = {name: trace.column(name)[idx] for name in COLUMNS}
    cols["arrival_s"] = times
    cols["think_s"] = cols["think_s"] * time_scale
    for name in ("session_id", "prefix_id", "client_id"):
        col = trace.column(name)
        span = int(col.max()) + 1 if n else 0
        cols[name] = np.where(cols[name] >= 0, cols[name] + copy * span, -1)
    ids = trace.column("req_id")
    req_id = ids[idx] + copy * (int(ids.max()) + 1 if n else 0)
    return RequestStream.from_columns(cols, req_id=req_id)


__all__ = ["SeedLike", "Workload", "child_rngs", "replay_stream"]
