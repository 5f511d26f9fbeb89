"""Spec roofline: closed forms computed by hand, batched == scalar, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from _cost_synth import LINKS, gpu
from fleetsim.calibration import RooflineCostModel
from fleetsim.calibration.opbatch import attention_arrays, gemm_arrays
from fleetsim.calibration.ops import AttentionOp, CollectiveOp, ElementwiseOp, GemmOp, MemcpyOp
from fleetsim.hardware.errors import ConfigError

H100 = gpu()  # 989 TFLOP/s bf16 (eff 0.75), 3.35 TB/s (eff 0.8), 4 us eager, 1.5 us graph
RM = RooflineCostModel(links=LINKS)


def test_gemm_compute_bound_closed_form() -> None:
    op = GemmOp("g", 4096, 4096, 4096)
    # 2*4096^3 = 137,438,953,472 FLOP at 989e12*0.75 = 741.75e12 FLOP/s -> 185.29 us
    assert RM.op_time(op, H100).time_s == pytest.approx(185.2901e-6 + 4e-6, rel=1e-5)
    assert RM.op_time(op, H100, graphs=True).time_s == pytest.approx(185.2901e-6 + 1.5e-6, rel=1e-5)
    assert RM.op_time(op, H100).source == "roofline"


def test_gemm_memory_bound_closed_form() -> None:
    op = GemmOp("g", 1, 4096, 4096)
    # (4096 + 4096*4096 + 4096) * 2 B = 33,570,816 B at 3.35e12*0.8 = 2.68e12 B/s -> 12.526 us
    assert RM.op_time(op, H100).time_s == pytest.approx(12.52642e-6 + 4e-6, rel=1e-5)


def test_fp8_gemm_uses_fp8_peak_and_2_byte_output() -> None:
    op = GemmOp("g", 8192, 8192, 8192, dtype="fp8")
    t = RM.op_time(op, H100, graphs=True).time_s
    assert t == pytest.approx(2 * 8192 ** 3 / (1979e12 * 0.75) + 1.5e-6, rel=1e-9)
    assert op.bytes_moved == 3 * 8192 * 8192 + 8192 * 8192  # 1-byte inputs, 2-byte output


def test_decode_attention_closed_form() -> None:
    op = AttentionOp("a", (1,) * 8, (1000,) * 8, 32, 8, 128, 128)
    # q: 8*32*256*2 = 131,072 B; kv: 8000*8*256*2 = 32,768,000 B -> 32,899,072 B / 2.68e12
    assert RM.op_time(op, H100).time_s == pytest.approx(12.27577e-6 + 4e-6, rel=1e-5)


def test_elementwise_closed_form() -> None:
    op = ElementwiseOp("n", "rmsnorm", 4096 * 1024, 16e6, flops=0.0)
    assert RM.op_time(op, H100, graphs=True).time_s == pytest.approx(16e6 / 2.68e12 + 1.5e-6, rel=1e-12)


def test_all_reduce_alpha_beta_hand_numbers() -> None:
    op = CollectiveOp("ar", "all_reduce", 2 ** 30, 8)
    # 2*7/8 * 1 GiB = 1,879,048,192 B / (450e9*0.8) = 5,219.578 us, + 2*7*3 us
    assert RM.op_time(op, H100).time_s == pytest.approx(5219.578e-6 + 42e-6, rel=1e-6)


@pytest.mark.parametrize("kind,traffic,steps", [("all_gather", 0.75, 3), ("reduce_scatter", 0.75, 3),
                                                ("all_to_all", 0.75, 3), ("send_recv", 1.0, 1),
                                                ("broadcast", 1.0, 2)])
def test_other_collectives(kind: str, traffic: float, steps: int) -> None:
    op = CollectiveOp("c", kind, 1e8, 4)  # type: ignore[arg-type]
    assert RM.op_time(op, H100).time_s == pytest.approx(traffic * 1e8 / 360e9 + steps * 3e-6, rel=1e-12)


def test_collective_tiers_and_trivial_group() -> None:
    assert RM.op_time(CollectiveOp("c", "all_reduce", 1e9, 1), H100).time_s == 0.0
    out = CollectiveOp("c", "all_reduce", 1e9, 2, tier="scale_out", link="TestIB")
    assert RM.op_time(out, H100).time_s == pytest.approx(1e9 / 45e9 + 2 * 5e-6, rel=1e-12)
    with pytest.raises(ConfigError, match="scale_out needs op.link"):
        RM.op_time(CollectiveOp("c", "all_reduce", 1e9, 2, tier="scale_out"), H100)
    host = CollectiveOp("c", "send_recv", 1e9, 2, tier="host")
    assert RM.op_time(host, H100).time_s == pytest.approx(1e9 / 51.2e9 + 10e-6, rel=1e-12)


def test_memcpy_host_link_and_device_copy() -> None:
    assert RM.op_time(MemcpyOp("m", "h2d", 1e9), H100).time_s == pytest.approx(1e9 / 51.2e9 + 10e-6)
    d2d = RM.op_time(MemcpyOp("m", "d2d", 1e9), H100, graphs=True).time_s
    assert d2d == pytest.approx(2e9 / 2.68e12 + 1.5e-6)


def _random_ops(rng: np.random.Generator, n: int) -> list:
    ops: list = []
    for i in range(n):
        r = int(rng.integers(5))
        if r == 0:
            ops.append(GemmOp(f"g{i}", int(rng.integers(1, 9000)), int(rng.choice([1024, 4096, 14336])),
                              int(rng.choice([1024, 4096])), dtype=str(rng.choice(["bf16", "fp8"]))))
        elif r == 1:
            b = int(rng.integers(1, 20))
            q = tuple(int(x) for x in rng.choice([1, 1, 7, 300], size=b))
            kv = tuple(qq + int(rng.integers(0, 3000)) * int(rng.integers(0, 2)) for qq in q)
            ops.append(AttentionOp(f"a{i}", q, kv, 32, 8, 128, 128, causal=bool(rng.integers(2))))
        elif r == 2:
            e = int(rng.integers(1, 10 ** 7))
            ops.append(ElementwiseOp(f"e{i}", "rmsnorm", e, 4.0 * e, flops=3.0 * e))
        elif r == 3:
            ops.append(CollectiveOp(f"c{i}", str(rng.choice(["all_reduce", "all_gather"])),  # type: ignore[arg-type]
                                    float(rng.integers(1, 10 ** 9)), int(rng.choice([1, 2, 8]))))
        else:
            ops.append(MemcpyOp(f"m{i}", str(rng.choice(["h2d", "d2h", "d2d"])),  # type: ignore[arg-type]
                                float(rng.integers(1, 10 ** 9))))
    return ops


def test_array_flops_and_bytes_match_operator_properties() -> None:
    ops = _random_ops(np.random.default_rng(3), 400)
    gem = [o for o in ops if isinstance(o, GemmOp)]
    att = [o for o in ops if isinstance(o, AttentionOp)]
    ga, aa = gemm_arrays(gem), attention_arrays(att)
    np.testing.assert_allclose(ga.flops, [o.flops for o in gem], rtol=1e-12)
    np.testing.assert_allclose(ga.bytes, [o.bytes_moved for o in gem], rtol=1e-12)
    np.testing.assert_allclose(aa.flops, [o.flops for o in att], rtol=1e-12)
    np.testing.assert_allclose(aa.bytes, [o.bytes_moved for o in att], rtol=1e-12)


def test_batched_equals_scalar_and_is_deterministic() -> None:
    ops = _random_ops(np.random.default_rng(7), 300)
    for graphs in (False, True):
        t, src = RooflineCostModel(links=LINKS).op_times(ops, H100, graphs=graphs)
        scalar = RooflineCostModel(links=LINKS)
        one = [scalar.op_time(op, H100, graphs=graphs) for op in ops]
        np.testing.assert_array_equal(t, [c.time_s for c in one])
        assert src == [c.source for c in one]
        again, _ = RooflineCostModel(links=LINKS).op_times(list(reversed(ops)), H100, graphs=graphs)
        np.testing.assert_array_equal(t, again[::-1])
