"""A fresh audit of bad and borderline inputs, written from README.md and docs/ only.

Every CLI case must exit 2 with exactly one stderr line that names the bad input; every
API case must raise a one-line ``FleetsimError`` naming it. The regression tests at the
end pin inputs that used to give a silently wrong or ignored result.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any

import pytest

import fleetsim as fs
from fleetsim import FleetsimError, ParallelConfig, Seq
from fleetsim.cli import main

_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 512,
          "intermediate_size": 1024, "num_attention_heads": 8, "num_key_value_heads": 4,
          "num_hidden_layers": 4, "vocab_size": 1000, "max_position_embeddings": 2048}
_MOE = {**_LLAMA, "model_type": "mixtral", "architectures": ["MixtralForCausalLM"]}
CONFIGS: dict[str, Any] = {
    "ok": _LLAMA,
    "hidden0": {**_LLAMA, "hidden_size": 0},
    "hiddenneg": {**_LLAMA, "hidden_size": -512},
    "hidden513": {**_LLAMA, "hidden_size": 513},
    "hiddenstr": {**_LLAMA, "hidden_size": "512"},
    "hiddennull": {**_LLAMA, "hidden_size": None},
    "hiddenbool": {**_LLAMA, "hidden_size": True},
    "heads0": {**_LLAMA, "num_attention_heads": 0},
    "heads7": {**_LLAMA, "num_attention_heads": 7},
    "kv3": {**_LLAMA, "num_key_value_heads": 3},
    "kv16": {**_LLAMA, "num_key_value_heads": 16},
    "layers0": {**_LLAMA, "num_hidden_layers": 0},
    "layers1p5": {**_LLAMA, "num_hidden_layers": 1.5},
    "layers1e12": {**_LLAMA, "num_hidden_layers": 10**12},
    "vocab0": {**_LLAMA, "vocab_size": 0},
    "vocabhuge": {**_LLAMA, "vocab_size": 2**24 + 1},
    "ctx0": {**_LLAMA, "max_position_embeddings": 0},
    "inter_neg": {**_LLAMA, "intermediate_size": -1},
    "nohidden": {k: v for k, v in _LLAMA.items() if k != "hidden_size"},
    "mamba": {**_LLAMA, "model_type": "mamba", "architectures": ["MambaForCausalLM"]},
    "topk9": {**_MOE, "num_local_experts": 8, "num_experts_per_tok": 9},
    "experts0": {**_MOE, "num_local_experts": 0, "num_experts_per_tok": 2},
}
_POOL = "name: lab\npools:\n  - gpu: H100\n"
_W = "name: mine\narrivals: {kind: poisson, rate_rps: 5}\n"
_PO = "prompt: {kind: fixed, tokens: 100}\noutput: {kind: fixed, tokens: 10}\n"
_AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
_FS = "arrival_s,prompt_tokens,output_tokens\n"
FILES: dict[str, str] = {
    "c_ok.yaml": _POOL + "    num_gpus: 8\n",
    "c_100.yaml": _POOL + "    num_gpus: 8\nprice_per_hour_usd: 100\n",
    "c_unknownkey.yaml": _POOL + "    num_gpu: 2\n",
    "c_zero.yaml": _POOL + "    num_gpus: 0\n",
    "c_neg.yaml": _POOL + "    num_nodes: -1\n",
    "c_both.yaml": _POOL + "    num_nodes: 1\n    num_gpus: 8\n",
    "c_nopools.yaml": "name: lab\npools: []\n",
    "c_gpn9.yaml": "name: lab\npools:\n  - system: DGX-H100\n    num_nodes: 1\n    gpus_per_node: 9\n",
    "c_oversub.yaml": _POOL + "    num_gpus: 8\noversubscription: 0.5\n",
    "c_oversubinf.yaml": _POOL + "    num_gpus: 8\noversubscription: .inf\n",
    "c_priceneg.yaml": _POOL + "    num_gpus: 8\nprice_per_hour_usd: -3\n",
    "c_pricenan.yaml": _POOL + "    num_gpus: 8\nprice_per_hour_usd: .nan\n",
    "c_priceinf.yaml": _POOL + "    num_gpus: 8\nprice_per_hour_usd: .inf\n",
    "c_powerinf.yaml": _POOL + "    num_gpus: 8\npower_budget_w: .inf\n",
    "c_badlink.yaml": _POOL + "    num_gpus: 8\nscale_out_link: Infiniband-QDR\n",
    "c_badgpu.yaml": "name: lab\npools:\n  - gpu: H1OO\n    num_gpus: 8\n",
    "c_malformed.yaml": _POOL + "   num_gpus: 8\n",
    "c_list.yaml": "- a\n- b\n",
    "c_empty.yaml": "",
    "c_missingpart.yaml": "name: lab\nparts: [nope.yaml]\npools:\n  - gpu: H100\n    num_gpus: 8\n",
    "c_power0.yaml": _POOL + "    num_gpus: 8\npower_budget_w: 0\n",
    "c_str.yaml": _POOL + "    num_gpus: eight\n",
    "c_float.yaml": _POOL + "    num_gpus: 2.5\n",
    "w_ok.yaml": _W + _PO,
    "w_unknown.yaml": _W + _PO + "foo: 1\n",
    "w_badkind.yaml": "name: mine\narrivals: {kind: poison, rate_rps: 5}\n" + _PO,
    "w_negrate.yaml": "name: mine\narrivals: {kind: poisson, rate_rps: -5}\n" + _PO,
    "w_infrate.yaml": "name: mine\narrivals: {kind: poisson, rate_rps: .inf}\n" + _PO,
    "w_uniform.yaml": _W + "prompt: {kind: uniform, low: 100, high: 10}\noutput: {kind: fixed, tokens: 10}\n",
    "w_quant.yaml": _W + "prompt: {kind: quantiles, probs: [0, 0.5, 0.4, 1], values: [1, 5, 10, 20]}\n"
                         "output: {kind: fixed, tokens: 10}\n",
    "w_quantlen.yaml": _W + "prompt: {kind: quantiles, probs: [0, 1], values: [1, 5, 10]}\n"
                            "output: {kind: fixed, tokens: 10}\n",
    "w_empirical.yaml": _W + "prompt: {kind: empirical, values: []}\noutput: {kind: fixed, tokens: 10}\n",
    "w_sigma.yaml": _W + "prompt: {kind: lognormal, median: 100, sigma: -1}\noutput: {kind: fixed, tokens: 10}\n",
    "w_minmax.yaml": _W + "prompt: {kind: lognormal, median: 100, sigma: 1, min: 500, max: 10}\n"
                          "output: {kind: fixed, tokens: 10}\n",
    "w_missing.yaml": _W + "prompt: {kind: fixed, tokens: 100}\n",
    "w_bad.json": '{"name":"j","arrivals":{"kind":"poisson","rate_rps":5},',
    "w_turns0.yaml": _W + _PO + "sessions: {turns: 0}\n",
    "w_clients0.yaml": "name: mine\narrivals: {kind: closed, num_clients: 0, think_time_s: 1}\n" + _PO,
    "w_prompt0.yaml": _W + "prompt: {kind: fixed, tokens: 0}\noutput: {kind: fixed, tokens: 10}\n",
    "w_tracemissing.yaml": "name: mine\narrivals: {kind: trace, path: nope.jsonl}\n" + _PO,
    "t_azneg.csv": _AZ + "2023-11-16 18:15:46.6805900,-374,44\n",
    "t_azbadts.csv": _AZ + "yesterday,374,44\n",
    "t_azmissing.csv": "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,374\n",
    "t_azfrac.csv": _AZ + "0.0,37.5,44\n",
    "t_azempty.csv": _AZ,
    "t_aznan.csv": _AZ + "0.0,nan,44\n",
    "t_azinfts.csv": _AZ + "inf,10,44\n",
    "t_azhuge.csv": _AZ + "0.0,99999999999999999999,44\n",
    "t_azshort.csv": _AZ + "0.0,10\n",
    "t_unknown.jsonl": '{"arrival_s": 0, "prompt_tokens": 10, "output_tokens": 5, "foo": 1}\n',
    "t_missing.jsonl": '{"arrival_s": 0, "prompt_tokens": 10}\n',
    "t_str.jsonl": '{"arrival_s": "zero", "prompt_tokens": 10, "output_tokens": 5}\n',
    "t_neg.jsonl": '{"arrival_s": 0, "prompt_tokens": 10, "output_tokens": -5}\n',
    "t_negarr.jsonl": '{"arrival_s": -1, "prompt_tokens": 10, "output_tokens": 5}\n',
    "t_nanarr.jsonl": '{"arrival_s": NaN, "prompt_tokens": 10, "output_tokens": 5}\n',
    "t_infarr.jsonl": '{"arrival_s": Infinity, "prompt_tokens": 10, "output_tokens": 5}\n',
    "t_bool.jsonl": '{"arrival_s": 0, "prompt_tokens": true, "output_tokens": 5}\n',
    "t_floattok.jsonl": '{"arrival_s": 0, "prompt_tokens": 10.5, "output_tokens": 5}\n',
    "t_badline.jsonl": '{"arrival_s": 0, "prompt_tokens": 10, "output_tokens": 5}\n{oops\n',
    "t_array.jsonl": "[1,2,3]\n",
    "t_empty.jsonl": "",
    "t_blank.jsonl": "\n\n",
    "t_prefixgt.jsonl": '{"arrival_s": 0, "prompt_tokens": 10, "output_tokens": 5, "prefix_id": 1, "prefix_tokens": 50}\n',
    "t_sysgt.jsonl": '{"arrival_s": 0, "prompt_tokens": 100, "output_tokens": 5, "prefix_id": 1, '
                     '"prefix_tokens": 50, "system_prefix_id": 0, "system_prefix_tokens": 60}\n',
    "t_dupid.jsonl": '{"req_id": 1, "arrival_s": 0, "prompt_tokens": 10, "output_tokens": 5}\n'
                     '{"req_id": 1, "arrival_s": 1, "prompt_tokens": 10, "output_tokens": 5}\n',
    "t_negthink.jsonl": '{"arrival_s": 0, "prompt_tokens": 10, "output_tokens": 5, "client_id": 0, "think_s": -2}\n',
    "t_ok.jsonl": '{"arrival_s": 0, "prompt_tokens": 10, "output_tokens": 5}\n',
    "t_fsbad.csv": _FS + "0,ten,5\n",
    "t_fsunknown.csv": "arrival_s,prompt_tokens,output_tokens,bar\n0,10,5,1\n",
    "t_weird.txt": "hello world\n",
    "t_bin.csv": "\x00\x01\x02garbage",
}
BYTES = {"t_utf16.csv": (_AZ + "0.0,10,4\n").encode("utf-16"),
         "t_latin.csv": _AZ.encode() + b"0.0,10\xe9,4\n", "notjson/config.json": b"{not json",
         "list.json": b"[1,2,3]", "empty.json": b""}


@pytest.fixture(scope="module")
def F(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit_fresh")
    for name, cfg in CONFIGS.items():
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(cfg))
    for name, text in FILES.items():
        (root / name).write_text(text)
    for name, data in BYTES.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(data)
    (root / "emptydir").mkdir()
    return root


P = "plan --model llama-3.1-8b --cluster 1xH100"
S = "simulate --model llama-3.1-8b --cluster 1xH100 --num-requests 20"
S2 = "simulate --model llama-3.1-8b --cluster 2xH100 --num-requests 20"
T = "train --model gpt2-small --cluster 1xH100 --global-batch 8"
T8 = "train --model llama-3.1-8b --cluster 8xH100 --global-batch 16"
M = "train --model mixtral-8x7b --cluster 8xH100 --global-batch 16"

# (command line, text the one error line must contain); {F} is the fixture folder
CLI_CASES: list[tuple[str, str]] = [
    # plan: required flags, names, cluster shorthand
    ("plan", "--model"), ("plan --model llama-3.1-8b", "--cluster"),
    ("plan --model lama-3.1-8b --cluster 1xH100", "lama-3.1-8b"),
    ("plan --model llama-3.1-8b --cluster ''", "cluster ''"),
    ("plan --model llama-3.1-8b --cluster 0xH100", "0xH100"),
    ("plan --model llama-3.1-8b --cluster -1xH100", "--cluster"),
    ("plan --model llama-3.1-8b --cluster 1.5xH100", "1.5"),
    ("plan --model llama-3.1-8b --cluster 8xH100+", "8xH100+"),
    ("plan --model llama-3.1-8b --cluster 8x", "8x"),
    ("plan --model llama-3.1-8b --cluster x8xH100", "x8xH100"),
    ("plan --model llama-3.1-8b --cluster 99999999999999999999xH100", "99999999999999999999"),
    ("plan --model llama-3.1-8b --cluster 2x9xH100", "2x9xH100"),
    ("plan --model llama-3.1-8b --cluster 2x0xH100", "2x0xH100"),
    ("plan --model llama-3.1-8b --cluster 8xNVLink4", "NVLink4"),
    ("plan --model llama-3.1-8b --cluster 8xHBM3", "HBM3"),
    ("plan --model llama-3.1-8b --cluster {F}/nope.yaml", "nope.yaml"),
    ("plan --model llama-3.1-8b --cluster {F}", "audit_fresh"),
    # plan: numeric flags
    (P + " --isl 0", "--isl"), (P + " --isl -5", "--isl"), (P + " --isl 1.5", "--isl"),
    (P + " --isl nan", "--isl"), (P + " --isl 200000", "200212"), (P + " --osl 0", "--osl"),
    (P + " --osl abc", "--osl"), (P + " --isl 100000 --osl 100000", "200000"),
    (P + " --rate 0", "--rate"), (P + " --rate -1", "--rate"), (P + " --rate inf", "--rate"),
    (P + " --rate nan", "--rate"), (P + " --ttft-s 0", "--ttft-s"), (P + " --ttft-s -0.1", "--ttft-s"),
    (P + " --tpot-s nan", "--tpot-s"), (P + " --analytic --tpot-s 1e-9", "TPOT"), (P + " --analytic --ttft-s 1e-9", "TTFT"),
    (P + " --dtype int3", "int3"), (P + " --kv-dtype fp4x", "fp4x"), (P + " --top 0", "--top"),
    (P + " --top -1", "--top"), (P + " --workload nope", "nope"), (P + " --bogus", "--bogus"),
    ("plan --analytic --model llama-3.1-405b --cluster 1xL4", "llama-3.1-405b"),
    # model files
    ("plan --model '' --cluster 1xH100", "config.json"),
    ("plan --model {F}/emptydir --cluster 1xH100", "emptydir"),
    ("plan --model {F}/notjson --cluster 1xH100", "notjson"),
    ("plan --model {F}/list.json --cluster 1xH100", "list.json"),
    ("plan --model {F}/empty.json --cluster 1xH100", "empty.json"),
    *[(f"plan --model {{F}}/{name} --cluster 1xH100", name) for name in CONFIGS if name != "ok"],
    # cluster files
    *[(f"plan --model llama-3.1-8b --cluster {{F}}/{name}", "nope.yaml" if "missingpart" in name else name)
      for name in FILES if name.startswith("c_") and name not in ("c_ok.yaml", "c_100.yaml")],
    # simulate
    (S + " --num-requests 0", "--num-requests"), (S + " --num-requests -3", "--num-requests"),
    (S + " --duration-s 0", "--duration-s"), (S + " --duration-s nan", "--duration-s"),
    (S + " --tp 0", "--tp"), (S + " --tp 3", "tp=3"), (S + " --tp 2", "tp=2"), (S2 + " --tp 3", "tp=3"),
    (S + " --pp 0", "--pp"),
    ("simulate --model llama-3.1-8b --cluster 64xH100 --num-requests 5 --pp 64", "pp=64"),
    (S + " --ep 2", "ep=2"), (S2 + " --ep 2", "ep=2"), (S + " --replicas 0", "--replicas"),
    (S + " --replicas 2", "2 replicas"), (S + " --pd 1p1d", "1 GPU"), (S2 + " --pd 0p1d", "--pd"),
    (S2 + " --pd 1p0d", "--pd"), (S2 + " --pd 2p2d", "2 replicas"), (S2 + " --pd 1x1", "--pd"),
    (S2 + " --pd 1p1d --replicas 2", "--replicas"), (S + " --gpu A100", "A100"), (S + " --gpu H1OO", "H1OO"),
    (S + " --scheduler sglang", "sglang"), (S + " --router random", "random"),
    (S + " --max-num-seqs 0", "--max-num-seqs"), (S + " --max-batched-tokens 0", "--max-batched-tokens"),
    (S + " --block-size 0", "--block-size"), (S + " --block-size 1000000", "block_size"),
    (S + " --gpu-memory-utilization 0", "--gpu-memory-utilization"),
    (S + " --gpu-memory-utilization 1.5", "--gpu-memory-utilization"),
    (S + " --gpu-memory-utilization 0.01", "does not fit"), (S + " --preemption drop", "drop"),
    (S + " --swap-space-gib -1", "--swap-space-gib"), (S + " --spec-decode ngram:k=0", "k=0"),
    (S + " --spec-decode ngram:alpha=1.5", "alpha=1.5"), (S + " --spec-decode ngram:alpha=0", "alpha=0"),
    (S + " --spec-decode ngram:k=4,beta=1", "beta=1"), (S + " --spec-decode ngram:k", "'k'"),
    (S + " --spec-decode llama-3.1-70b", "llama-3.1-70b"), (S + " --spec-decode llama-3.1-8b", "llama-3.1-8b"),
    (S + " --spec-decode gpt2", "gpt2"), (S + " --spec-decode nope-model", "nope-model"),
    (S + " --spec-decode ''", "--spec-decode"), (S + " --dtype int3", "int3"),
    (S + " --sched-overhead-s -1", "--sched-overhead-s"), (S + " --queue-limit -1", "--queue-limit"),
    (S + " --max-sim-time-s 0", "--max-sim-time-s"), (S + " --ttft-slo-s 0", "--ttft-slo-s"),
    (S + " --tpot-slo-s -1", "--tpot-slo-s"), (S + " --seed -1", "--seed"), (S + " --seed 1.5", "--seed"),
    (S + " --out {F}/t_ok.jsonl", "t_ok.jsonl"), (S + " --out /proc/nope/x", "/proc/nope/x"),
    (S + " --scheduler static --prefix-caching", "prefix_caching"),
    # workload specs
    (S + " --workload nope", "nope"), (S + " --workload poisson:rate=5", "isl="),
    (S + " --workload poisson:rate=5,isl=0,osl=1", "isl=0"), (S + " --workload poisson:rate=0,isl=10,osl=1", "rate=0"),
    (S + " --workload poisson:rate=5,isl=10,osl=1,foo=2", "foo"), (S + " --workload gamma:rate=5,isl=10,osl=1", "cv="),
    (S + " --workload gamma:rate=5,cv=0,isl=10,osl=1", "cv=0"), (S + " --workload gamma:rate=5,cv=-1,isl=10,osl=1", "cv=-1"),
    (S + " --workload constant:rate=inf,isl=10,osl=1", "rate=inf"), (S + " --workload closed:clients=0,isl=10,osl=1", "clients=0"),
    (S + " --workload closed:clients=2,think=-1,isl=10,osl=1", "think=-1"),
    (S + " --workload 'poisson:rate=5,isl=uniform(10,5),osl=1'", "uniform(10,5)"),
    (S + " --workload 'poisson:rate=5,isl=uniform(10),osl=1'", "uniform(10)"),
    (S + " --workload 'poisson:rate=5,isl=lognormal(100,-1),osl=1'", "lognormal(100,-1)"),
    (S + " --workload 'poisson:rate=5,isl=lognormal(100,1,10,5),osl=1'", "lognormal(100,1,10,5)"),
    (S + " --workload 'poisson:rate=5,isl=lognormal(100,1,0,5000),osl=1'", "lognormal(100,1,0,5000)"),
    (S + " --workload 'poisson:rate=5,isl=fixed(0),osl=1'", "fixed(0)"),
    (S + " --workload 'poisson:rate=5,isl=fixed(1.5),osl=1'", "fixed(1.5)"),
    (S + " --workload 'poisson:rate=5,isl=empirical(nope.csv),osl=1'", "nope.csv"),
    (S + " --workload 'poisson:rate=5,isl=(10,osl=1'", "("), (S + " --workload poisson:rate=5,isl=10,osl=1,", "bad token"),
    (S + " --workload poisson:rate=5,,isl=10,osl=1", "bad token"),
    (S + " --workload poisson:rate=5,rate=6,isl=10,osl=1", "rate=6"), (S + " --workload poisson:", "poisson:"),
    (S + " --workload :rate=5", ":rate=5"), (S + " --workload azure-conv:turns=0", "turns=0"),
    (S + " --workload azure-conv:turns=2,system=-5", "system=-5"), (S + " --workload azure-conv:cv=0", "cv=0"),
    (S + " --workload azure-conv:rate=-1", "rate=-1"), (S + " --workload trace:path=nope.jsonl", "nope.jsonl"),
    (S + " --workload trace:path={F}/t_ok.jsonl,scale=0", "scale=0"),
    (S + " --workload trace:path={F}/t_ok.jsonl,scale=-1", "scale=-1"),
    (S + " --workload poisson:rate=5,isl=200000,osl=10", "context"),
    (S + " --workload poisson:rate=5,isl=100,osl=1000000", "context"), (S + " --workload poisson:rate=5,isl=100,osl=0", "osl=0"),
    # workload and trace files
    *[(S + f" --workload {{F}}/{name}", "nope.jsonl" if "tracemissing" in name else name)
      for name in [*FILES, *BYTES] if name.startswith(("w_", "t_")) and name not in ("w_ok.yaml", "t_ok.jsonl")],
    # train
    ("train --model gpt2-small --cluster 1xH100", "--global-batch"), (T + " --global-batch 0", "--global-batch"),
    (T + " --global-batch 7 --micro-batch 2", "global_batch=7"), (T + " --micro-batch 0", "--micro-batch"),
    (T + " --micro-batch 16", "micro_batch"), (T + " --tp 0", "--tp"), (T + " --tp 2", "tp*cp*pp = 2"),
    (T8 + " --tp 3", "3"), (T8 + " --tp 16", "16"), (T8 + " --tp 8 --pp 2", "16"), (T8 + " --pp 64", "64"),
    ("train --model llama-3.1-8b --cluster 64xH100 --global-batch 64 --pp 64", "pp*vpp = 64"),
    (T8 + " --dp 3", "dp = 1*1*1*3"), (T8 + " --dp 16", "16"), (T8 + " --cp 3", "3"),
    (T8 + " --cp 8 --seq-len 100", "seq_len=100"), (T8 + " --cp 2 --seq-len 2047", "seq_len=2047"),
    (T8 + " --ep 2", "ep=2"), (M + " --ep 3", "ep=3"), (M + " --ep 16", "ep=16"),
    (T8 + " --vpp 2", "interleaved"), (T8 + " --vpp 0", "--vpp"), (T8 + " --pp 2 --vpp 2 --schedule 1f1b", "--vpp 2"),
    (T8 + " --schedule interleaved", "interleaved"), (T8 + " --pp 4 --vpp 16", "4*16"),
    (T8 + " --seq-len 0", "--seq-len"), (T8 + " --seq-len 1000000", "seq_len"), (T8 + " --recompute some", "some"),
    (T8 + " --zero 4", "--zero"), (T8 + " --fsdp --zero 1", "zero=1"), (T8 + " --fsdp --zero 2", "zero=2"),
    (T8 + " --offload-params cpu", "offload_params"), (T8 + " --offload disk", "disk"), (T8 + " --dtype fp4", "fp4"),
    ("train --model gpt2-small --cluster 1xA100 --global-batch 8 --dtype fp8", "fp8"),
    ("train --model gpt2-small --cluster 1xV100 --global-batch 8", "bf16"),
    (T8 + " --precision fp32", "fp32"), (T8 + " --attention sdpa", "sdpa"), (T8 + " --execution jit", "jit"),
    (T8 + " --placement tp,pp", "tp,pp"), (T8 + " --placement tp,tp,pp,dp", "tp,tp,pp,dp"),
    (T8 + " --placement tp,cp,pp,xx", "xx"), (T8 + " --placement ''", "--placement"),
    (T8 + " --tokens 0", "--tokens"), (T8 + " --tokens -1", "--tokens"), (T8 + " --tokens inf", "--tokens"),
    (T + " --out {F}/t_ok.jsonl", "t_ok.jsonl"), (T + " --out /proc/nope/x", "/proc/nope/x"),
    ("train --model llama-3.1-405b --cluster 1xH100 --global-batch 8", "GiB"),
    ("train --model {F}/ok --cluster 8xH100 --global-batch 8 --pp 8", "num_layers=4"),
    ("train --model {F}/ok --cluster 8xH100 --global-batch 8 --pp 4 --vpp 2", "4*2"),
    # specs, validate, calibrate (no GPU here), dashboard flags, top level
    ("specs", "what"), ("specs gpuz", "gpuz"), ("specs show", "NAME"), ("specs show H1OO", "H1OO"),
    ("specs show ''", "NAME"), ("specs cluster", "NAME"), ("specs cluster 0xH100", "0xH100"),
    ("specs cluster {F}/c_malformed.yaml", "c_malformed.yaml"), ("specs cluster {F}/c_priceinf.yaml", "price_per_hour_usd"),
    ("specs gpus extra", "extra"),
    ("validate --only opz", "opz"), ("validate --only ''", "--only"), ("validate --gpu H1OO", "H1OO"),
    ("validate --gpu L4", "L4"), ("validate --validation-dir {F}/nope", "nope"),
    ("validate --validation-dir {F}/t_ok.jsonl", "t_ok.jsonl"), ("validate --profile-dir {F}/nope", "--profile-dir"),
    ("validate --validation-dir {F}/emptydir", "emptydir"),
    ("validate --published-dir {F}/nope --only training", "--published-dir"),
    ("validate --csv-dir {F}/t_ok.jsonl --only ops", "t_ok.jsonl"), ("validate --csv-dir /proc/nope/x --only ops", "--csv-dir"),
    ("calibrate --budget-s 0", "--budget-s"), ("calibrate --budget-s -5", "--budget-s"),
    ("calibrate --budget-s nan", "--budget-s"), ("calibrate --only gemz", "gemz"),
    ("calibrate --catalog-gpu H1OO", "--catalog-gpu"), ("calibrate --device tpu", "tpu"),
    ("calibrate --sustained-s -1", "--sustained-s"), ("calibrate --pool-gib 0", "--pool-gib"),
    ("calibrate --out {F}/t_ok.jsonl", "t_ok.jsonl"),
    ("dashboard --port 0", "--port"), ("dashboard --port 70000", "--port"), ("dashboard --port abc", "--port"),
    ("dashboard --bogus", "--bogus"), ("nope", "nope"), ("", "COMMAND"),
]


def _run(line: str, root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(shlex.split(line.replace("{F}", str(root))))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(("line", "needle"), CLI_CASES, ids=[c[0][:90] for c in CLI_CASES])
def test_cli_bad_input_is_one_line(line: str, needle: str, F: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(line, F, capsys)
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err
    assert needle.replace("{F}", str(F)) in lines[0], lines[0]


def test_calibrate_without_torch_or_gpu_says_so(F: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fleetsim.calibration.bench.harness")
    try:
        import torch  # noqa: F401

        pytest.skip("PyTorch is installed here")
    except ImportError:
        pass
    rc, _, err = _run("calibrate", F, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "PyTorch" in err


_M8 = "llama-3.1-8b"
_NAN = float("nan")
API_CASES: list[tuple[str, Any, str]] = [
    ("get_gpu ''", lambda: fs.get_gpu(""), "gpu"),
    ("get_gpu None", lambda: fs.get_gpu(None), "gpu"),
    ("get_gpu 5", lambda: fs.get_gpu(5), "5"),
    ("get_gpu link", lambda: fs.get_gpu("NVLink4"), "NVLink4"),
    ("get_link gpu", lambda: fs.get_link("H100"), "H100"),
    ("get_system gpu", lambda: fs.get_system("H100"), "H100"),
    ("load_model None", lambda: fs.load_model(None), "model"),
    ("load_model 3", lambda: fs.load_model(3), "model"),
    ("load_model {}", lambda: fs.load_model({}), "model"),
    ("load_cluster None", lambda: fs.load_cluster(None), "cluster"),
    ("load_cluster 8", lambda: fs.load_cluster(8), "cluster"),
    ("load_cluster {}", lambda: fs.load_cluster({}), "pools"),
    ("load_cluster num_gpus 0", lambda: fs.load_cluster({"pools": [{"gpu": "H100", "num_gpus": 0}]}), "num_gpus"),
    ("load_cluster price inf", lambda: fs.load_cluster({"pools": [{"gpu": "H100", "num_gpus": 2}],
                                                        "price_per_hour_usd": math.inf}), "price_per_hour_usd"),
    ("load_cluster oversub inf", lambda: fs.load_cluster({"pools": [{"gpu": "H100", "num_gpus": 2}],
                                                          "oversubscription": math.inf}), "oversubscription"),
    ("Seq -1", lambda: Seq(-1, 0), "new_tokens"),
    ("Seq nan", lambda: Seq(_NAN, 0), "new_tokens"),
    ("Seq str", lambda: Seq("a", 0), "new_tokens"),
    ("Seq 1.5", lambda: Seq(1.5, 0), "new_tokens"),
    ("Seq ctx -1", lambda: Seq(1, -1), "context"),
    ("Seq bool", lambda: Seq(True, 0), "new_tokens"),
    ("estimate_forward empty", lambda: fs.estimate_forward(_M8, "H100", []), "seq"),
    ("estimate_forward tp 0", lambda: fs.estimate_forward(_M8, "H100", [Seq(10, 0)], tp=0), "tp"),
    ("estimate_forward tp 3", lambda: fs.estimate_forward(_M8, "H100", [Seq(10, 0)], tp=3), "tp"),
    ("estimate_forward tp str", lambda: fs.estimate_forward(_M8, "H100", [Seq(10, 0)], tp="2"), "tp"),
    ("estimate_forward tp bool", lambda: fs.estimate_forward(_M8, "H100", [Seq(10, 0)], tp=True), "tp"),
    ("estimate_forward over context", lambda: fs.estimate_forward(_M8, "H100", [Seq(1, 200000)]), "context"),
    ("estimate_forward bad gpu", lambda: fs.estimate_forward(_M8, "H1OO", [Seq(10, 0)]), "H1OO"),
    ("estimate_forward bad model", lambda: fs.estimate_forward("nope", "H100", [Seq(10, 0)]), "nope"),
    ("estimate_forward bad dtype", lambda: fs.estimate_forward(_M8, "H100", [Seq(10, 0)], dtype="fp9"), "fp9"),
    ("get_cost_model bad", lambda: fs.get_cost_model("H1OO"), "H1OO"),
    ("get_cost_model None", lambda: fs.get_cost_model(None), "gpu"),
    ("get_cost_model int", lambda: fs.get_cost_model(3), "gpu"),
    ("get_workload None", lambda: fs.get_workload(None), "workload"),
    ("get_workload 5", lambda: fs.get_workload(5), "workload"),
    ("get_workload {}", lambda: fs.get_workload({}), "workload"),
    ("get_workload ''", lambda: fs.get_workload(""), "workload"),
    ("get_workload rate 1e400", lambda: fs.get_workload("azure-conv:rate=1e400"), "rate"),
    ("generate n -1", lambda: fs.get_workload("azure-conv").generate(seed=0, num_requests=-1), "num_requests"),
    ("generate seed -1", lambda: fs.get_workload("azure-conv").generate(seed=-1, num_requests=3), "seed"),
    ("generate duration nan", lambda: fs.get_workload("azure-conv").generate(seed=0, duration_s=_NAN), "duration"),
    ("with_rate 0", lambda: fs.get_workload("azure-conv").with_rate(0), "rate"),
    ("with_rate nan", lambda: fs.get_workload("azure-conv").with_rate(_NAN), "rate"),
    ("ParallelConfig tp 0", lambda: ParallelConfig(tp=0), "tp"),
    ("ParallelConfig tp 2.5", lambda: ParallelConfig(tp=2.5), "tp"),
    ("ParallelConfig zero 5", lambda: ParallelConfig(zero=5), "zero"),
    ("ParallelConfig foo", lambda: ParallelConfig(foo=1), "foo"),
    ("Parallel tp 0", lambda: fs.Parallel(tp=0), "tp"),
    ("plan_serving rate 0", lambda: fs.plan_serving(_M8, "1xH100", rate_rps=0), "rate"),
    ("plan_serving rate nan", lambda: fs.plan_serving(_M8, "1xH100", rate_rps=_NAN), "rate"),
    ("plan_serving isl 0", lambda: fs.plan_serving(_M8, "1xH100", isl=0), "isl"),
    ("plan_serving isl 1.5", lambda: fs.plan_serving(_M8, "1xH100", isl=1.5), "isl"),
    ("plan_serving isl bool", lambda: fs.plan_serving(_M8, "1xH100", isl=True), "isl"),
    ("plan_serving tpot -1", lambda: fs.plan_serving(_M8, "1xH100", tpot_s=-1), "tpot"),
    ("plan_serving tpot inf", lambda: fs.plan_serving(_M8, "1xH100", tpot_s=math.inf), "tpot"),
    ("plan_serving dtype", lambda: fs.plan_serving(_M8, "1xH100", dtype="x"), "dtype"),
    ("plan_serving workload", lambda: fs.plan_serving(_M8, "1xH100", workload="nope"), "nope"),
    ("simulate n 0", lambda: fs.simulate_serving(_M8, "1xH100", "azure-conv", num_requests=0), "num_requests"),
    ("simulate n 1.5", lambda: fs.simulate_serving(_M8, "1xH100", "azure-conv", num_requests=1.5), "num_requests"),
    ("simulate slo key", lambda: fs.simulate_serving(_M8, "1xH100", "azure-conv", num_requests=5,
                                                     slo={"ttft": 0.5}), "ttft"),
    ("simulate slo neg", lambda: fs.simulate_serving(_M8, "1xH100", "azure-conv", num_requests=5,
                                                     slo={"ttft_slo_s": -0.5}), "ttft_slo_s"),
    ("simulate slo nan", lambda: fs.simulate_serving(_M8, "1xH100", "azure-conv", num_requests=5,
                                                     slo={"ttft_slo_s": _NAN}), "ttft_slo_s"),
    ("simulate slo float", lambda: fs.simulate_serving(_M8, "1xH100", "azure-conv", num_requests=5, slo=0.5), "slo"),
    ("simulate seed -1", lambda: fs.simulate_serving(_M8, "1xH100", "azure-conv", num_requests=5, seed=-1), "seed"),
    ("simulate seed str", lambda: fs.simulate_serving(_M8, "1xH100", "azure-conv", num_requests=5, seed="a"), "seed"),
    ("simulate deployment str", lambda: fs.simulate_serving(_M8, "1xH100", "azure-conv", num_requests=5,
                                                            deployment="x"), "deployment"),
    ("simulate deployment key", lambda: fs.simulate_serving(_M8, "1xH100", "azure-conv", num_requests=5,
                                                            deployment={"foo": 1}), "Deployment"),
    ("simulate workload None", lambda: fs.simulate_serving(_M8, "1xH100", None, num_requests=5), "workload"),
    ("simulate duration 0", lambda: fs.simulate_serving(_M8, "1xH100", "azure-conv", duration_s=0), "duration"),
    ("train parallel key", lambda: fs.estimate_train_step("gpt2-small", "1xH100", {"tpp": 1}, global_batch=8), "tpp"),
    ("train gb 0", lambda: fs.estimate_train_step("gpt2-small", "1xH100", None, global_batch=0), "global_batch"),
    ("train mb 0", lambda: fs.estimate_train_step("gpt2-small", "1xH100", None, micro_batch=0, global_batch=8),
     "micro_batch"),
    ("train seq 0", lambda: fs.estimate_train_step("gpt2-small", "1xH100", None, global_batch=8, seq_len=0), "seq_len"),
    ("train recompute", lambda: fs.estimate_train_step("gpt2-small", "1xH100", None, global_batch=8, recompute="x"),
     "recompute"),
    ("train schedule", lambda: fs.estimate_train_step("gpt2-small", "1xH100", None, global_batch=8, schedule="x"),
     "schedule"),
    ("train vpp 0", lambda: fs.estimate_train_step("gpt2-small", "1xH100", None, global_batch=8, vpp=0), "vpp"),
    ("train dtype", lambda: fs.estimate_train_step("gpt2-small", "1xH100", None, global_batch=8, dtype="x"), "dtype"),
    ("train fp8 A100", lambda: fs.estimate_train_step("gpt2-small", "1xA100", None, global_batch=8, dtype="fp8"), "fp8"),
    ("train bf16 V100", lambda: fs.estimate_train_step("gpt2-small", "1xV100", None, global_batch=8), "bf16"),
    ("train ep dense", lambda: fs.estimate_train_step("gpt2-small", "2xH100", ParallelConfig(dp=2, ep=2),
                                                      global_batch=8), "ep=2"),
    ("train fsdp zero1", lambda: fs.estimate_train_step("gpt2-small", "2xH100", None, global_batch=8,
                                                        fsdp=True, zero=1), "zero=1"),
    ("train unknown option", lambda: fs.estimate_train_step("gpt2-small", "1xH100", None, global_batch=8,
                                                            zer0=1), "zer0"),
    ("check_serving_result None", lambda: fs.check_serving_result(None), "check_serving_result"),
    ("check_train_estimate 5", lambda: fs.check_train_estimate(5), "check_train_estimate"),
]


@pytest.mark.parametrize(("name", "call", "needle"), API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input_is_one_line(name: str, call: Any, needle: str) -> None:
    with pytest.raises(FleetsimError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg and needle.lower() in msg.lower(), msg


# --- inputs that used to give a silently wrong or ignored result ---------------------


def test_model_with_absurd_layer_count_is_refused_not_hung(F: Path) -> None:
    with pytest.raises(FleetsimError, match="num_layers"):
        fs.load_model(str(F / "layers1e12"))


def test_plan_and_train_cost_use_the_cluster_price(F: Path) -> None:
    plan = fs.plan_serving(_M8, str(F / "c_100.yaml"))
    for row in plan.rows:
        assert row.price_per_hour_usd == pytest.approx(100.0 / 8 * row.gpus_used)
    est = fs.estimate_train_step("gpt2-small", str(F / "c_100.yaml"), None, global_batch=8)
    assert est.price_per_gpu_hour() == pytest.approx(12.5)
    cost = est.train_cost(1e9)
    assert cost["cost_usd"] == pytest.approx(cost["gpu_hours"] * 12.5)


def test_catalog_price_is_unchanged_without_a_cluster_price() -> None:
    plan = fs.plan_serving(_M8, "8xH100")
    h100 = fs.get_gpu("H100").price_per_hour_usd
    assert plan.rows and all(r.price_per_hour_usd == pytest.approx(h100 * r.gpus_used) for r in plan.rows)


def test_fsdp_with_zero3_is_still_accepted() -> None:
    a = fs.estimate_train_step("gpt2-small", "2xH100", None, global_batch=8, fsdp=True, zero=3)
    b = fs.estimate_train_step("gpt2-small", "2xH100", None, global_batch=8, fsdp=True)
    assert a.time_s == b.time_s


def test_small_draft_model_is_accepted_and_changes_the_result() -> None:
    from fleetsim.serving import Deployment, EngineConfig, PoolDeployment

    def run(spec: Any) -> float:
        dep = Deployment(pools=(PoolDeployment(engine=EngineConfig(spec_decode=spec)),))
        return fs.simulate_serving(_M8, "1xH100", "poisson:rate=5,isl=100,osl=50", dep, num_requests=10).summary[
            "tpot_p50_s"]

    assert run({"method": "draft", "draft_model": "llama-3.2-1b"}) != run(None)


def test_uncreatable_out_dir_fails_before_simulating(capsys: pytest.CaptureFixture[str], F: Path) -> None:
    rc, out, err = _run(S + " --out /proc/nope/x", F, capsys)
    assert rc == 2 and out == "" and "cannot create" in err


def test_same_seed_same_output(F: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _run(S + " --seed 7", F, capsys)
    b = _run(S + " --seed 7", F, capsys)
    assert a == b and a[0] == 0
