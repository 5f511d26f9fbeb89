"""Pipeline schedules as explicit per-stage op orders.

Each physical stage ``s`` of ``p`` runs a list of ``Action(kind, micro_batch, chunk)``:
``F`` (forward) or ``B`` (backward, including recomputation) of model chunk ``chunk``
(``0..v-1`` local index; global chunk ``g = chunk * p + s``) for one micro-batch. The
simulator executes the list in order, waiting for the activation of ``g - 1`` before ``F``
and for the gradient of ``g + 1`` before ``B``; bubbles emerge from those waits.

* GPipe (Huang et al. 2019): all forwards, then all backwards. Bubble ``(p-1)/m``.
* 1F1B (PipeDream-Flush, Narayanan et al. 2021): ``p - s - 1`` warm-up forwards, then
  alternate one forward and one backward, then drain. Same bubble, at most ``p - s``
  micro-batches in flight.
* Interleaved 1F1B (Narayanan et al. 2021 sec. 2.2.2, Megatron-LM's
  ``forward_backward_pipelining_with_interleaving``): ``v`` chunks per stage, micro-batches
  in groups of ``p``; warm-up ``2(p - s - 1) + (v - 1) p`` chunk-forwards. Bubble
  ``(p-1)/(v m)``.
"""

from __future__ import annotations

from typing import NamedTuple

from fleetsim.hardware.errors import ConfigError


class Action(NamedTuple):
    kind: str  # "F" or "B"
    micro_batch: int
    chunk: int  # local chunk index 0..v-1


def gpipe(p: int, m: int, stage: int) -> list[Action]:
    return [Action("F", i, 0) for i in range(m)] + [Action("B", i, 0) for i in range(m)]


def one_f_one_b(p: int, m: int, stage: int) -> list[Action]:
    warm = min(p - stage - 1, m)
    order = [Action("F", i, 0) for i in range(warm)]
    f = warm
    for bi in range(m):
        if f < m:
            order.append(Action("F", f, 0))
            f += 1
        order.append(Action("B", bi, 0))
    return order


def interleaved(p: int, m: int, stage: int, v: int) -> list[Action]:
    """Megatron's interleaved order: chunk-forward ``k`` is micro-batch
    ``(k // (p v)) p + k % p`` of chunk ``(k // p) % v``; backwards visit chunks in reverse."""
    if m % p:
        raise ConfigError(f"interleaved schedule needs micro-batches ({m}) divisible by pp={p}")
    total = m * v

    def fwd(k: int) -> Action:
        return Action("F", (k // (p * v)) * p + k % p, (k // p) % v)

    def bwd(k: int) -> Action:
        return Action("B", (k // (p * v)) * p + k % p, v - 1 - (k // p) % v)

    warm = min((p - stage - 1) * 2 + (v - 1) * p, total)
    order = [fwd(k) for k in range(warm)]
    f = warm
    for bk in range(total):
        if f < total:
            order.append(fwd(f))
            f += 1
        order.append(bwd(bk))
    return order


def stage_orders(schedule: str, p: int, m: int, v: int = 1) -> list[list[Action]]:
    """Op order of every stage for ``m`` micro-batches."""
    if schedule == "gpipe":
        return [gpipe(p, m, s) for s in range(p)]
    if schedule == "1f1b":
        return [one_f_one_b(p, m, s) for s in range(p)]
    if schedule == "interleaved":
        return [interleaved(p, m, s, v) for s in range(p)]
    raise ConfigError(f"unknown pipeline schedule {schedule!r} (known: gpipe, 1f1b, interleaved)")


def max_in_flight(order: list[Action]) -> int:
    """Most chunk-activations held at once: forwards done minus backwards done, maximised."""
    held = peak = 0
    for a in order:
        held += 1 if a.kind == "F" else -1
        peak = max(peak, held)
    return peak
