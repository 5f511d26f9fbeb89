"""Host-dispatch pipeline: a host issues kernels, one GPU stream runs them in order.

In an eager framework (PyTorch without CUDA graphs or compilation) the host spends
``h_i`` seconds of CPU time to issue kernel ``i`` (Python, dispatcher, autograd, launch);
the kernel can start on the device only once it is issued and the previous kernel has
finished. With the host starting at ``t = 0`` and the device idle:

    issue_i = h_1 + ... + h_i                     (host never waits for the device)
    end_i   = max(issue_i, end_{i-1}) + d_i

Unrolling the max-plus recurrence gives the closed form

    end_n = max_i ( issue_i + d_i + d_{i+1} + ... + d_n ),

the device total when it never starves (``i = 1``) up to the host total plus the last kernel
when the host is the bottleneck. A sequence is summarised by ``Dispatch(host_s, device_s,
end_s)``; concatenation and repetition stay closed-form (``then``/``repeat``), so thousands
of kernels times micro-batches cost O(distinct layers), not O(kernels):

    (A then B).end = max(A.end + B.device, A.host + B.end)
    (A x r).end    = A.end + (r - 1) * max(A.host, A.device)

and a segment begun with the host at ``t_host`` and the device free at ``t_dev`` ends at
``max(t_dev + device_s, t_host + end_s)`` (``Dispatch.finish``). Host-only work (a kernel
with ``d = 0``, e.g. Python hooks) and device-only work (``h = 0``) are allowed. The host
never blocks here: the CUDA launch queue is taken as deep enough (1024 entries) and no
synchronisation happens inside a sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from fleetsim.hardware.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A kernel sequence: host issue time, device busy time and end time (all seconds),
    measured from the host starting to issue it with the device idle."""

    host_s: float = 0.0
    device_s: float = 0.0
    end_s: float = 0.0

    def then(self, other: Dispatch) -> Dispatch:
        """This sequence followed by ``other`` (associative)."""
        return Dispatch(self.host_s + other.host_s, self.device_s + other.device_s,
                        max(self.end_s + other.device_s, self.host_s + other.end_s))

    def repeat(self, times: int) -> Dispatch:
        """``times`` back-to-back copies (``times`` = 0 is the empty sequence)."""
        if times < 0:
            raise ConfigError(f"repeat count {times} < 0")
        if times == 0:
            return Dispatch()
        return Dispatch(self.host_s * times, self.device_s * times,
                        self.end_s + (times - 1) * max(self.host_s, self.device_s))

    def finish(self, host_at_s: float, device_free_s: float) -> float:
        """End time of this sequence issued from ``host_at_s`` onto a device free at
        ``device_free_s``."""
        return max(device_free_s + self.device_s, host_at_s + self.end_s)

    @property
    def host_bound_s(self) -> float:
        """Time the device waits for the host in this sequence (``end - device``)."""
        return self.end_s - self.device_s


def from_kernels(host_s: Sequence[float] | np.ndarray | float, device_s: Sequence[float] | np.ndarray
                 ) -> Dispatch:
    """Summarise kernels issued at ``host_s`` each (a scalar or one per kernel) that run
    ``device_s`` each, in order (the closed form of the module doc, vectorised)."""
    d = np.asarray(device_s, dtype=np.float64).ravel()
    h = np.broadcast_to(np.asarray(host_s, dtype=np.float64), d.shape) if np.ndim(host_s) == 0 \
        else np.asarray(host_s, dtype=np.float64).ravel()
    if h.shape != d.shape:
        raise ConfigError(f"host_s has {h.size} entries but device_s has {d.size}")
    if d.size == 0:
        return Dispatch()
    if (d < 0).any() or (h < 0).any() or not (np.isfinite(d).all() and np.isfinite(h).all()):
        raise ConfigError("host and device times must be finite and >= 0")
    issue = np.cumsum(h)
    suffix = np.cumsum(d[::-1])[::-1]
    return Dispatch(float(issue[-1]), float(suffix[0]), float(np.max(issue + suffix)))


def pipeline_end_s(host_s: Sequence[float] | np.ndarray | float, device_s: Sequence[float] | np.ndarray,
                   repeat: int = 1) -> float:
    """End time of ``repeat`` back-to-back copies of the kernel sequence (see ``from_kernels``)."""
    return from_kernels(host_s, device_s).repeat(repeat).end_s


def chain(parts: Sequence[Dispatch]) -> Dispatch:
    """Concatenation of ``parts`` in order."""
    out = Dispatch()
    for p in parts:
        out = out.then(p)
    return out


__all__ = ["Dispatch", "chain", "from_kernels", "pipeline_end_s"]
