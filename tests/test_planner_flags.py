"""Engine settings from plan records: golden command lines, every value round-trips through
``shlex`` parsing, and layouts an engine cannot run are refused with one line naming the field.

Oracles: hand-written expected command lines (flag names checked against the engines' docs,
cited in ``planner/flags.py``); the record's own fields for the round trip; the catalog's
alias table for the Hugging Face repository ids.
"""

from __future__ import annotations

import json
import shlex
import tomllib

import pytest
import yaml
from fleetsim.hardware.errors import FleetsimError
from fleetsim.planner.flags import (
    HF_REPOS,
    TRTLLM_CONFIG,
    ServingDeployment,
    TrainingLayout,
    megatron_args,
    megatron_command,
    power_cap_command,
    serving_command,
    sglang_command,
    torchtitan_toml,
    trtllm_command,
    vllm_command,
)
from fleetsim.workloads.hf_config import ALIASES

BOOL = object()


def parse(line: str, start: int) -> dict[str, object]:
    """``--flag value`` pairs of a command line after its first ``start`` words; a flag
    followed by another flag (or nothing) maps to ``BOOL``."""
    words = shlex.split(line)[start:]
    out: dict[str, object] = {}
    i = 0
    while i < len(words):
        w = words[i]
        assert w.startswith("--"), f"stray word {w!r}"
        assert w not in out, f"{w} given twice"
        if i + 1 < len(words) and not words[i + 1].startswith("--"):
            out[w], i = words[i + 1], i + 2
        else:
            out[w], i = BOOL, i + 1
    return out


MOE = ServingDeployment(model="mixtral-8x7b", gpu="H100-SXM", tp=2, dp=2, ep=4, max_num_seqs=128,
                        max_num_batched_tokens=4096, prefix_caching=True, dtype="fp8",
                        kv_dtype="fp8", power_cap_w=550, port=9000)
SPEC = ServingDeployment(model="llama-3.1-70b", gpu="H100-SXM", tp=4, pp=2, chunked_prefill=False,
                         draft_model="meta-llama/Llama-3.2-1B-Instruct", num_speculative_tokens=3,
                         role="decode")


def test_vllm_golden() -> None:
    d = ServingDeployment(model="llama-3.1-8b", gpu="H100-SXM", tp=2)
    assert vllm_command(d).line == (
        "vllm serve meta-llama/Llama-3.1-8B-Instruct --port 8000 --tensor-parallel-size 2 "
        "--pipeline-parallel-size 1 --dtype bfloat16 --max-num-seqs 256 --max-num-batched-tokens 8192 "
        "--enable-chunked-prefill --no-enable-prefix-caching")
    assert vllm_command(MOE).line == (
        "vllm serve mistralai/Mixtral-8x7B-Instruct-v0.1 --port 9000 --tensor-parallel-size 2 "
        "--pipeline-parallel-size 1 --data-parallel-size 2 --enable-expert-parallel --dtype bfloat16 "
        "--quantization fp8 --kv-cache-dtype fp8 --max-num-seqs 128 --max-num-batched-tokens 4096 "
        "--enable-chunked-prefill --enable-prefix-caching")


def test_vllm_round_trip() -> None:
    f = parse(vllm_command(SPEC).line, 3)
    assert shlex.split(vllm_command(SPEC).line)[:3] == ["vllm", "serve", HF_REPOS["llama-3.1-70b"]]
    assert int(f["--tensor-parallel-size"]) == SPEC.tp  # type: ignore[call-overload]
    assert int(f["--pipeline-parallel-size"]) == SPEC.pp  # type: ignore[call-overload]
    assert int(f["--max-num-seqs"]) == SPEC.max_num_seqs  # type: ignore[call-overload]
    assert int(f["--max-num-batched-tokens"]) == SPEC.max_num_batched_tokens  # type: ignore[call-overload]
    assert f["--no-enable-chunked-prefill"] is BOOL and "--enable-chunked-prefill" not in f
    assert json.loads(str(f["--speculative-config"])) == {
        "method": "draft_model", "model": SPEC.draft_model, "num_speculative_tokens": 3}
    assert json.loads(str(f["--kv-transfer-config"])) == {"kv_connector": "NixlConnector",
                                                         "kv_role": "kv_consumer"}
    prefill = SPEC.model_copy(update={"role": "prefill"})
    assert json.loads(str(parse(vllm_command(prefill).line, 3)["--kv-transfer-config"]))["kv_role"] == "kv_producer"


