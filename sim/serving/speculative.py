"""Speculative decoding: tokens emitted per verification step.

With ``k`` draft tokens each accepted independently with probability ``a`` until the first
rejection, a step emits the accepted drafts plus one token from the target (the correction,
or the bonus token when all ``k`` are accepted): ``X = min(G, k) + 1`` with ``G`` geometric
on {0, 1, ...} with success probability ``1 - a``. So ``P(X = j) = a^(j-1) (1 - a)`` for
``j <= k`` and ``P(X = k + 1) = a^k``, with mean ``(1 - a^(k+1)) / (1 - a)`` (Leviathan et
al. 2023, eq. 1).
"""

from __future__ import annotations

import numpy as np


def expected_tokens_per_step(k: int, alpha: float) -> float:
    """Mean tokens emitted per sequence per verification step."""
    if alpha == 1.0:
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def draw_accepted(rng: np.random.Generator, k: int, alpha: float) -> int:
    """One draw of the tokens emitted by a verification step (1 .. k + 1)."""
    if alpha <= 0.0:
        return 1
    g = int(rng.geometric(1.0 - alpha)) - 1  # failures before the first rejection
    return min(g, k) + 1
