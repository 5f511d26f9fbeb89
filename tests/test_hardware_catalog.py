"""The shipped catalog: every file loads, references resolve, numbers match hand oracles."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from fleetsim.hardware import catalog
from fleetsim.hardware.errors import SpecError
from fleetsim.hardware.specs import GPUSpec, LinkSpec, MemoryTierSpec, NodeSpec

MiB = 2**20
FOLDERS = {"gpus": GPUSpec, "links": LinkSpec, "memory": MemoryTierSpec, "systems": NodeSpec}
ALL_FILES = sorted(p for folder in FOLDERS for p in (catalog.CATALOG_DIR / folder).glob("*.yaml"))

REQUIRED_GPUS = ["H100-SXM", "H100-PCIe", "H200-SXM", "B200", "GB200", "A100-SXM-40GB", "A100-SXM-80GB",
                 "A100-PCIe-80GB", "L40S", "L4", "A10G", "V100-SXM2-32GB", "MI300X", "MI250X", "Gaudi2",
                 "Gaudi3", "Ascend-910B", "TPU-v5e", "TPU-v5p"]


def test_catalog_has_every_required_part() -> None:
    names = {g.name for g in catalog.list_gpus()}
    assert set(REQUIRED_GPUS) <= names
    links = {lk.name for lk in catalog.list_links()}
    for name in ["NVLink3", "NVLink4", "NVLink5", "PCIe4-x16", "PCIe5-x16", "PCIe6-x16", "InfiniBand-HDR",
                 "InfiniBand-NDR", "InfiniBand-XDR", "Ethernet-100G", "Ethernet-200G", "Ethernet-400G",
                 "Ethernet-800G", "InfinityFabric-MI300X", "InfinityFabric-MI250X", "Gaudi2-RoCE",
                 "Gaudi3-RoCE", "TPU-ICI-v5e", "TPU-ICI-v5p", "HCCS"]:
        assert name in links
    systems = {s.name for s in catalog.list_systems()}
    assert {"DGX-A100", "DGX-H100", "HGX-H200", "DGX-B200", "GB200-NVL72", "MI300X-Platform"} <= systems
    tiers = {m.name for m in catalog.list_memory_tiers()}
    assert {"HBM2e", "HBM3", "HBM3e", "DDR5-host", "CXL-memory", "NVMe-Gen4", "NVMe-Gen5"} <= tiers


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_file_loads_and_is_named_after_its_part(path: Path) -> None:
    model = FOLDERS[path.parent.name]
    spec = model.model_validate(yaml.safe_load(path.read_text()))
    assert spec.name == path.stem


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_number_has_a_source_note(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    sources = data.get("sources", {})
    numeric = {k for k, v in data.items()
               if k != "sources" and (isinstance(v, int | float) and not isinstance(v, bool) or isinstance(v, dict))}
    if data.get("price_source"):
        numeric.discard("price_per_hour_usd")  # the price carries its own provider and date
    missing = numeric - set(sources)
    assert not missing, f"{path.name}: numbers without a source note: {sorted(missing)}"
    unknown = set(sources) - set(data) - {"generated"}
    assert not unknown, f"{path.name}: source notes for fields the file lacks: {sorted(unknown)}"
    assert all(isinstance(v, str) and len(v) > 10 for v in sources.values())


def test_every_referenced_link_and_gpu_exists() -> None:
    catalog.check_references()
    for gpu in catalog.list_gpus():
        assert catalog.get_link(gpu.scale_up_link).kind in ("scale_up", "host")
        assert catalog.get_link(gpu.host_link).kind == "host"
    for system in catalog.list_systems():
        assert catalog.get_gpu(system.gpu).name == system.gpu
        assert catalog.get_link(system.nic_link).kind == "scale_out"


def test_names_and_aliases_are_unique_across_gpus_and_systems() -> None:
    keys: dict[str, str] = {}
    for spec in [*catalog.list_gpus(), *catalog.list_systems()]:
        for key in (spec.name, *spec.aliases):
            assert key.lower() not in keys, f"{key!r} names both {keys[key.lower()]} and {spec.name}"
            keys[key.lower()] = spec.name


def test_each_gpu_has_exactly_one_default_system() -> None:
    for gpu in catalog.list_gpus():
        defaults = [s for s in catalog.list_systems() if s.gpu == gpu.name and s.default_for_gpu]
        assert len(defaults) == 1, gpu.name
        assert catalog.default_system_for(gpu.name) == defaults[0]


def test_prices_carry_provider_and_date() -> None:
    priced = [g for g in catalog.list_gpus() if g.price_per_hour_usd is not None]
    assert len(priced) >= 10
    for g in priced:
        assert g.price_source and g.price_date and len(g.price_date) >= 7


# ---------------------------------------------------------------- hand oracles


def test_dense_flops_match_tensor_core_arithmetic() -> None:
    # SMs x dense FP16 FMA/clock/SM x 2 FLOP/FMA x clock, from the NVIDIA whitepapers:
    # V100: 8 tensor cores x 64 FMA; A100: 4 x 256; H100: 4 x 512 at the 1830 MHz boost used
    # for the whitepaper table (nvidia-smi reports a 1980 MHz max clock, kept in max_clock_hz).
    v100 = catalog.get_gpu("V100")
    assert v100.peak_flops["fp16"] == pytest.approx(80 * 512 * 2 * 1.53e9, rel=0.01)
    a100 = catalog.get_gpu("A100")
    assert a100.peak_flops["bf16"] == pytest.approx(a100.compute_units * 1024 * 2 * a100.max_clock_hz, rel=0.01)
    h100 = catalog.get_gpu("H100")
    assert h100.peak_flops["bf16"] == pytest.approx(h100.compute_units * 2048 * 2 * 1.83e9, rel=0.001)


def test_datasheet_sparse_figures_are_halved() -> None:
    assert catalog.get_gpu("H100").peak_flops["bf16"] == pytest.approx(1979e12 / 2, rel=1e-3)
    assert catalog.get_gpu("H100").peak_flops["fp8"] == pytest.approx(3958e12 / 2, rel=1e-3)
    assert catalog.get_gpu("B200").peak_flops["fp4"] == pytest.approx(144e15 / 8 / 2)
    assert catalog.get_gpu("GB200").peak_flops["bf16"] == pytest.approx(360e15 / 72 / 2)


@pytest.mark.parametrize("name", ["H100-SXM", "H200-SXM", "B200", "GB200", "MI300X", "L40S", "L4", "H100-PCIe"])
def test_fp8_is_twice_bf16_on_fp8_parts(name: str) -> None:
    # 1.5%: the L40S datasheet lists dense BF16 362.05 but FP8 733 (= 2 x 366.5)
    f = catalog.get_gpu(name).peak_flops
    assert f["fp8"] == pytest.approx(2 * f["bf16"], rel=0.015)


def test_measured_capacities() -> None:
    assert catalog.get_gpu("H100").memory_bytes == 81559 * MiB == 85_520_809_984
    assert catalog.get_gpu("H200").memory_bytes == 143771 * MiB
    assert catalog.get_gpu("H100").l2_bytes == 50 * MiB
    assert catalog.get_gpu("H100").compute_units == 132


def test_link_rates_from_lane_arithmetic() -> None:
    # PCIe: GT/s x lanes x 128/130 encoding / 8 bits; NVLink4: 18 links x 25 GB/s per direction.
    assert catalog.get_link("PCIe4-x16").bandwidth_bps == pytest.approx(16e9 * 16 * 128 / 130 / 8, rel=2e-3)
    assert catalog.get_link("PCIe5-x16").bandwidth_bps == pytest.approx(32e9 * 16 * 128 / 130 / 8, rel=2e-3)
    assert catalog.get_link("NVLink4").bandwidth_bps == 18 * 25e9
    assert catalog.get_link("NVLink5").bandwidth_bps == 2 * catalog.get_link("NVLink4").bandwidth_bps
    for gbit, name in [(200, "InfiniBand-HDR"), (400, "InfiniBand-NDR"), (800, "InfiniBand-XDR"),
                       (100, "Ethernet-100G"), (800, "Ethernet-800G")]:
        assert catalog.get_link(name).bandwidth_bps == gbit * 1e9 / 8
    assert catalog.get_link("NVLink4").effective_bandwidth_bps == pytest.approx(450e9 * 0.82)


def test_ddr5_bandwidth_is_channel_arithmetic() -> None:
    assert catalog.get_memory_tier("DDR5").bandwidth_bps == pytest.approx(2 * 8 * 4800e6 * 8)


def test_gb200_rack_is_one_72_gpu_domain() -> None:
    rack = catalog.get_system("NVL72")
    assert rack.gpus_per_node == rack.scale_up_domain == 72
    assert rack.gpus_per_node * catalog.get_gpu(rack.gpu).memory_bytes == pytest.approx(13.4e12, rel=0.001)


def test_flops_fallback_to_wider_dtype() -> None:
    a100 = catalog.get_gpu("A100")
    assert a100.flops("fp8") == a100.peak_flops["bf16"]
    v100 = catalog.get_gpu("V100")
    assert v100.flops("tf32") == v100.peak_flops["fp32"]
    with pytest.raises(SpecError, match="TPU-v5e"):
        catalog.get_gpu("TPU-v5e").flops("fp32")


def test_efficiencies_are_named_and_plausible() -> None:
    for g in catalog.list_gpus():
        assert 0.5 <= g.mem_bw_efficiency <= 0.95
        assert 0.4 <= g.flops_efficiency <= 0.9
    assert 0.80 <= catalog.get_gpu("H100").mem_bw_efficiency <= 0.85


def test_accelerator_types() -> None:
    assert catalog.get_gpu("Ascend-910B").device_type == "npu"
    assert catalog.get_gpu("TPU-v5e").device_type == "tpu"
    assert catalog.get_gpu("TPU-v5p").device_type == "tpu"
    assert math.isclose(catalog.get_gpu("TPU-v5p").memory_bw_bps, 2765e9)