def test_sglang_golden_and_round_trip() -> None:
    assert sglang_command(MOE).line == (
        "python -m sglang.launch_server --model-path mistralai/Mixtral-8x7B-Instruct-v0.1 --port 9000 "
        "--tp-size 2 --dp-size 2 --ep-size 4 --dtype bfloat16 --quantization fp8 --kv-cache-dtype fp8_e4m3 "
        "--max-running-requests 128 --chunked-prefill-size 4096")
    f = parse(sglang_command(SPEC).line, 3)
    assert f["--model-path"] == HF_REPOS["llama-3.1-70b"]
    assert (f["--tp-size"], f["--pp-size"]) == (str(SPEC.tp), str(SPEC.pp))
    assert f["--max-running-requests"] == str(SPEC.max_num_seqs)
    assert f["--chunked-prefill-size"] == "-1" and f["--max-prefill-tokens"] == str(SPEC.max_num_batched_tokens)
    assert f["--disable-radix-cache"] is BOOL
    assert f["--speculative-draft-model-path"] == SPEC.draft_model
    assert (f["--speculative-num-steps"], f["--speculative-num-draft-tokens"]) == ("3", "4")
    assert f["--disaggregation-mode"] == "decode"


def test_trtllm_golden_and_yaml() -> None:
    c = trtllm_command(SPEC)
    assert c.line == (
        "trtllm-serve meta-llama/Llama-3.1-70B-Instruct --backend pytorch --port 8000 --tp_size 4 "
        "--pp_size 2 --max_batch_size 256 --max_num_tokens 8192 --extra_llm_api_options "
        "extra-llm-api-config.yml")
    assert yaml.safe_load(c.files[TRTLLM_CONFIG]) == {
        "cache_transceiver_config": {"backend": "DEFAULT"},
        "disable_overlap_scheduler": True,
        "enable_chunked_prefill": False,
        "kv_cache_config": {"enable_block_reuse": False},
        "speculative_config": {"decoding_type": "Draft_Target", "max_draft_len": 3,
                               "speculative_model_dir": SPEC.draft_model},
    }
    moe = MOE.model_copy(update={"dp": 1, "replicas": 2, "ep": 2})
    f = parse(trtllm_command(moe).line, 2)
    assert (f["--tp_size"], f["--ep_size"], f["--max_batch_size"], f["--max_num_tokens"]) == ("2", "2", "128", "4096")
    cfg = yaml.safe_load(trtllm_command(moe).files[TRTLLM_CONFIG])
    assert cfg["kv_cache_config"] == {"dtype": "fp8", "enable_block_reuse": True}
    assert cfg["quant_config"] == {"quant_algo": "FP8"}


def test_power_cap_line() -> None:
    c = power_cap_command(MOE, first_gpu=4)
    assert c is not None and c.line == "nvidia-smi -i 4,5,6,7 -pl 550"
    assert power_cap_command(SPEC) is None


LAYOUT = TrainingLayout(model="megatron-22b", tp=8, pp=2, dp=4, vpp=2, micro_batch=2,
                        global_batch=64, seq_len=2048, recompute="full", zero=1, dtype="fp8")


def test_megatron_golden_and_round_trip() -> None:
    assert megatron_command(LAYOUT).line == (
        "torchrun pretrain_gpt.py --num-layers 48 --hidden-size 6144 --ffn-hidden-size 24576 "
        "--num-attention-heads 64 --seq-length 2048 --max-position-embeddings 2048 "
        "--tensor-model-parallel-size 8 --pipeline-model-parallel-size 2 "
        "--num-layers-per-virtual-pipeline-stage 12 --sequence-parallel --micro-batch-size 2 "
        "--global-batch-size 64 --recompute-granularity full --recompute-method uniform "
        "--recompute-num-layers 1 --use-distributed-optimizer --bf16 --fp8-format hybrid")
    moe = TrainingLayout(model="mixtral-8x7b", tp=2, dp=4, cp=2, ep=8, global_batch=32,
                         seq_len=4096, recompute="selective", zero=0, offload=True)
    f = parse(shlex.join(megatron_args(moe)), 0)
    assert (f["--tensor-model-parallel-size"], f["--context-parallel-size"],
            f["--expert-model-parallel-size"]) == ("2", "2", "8")
    assert f["--num-query-groups"] == "8" and f["--num-experts"] == "8" and f["--moe-router-topk"] == "2"
    assert f["--recompute-granularity"] == "selective" and "--recompute-method" not in f
    assert "--use-distributed-optimizer" not in f and f["--optimizer-cpu-offload"] is BOOL
    assert "--num-layers-per-virtual-pipeline-stage" not in f and "--fp8-format" not in f


