"""Compact record of requests that left the system (finished or rejected).

A finished request's ``SeqState`` is turned into one row of typed arrays (about 150 bytes
with its token runs) and dropped, so a million-request run keeps only the requests in
flight as Python objects.
"""

from __future__ import annotations

from array import array

from fleetsim.sim.serving.engine import SeqState

STATUS = {"finished": 0, "rejected": 1, "waiting": 2, "running": 3, "prefilled": 4}
STATUS_NAMES = {v: k for k, v in STATUS.items()}


class RequestLog:
    """Column arrays, one entry per recorded request; token runs flattened with offsets."""

    INT_COLS = ("req_id", "replica", "prefill_replica", "prompt", "output", "generated", "preemptions",
                "hit_tokens", "status", "adapter")
    FLOAT_COLS = ("arrival_s", "admit_s", "first_token_s", "finish_s", "energy_j")

    def __init__(self) -> None:
        self.ints = {c: array("q") for c in self.INT_COLS}
        self.floats = {c: array("d") for c in self.FLOAT_COLS}
        self.runs = array("q")
        self.run_off = array("q", [0])
        self.reasons: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.ints["req_id"])

    def add(self, s: SeqState) -> None:
        i = self.ints
        i["req_id"].append(s.req_id)
        i["replica"].append(s.replica)
        i["prefill_replica"].append(s.prefill_replica)
        i["prompt"].append(s.prompt)
        i["output"].append(s.output)
        i["generated"].append(s.generated)
        i["preemptions"].append(s.preemptions)
        i["hit_tokens"].append(s.hit_tokens)
        i["status"].append(STATUS[s.status])
        i["adapter"].append(s.adapter)
        f = self.floats
        f["arrival_s"].append(s.arrival_s)
        f["admit_s"].append(s.admit_s)
        f["first_token_s"].append(s.first_token_s)
        f["finish_s"].append(s.finish_s)
        f["energy_j"].append(s.energy_j)
        self.runs.extend(s.tokens)
        self.run_off.append(len(self.runs))
        if s.rejected:
            self.reasons[len(self) - 1] = s.rejected
