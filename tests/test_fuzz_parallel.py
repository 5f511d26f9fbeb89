"""Fuzzed training layouts (tp/pp/dp/cp/ep/vpp, batches, options) for ``estimate_train_step``
on small models: a one-line FleetsimError or a step that passes the invariants."""

from __future__ import annotations

from typing import Any

from _fuzz import FUZZ, assert_train_ok, outcome
from hypothesis import example, given
from hypothesis import strategies as st

from fleetsim.training import estimate_train_step

KNOWN: dict[str, object] = {}
"""Signature -> failing input of bugs found here (see tests/_fuzz.py)."""

def mostly(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` seven times in eight, else ``odd``."""
    return st.integers(0, 7).flatmap(lambda i: odd if i == 7 else valid)


DEG = mostly(st.sampled_from([1, 1, 2]), st.integers(-2, 9))
OPTS = st.fixed_dictionaries({"tp": DEG, "pp": DEG, "cp": DEG}, optional={
    "dp": DEG, "ep": DEG, "vpp": DEG, "sequence_parallel": st.booleans(),
    "recompute": st.sampled_from(["none", "selective", "full"]), "zero": st.sampled_from([0, 1, 2, 3]),
    "schedule": st.sampled_from(["1f1b", "gpipe", "interleaved"]), "execution": st.sampled_from(["eager", "graph"]),
    "precision": st.sampled_from(["mixed", "amp"]), "fsdp": st.booleans(),
    "offload_optimizer": st.sampled_from([None, None, "cpu", "nvme"])})


@FUZZ
@given(model=st.sampled_from(["gpt2", "gpt2", "llama-3.2-1b", "qwen1.5-moe-a2.7b"]), gpus=st.sampled_from([1, 2, 4, 8]),
       opts=OPTS, micro=mostly(st.sampled_from([1, 2]), st.sampled_from([0, -1, 3])),
       gb=mostly(st.sampled_from([4, 8, 16]), st.sampled_from([1, 0, -4, 7])),
       seq=mostly(st.sampled_from([128, 256]), st.sampled_from([1000, 1, 0, -1, 10**6])))
@example(model="gpt2", gpus=8, opts={"tp": 2, "pp": 2, "cp": 2, "vpp": 2}, micro=1, gb=8, seq=256)
@example(model="gpt2", gpus=4, opts={"tp": 1, "pp": 4, "cp": 1}, micro=1, gb=1, seq=128)
def test_layouts(model: str, gpus: int, opts: dict[str, Any], micro: int, gb: int, seq: int) -> None:
    est = outcome(lambda: estimate_train_step(model, f"{gpus}xH100", None, micro, gb, seq, record_timeline=False,
                                              **opts), KNOWN, (model, gpus, opts, micro, gb, seq))
    if est is not None:
        assert_train_ok(est)
