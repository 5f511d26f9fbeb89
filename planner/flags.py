"""Engine settings from a plan: the command lines and config files an operator runs.

Pure functions of two small records: ``ServingDeployment`` (one serving pool: model, GPU,
parallel degrees, scheduler knobs, dtypes, speculative decoding, power cap, P/D role) and
``TrainingLayout`` (one training job: parallel degrees, batch, sequence, recomputation,
ZeRO stage, offload, dtype). Each record is checked against the model with the one
feasibility owner, ``ParallelConfig.validate_for`` (heads, KV heads, ffn and experts divide),
plus the rules each engine adds; a bad record is refused with one line naming the field.

Flag names follow the engines' own documentation:

- vLLM ``vllm serve``: engine arguments https://docs.vllm.ai/en/latest/models/engine_args.html
  (``--tensor-parallel-size``, ``--pipeline-parallel-size``, ``--data-parallel-size``,
  ``--enable-expert-parallel``, ``--max-num-seqs``, ``--max-num-batched-tokens``,
  ``--enable-chunked-prefill``, ``--enable-prefix-caching``, ``--kv-cache-dtype fp8``,
  ``--quantization fp8``); ``--speculative-config`` JSON with ``method: draft_model``,
  ``model``, ``num_speculative_tokens``:
  https://docs.vllm.ai/en/latest/features/speculative_decoding/draft_model/ ;
  disaggregated prefill ``--kv-transfer-config`` (``kv_connector``, ``kv_role`` one of
  kv_producer / kv_consumer / kv_both): https://docs.vllm.ai/en/v0.12.0/api/vllm/config/kv_transfer/
  and https://docs.vllm.ai/en/latest/features/disagg_prefill/ .
- SGLang ``python -m sglang.launch_server``: https://docs.sglang.io/advanced_features/server_arguments.html
  and https://docs.sglang.io/cookbook/base/reference/server_arguments (``--tp-size``,
  ``--dp-size``, ``--ep-size``); ``--disaggregation-mode prefill|decode``:
  https://mintlify.com/sgl-project/sglang/backend/launch-server ; draft-model speculation
  ``--speculative-algorithm STANDALONE`` with ``--speculative-draft-model-path``,
  ``--speculative-num-steps``, ``--speculative-eagle-topk``, ``--speculative-num-draft-tokens``.
- TensorRT-LLM ``trtllm-serve``: https://nvidia.github.io/TensorRT-LLM/0.18.2/commands/trtllm-serve.html
  (``--tp_size``, ``--pp_size``, ``--max_batch_size``, ``--max_num_tokens``) and
  https://nvidia.github.io/TensorRT-LLM/1.0.0rc6/commands/trtllm-serve/trtllm-serve.html
  (``--ep_size``); the rest goes into the YAML of ``--extra_llm_api_options``
  (https://nvidia.github.io/TensorRT-LLM/1.0.0/commands/trtllm-serve/run-benchmark-with-trtllm-serve.html):
  ``kv_cache_config`` (``dtype``, ``enable_block_reuse``), ``enable_chunked_prefill``,
  ``speculative_config`` (``decoding_type: Draft_Target``, ``max_draft_len``,
  ``speculative_model_dir``; https://nvidia.github.io/TensorRT-LLM/features/speculative-decoding.html),
  ``cache_transceiver_config`` for disaggregated context/generation servers.
- LoRA adapters: vLLM ``--enable-lora --max-loras N --max-lora-rank R --max-cpu-loras M``
  (``LoRAConfig``: https://docs.vllm.ai/en/v0.14.0/api/vllm/config/lora/ ; ``max_lora_rank``
  one of 1, 8, 16, 32, 64, 128, 256, 320, 512; ``max_cpu_loras >= max_loras``); SGLang
  ``--enable-lora --max-loras-per-batch N --max-loaded-loras M --max-lora-rank R
  --lora-target-modules ...`` (https://docs.sglang.io/advanced_features/lora.html; the target
  modules let adapters load at run time without ``--lora-paths``); TensorRT-LLM (PyTorch
  backend) ``lora_config`` in the extra options YAML with ``max_lora_rank``, ``max_loras``,
  ``max_cpu_loras`` and ``lora_target_modules``
  (https://nvidia.github.io/TensorRT-LLM/llm-api/reference/LoraConfig.html).
- Power caps: ``nvidia-smi -i IDS -pl W`` (NVIDIA System Management Interface; needs root).
  fleetsim prints the line for the operator and never runs it.
- Megatron-LM ``pretrain_gpt.py`` arguments (megatron/training/arguments.py;
  https://github.com/NVIDIA/Megatron-LM/blob/core_r0.13.0/megatron/training/arguments.py):
  ``--tensor-model-parallel-size``, ``--pipeline-model-parallel-size``,
  ``--num-layers-per-virtual-pipeline-stage``, ``--context-parallel-size``,
  ``--expert-model-parallel-size``, ``--micro-batch-size``, ``--global-batch-size``,
  ``--seq-length``, ``--recompute-granularity selective|full`` with ``--recompute-method
  uniform`` and ``--recompute-num-layers`` for full
  (https://swift.readthedocs.io/en/latest/Megatron-SWIFT/Command-line-parameters.html),
  ``--use-distributed-optimizer``, ``--sequence-parallel``, ``--bf16``, ``--fp8-format hybrid``,
  ``--optimizer-cpu-offload``.
- torchtitan TOML (``JobConfig``; https://github.com/pytorch/torchtitan and
  https://rocm.docs.amd.com/projects/primus/en/latest/03-configuration-reference/torchtitan-parameters.html):
  ``[parallelism]`` ``data_parallel_replicate_degree``, ``data_parallel_shard_degree``,
  ``tensor_parallel_degree``, ``pipeline_parallel_degree``, ``context_parallel_degree``,
  ``expert_parallel_degree``; ``[training]`` ``local_batch_size``, ``global_batch_size``,
  ``seq_len``; ``[activation_checkpoint]`` ``mode``.
"""

