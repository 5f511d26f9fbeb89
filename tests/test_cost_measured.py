"""Measured cost model against an analytic oracle profile (tests/_cost_synth.py)."""

from __future__ import annotations

from pathlib import Path

import _cost_synth as S
import numpy as np
import pytest
from fleetsim.calibration import MeasuredCostModel, RooflineCostModel, get_cost_model
from fleetsim.calibration.ops import AttentionOp, CollectiveOp, ElementwiseOp, GemmOp
from fleetsim.calibration.power import PowerParams

H100 = S.gpu()
H200 = S.gpu("TestH200", bw=4.8e12)
OTHER = S.gpu("TestAmpere", arch="ampere", bw=2.0e12)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("profiles")
    S.write_profile(r, H100)
    return r


@pytest.fixture(scope="module")
def model(root: Path) -> MeasuredCostModel:
    return MeasuredCostModel(root / H100.name, H100, links=S.LINKS)


def test_grid_points_are_measured_and_exact(model: MeasuredCostModel) -> None:
    for m in (1, 64, 8192):
        for n, k in S.NK[:3]:
            t, src = model.stream_times([GemmOp("g", m, n, k)], H100)
            assert src == ["measured"]
            assert t[0] == pytest.approx(S.gemm_time(H100, m, n, k), rel=1e-9)
    dec = AttentionOp("a", (1,) * 16, (2048,) * 16, 32, 8, 128, 128)
    t, src = model.stream_times([dec], H100)
    assert src == ["measured"] and t[0] == pytest.approx(S.attn_time(H100, 16, 1, 2048, 32, 8, 128), rel=1e-9)
    pre = AttentionOp("a", (512,) * 4, (512,) * 4, 16, 4, 128, 128)
    t, src = model.stream_times([pre], H100)
    assert src == ["measured"] and t[0] == pytest.approx(S.attn_time(H100, 4, 512, 512, 16, 4, 128), rel=1e-9)


@pytest.mark.parametrize("m", [3, 100, 777, 5000])
def test_gemm_between_grid_points_is_close(model: MeasuredCostModel, m: int) -> None:
    for n, k in ((4096, 4096), (28672, 4096)):
        c = model.op_time(GemmOp("g", m, n, k), H100, graphs=True)
        assert c.source == "interpolated"
        assert c.time_s == pytest.approx(S.gemm_time(H100, m, n, k), rel=0.02)


def test_gemm_unmeasured_nk_inside_range_borrows_neighbours(model: MeasuredCostModel) -> None:
    c = model.op_time(GemmOp("g", 300, 5000, 4096), H100, graphs=True)
    assert c.source == "interpolated"
    assert c.time_s == pytest.approx(S.gemm_time(H100, 300, 5000, 4096), rel=0.05)


def test_attention_between_grid_points(model: MeasuredCostModel) -> None:
    dec = AttentionOp("a", (1,) * 12, (1800,) * 12, 32, 8, 128, 128)
    c = model.op_time(dec, H100, graphs=True)
    assert c.source == "interpolated"
    assert c.time_s == pytest.approx(S.attn_time(H100, 12, 1, 1800, 32, 8, 128), rel=0.03)
    pre = AttentionOp("a", (700,) * 3, (700,) * 3, 32, 8, 128, 128)
    c = model.op_time(pre, H100, graphs=True)
    assert c.source == "interpolated"
    assert c.time_s == pytest.approx(S.attn_time(H100, 3, 700, 700, 32, 8, 128), rel=0.03)


def test_ragged_decode_priced_as_uniform_batch_with_same_kv_tokens(model: MeasuredCostModel) -> None:
    ragged = AttentionOp("a", (1,) * 4, (1000, 3000, 500, 2500), 32, 8, 128, 128)
    uniform = AttentionOp("a", (1,) * 4, (1750,) * 4, 32, 8, 128, 128)
    assert model.op_time(ragged, H100).time_s == pytest.approx(model.op_time(uniform, H100).time_s, rel=1e-12)


def test_ragged_prefill_priced_as_square_prefill_with_same_score_pairs(model: MeasuredCostModel) -> None:
    # two prefills of 300 and 1000 tokens: pairs 300*301/2 + 1000*1001/2 = 545,650 = 2 * q(q+1)/2
    ragged = AttentionOp("a", (300, 1000), (300, 1000), 32, 8, 128, 128)
    q = (np.sqrt(1 + 8 * 545650 / 2) - 1) / 2
    assert q * (q + 1) == pytest.approx(545650, rel=1e-12)
    t = model.op_time(ragged, H100, graphs=True).time_s
    assert t == pytest.approx(S.attn_time(H100, 2, q, q, 32, 8, 128), rel=0.05)


def test_out_of_range_uses_nearest_efficiency_not_extrapolation(model: MeasuredCostModel) -> None:
    m, n, k = 20000, 4096, 4096
    t, src = model.stream_times([GemmOp("g", m, n, k)], H100)
    assert src == ["roofline"]
    edge = 8192  # largest measured M: its efficiency is carried to M = 20000
    ideal = lambda mm: max(2 * mm * n * k / 989e12, (mm * k + k * n + mm * n) * 2 / 3.35e12)  # noqa: E731
    r_edge = ideal(edge) / (S.gemm_time(H100, edge, n, k) - S.FLOOR_S)
    assert t[0] == pytest.approx(S.FLOOR_S + ideal(m) / r_edge, rel=1e-9)


