"""Name resolution, suggestions, user files and registration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fleetsim.hardware import catalog
from fleetsim.hardware.errors import FleetsimError, SpecError
from fleetsim.hardware.specs import GPUSpec
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.fixture(autouse=True)
def _fresh_catalog() -> Iterator[None]:
    catalog.clear_cache()
    yield
    catalog.clear_cache()


@pytest.mark.parametrize(("alias", "name"), [
    ("H100", "H100-SXM"), ("h100", "H100-SXM"), ("  H100-SXM5-80GB ", "H100-SXM"),
    ("NVIDIA H100 80GB HBM3", "H100-SXM"), ("A100-80GB", "A100-SXM-80GB"), ("A100", "A100-SXM-80GB"),
    ("a100-40gb", "A100-SXM-40GB"), ("H200", "H200-SXM"), ("mi300x", "MI300X"), ("910B", "Ascend-910B"),
    ("v5e", "TPU-v5e"), ("V100", "V100-SXM2-32GB"),
])
def test_gpu_aliases(alias: str, name: str) -> None:
    assert catalog.get_gpu(alias).name == name


def test_other_kinds_resolve_aliases() -> None:
    assert catalog.get_link("ndr").name == "InfiniBand-NDR"
    assert catalog.get_link("PCIe5").name == "PCIe5-x16"
    assert catalog.get_system("dgx h100").name == "DGX-H100"
    assert catalog.get_system("NVL72").name == "GB200-NVL72"
    assert catalog.get_memory_tier("hbm3e").name == "HBM3e"


def test_unknown_names_raise_with_suggestions() -> None:
    with pytest.raises(SpecError, match=r"unknown gpu 'H10O'.*did you mean.*'H100'"):
        catalog.get_gpu("H10O")
    with pytest.raises(SpecError, match=r"unknown link 'NVLink44'.*NVLink4"):
        catalog.get_link("NVLink44")
    with pytest.raises(SpecError, match=r"unknown system 'DGX-H1OO'.*DGX-H100"):
        catalog.get_system("DGX-H1OO")
    with pytest.raises(SpecError, match="unknown memory tier 'zzz'"):
        catalog.get_memory_tier("zzz")
    with pytest.raises(SpecError, match="must be a string"):
        catalog.get_gpu(None)  # type: ignore[arg-type]
    assert issubclass(SpecError, FleetsimError)


def test_find_part_searches_every_kind() -> None:
    assert catalog.find_part("H100")[0] == "gpu"
    assert catalog.find_part("DGX-B200")[0] == "system"
    assert catalog.find_part("HDR")[0] == "link"
    assert catalog.find_part("NVMe5")[0] == "memory"
    with pytest.raises(SpecError, match="unknown part"):
        catalog.find_part("Voodoo5")


def _custom_gpu(**over: object) -> GPUSpec:
    base = catalog.get_gpu("L4").model_dump()
    base.update({"name": "MyNPU", "aliases": ("mynpu-1",), "sources": {}})
    base.update(over)
    return GPUSpec.model_validate(base)


def test_register_user_gpu_gets_a_generated_default_node() -> None:
    catalog.register(_custom_gpu())
    assert catalog.get_gpu("MYNPU-1").name == "MyNPU"
    node = catalog.default_system_for("mynpu")
    assert (node.gpu, node.gpus_per_node, node.scale_up_link) == ("MyNPU", 8, "PCIe4-x16")
    catalog.register(_custom_gpu(name="MyTPU", aliases=(), device_type="tpu"))
    assert catalog.default_system_for("MyTPU").gpus_per_node == 4
    catalog.clear_cache()
    with pytest.raises(SpecError):
        catalog.get_gpu("MyNPU")


def test_register_rejects_taken_alias_and_missing_link() -> None:
    with pytest.raises(SpecError, match="'H100' of 'Dup' is already used by 'H100-SXM'"):
        catalog.register(_custom_gpu(name="Dup", aliases=("H100",)))
    with pytest.raises(SpecError, match="unknown link 'WarpLink'"):
        catalog.register(_custom_gpu(name="NoLink", aliases=(), scale_up_link="WarpLink"))


def test_load_gpu_file_round_trips_a_catalog_file(tmp_path: Path) -> None:
    src = catalog.source_file("gpu", "H100")
    assert src is not None and src.name == "H100-SXM.yaml"
    copy = tmp_path / "h100.yaml"
    copy.write_text(src.read_text())
    assert catalog.load_gpu_file(copy) == catalog.get_gpu("H100")
    for kind, loader in [("link", catalog.load_link_file), ("system", catalog.load_system_file),
                         ("memory", catalog.load_memory_tier_file)]:
        part = {"link": "NDR", "system": "DGX-H100", "memory": "HBM3"}[kind]
        path = catalog.source_file(kind, part)
        assert path is not None
        assert loader(path).name == path.stem


def test_names_with_plus_or_padding_are_rejected() -> None:
    with pytest.raises(ValueError, match="name must be non-empty"):
        _custom_gpu(name="A+B")
    with pytest.raises(ValueError, match="alias must be non-empty"):
        _custom_gpu(aliases=(" padded",))


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=30))
def test_any_lookup_is_a_part_or_a_spec_error(name: str) -> None:
    for get in (catalog.get_gpu, catalog.get_link, catalog.get_system, catalog.get_memory_tier):
        try:
            spec = get(name)
        except SpecError as exc:
            assert "\n" not in str(exc)
        else:
            assert name.strip().lower() in {k.lower() for k in (spec.name, *spec.aliases)}


def test_register_identical_is_noop_and_replace_is_explicit() -> None:
    h100 = catalog.get_gpu("H100")
    catalog.register(h100)
    faster = h100.model_copy(update={"memory_bw_bps": 3.9e12})
    with pytest.raises(SpecError, match="'H100-SXM' is already defined differently"):
        catalog.register(faster)
    catalog.register(faster, replace=True)
    assert catalog.get_gpu("h100").memory_bw_bps == 3.9e12
    catalog.clear_cache()
    assert catalog.get_gpu("h100").memory_bw_bps == 3.35e12


def test_load_part_file_tells_kinds_apart(tmp_path: Path) -> None:
    for kind, name in [("gpu", "L4"), ("link", "NDR"), ("system", "DGX-H100"), ("memory", "HBM3")]:
        src = catalog.source_file(kind, name)
        assert src is not None
        assert catalog.load_part_file(src) == catalog.find_part(name)[1]
    odd = tmp_path / "odd.yaml"
    odd.write_text("name: thing\ncolour: blue\n")
    with pytest.raises(SpecError, match="cannot tell what part this is"):
        catalog.load_part_file(odd)
