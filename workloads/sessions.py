"""Multi-turn chat sessions: requests whose prompts carry the conversation so far.

In a chat session turn ``k`` sends the whole conversation back to the server: the
system prompt, every earlier user message and every earlier answer, then the new user
message. So with ``u_j`` user tokens and ``o_j`` output tokens in turn ``j`` and a
system prompt of ``S`` tokens,

    prompt_tokens(k) = S + sum_{j<k} (u_j + o_j) + u_k
    prefix_tokens(k) = S + sum_{j<k} (u_j + o_j)

The system prompt is shared by *all* sessions (one global ``system_prefix_id``); the
rest of the prefix by the turns of one session (``prefix_id`` = session id). Nothing
here assumes a cache hit rate: the simulator's KV cache sees equal block hashes where
content repeats, and whether the blocks are still resident decides the hit rate.

Turns of a session form a closed-loop chain by default: turn ``k+1`` is issued a
think time after turn ``k`` *completes* (``client_id`` = session id, ``think_s`` = the
think time), which is how a person at a chat window behaves.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.lengths import FixedLength, LengthDist
from fleetsim.workloads.tracefile import MAX_TOKENS
from pydantic import BaseModel, ConfigDict, Field, field_validator

SYSTEM_PREFIX_ID = 0
"""The one global system-prompt prefix id shared by every session."""


class MultiTurnSessions(BaseModel):
    """How sessions are shaped; the workload's prompt distribution gives user tokens per turn.

    ``turns``: turns per session (any length distribution, values clipped to >= 1; an int
    means fixed). ``system_prompt_tokens``: shared by all sessions. ``think_time_s`` and
    ``think_cv``: the user's pause between an answer and the next message (mean, CV; CV 0
    fixed, 1 exponential, else Gamma). ``max_context_tokens``: a session ends before the
    turn whose prompt plus output would exceed it (the model's context window).
    ``closed_loop``: turns wait for the previous answer (True) or follow the zero-latency
    schedule open-loop (False).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal["multi_turn"] = "multi_turn"
    turns: LengthDist = Field(default_factory=lambda: FixedLength(tokens=4))
    system_prompt_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)
    think_time_s: float = Field(default=0.0, ge=0)
    think_cv: float = Field(default=0.0, ge=0)
    max_context_tokens: int | None = Field(default=None, gt=0, le=MAX_TOKENS)
    closed_loop: bool = True

    @field_validator("turns", mode="before")
    @classmethod
    def _int_turns(cls, v: object) -> object:
        return FixedLength(tokens=v) if isinstance(v, int) else v

    @field_validator("turns")
    @classmethod
    def _some_turns(cls, v: LengthDist) -> LengthDist:
        if isinstance(v, FixedLength) and v.tokens < 1:
            raise ValueError("a session needs at least 1 turn")
        return v

    def draw_think_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` think times between turns, in seconds."""
        if self.think_time_s == 0 or self.think_cv == 0:
            return np.full(n, float(self.think_time_s))
        shape = 1.0 / self.think_cv**2
        return rng.gamma(shape, self.think_time_s / shape, n)

    def draw_turns(self, rng: np.random.Generator, num_sessions: int) -> np.ndarray:
        return np.maximum(self.turns.sample(rng, num_sessions), 1)

    def sessions_for(self, rng: np.random.Generator, num_requests: int) -> np.ndarray:
        """Turn counts of just enough sessions to hold ``num_requests`` turns."""
        mean = max(float(self.turns.mean()), 1.0)
        chunks: list[np.ndarray] = []
        total = 0
        while total < num_requests:
            need = num_requests - total
            t = self.draw_turns(rng, int(need / mean * 1.1) + 8)
            chunks.append(t)
            total += int(t.sum())
        turns = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        last = int(np.searchsorted(np.cumsum(turns), num_requests)) + 1
        return turns[:last] if num_requests else turns[:0]


def expand_sessions(
    sessions: MultiTurnSessions,
    turns: np.ndarray,
    user_tokens: np.ndarray,
    output_tokens: np.ndarray,
    think_s: np.ndarray,
    first_session_id: int = 0,
) -> dict[str, np.ndarray]:
    """Columns for every turn of sessions with the given turn counts (rows session-major).

    ``user_tokens``, ``output_tokens`` and ``think_s`` have one entry per turn
    (``turns.sum()``); ``think_s`` of each first turn is ignored (set to 0). Returns
    ``session``, ``turn``, ``prompt_tokens``, ``output_tokens``, ``prefix_tokens``,
    ``system_prefix_tokens``, ``think_s`` and ``offset_s`` (zero-latency time since the
    session start), with turns beyond ``max_context_tokens`` removed.
    """
    turns = np.asarray(turns, dtype=np.int64)
    rows = int(turns.sum())
    if len(user_tokens) != rows or len(output_tokens) != rows or len(think_s) != rows:
        raise ConfigError("expand_sessions: per-turn arrays must have turns.sum() entries")
    session = np.repeat(np.arange(len(turns), dtype=np.int64), turns)
    starts = np.cumsum(turns) - turns  # row index of each session's first turn
    turn = np.arange(rows, dtype=np.int64) - np.repeat(starts, turns)
    sys_tokens = sessions.system_prompt_tokens
    grown = user_tokens + output_tokens
    csum = np.cumsum(grown)
    before = csum - grown  # exclusive cumsum over all rows
    session_base = np.repeat(before[starts] if rows else before[:0], turns)
    prefix = sys_tokens + (before - session_base)
    prompt = prefix + user_tokens
    think = np.where(turn == 0, 0.0, think_s)
    tcs = np.cumsum(think)
    offset = tcs - np.repeat(tcs[starts] if rows else tcs[:0], turns)
    keep = np.ones(rows, dtype=bool)
    if sessions.max_context_tokens is not None:
        over = (prompt + output_tokens) > sessions.max_context_tokens
        # A session ends at its first over-long turn: drop it and every later turn.
        over_cum = np.cumsum(over)
        over_before_session = np.repeat(over_cum[starts] - over[starts] if rows else over_cum[:0], turns)
        keep = (over_cum - over_before_session) == 0
    return {
        "session": session[keep] + first_session_id,
        "turn": turn[keep],
        "prompt_tokens": prompt[keep],
        "output_tokens": np.asarray(output_tokens)[keep],
        "prefix_tokens": prefix[keep],
        "system_prefix_tokens": np.full(int(keep.sum()), sys_tokens, dtype=np.int64),
        "think_s": think[keep],
        "offset_s": offset[keep],
    }
