#!/bin/bash
# Multi-GPU measurements of issue 16 in one call on a lent machine of 2, 4 or 8 GPUs.
# usage: bash calibration/bench/multi/run_multi_gpu.sh TAG [PHASE ...]
#   PHASE: coll (NCCL eager/graph + symm-mem all-reduce at 2/4/8 ranks), tp (TP=2/4/8 forwards),
#          ddp (train_bench.py --world 4/8), fsdp (FSDP2), pp (GPipe/1F1B, 2 and 4 stages);
#          none = "coll tp". Three calls cover everything: (coll tp), (ddp fsdp), (pp).
#          TOTAL_S (default 500) is the whole call's measurement budget, split over the
#          phases (points.py: phase_budgets).
# Writes $OUT/TAG.tar.gz (repo layout: calibration/profiles/<GPU>/collective_<n>.csv,
# topo_<n>gpu.txt, multi_meta.json; calibration/validation/<GPU>/multi/*.csv) and $OUT/TAG.log.
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
TAG=${1:?usage: run_multi_gpu.sh TAG [PHASE ...]}; shift
OUTD=${OUT:-/tmp/out}; mkdir -p "$OUTD"
LOG=$OUTD/$TAG.log
NGPU=$(python3 -c 'import torch; print(torch.cuda.device_count())')
NAME=$(python3 -c 'import torch; print(torch.cuda.get_device_name(0))')
GPU=$(python3 -c "import sys; sys.path.insert(0, 'calibration/bench'); from common import catalog_name_for; print(catalog_name_for('$NAME'))")
P=calibration/profiles/$GPU; V=calibration/validation/$GPU/multi; mkdir -p "$P" "$V"
{
date -u; nvidia-smi; nvidia-smi topo -m
python3 -c 'import torch,sys;print("torch",torch.__version__,"cuda",torch.version.cuda,"nccl",".".join(map(str,torch.cuda.nccl.version())),"gpus",torch.cuda.device_count(),torch.cuda.get_device_name(0),"py",sys.version.split()[0])'
} >"$LOG" 2>&1
nvidia-smi topo -m >"$P/topo_${NGPU}gpu.txt" 2>&1
python3 - "$P/multi_meta.json" "$TAG" "$NGPU" "$*" <<'PY' >>"$LOG" 2>&1
import json, subprocess, sys, datetime, torch
path, tag, n, phases = sys.argv[1:5]
smi = lambda q: subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip().splitlines()
meta = {"tag": tag, "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "gpus": int(n),
        "gpu_name": torch.cuda.get_device_name(0), "driver": (smi("driver_version") or [""])[0], "torch": torch.__version__,
        "cuda": torch.version.cuda, "nccl": ".".join(map(str, torch.cuda.nccl.version())), "phases": phases or "all",
        "topology": subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True).stdout,
        "env": {k: "1" if k != "NCCL_NVLS_ENABLE" else "0" for k in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS")}}
old = {}
try:
    old = json.load(open(path))
except (OSError, ValueError):
    pass
runs = old.get("runs", []) + [{k: meta[k] for k in ("tag", "date", "phases")}]
json.dump({**old, **meta, "runs": runs}, open(path, "w"), indent=2, sort_keys=True)
PY
if [ "$NGPU" -lt 2 ]; then echo "run_multi_gpu: $NGPU GPU(s); multi-GPU phases need 2 or more" | tee -a "$LOG"; exit 2; fi
timeout 580 python3 calibration/bench/multi/run_multi.py --gpu "$GPU" --gpus "$NGPU" --total-s "${TOTAL_S:-500}" "$@" >>"$LOG" 2>&1
echo "run_multi rc=$?" >>"$LOG"
tar czf "$OUTD/$TAG.tar.gz" $P/collective_*.csv $P/collectives_*_meta.json $P/topo_*gpu.txt $P/multi_meta.json $P/skipped.txt $V 2>>"$LOG"
cp "$P/multi_meta.json" "$OUTD/${TAG}_meta.json"
grep -v "ETA\|FutureWarning\|return func" "$LOG" | tail -60
