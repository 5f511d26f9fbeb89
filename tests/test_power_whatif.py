"""Power-cap what-if (``fleetsim.power_whatif``, ``fleetsim power``): node provisioning by hand,
the uncapped baseline, monotone training under caps, bad input."""

from __future__ import annotations

import math

import pytest
from fleetsim.hardware.catalog import get_gpu
from fleetsim.hardware.cluster import host_power_w, load_cluster
from fleetsim.hardware.errors import ConfigError, SpecError

from fleetsim.cli import main
from fleetsim.power_whatif import power_cap_whatif, provisioned_node_w

H100 = get_gpu("H100-SXM")


def test_provisioned_node_power_by_hand() -> None:
    cl = load_cluster("2x8xH100").model_copy(update={"pue": 1.25})
    host = host_power_w(cl.pools[0].node, 8)
    assert provisioned_node_w(cl, None) == pytest.approx((8 * 700 + host) * 1.25)
    assert provisioned_node_w(cl, 450) == pytest.approx((8 * 450 + host) * 1.25)


def test_serving_rows_nodes_and_fleet_throughput() -> None:
    df = power_cap_whatif("llama-3.2-1b", "2x2xH100", [700, 250], num_requests=64,
                          workload="closed:clients=16,think=0,isl=256,osl=64")
    assert list(df["cap_w"]) == [700.0, 700.0, 250.0] and list(df["capped"]) == [False, True, True]
    # a cap at the TDP is the uncapped model exactly
    assert df.loc[0, "throughput"] == df.loc[1, "throughput"] and df.loc[0, "j_per_token"] == df.loc[1, "j_per_token"]
    cl = load_cluster("2x2xH100")
    budget = df.attrs["budget_w"]
    assert budget == pytest.approx(2 * provisioned_node_w(cl, None))
    for _, r in df.iterrows():
        assert r["nodes_in_budget"] == math.floor(budget / provisioned_node_w(cl, r["cap_w"]) + 1e-9)
        assert r["fleet_throughput"] == pytest.approx(r["throughput"] / 2 * r["nodes_in_budget"])
        assert r["gpu_peak_power_w"] <= 0.9958 * r["cap_w"] + 1e-6
    assert df.loc[2, "nodes_in_budget"] > df.loc[0, "nodes_in_budget"]
    assert df.loc[2, "tpot_p90_s"] >= df.loc[0, "tpot_p90_s"]


def test_training_under_lower_caps_is_slower_and_uses_less_energy_per_token() -> None:
    df = power_cap_whatif("llama-3.2-1b", "1xH100", [600, 450, 300],
                          training={"global_batch": 8, "seq_len": 2048, "micro_batch": 1})
    assert (df["step_s"].diff().dropna() >= 0).all()
    assert (df["gpu_avg_power_w"].diff().dropna() <= 1e-9).all()
    assert df["j_per_token"].iloc[-1] < df["j_per_token"].iloc[0]


def test_bad_input_is_one_line() -> None:
    with pytest.raises(ConfigError, match="^caps=100: H100-SXM accepts power limits"):
        power_cap_whatif("llama-3.2-1b", "1xH100", [100], num_requests=8)
    with pytest.raises(ConfigError, match="at least one"):
        power_cap_whatif("llama-3.2-1b", "1xH100", [], num_requests=8)
    with pytest.raises(SpecError, match="power_budget_w=10 W is below the cluster's idle draw"):
        power_cap_whatif("llama-3.2-1b", "1xH100", [400], num_requests=8, power_budget_w=10)
    with pytest.raises(ConfigError, match="one node type"):
        power_cap_whatif("llama-3.2-1b", "1xH100+1xH200", [400], num_requests=8)


@pytest.mark.parametrize("argv, msg", [
    (["--caps", "100"], "--caps=100: H100-SXM accepts power limits from 200 W to 700 W"),
    (["--caps", "abc"], "--caps"),
    (["--caps", "400", "--seq-len", "128"], "go with --training"),
    (["--caps", "400", "--training"], "--training needs --global-batch"),
])
def test_cli_errors_exit_2(argv: list[str], msg: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["power", "--model", "llama-3.2-1b", "--cluster", "1xH100", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_cli_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["power", "--model", "llama-3.2-1b", "--cluster", "1xH100", "--caps", "400", "--num-requests", "32",
               "--workload", "closed:clients=8,think=0,isl=128,osl=32"])
    out = capsys.readouterr().out
    assert rc == 0 and "facility budget" in out and "nodes_in_budget" in out and "400.0" in out