def test_modes_eager_launch_bound_and_graph_saving(model: MeasuredCostModel) -> None:
    small = ElementwiseOp("n", "rmsnorm", 1024, 16384)
    stream = model.stream_times([small], H100)[0][0]
    assert stream == pytest.approx(S.ew_time(H100, 16384), rel=1e-9)
    assert model.op_time(small, H100, graphs=False).time_s == pytest.approx(S.EAGER_S)
    # a graph replay saves (fastest stream kernel - graph per-kernel time) per kernel
    gap = S.ew_time(H100, min(S.EW_BYTES)) - S.GRAPH_S
    g = model.op_time(small, H100, graphs=True).time_s
    assert g == pytest.approx(max(stream - gap, S.GRAPH_S), rel=1e-9)
    big = GemmOp("g", 8192, 28672, 4096)
    t_big = model.stream_times([big], H100)[0][0]
    assert model.op_time(big, H100).time_s == pytest.approx(t_big, rel=1e-12)
    assert model.op_time(big, H100, graphs=True).time_s == pytest.approx(t_big - gap, rel=1e-12)


def test_same_architecture_gpu_scaled_by_specs(model: MeasuredCostModel) -> None:
    for m, n, k in ((1, 4096, 4096), (512, 28672, 4096), (8192, 4096, 14336)):
        t, src = model.stream_times([GemmOp("g", m, n, k)], H200)
        assert src == ["roofline"]
        # exact but for the DRAM share, estimated from the best streaming kernel (-0.6%)
        assert t[0] == pytest.approx(S.gemm_time(H200, m, n, k), rel=0.01)
    dec = AttentionOp("a", (1,) * 12, (1800,) * 12, 32, 8, 128, 128)
    assert model.stream_times([dec], H200)[0][0] == pytest.approx(
        S.attn_time(H200, 12, 1, 1800, 32, 8, 128), rel=0.03)


def test_other_architecture_gets_spec_roofline(model: MeasuredCostModel) -> None:
    ops = [GemmOp("g", 100, 4096, 4096), ElementwiseOp("e", "rmsnorm", 10 ** 6, 4e6)]
    t, src = model.op_times(ops, OTHER)
    t0, _ = RooflineCostModel(links=S.LINKS).op_times(ops, OTHER)
    np.testing.assert_array_equal(t, t0)
    assert set(src) == {"roofline"}


def test_elementwise_known_and_unknown_kernels(model: MeasuredCostModel) -> None:
    c = model.op_time(ElementwiseOp("n", "rmsnorm", 10 ** 6, 3e6), H100, graphs=True)
    assert c.source == "interpolated" and c.time_s == pytest.approx(S.ew_time(H100, 3e6), rel=0.02)
    c2 = model.op_time(ElementwiseOp("x", "some_new_kernel", 10 ** 6, 3e6), H100, graphs=True)
    assert c2.source == "roofline" and c2.time_s == pytest.approx(c.time_s, rel=1e-12)


def test_collectives_measured_interpolated_and_fitted(model: MeasuredCostModel) -> None:
    exact = model.op_time(CollectiveOp("c", "all_reduce", 2 ** 20, 8), H100)
    assert exact.source == "measured"
    assert exact.time_s == pytest.approx(S.allreduce_time(8, 2 ** 20), rel=1e-9)
    mid = model.op_time(CollectiveOp("c", "all_reduce", 3e6, 4), H100)
    assert mid.source == "interpolated" and mid.time_s == pytest.approx(S.allreduce_time(4, 3e6), rel=1e-9)
    # beyond the largest size: the alpha-beta fit, exact for an alpha-beta oracle
    big = model.op_time(CollectiveOp("c", "all_reduce", 2 ** 33, 8), H100)
    assert big.source == "roofline" and big.time_s == pytest.approx(S.allreduce_time(8, 2 ** 33), rel=1e-6)
    # unmeasured group size: link bandwidth and per-step latency from the nearest group
    g16 = model.op_time(CollectiveOp("c", "all_reduce", 2 ** 24, 16), H100)
    assert g16.source == "roofline" and g16.time_s == pytest.approx(S.allreduce_time(16, 2 ** 24), rel=1e-6)


def test_batched_equals_scalar_and_deterministic(model: MeasuredCostModel, root: Path) -> None:
    rng = np.random.default_rng(11)
    ops = [GemmOp("g", int(m), 4096, 4096) for m in rng.integers(1, 30000, 50)]
    ops += [AttentionOp("a", (1,) * int(b), tuple(int(x) for x in rng.integers(100, 9000, int(b))),
                        32, 8, 128, 128) for b in rng.integers(1, 60, 30)]
    ops += [CollectiveOp("c", "all_reduce", float(x), 8) for x in rng.integers(10, 2 ** 32, 20)]
    ops = [ops[i] for i in rng.permutation(len(ops))]
    for gpu in (H100, H200):
        fresh = MeasuredCostModel(root / H100.name, H100, links=S.LINKS)
        t, src = fresh.op_times(ops, gpu, graphs=True)
        one = [MeasuredCostModel(root / H100.name, H100, links=S.LINKS).op_time(op, gpu, graphs=True)
               for op in ops[:25]]
        np.testing.assert_allclose(t[:25], [c.time_s for c in one], rtol=1e-12)
        assert src[:25] == [c.source for c in one]
        t2, src2 = fresh.op_times(ops, gpu, graphs=True)  # cached
        np.testing.assert_array_equal(t, t2)
        assert src == src2