def test_torchtitan_round_trip() -> None:
    cfg = tomllib.loads(torchtitan_toml(LAYOUT))
    assert cfg["parallelism"] == {
        "data_parallel_replicate_degree": 1, "data_parallel_shard_degree": 4,
        "tensor_parallel_degree": 8, "pipeline_parallel_degree": 2, "context_parallel_degree": 1,
        "expert_parallel_degree": 1, "fsdp_reshard_after_forward": "never",
        "pipeline_parallel_schedule": "Interleaved1F1B", "pipeline_parallel_microbatch_size": 2,
        "pipeline_parallel_layers_per_stage": 12}
    assert cfg["training"] == {"local_batch_size": 16, "global_batch_size": 64, "seq_len": 2048,
                               "mixed_precision_param": "bfloat16"}
    assert cfg["activation_checkpoint"] == {"mode": "full"} and cfg["model"] == {"converters": ["float8"]}
    ddp = tomllib.loads(torchtitan_toml(LAYOUT.model_copy(update={"pp": 1, "vpp": 1, "zero": 0, "dp": 8})))
    assert ddp["parallelism"]["data_parallel_replicate_degree"] == 8
    assert ddp["parallelism"]["data_parallel_shard_degree"] == 1
    assert ddp["training"]["local_batch_size"] == 2  # the micro-batch; 64 / (2 * 8) = 4 accumulation steps
    fsdp = tomllib.loads(torchtitan_toml(LAYOUT.model_copy(update={"zero": 3})))
    assert fsdp["parallelism"]["fsdp_reshard_after_forward"] == "always"


def test_hf_repos_match_catalog_aliases() -> None:
    for name, repo in HF_REPOS.items():
        assert ALIASES.get(repo.lower()) == name, repo


BAD_SERVING = [
    ({"tp": 3}, "tp=3 does not divide 64 heads"),
    ({"pp": 81}, "pp=81 > 80 layers"),
    ({"ep": 2}, "ep=2 > 1 but llama-3.1-70b is not a mixture-of-experts model"),
    ({"num_speculative_tokens": 4}, "num_speculative_tokens and draft_model go together"),
    ({"power_cap_w": 2000}, "power_cap_w"),
    ({"power_cap_w": 350.5}, "power_cap_w 350.5 W"),
    ({"max_num_seqs": 0}, "max_num_seqs"),
    ({"role": "mixed"}, "role"),
    ({"gpu": "H999"}, "H999"),
    ({"model": "llama-9"}, "llama-9"),
    ({"colour": 1}, "colour"),
]


@pytest.mark.parametrize(("change", "needle"), BAD_SERVING)
def test_bad_serving_refused_in_one_line(change: dict[str, object], needle: str) -> None:
    with pytest.raises(FleetsimError) as e:
        vllm_command(ServingDeployment(**{"model": "llama-3.1-70b", "gpu": "H100-SXM", "tp": 8, **change}))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_engine_specific_refusals() -> None:
    with pytest.raises(FleetsimError, match=r"^ep=2: vLLM's --enable-expert-parallel spreads experts over all tp\*dp=4"):
        vllm_command(MOE.model_copy(update={"ep": 2}))
    with pytest.raises(FleetsimError, match=r"^dp=2: trtllm-serve has no data-parallel flag"):
        trtllm_command(MOE)
    with pytest.raises(FleetsimError, match=r"^ep=4 must divide tp\*dp=2"):
        trtllm_command(MOE.model_copy(update={"dp": 1, "tp": 2, "ep": 4, "replicas": 2}))
    with pytest.raises(FleetsimError, match=r"^engine 'tgi' is not one of vllm, sglang, trtllm$"):
        serving_command(MOE, "tgi")
    with pytest.raises(FleetsimError, match=r"^hf_repo: model 'gpt3-175b' has no Hugging Face"):
        vllm_command(ServingDeployment(model="gpt3-175b", gpu="H100-SXM", tp=8))


BAD_TRAINING = [
    ({"tp": 5}, "tp=5 does not divide 64 heads"),
    ({"vpp": 5}, "vpp=5: pp*vpp=10 does not divide 48 layers"),
    ({"pp": 1, "vpp": 2}, "vpp=2 needs pp > 1"),
    ({"global_batch": 60}, "global_batch=60 is not a multiple of micro_batch*dp=8"),
    ({"seq_len": 2044}, "seq_len=2044 is not a multiple of 8"),
    ({"cp": 2, "seq_len": 2056}, "seq_len=2056 is not a multiple of 32"),
    ({"ep": 2}, "ep=2 > 1 but megatron-22b is not a mixture-of-experts model"),
    ({"recompute": "some"}, "recompute"),
    ({"zero": 4}, "zero"),
]


@pytest.mark.parametrize(("change", "needle"), BAD_TRAINING)
def test_bad_training_refused_in_one_line(change: dict[str, object], needle: str) -> None:
    base: dict[str, object] = {"model": "megatron-22b", "tp": 8, "pp": 2, "dp": 4, "micro_batch": 2,
                               "global_batch": 64, "seq_len": 2048}
    with pytest.raises(FleetsimError) as e:
        megatron_args(TrainingLayout(**{**base, **change}))
    assert needle in str(e.value) and "\n" not in str(e.value)
