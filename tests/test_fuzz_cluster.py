"""Fuzzed cluster shorthand strings, mappings and YAML files: a one-line FleetsimError or a
cluster whose pools hold a positive, finite number of GPUs."""

from __future__ import annotations

from typing import Any

import yaml
from _fuzz import FUZZ, NUMBERS, VALUES, outcome
from fleetsim.hardware.cluster import load_cluster
from hypothesis import example, given
from hypothesis import strategies as st

KNOWN: dict[str, object] = {}
"""Signature -> failing input of bugs found here (see tests/_fuzz.py)."""

NAMES = ["H100", "H100-SXM", "h200", "A100-80GB", "L4", "DGX-H100", "MI300X", "B200", "GB200", "TPU-v5e", "x", ""]
TERM = st.builds(lambda n, sep, name, extra: f"{n}{sep}{name}{extra}",
                 st.one_of(st.integers(-3, 1 << 20).map(str), st.sampled_from(["", "0", "1.5", "nan", "1e3", "08"])),
                 st.sampled_from(["x", "X", "*", " x ", "", "xx"]), st.sampled_from(NAMES),
                 st.sampled_from(["", "x2", "x0", ":4", " ", "-extra"]))
SHORTHAND = st.one_of(st.lists(TERM, min_size=1, max_size=3).map("+".join),
                      st.text(alphabet="0123456789xX+-*:,. HABDGXL", max_size=16))


def _sane(cl: Any) -> None:
    assert cl.pools
    for p in cl.pools:
        assert isinstance(p.gpus, int) and 0 < p.gpus < 10**9, p


@FUZZ
@given(text=SHORTHAND)
@example(text="0xH100")
@example(text="2x2xH100+1xL4")
@example(text="99999999999999999999xH100")
def test_shorthand(text: str) -> None:
    cl = outcome(lambda: load_cluster(text), KNOWN, text)
    if cl is not None:
        _sane(cl)


POOL_KEYS = ["system", "gpu", "num_nodes", "num_gpus", "gpus_per_node", "bogus"]
POOL = st.dictionaries(st.sampled_from(POOL_KEYS),
                       st.one_of(NUMBERS, st.sampled_from(NAMES), VALUES), max_size=4)
TOP = st.fixed_dictionaries({"pools": st.one_of(st.lists(POOL, max_size=3), VALUES)},
                            optional={"name": VALUES, "scale_out_link": st.one_of(st.sampled_from(["IB-NDR", "x"]), VALUES),
                                      "oversubscription": NUMBERS, "power_budget_w": NUMBERS,
                                      "price_per_hour_usd": NUMBERS, "sources": VALUES})


@FUZZ
@given(data=TOP)
@example(data={"pools": [{"gpu": "H100", "num_gpus": 4}], "oversubscription": float("nan")})
@example(data={"pools": [{"system": "DGX-H100", "num_nodes": 1, "gpus_per_node": 3}]})
def test_mapping(data: dict[str, Any]) -> None:
    cl = outcome(lambda: load_cluster(data), KNOWN, data)
    if cl is not None:
        _sane(cl)


@FUZZ
@given(text=st.one_of(TOP.map(lambda d: yaml.safe_dump(d, allow_unicode=True)), st.text(max_size=60),
                      st.binary(max_size=40)))
@example(text="pools: [{gpu: H100, num_gpus: .nan}]\n")
@example(text="pools: !!python/object:os.system {}\n")
def test_yaml_file(tmp_path_factory: Any, text: str | bytes) -> None:
    path = tmp_path_factory.mktemp("cl") / "cluster.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    cl = outcome(lambda: load_cluster(str(path)), KNOWN, text)
    if cl is not None:
        _sane(cl)