from __future__ import annotations

import json
import shlex
from typing import Literal

import yaml
from fleetsim.hardware.checks import validation_line
from fleetsim.hardware.errors import ConfigError
from fleetsim.workloads.models import ModelSpec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Role = Literal["both", "prefill", "decode"]
Dtype = Literal["bf16", "fp16", "fp8"]

HF_REPOS: dict[str, str] = {
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B-Instruct",
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B-Instruct",
    "llama-3.1-405b": "meta-llama/Llama-3.1-405B-Instruct",
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B-Instruct",
    "llama-3.2-3b": "meta-llama/Llama-3.2-3B-Instruct",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
    "qwen2.5-72b": "Qwen/Qwen2.5-72B-Instruct",
    "qwen3-32b": "Qwen/Qwen3-32B",
    "qwen3-235b-a22b": "Qwen/Qwen3-235B-A22B",
    "qwen1.5-moe-a2.7b": "Qwen/Qwen1.5-MoE-A2.7B",
    "qwen2-57b-a14b": "Qwen/Qwen2-57B-A14B",
    "mixtral-8x7b": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "mixtral-8x22b": "mistralai/Mixtral-8x22B-Instruct-v0.1",
    "deepseek-v3": "deepseek-ai/DeepSeek-V3",
    "deepseek-v2": "deepseek-ai/DeepSeek-V2",
    "deepseek-v2-lite": "deepseek-ai/DeepSeek-V2-Lite",
    "gemma-2-9b": "google/gemma-2-9b-it",
    "gemma-2-27b": "google/gemma-2-27b-it",
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
"""Hugging Face repository of each catalog model that has public weights, with the Hub's
capitalisation (the catalog's alias table holds the same ids lower-cased; a test checks
they agree). Megatron-only shapes (gpt3-175b, megatron-*, turing-530b) have none."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def __init__(self, **data: object) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(validation_line(e, type(self).__name__)) from None


class ServingDeployment(_Record):
    """One serving pool as an engine runs it. ``dp`` is the engine's own data-parallel
    degree inside one server (vLLM ``--data-parallel-size``, SGLang ``--dp-size``);
    ``replicas`` independent servers run the same command. ``ep`` > 1 spreads the experts
    of an MoE model over ``ep`` of the server's ``tp * dp`` GPUs. ``dtype`` is the weight
    dtype (fp8: the engine quantizes to FP8), ``kv_dtype`` the KV cache's (None: the
    engine's default, the activation dtype). ``draft_model`` with ``num_speculative_tokens``
    (k) turns on draft-model speculative decoding. ``power_cap_w``: per-GPU limit in whole
    watts. ``role``: ``prefill``/``decode`` for a disaggregated pool, ``both`` otherwise."""

    model: str
    hf_repo: str | None = None
    gpu: str
    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    ep: int = Field(1, ge=1)
    dp: int = Field(1, ge=1)
    replicas: int = Field(1, ge=1)
    max_num_seqs: int = Field(256, ge=1)
    max_num_batched_tokens: int = Field(8192, ge=1)
    chunked_prefill: bool = True
    prefix_caching: bool = False
    dtype: Dtype = "bf16"
    kv_dtype: Literal["fp8"] | None = None
    draft_model: str | None = None
    num_speculative_tokens: int = Field(0, ge=0)
    power_cap_w: float | None = Field(None, gt=0)
    role: Role = "both"
    kv_connector: str = "NixlConnector"
    port: int = Field(8000, ge=1, le=65535)
    max_loras: int | None = Field(None, ge=1)
    """LoRA adapters resident on the GPU and per batch (None: no LoRA)."""
    max_lora_rank: int | None = Field(None, ge=1)
    max_cpu_loras: int | None = Field(None, ge=1)
    """LoRA adapters cached in host memory (>= ``max_loras``)."""

    @property
    def gpus_per_server(self) -> int:
        return self.tp * self.pp * self.dp


class TrainingLayout(_Record):
    """One training job. World size is ``tp * pp * dp * cp``; ``ep`` re-partitions the same
    GPUs for the MoE blocks. ``vpp``: virtual pipeline stages per pipeline rank (1: no
    interleaving). ``micro_batch`` sequences per micro-batch per data-parallel rank;
    ``global_batch`` sequences per optimizer step. ``zero``: 0 replicated optimizer,
    1/2 sharded optimizer states (and gradients), 3 parameters sharded too (FSDP)."""

    model: str
    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    dp: int = Field(1, ge=1)
    cp: int = Field(1, ge=1)
    ep: int = Field(1, ge=1)
    vpp: int = Field(1, ge=1)
    micro_batch: int = Field(1, ge=1)
    global_batch: int = Field(ge=1)
    seq_len: int = Field(ge=1)
    recompute: Literal["none", "selective", "full"] = "selective"
    zero: Literal[0, 1, 2, 3] = 1
    offload: bool = False
    dtype: Dtype = "bf16"

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp * self.cp

    @property
    def grad_accum(self) -> int:
        """Micro-batches per step per data-parallel rank (global / (micro * dp))."""
        return self.global_batch // (self.micro_batch * self.dp)


class EngineCommand(BaseModel):
    """A command as an argument vector, with the files it reads (name -> text)."""

    model_config = ConfigDict(frozen=True)

    argv: tuple[str, ...]
    files: dict[str, str] = Field(default_factory=dict)

    @property
    def line(self) -> str:
        """The command as one shell-quoted line."""
        return shlex.join(self.argv)


# --- checks ----------------------------------------------------------------------------


def _model(name: str) -> ModelSpec:
    from fleetsim.workloads.models import load_model

    return load_model(name)


def hf_repo(d: ServingDeployment) -> str:
    """The repository id engines load: ``d.hf_repo``, else the catalog's, else refused."""
    if d.hf_repo:
        return d.hf_repo
    spec = _model(d.model)
    if spec.name not in HF_REPOS:
        raise ConfigError(f"hf_repo: model {d.model!r} has no Hugging Face repository in the "
                          "catalog; give hf_repo (a repo id or local path)")
    return HF_REPOS[spec.name]


def check_serving(d: ServingDeployment) -> ModelSpec:
    """``d``'s model, after checking that the layout shards it; one-line error naming the field."""
    from fleetsim.hardware.catalog import get_gpu
    from fleetsim.workloads.parallel import ParallelConfig

    spec = _model(d.model)
    get_gpu(d.gpu)
    if d.ep > 1 and (d.tp * d.dp) % d.ep:
        raise ConfigError(f"ep={d.ep} must divide tp*dp={d.tp * d.dp} (experts are spread over "
                          "the server's tensor/data-parallel GPUs)")
    ParallelConfig(tp=d.tp, pp=d.pp, ep=d.ep, dp=d.dp).validate_for(spec)
    if (d.draft_model is None) != (d.num_speculative_tokens == 0):
        raise ConfigError("num_speculative_tokens and draft_model go together: give both "
                          f"(got draft_model={d.draft_model!r}, num_speculative_tokens="
                          f"{d.num_speculative_tokens})")
    if d.power_cap_w is not None:
        _check_cap(d)
    _check_lora(d, spec)
    return spec


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""``max_lora_rank`` values vLLM accepts (``MaxLoRARanks``)."""
LORA_TARGETS_HF = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_TARGETS_TRTLLM = ("attn_q", "attn_k", "attn_v", "attn_dense", "mlp_h_to_4h", "mlp_4h_to_h", "mlp_gate")
"""The projections fleetsim's adapters cover (``workloads.lora.adapter_params_per_rank``),
in Hugging Face/PEFT names and TensorRT-LLM's LoRA module names."""


def _check_lora(d: ServingDeployment, spec: ModelSpec) -> None:
    if d.max_loras is None:
        if d.max_lora_rank is not None or d.max_cpu_loras is not None:
            raise ConfigError("max_lora_rank and max_cpu_loras need max_loras (LoRA serving)")
        return
    if d.max_lora_rank is None:
        raise ConfigError("max_loras needs max_lora_rank (the rank adapter slots are sized for)")
    if d.max_lora_rank > spec.hidden_size:
        raise ConfigError(f"max_lora_rank {d.max_lora_rank} exceeds {spec.name}'s hidden size {spec.hidden_size}")
    if d.max_cpu_loras is not None and d.max_cpu_loras < d.max_loras:
        raise ConfigError(f"max_cpu_loras {d.max_cpu_loras} < max_loras {d.max_loras} (engines cache at least "
                          "the GPU's adapters in host memory)")


def _lora_targets(spec: ModelSpec) -> tuple[str, ...]:
    return LORA_TARGETS_HF if spec.mlp_gated else tuple(t for t in LORA_TARGETS_HF if t != "gate_proj")


def _check_cap(d: ServingDeployment) -> None:
    from fleetsim.calibration.power import power_state
    from fleetsim.hardware.catalog import get_gpu

    assert d.power_cap_w is not None
    if d.power_cap_w != int(d.power_cap_w):
        raise ConfigError(f"power_cap_w {d.power_cap_w} W: nvidia-smi -pl takes whole watts")
    power_state(get_gpu(d.gpu), d.power_cap_w)


def check_training(t: TrainingLayout) -> ModelSpec:
    """``t``'s model, after checking the layout; one-line error naming the field."""
    from fleetsim.workloads.parallel import ParallelConfig

    spec = _model(t.model)
    ParallelConfig(tp=t.tp, pp=t.pp, dp=t.dp, cp=t.cp, ep=t.ep,
                   sequence_parallel=t.tp > 1).validate_for(spec)
    if t.vpp > 1:
        if t.pp == 1:
            raise ConfigError(f"vpp={t.vpp} needs pp > 1 (interleaving splits pipeline stages)")
        if spec.num_layers % (t.pp * t.vpp):
            raise ConfigError(f"vpp={t.vpp}: pp*vpp={t.pp * t.vpp} does not divide "
                              f"{spec.num_layers} layers of {spec.name}")
    if t.global_batch % (t.micro_batch * t.dp):
        raise ConfigError(f"global_batch={t.global_batch} is not a multiple of micro_batch*dp="
                          f"{t.micro_batch * t.dp}")
    shard = t.tp * (2 * t.cp if t.cp > 1 else 1)
    if t.seq_len % shard:
        raise ConfigError(f"seq_len={t.seq_len} is not a multiple of {shard} (tp for sequence "
                          "parallelism, times 2*cp for context parallelism's load-balanced chunks)")
    return spec


# --- serving engines -------------------------------------------------------------------


def vllm_command(d: ServingDeployment) -> EngineCommand:
    """``vllm serve`` for one server of ``d`` (run it ``d.replicas`` times)."""
    check_serving(d)
    if d.ep > 1 and d.ep != d.tp * d.dp:
        raise ConfigError(f"ep={d.ep}: vLLM's --enable-expert-parallel spreads experts over all "
                          f"tp*dp={d.tp * d.dp} GPUs; use ep=1 or ep={d.tp * d.dp}")
    a = ["vllm", "serve", hf_repo(d), "--port", str(d.port),
         "--tensor-parallel-size", str(d.tp), "--pipeline-parallel-size", str(d.pp)]
    if d.dp > 1:
        a += ["--data-parallel-size", str(d.dp)]
    if d.ep > 1:
        a.append("--enable-expert-parallel")
    a += ["--dtype", "float16" if d.dtype == "fp16" else "bfloat16"]
    if d.dtype == "fp8":
        a += ["--quantization", "fp8"]
    if d.kv_dtype == "fp8":
        a += ["--kv-cache-dtype", "fp8"]
    a += ["--max-num-seqs", str(d.max_num_seqs),
          "--max-num-batched-tokens", str(d.max_num_batched_tokens),
          "--enable-chunked-prefill" if d.chunked_prefill else "--no-enable-chunked-prefill",
          "--enable-prefix-caching" if d.prefix_caching else "--no-enable-prefix-caching"]
    if d.draft_model:
        spec = {"method": "draft_model", "model": d.draft_model,
                "num_speculative_tokens": d.num_speculative_tokens}
        a += ["--speculative-config", json.dumps(spec, sort_keys=True)]
    if d.role != "both":
        kv = {"kv_connector": d.kv_connector,
              "kv_role": "kv_producer" if d.role == "prefill" else "kv_consumer"}
        a += ["--kv-transfer-config", json.dumps(kv, sort_keys=True)]
    if d.max_loras is not None:
        if d.max_lora_rank not in VLLM_LORA_RANKS:
            raise ConfigError(f"max_lora_rank {d.max_lora_rank}: vLLM accepts "
                              f"{', '.join(map(str, VLLM_LORA_RANKS))}")
        a += ["--enable-lora", "--max-loras", str(d.max_loras), "--max-lora-rank", str(d.max_lora_rank)]
        if d.max_cpu_loras is not None:
            a += ["--max-cpu-loras", str(d.max_cpu_loras)]
    return EngineCommand(argv=tuple(a))


def sglang_command(d: ServingDeployment) -> EngineCommand:
    """``python -m sglang.launch_server`` for one server of ``d``. SGLang's chunked prefill
    size is the token budget (-1 turns chunking off); its radix prefix cache is on unless
    ``--disable-radix-cache``."""
    spec = check_serving(d)
    a = ["python", "-m", "sglang.launch_server", "--model-path", hf_repo(d),
         "--port", str(d.port), "--tp-size", str(d.tp)]
    if d.pp > 1:
        a += ["--pp-size", str(d.pp)]
    if d.dp > 1:
        a += ["--dp-size", str(d.dp)]
    if d.ep > 1:
        a += ["--ep-size", str(d.ep)]
    a += ["--dtype", "float16" if d.dtype == "fp16" else "bfloat16"]
    if d.dtype == "fp8":
        a += ["--quantization", "fp8"]
    if d.kv_dtype == "fp8":
        a += ["--kv-cache-dtype", "fp8_e4m3"]
    a += ["--max-running-requests", str(d.max_num_seqs),
          "--chunked-prefill-size", str(d.max_num_batched_tokens if d.chunked_prefill else -1)]
    if not d.chunked_prefill:
        a += ["--max-prefill-tokens", str(d.max_num_batched_tokens)]
    if not d.prefix_caching:
        a.append("--disable-radix-cache")
    if d.draft_model:
        k = d.num_speculative_tokens
        a += ["--speculative-algorithm", "STANDALONE", "--speculative-draft-model-path",
              d.draft_model, "--speculative-num-steps", str(k), "--speculative-eagle-topk", "1",
              "--speculative-num-draft-tokens", str(k + 1)]
    if d.role != "both":
        a += ["--disaggregation-mode", d.role]
    if d.max_loras is not None:
        a += ["--enable-lora", "--max-loras-per-batch", str(d.max_loras), "--max-lora-rank", str(d.max_lora_rank)]
        if d.max_cpu_loras is not None:
            a += ["--max-loaded-loras", str(d.max_cpu_loras)]
        a += ["--lora-target-modules", *_lora_targets(spec)]
    return EngineCommand(argv=tuple(a))


TRTLLM_CONFIG = "extra-llm-api-config.yml"


def trtllm_command(d: ServingDeployment) -> EngineCommand:
    """``trtllm-serve`` (PyTorch backend) for one server of ``d`` and its
    ``--extra_llm_api_options`` YAML. TensorRT-LLM's expert parallelism lives inside the
    tensor-parallel group (``moe_tp * ep = tp``); FP8 weights come from an FP8 checkpoint
    (``quant_config``); a ``prefill``/``decode`` role gets a KV ``cache_transceiver_config``
    for ``trtllm-serve disaggregated``."""
    spec = check_serving(d)
    if d.dp > 1:
        raise ConfigError(f"dp={d.dp}: trtllm-serve has no data-parallel flag; use replicas={d.dp}")
    cfg: dict[str, object] = {
        "enable_chunked_prefill": d.chunked_prefill,
        "kv_cache_config": {"enable_block_reuse": d.prefix_caching,
                            **({"dtype": "fp8"} if d.kv_dtype == "fp8" else {})},
    }
    if d.dtype == "fp8":
        cfg["quant_config"] = {"quant_algo": "FP8"}
    if d.draft_model:
        cfg["speculative_config"] = {"decoding_type": "Draft_Target",
                                     "max_draft_len": d.num_speculative_tokens,
                                     "speculative_model_dir": d.draft_model}
        cfg["disable_overlap_scheduler"] = True
    if d.role != "both":
        cfg["cache_transceiver_config"] = {"backend": "DEFAULT"}
    if d.max_loras is not None:
        targets = [t for t in LORA_TARGETS_TRTLLM if spec.mlp_gated or t != "mlp_gate"]
        cfg["lora_config"] = {"max_lora_rank": d.max_lora_rank, "max_loras": d.max_loras,
                              "max_cpu_loras": d.max_cpu_loras or d.max_loras, "lora_target_modules": targets}
    a = ["trtllm-serve", hf_repo(d), "--backend", "pytorch", "--port", str(d.port),
         "--tp_size", str(d.tp), "--pp_size", str(d.pp)]
    if d.ep > 1:
        a += ["--ep_size", str(d.ep)]
    a += ["--max_batch_size", str(d.max_num_seqs), "--max_num_tokens", str(d.max_num_batched_tokens),
          "--extra_llm_api_options", TRTLLM_CONFIG]
    return EngineCommand(argv=tuple(a), files={TRTLLM_CONFIG: yaml.safe_dump(cfg, sort_keys=True)})


def power_cap_command(d: ServingDeployment, first_gpu: int = 0) -> EngineCommand | None:
    """``nvidia-smi -i IDS -pl W`` for the GPUs of one server (ids ``first_gpu`` ...), for the
    operator to run as root; None when ``d`` has no cap. fleetsim never runs it."""
    check_serving(d)
    if d.power_cap_w is None:
        return None
    ids = ",".join(str(first_gpu + i) for i in range(d.gpus_per_server))
    return EngineCommand(argv=("nvidia-smi", "-i", ids, "-pl", str(int(d.power_cap_w))))


SERVING_ENGINES = {"vllm": vllm_command, "sglang": sglang_command, "trtllm": trtllm_command}


def serving_command(d: ServingDeployment, engine: str) -> EngineCommand:
    """The command for ``engine`` (vllm, sglang or trtllm)."""
    if engine not in SERVING_ENGINES:
        raise ConfigError(f"engine {engine!r} is not one of {', '.join(SERVING_ENGINES)}")
    return SERVING_ENGINES[engine](d)


# --- training frameworks ---------------------------------------------------------------


def megatron_args(t: TrainingLayout) -> tuple[str, ...]:
    """Megatron-LM ``pretrain_gpt.py`` arguments for ``t``: model shape, parallel degrees,
    batch, recomputation, optimizer sharding and precision (launch with ``world_size`` ranks)."""
    m = check_training(t)
    a = ["--num-layers", str(m.num_layers), "--hidden-size", str(m.hidden_size),
         "--ffn-hidden-size", str(m.intermediate_size), "--num-attention-heads", str(m.num_heads)]
    if not m.is_mla and m.num_kv_heads < m.num_heads:
        a += ["--group-query-attention", "--num-query-groups", str(m.num_kv_heads)]
    if m.is_moe:
        a += ["--num-experts", str(m.num_experts), "--moe-router-topk", str(m.num_experts_per_tok)]
    a += ["--seq-length", str(t.seq_len), "--max-position-embeddings",
          str(max(t.seq_len, m.max_position_embeddings)),
          "--tensor-model-parallel-size", str(t.tp), "--pipeline-model-parallel-size", str(t.pp)]
    if t.vpp > 1:
        a += ["--num-layers-per-virtual-pipeline-stage", str(m.num_layers // (t.pp * t.vpp))]
    if t.cp > 1:
        a += ["--context-parallel-size", str(t.cp)]
    if t.ep > 1:
        a += ["--expert-model-parallel-size", str(t.ep)]
    if t.tp > 1:
        a.append("--sequence-parallel")
    a += ["--micro-batch-size", str(t.micro_batch), "--global-batch-size", str(t.global_batch)]
    if t.recompute == "selective":
        a += ["--recompute-granularity", "selective"]
    elif t.recompute == "full":
        a += ["--recompute-granularity", "full", "--recompute-method", "uniform",
              "--recompute-num-layers", "1"]
    if t.zero == 3:
        a.append("--use-torch-fsdp2")
    elif t.zero >= 1:
        a.append("--use-distributed-optimizer")
    if t.offload:
        a += ["--optimizer-cpu-offload"]
    a.append("--fp16" if t.dtype == "fp16" else "--bf16")
    if t.dtype == "fp8":
        a += ["--fp8-format", "hybrid"]
    return tuple(a)


def megatron_command(t: TrainingLayout) -> EngineCommand:
    """``torchrun ... pretrain_gpt.py`` with ``megatron_args``; ``--nproc-per-node`` is left to
    the launcher (the world size is ``t.world_size``)."""
    return EngineCommand(argv=("torchrun", "pretrain_gpt.py", *megatron_args(t)))


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def torchtitan_toml(t: TrainingLayout) -> str:
    """A torchtitan job config (TOML) for ``t``: ``dp`` is FSDP-sharded for ZeRO >= 1
    (``fsdp_reshard_after_forward = "never"`` keeps parameters whole between forward and
    backward, ZeRO-2; ``"always"`` reshards, ZeRO-3) and replicated (DDP) for ZeRO 0.
    Without pipelining a micro-batch is ``local_batch_size``; with it, each rank's
    ``global_batch / dp`` sequences split into ``pipeline_parallel_microbatch_size`` pieces."""
    m = check_training(t)
    par: dict[str, object] = {
        "data_parallel_replicate_degree": t.dp if t.zero == 0 else 1,
        "data_parallel_shard_degree": 1 if t.zero == 0 else t.dp,
        "tensor_parallel_degree": t.tp,
        "pipeline_parallel_degree": t.pp,
        "context_parallel_degree": t.cp,
        "expert_parallel_degree": t.ep,
    }
    if t.zero:
        par["fsdp_reshard_after_forward"] = "always" if t.zero == 3 else "never"
    if t.pp > 1:
        par["pipeline_parallel_schedule"] = "Interleaved1F1B" if t.vpp > 1 else "1F1B"
        par["pipeline_parallel_microbatch_size"] = t.micro_batch
        par["pipeline_parallel_layers_per_stage"] = m.num_layers // (t.pp * t.vpp)
    local = t.global_batch // t.dp if t.pp > 1 else t.micro_batch
    train: dict[str, object] = {"local_batch_size": local, "global_batch_size": t.global_batch,
                                "seq_len": t.seq_len,
                                "mixed_precision_param": "float16" if t.dtype == "fp16" else "bfloat16"}
    if t.offload:
        train["enable_cpu_offload"] = True
    sections: dict[str, dict[str, object]] = {"parallelism": par, "training": train,
                                              "activation_checkpoint": {"mode": t.recompute}}
    if t.dtype == "fp8":
        sections["model"] = {"converters": ["float8"]}
    out = []
    for name, keys in sections.items():
        out.append(f"[{name}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in keys.items()]
        out.append("")
    return "\n".join(out)
