"""Engine settings of a plan's pools: the server command line (``planner.flags``) and the
``nvidia-smi`` power-cap line when a cap is chosen.

The engine is chosen from the engine profile's name (``sglang*`` -> SGLang,
``trtllm*``/``tensorrt*`` -> TensorRT-LLM, anything else -> vLLM, the profile family the
default ``vllm`` profiles describe). A pool whose model has no public repository, or whose
dtype no engine flag expresses, gets no command and says why in ``engine_flags``.
"""

from __future__ import annotations

from pathlib import Path

from fleetsim.hardware.errors import ConfigError
from fleetsim.planner.flags import ServingDeployment, hf_repo, power_cap_command, serving_command
from fleetsim.planner.serving.records import PoolChoice


def engine_family(profile: str) -> str:
    """``vllm``, ``sglang`` or ``trtllm`` for an engine profile name or YAML path."""
    name = Path(profile).stem.lower()
    if name.startswith("sglang"):
        return "sglang"
    if name.startswith(("trtllm", "tensorrt")):
        return "trtllm"
    return "vllm"


def with_commands(pc: PoolChoice, model: str, dtype: str, kv_dtype: str) -> PoolChoice:
    """``pc`` with ``engine_flags`` (the server's flags after the model), ``command`` (the whole
    line, run once per replica), ``engine_files`` (files the command reads) and
    ``power_cap_command`` (per server, GPUs 0..tp*pp-1 of its node)."""
    try:
        d = ServingDeployment(model=model, gpu=pc.gpu, tp=pc.tp, pp=pc.pp, ep=pc.ep, replicas=pc.replicas,
                              max_num_seqs=pc.max_num_seqs, max_num_batched_tokens=pc.max_num_batched_tokens,
                              dtype=dtype, kv_dtype="fp8" if kv_dtype == "fp8" else None,
                              power_cap_w=None if pc.power_cap_w is None else float(round(pc.power_cap_w)),
                              role=pc.role, max_loras=pc.max_loras, max_lora_rank=pc.max_lora_rank,
                              max_cpu_loras=pc.max_cpu_loras)
        cmd = serving_command(d, engine_family(pc.engine))
        repo = hf_repo(d)
        cap = power_cap_command(d)
    except ConfigError as exc:
        return pc.model_copy(update={"engine_flags": f"(no command: {exc})"})
    flags = cmd.argv[cmd.argv.index(repo) + 1:]
    from shlex import join

    return pc.model_copy(update={"engine_flags": join(flags), "command": cmd.line, "engine_files": cmd.files,
                                 "power_cap_command": None if cap is None else cap.line})
