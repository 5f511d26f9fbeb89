"""Cluster shorthand, cluster files and the helpers simulators use, against hand counts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from fleetsim.hardware import catalog
from fleetsim.hardware.cluster import (
    gpu_power_w,
    link_between,
    link_for_ranks,
    load_cluster,
    locate,
    price_per_hour,
    scale_out_bw_per_gpu_bps,
)
from fleetsim.hardware.errors import FleetsimError, SpecError
from fleetsim.hardware.specs import ClusterSpec
from hypothesis import given, settings
from hypothesis import strategies as st


def _shape(c: ClusterSpec) -> list[tuple[str, int, int]]:
    """(system, nodes, GPUs used per node) per pool."""
    return [(p.node.name, p.num_nodes, p.gpus_used_per_node) for p in c.pools]


@pytest.mark.parametrize(("text", "gpus", "shape"), [
    ("8xH100", 8, [("DGX-H100", 1, 8)]),
    ("64xH100", 64, [("DGX-H100", 8, 8)]),
    ("4xH100", 4, [("DGX-H100", 1, 4)]),
    ("12xH100", 12, [("DGX-H100", 1, 8), ("DGX-H100", 1, 4)]),
    ("2x8xA100-80GB", 16, [("DGX-A100", 2, 8)]),
    ("2 x 4 x A100-80GB", 8, [("DGX-A100", 2, 4)]),
    ("16xH100+32xL4", 48, [("DGX-H100", 2, 8), ("AWS-g6.48xlarge", 4, 8)]),
    ("H100", 1, [("DGX-H100", 1, 1)]),
    ("DGX-H100", 8, [("DGX-H100", 1, 8)]),
    ("2xDGX-H100", 16, [("DGX-H100", 2, 8)]),
    ("3x4xDGX-H100", 12, [("DGX-H100", 3, 4)]),
    ("8XMI300X", 8, [("MI300X-Platform", 1, 8)]),
    ("8*h200", 8, [("HGX-H200", 1, 8)]),
    ("144xGB200", 144, [("GB200-NVL72", 2, 72)]),
    ("8xTPU-v5p", 8, [("TPU-v5p-host", 2, 4)]),
    ("10xMI250X", 10, [("MI250X-Node", 2, 4), ("MI250X-Node", 1, 2)]),
])
def test_shorthand_hand_counts(text: str, gpus: int, shape: list[tuple[str, int, int]]) -> None:
    c = load_cluster(text)
    assert c.num_gpus == gpus
    assert _shape(c) == shape


def test_mixed_pools_and_gpu_types() -> None:
    c = load_cluster("16xH100+32xL4")
    assert c.gpu_types == ("H100-SXM", "L4")
    assert c.gpus_of("H100-SXM") == 16 and c.gpus_of("L4") == 32
    assert c.gpus_of("h100") == 16 and c.gpus_of("A100") == 0
    assert c.hourly_price_usd() == pytest.approx(16 * 2.99 + 32 * 0.8048)
    assert c.num_nodes == 6
    # the fabric between pools is the slower NIC: the L4 nodes' 100 GbE
    assert c.scale_out_link == "Ethernet-100G"
    assert load_cluster("8xH100").scale_out_link == "InfiniBand-NDR"


@pytest.mark.parametrize(("text", "match"), [
    ("0xH100", "counts must be positive"),
    ("2x16xH100", "a DGX-H100 node holds 8 accelerators, not 16"),
    ("8xH10O", r"unknown part 'H10O'.*H100"),
    ("8xNVLink4", "is a link or memory tier"),
    ("", "empty term"),
    ("8xH100+", "empty term"),
    ("+", "empty term"),
    ("-1xH100", "positive whole number"),
    ("99999999999xH100", "exceeds"),
])
def test_bad_shorthand(text: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        load_cluster(text)


def test_cluster_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: lab\n"
        "pools:\n"
        "  - system: DGX-H100\n"
        "    num_nodes: 2\n"
        "  - gpu: L4\n"
        "    num_gpus: 12\n"
        "  - system: dgx-a100\n"
        "    num_nodes: 1\n"
        "    gpus_per_node: 4\n"
        "scale_out_link: RoCE-400G\n"
        "oversubscription: 2\n"
        "power_budget_w: 50000\n"
    )
    c = load_cluster(path)
    assert c.name == "lab"
    assert _shape(c) == [("DGX-H100", 2, 8), ("AWS-g6.48xlarge", 1, 8), ("AWS-g6.48xlarge", 1, 4),
                         ("DGX-A100", 1, 4)]
    assert c.num_gpus == 16 + 12 + 4
    assert c.scale_out_link == "Ethernet-400G"
    assert c.oversubscription == 2.0 and c.power_budget_w == 50000.0
    assert load_cluster(str(path)) == c


@pytest.mark.parametrize(("body", "match"), [
    ("pools:\n  - system: DGX-H100\n    num_nodes: 1\n    colour: red\n", r":4: unknown key 'pools.0.colour'"),
    ("pools:\n  - system: DGX-H100\n    gpu: H100\n    num_nodes: 1\n", "exactly one of 'system' or 'gpu'"),
    ("pools:\n  - system: DGX-H100\n    num_nodes: -2\n", r":3: field 'pools.0.num_nodes'"),
    ("pools:\n  - system: DGX-H100\n    num_nodes: 1\n    gpus_per_node: 9\n", "holds 8 accelerators, not 9"),
    ("pools:\n  - system: DGX-H1O0\n    num_nodes: 1\n", r"pools\[0\]: unknown system 'DGX-H1O0'"),
    ("pools: []\n", "pools"),
    ("name: x\n", "missing required key 'pools'"),
    ("pools:\n  - gpu: H100\n    num_gpus: 8\nscale_out_link: warp\n", "scale_out_link: unknown link 'warp'"),
    ("pools: [\n", "malformed YAML"),
])
def test_bad_cluster_files(tmp_path: Path, body: str, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(SpecError, match=match) as exc:
        load_cluster(path)
    assert str(path) in str(exc.value)


def test_mapping_and_passthrough() -> None:
    c = load_cluster({"pools": [{"gpu": "H200", "num_gpus": 16}], "price_per_hour_usd": 40.0})
    assert c.num_gpus == 16 and price_per_hour(c) == 40.0
    assert load_cluster(c) is c
    with pytest.raises(SpecError, match="must be shorthand text"):
        load_cluster(8)  # type: ignore[arg-type]


def test_price_per_hour_hand_sums() -> None:
    assert price_per_hour(load_cluster("8xH100")) == pytest.approx(8 * 2.99)
    assert price_per_hour(load_cluster("16xH100+32xL4")) == pytest.approx(16 * 2.99 + 32 * 0.8048)
    assert price_per_hour(load_cluster("4xTPU-v5e")) == pytest.approx(4 * 1.20)
    with pytest.raises(SpecError, match="no price for 'MI250X'"):
        price_per_hour(load_cluster("4xMI250X"))


def test_gpu_power() -> None:
    assert gpu_power_w(load_cluster("8xH100")) == 8 * 700.0
    assert gpu_power_w(load_cluster("8xH100+8xL4")) == 8 * 700.0 + 8 * 72.0


def test_links_between_accelerators() -> None:
    c = load_cluster("2xDGX-H100+8xL4")
    assert link_between(c, same_node=True).name == "NVLink4"
    assert link_between(c, same_node=False).name == "InfiniBand-NDR"
    assert link_between(c, same_node=True, pool=1).name == "PCIe4-x16"
    assert link_between(c, same_node=False, pool=None).name == "Ethernet-100G"
    with pytest.raises(SpecError, match="no pool 5"):
        link_between(c, True, pool=5)
    assert link_for_ranks(c, 0, 7).name == "NVLink4"
    assert link_for_ranks(c, 7, 8).name == "InfiniBand-NDR"
    assert link_for_ranks(c, 3, 16).name == "Ethernet-100G"
    assert locate(c, 17) == (1, 0, 1)
    with pytest.raises(SpecError, match="out of range"):
        locate(c, 24)


def test_scale_up_domain_spanning_hosts() -> None:
    # v5e: 8 chips per host, one ICI torus of 256 chips spans 32 hosts.
    c = load_cluster("512xTPU-v5e")
    assert link_for_ranks(c, 0, 255).name == "TPU-ICI-v5e"
    assert link_for_ranks(c, 0, 256).name == "Ethernet-100G"
    assert link_for_ranks(load_cluster("2xNVL72"), 0, 71).name == "NVLink5"
    assert link_for_ranks(load_cluster("2xNVL72"), 0, 72).name == "InfiniBand-NDR"


def test_scale_out_bandwidth_per_gpu() -> None:
    # DGX H100: 8 x 400 Gb/s NICs shared by 8 GPUs -> 50 GB/s each; 4 GPUs in use -> 100 GB/s.
    assert scale_out_bw_per_gpu_bps(load_cluster("16xH100")) == 50e9
    assert scale_out_bw_per_gpu_bps(load_cluster("4xH100")) == 100e9
    # g6.48xlarge: one 100 Gb/s link for 8 L4s, halved by 2:1 oversubscription.
    c = load_cluster({"pools": [{"gpu": "L4", "num_gpus": 16}], "oversubscription": 2})
    assert scale_out_bw_per_gpu_bps(c) == pytest.approx(12.5e9 / 8 / 2)


# ---------------------------------------------------------------- properties

GPU_NAMES = sorted(g.name for g in catalog.list_gpus())


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), gpu=st.sampled_from(GPU_NAMES))
def test_count_shorthand_round_trips(n: int, gpu: str) -> None:
    c = load_cluster(f"{n}x{gpu}")
    per = catalog.default_system_for(gpu).gpus_per_node
    assert c.num_gpus == n
    assert c.num_nodes == math.ceil(n / per)
    assert len(c.pools) <= 2
    assert all(p.gpus_per_node is None for p in c.pools[:-1])
    assert sum(p.gpus for p in c.pools) == n


@settings(max_examples=100, deadline=None)
@given(nodes=st.integers(1, 200), gpu=st.sampled_from(GPU_NAMES), data=st.data())
def test_nodes_by_gpus_round_trips(nodes: int, gpu: str, data: st.DataObject) -> None:
    per = catalog.default_system_for(gpu).gpus_per_node
    m = data.draw(st.integers(1, per))
    c = load_cluster(f"{nodes}x{m}x{gpu}")
    assert (c.num_nodes, c.num_gpus) == (nodes, nodes * m)


@settings(max_examples=60, deadline=None)
@given(terms=st.lists(st.tuples(st.integers(1, 300), st.sampled_from(GPU_NAMES)), min_size=1, max_size=4))
def test_mixed_terms_add_up(terms: list[tuple[int, str]]) -> None:
    c = load_cluster("+".join(f"{n}x{g}" for n, g in terms))
    assert c.num_gpus == sum(n for n, _ in terms)
    for gpu in {g for _, g in terms}:
        assert c.gpus_of(gpu) == sum(n for n, g in terms if g == gpu)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40) | st.from_regex(r"[0-9]{1,4}[xX*][0-9]{0,3}[xX]?[A-Za-z0-9 .+-]{0,12}"))
def test_garbage_is_only_ever_a_spec_error(text: str) -> None:
    try:
        c = load_cluster(text)
    except SpecError as exc:
        assert "\n" not in str(exc)
        assert isinstance(exc, FleetsimError)
    else:
        assert c.num_gpus >= 1


def test_cluster_file_registers_user_parts(tmp_path: Path) -> None:
    catalog.clear_cache()
    try:
        gpu = catalog.get_gpu("L4").model_dump()
        gpu.update(name="MyAccel", aliases=["myaccel-24g"], memory_bw_bps=5e11, price_per_hour_usd=0.5,
                   sources={})
        (tmp_path / "parts").mkdir()
        (tmp_path / "parts" / "myaccel.yaml").write_text(yaml.safe_dump(gpu))
        node = catalog.get_system("AWS-g6.48xlarge").model_dump()
        node.update(name="MyBox", aliases=[], gpu="MyAccel", gpus_per_node=4, scale_up_domain=4, sources={})
        (tmp_path / "parts" / "mybox.yaml").write_text(yaml.safe_dump(node))
        path = tmp_path / "c.yaml"
        path.write_text("parts: [parts/mybox.yaml, parts/myaccel.yaml]\n"
                        "pools:\n  - system: MyBox\n    num_nodes: 3\n  - gpu: myaccel-24g\n    num_gpus: 6\n")
        c = load_cluster(path)
        assert [(p.node.name, p.num_nodes, p.gpus_used_per_node) for p in c.pools] == [
            ("MyBox", 3, 4), ("MyBox", 1, 4), ("MyBox", 1, 2)]
        assert price_per_hour(c) == pytest.approx(18 * 0.5)
        assert load_cluster(path) == c  # loading again registers the same parts: a no-op
    finally:
        catalog.clear_cache()