def test_get_cost_model_selection(root: Path) -> None:
    specs = {H100.name: H100}
    own = get_cost_model(H100, root, profile_gpus=specs)
    assert isinstance(own, MeasuredCostModel)
    cross = get_cost_model(H200, root, profile_gpus=specs)
    assert type(cross) is RooflineCostModel and cross.fit is not None
    cross.links.update(S.LINKS)
    t, src = cross.stream_times([GemmOp("g", 512, 28672, 4096)], H200)
    assert src == ["roofline"] and t[0] == pytest.approx(S.gemm_time(H200, 512, 28672, 4096), rel=0.01)
    plain = get_cost_model(OTHER, root, profile_gpus=specs)
    assert type(plain) is RooflineCostModel and plain.fit is None


def test_grid_interp_small_and_large_query_paths_agree() -> None:
    from fleetsim.calibration.interp import GridInterp

    rng = np.random.default_rng(5)
    b, q = np.meshgrid(np.log([1.0, 2, 4, 8]), np.log([128.0, 256, 512, 1024, 2048]))
    x = np.column_stack([b.ravel(), q.ravel(), q.ravel()])  # third column duplicates the second
    keep = rng.random(len(x)) > 0.15  # a few grid points missing
    y = np.sin(x[:, 0]) + x[:, 1] ** 1.5
    gi = GridInterp(x[keep], y[keep])
    qs = np.column_stack([rng.uniform(-0.3, 2.4, 300), rng.uniform(4.6, 7.9, 300)])
    qs = np.column_stack([qs, np.where(rng.random(300) < 0.9, qs[:, 1], qs[:, 1] + 0.1)])
    grid_pts = x[keep]
    qs = np.vstack([qs, grid_pts])
    v_many, in_many, ex_many = gi._many(qs)
    v_few = np.array([gi._one(r)[0] for r in qs.tolist()])
    in_few = np.array([gi._one(r)[1] for r in qs.tolist()])
    ex_few = np.array([gi._one(r)[2] for r in qs.tolist()])
    assert (in_many == in_few).all() and (ex_many == ex_few).all() and in_many.sum() > 100
    np.testing.assert_allclose(v_many[in_many], v_few[in_few], rtol=1e-12)
    k = len(grid_pts)
    assert ex_many[-k:].all()
    np.testing.assert_allclose(v_many[-k:], y[keep], rtol=1e-12)


def test_energy_is_occupancy_power_times_time(tmp_path: Path) -> None:
    """Energy = min(base + memory x u_mem + compute x u_compute, settle x TDP) x time, with the
    rates worked out by hand from each operator's FLOPs, bytes and time."""
    d = S.write_profile(tmp_path, H100)
    params = PowerParams(gpu=H100.name, tdp_w=H100.tdp_w, min_cap_w=H100.min_power_cap_w, idle_w=70.0,
                         gap_w=100.0, base_w=150.0, memory_w=500.0, compute_w=1000.0, limit_share=0.99,
                         source="test")
    (d / "power_model.json").write_text(params.to_json())
    m = MeasuredCostModel(d, H100, links=S.LINKS)
    g = m.op_time(GemmOp("g", 4096, 4096, 4096), H100)  # compute-bound: demand above the limit
    assert g.energy_j == pytest.approx(0.99 * H100.tdp_w * g.time_s, rel=1e-12)
    ew = ElementwiseOp("n", "rmsnorm", 10 ** 6, 3e6)
    t = m.op_time(ew, H100).time_s
    want = 150.0 + 500.0 * (ew.bytes_moved / t / H100.memory_bw_bps) + 1000.0 * (ew.flops / t / H100.peak_flops["bf16"])
    assert m.op_time(ew, H100).energy_j == pytest.approx(min(want, 0.99 * H100.tdp_w) * t, rel=1e-9)
    dec = AttentionOp("a", (1,) * 8, (1000,) * 8, 32, 8, 128, 128)
    e = m.op_energies([ew, dec], H100)
    assert e is not None and e[0] == pytest.approx(m.op_time(ew, H100).energy_j, rel=1e-12)
    assert e[1] == pytest.approx(m.op_time(dec, H100).energy_j, rel=1e-12)
    assert m.op_time(GemmOp("g", 64, 4096, 4096), H200).energy_j is None  # other GPU: unknown
    assert MeasuredCostModel(root_without_power(tmp_path), H100).op_time(ew, H100).energy_j is None


def root_without_power(tmp_path: Path) -> Path:
    return S.write_profile(tmp_path / "nopower", H100)
