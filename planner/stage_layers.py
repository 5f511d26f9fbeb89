"""Layers per pipeline stage across GPU types: an integer program.

Stage ``s`` runs on a GPU type whose per-layer time (forward + backward of one micro-batch)
is ``t_s`` and whose memory allows at most ``cap_s`` layers; it also carries fixed work
``c_s`` (the embedding on the first stage, the LM head on the last). Choose integer layers
``x_s >= 1`` summing to ``L`` that minimise the slowest stage ``T``::

    min T   s.t.  c_s + t_s x_s <= T  (stage_time_s{s}),  sum_s x_s = L  (all_layers),
                  1 <= x_s <= cap_s  (bounds)

In 1F1B's steady state every stage runs once per micro-batch, so the slowest stage sets the
rate: slower GPUs get fewer layers. Solved with CBC through PuLP; the status is checked
before any value is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulp

from .solver import Model, solve


@dataclass(frozen=True)
class StageAssignment:
    layers: tuple[int, ...]
    max_stage_s: float


def assign_layers(layer_s: list[float], cap: list[int], num_layers: int,
                  fixed_s: list[float] | None = None) -> StageAssignment | None:
    """The layer split minimising the slowest stage, or None when no split fits
    (``sum(cap) < num_layers`` or fewer layers than stages)."""
    p = len(layer_s)
    fixed = fixed_s or [0.0] * p
    if len(cap) != p or len(fixed) != p:
        raise ValueError("layer_s, cap and fixed_s need one entry per stage")
    if num_layers < p or sum(min(c, num_layers) for c in cap) < num_layers or min(cap) < 1:
        return None
    m = Model("stage_layers")
    x = [m.var(f"layers_{s}", low=1, high=min(cap[s], num_layers), integer=True) for s in range(p)]
    t = m.var("max_stage_s", low=0)
    m.minimize(t)
    for s in range(p):
        m.constrain("stage_time", f"stage_time_s{s}", fixed[s] + layer_s[s] * x[s] <= t)
    m.constrain("all_layers", "all_layers", pulp.lpSum(x) == num_layers, relaxable=False)
    res = solve(m)
    if res.status != "optimal":
        return None
    layers = tuple(int(round(res.values[f"layers_{s}"])) for s in range(p))
    return StageAssignment(layers, max(fixed[s] + layer_s[s] * layers[s] for s in range(p)))


def brute_force(layer_s: list[float], cap: list[int], num_layers: int,
                fixed_s: list[float] | None = None) -> float | None:
    """The same optimum by enumerating every split (small instances; the tests' oracle)."""
    p = len(layer_s)
    fixed = fixed_s or [0.0] * p
    best: float | None = None

    def rec(s: int, left: int, worst: float) -> None:
        nonlocal best
        if s == p - 1:
            if 1 <= left <= cap[s]:
                w = max(worst, fixed[s] + layer_s[s] * left)
                best = w if best is None else min(best, w)
            return
        for k in range(1, min(cap[s], left - (p - s - 1)) + 1):
            rec(s + 1, left - k, max(worst, fixed[s] + layer_s[s] * k))

    rec(0, num_layers, 0.0)
    return best
