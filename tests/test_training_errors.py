"""Bad training input -> one-line FleetsimError naming the values (API and CLI)."""

from __future__ import annotations

import argparse

import pytest
from fleetsim.hardware.cluster import load_cluster
from fleetsim.hardware.errors import ConfigError, FleetsimError

from fleetsim.cli import train as train_cli
from fleetsim.training import build_train_job
from fleetsim.training_validate import megatron_gpt

GPT = megatron_gpt("g", 24, 1024, 16, 4096, 32000, 1024)


@pytest.mark.parametrize(("kw", "pattern"), [
    (dict(cluster="8xH100-SXM", tp=2, pp=2, dp=3), r"tp\*cp\*pp\*dp = 2\*1\*2\*3 = 12 != 8 GPUs"),
    (dict(cluster="8xH100-SXM", tp=3), r"tp\*cp\*pp = 3 does not divide the 8 GPUs"),
    (dict(cluster="6xH100-SXM", tp=3, dp=2), r"tp=3 does not divide num_heads=16"),
    (dict(cluster="8xH100-SXM", pp=8, dp=1, global_batch=8, micro_batch=1, vpp=2),
     r"pp\*vpp = 8\*2 does not divide num_layers=24"),
    (dict(cluster="5xH100-SXM", pp=5, dp=1), r"pp\*vpp = 5\*1 does not divide num_layers=24"),
    (dict(cluster="4xH100-SXM", pp=4, dp=1, parallel={"layer_split": (6, 6, 6, 5)}),
     r"layer_split \[6, 6, 6, 5\] must have pp=4 positive entries summing to num_layers=24"),
    (dict(cluster="8xH100-SXM", dp=8, global_batch=12, micro_batch=1),
     r"micro_batch\*dp = 1\*8 does not divide global_batch=12"),
    (dict(cluster="2xH100-SXM", dp=2, global_batch=8, micro_batch=3),
     r"micro_batch\*dp = 3\*2 does not divide global_batch=8"),
    (dict(cluster="2xH100-SXM", cp=2, dp=1, seq_len=1023), r"cp=2 does not divide seq_len=1023"),
    (dict(cluster="2xH100-SXM", dp=2, ep=2), r"ep=2 but model 'g' has no experts"),
    (dict(cluster="2xH100-SXM", offload_params="cpu"), r"offload_params='cpu' needs zero=3 or fsdp"),
    (dict(cluster="4xH100-SXM", pp=2, dp=2, global_batch=6, micro_batch=1, vpp=2),
     r"interleaved schedule needs micro-batches per step \(3\) divisible by pp=2"),
    (dict(cluster="2xH100-SXM", recompute="some"), r"recompute"),
    (dict(cluster="2xH100-SXM", dtype="int3"), r"dtype='int3' is not one of bf16, fp16, fp8"),
    (dict(cluster="2xH100-SXM", global_batch=None), r"global_batch .* is required"),
])
def test_bad_layouts(kw: dict, pattern: str) -> None:
    args: dict = dict(model=GPT, global_batch=8, micro_batch=1, seq_len=1024)
    args.update(kw)
    with pytest.raises(FleetsimError, match=pattern) as info:
        build_train_job(**args)
    assert "\n" not in str(info.value)


def test_offload_to_missing_nvme() -> None:
    cl = load_cluster("8xH100-SXM")
    pool = cl.pools[0]
    node = pool.node.model_copy(update={"nvme_bytes": 0.0})
    cl = cl.model_copy(update={"pools": (pool.model_copy(update={"node": node}),)})
    with pytest.raises(ConfigError, match=r"offload of optimizer to 'nvme' but node '.*' has no NVMe"):
        build_train_job(GPT, cl, global_batch=8, seq_len=1024, offload_optimizer="nvme")


def test_cli_raises_the_api_error() -> None:
    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--model", "gpt2-medium", "--cluster", "8xH100-SXM", "--tp", "3",
                              "--seq-len", "1024", "--global-batch", "8"])
    with pytest.raises(FleetsimError, match="tp\\*cp\\*pp = 3"):
        args.func(args)


def test_unknown_estimate_option_is_named() -> None:
    from fleetsim.training import estimate_train_step

    with pytest.raises(ConfigError, match=r"unknown option 'recompue' \(did you mean 'recompute'"):
        estimate_train_step(GPT, "1xH100-SXM", None, 1, 1, 1024, recompue="full")
