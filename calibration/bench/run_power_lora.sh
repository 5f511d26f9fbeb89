#!/bin/bash
# Power by occupancy (power_occupancy.py) and LoRA kernels / adapter loads (lora.py) on a lent GPU.
# usage: calibration/bench/run_power_lora.sh TAG [smoke|full] [GPU] [POWER_S] [LORA_S]
#   smoke: CPU smoke of both scripts, the pytest file, the GPU power plan at real shapes with
#          0.2 s windows, the LoRA smoke grid and the largest LoRA points for 15 s
#   full:  power plan twice (--passes 2) within POWER_S, the LoRA grid and loads within LORA_S
# Results: $OUT/TAG.tar.gz (folder GPU/ with the CSVs, *_meta.json, run.log) and $OUT/TAG.log.
set -u -o pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
TAG=$1; MODE=${2:-full}; GPU=${3:-H200-SXM}; PS=${4:-230}; LS=${5:-150}
OUTD=${OUT:-/tmp/out}; mkdir -p "$OUTD"
B=calibration/bench
ROOT=/tmp/power_lora; D=$ROOT/$GPU
rm -rf "$ROOT"; mkdir -p "$D"
LOG=$OUTD/$TAG.log
T0=$(date +%s)
step() { echo "== $1 rc=$2 at $(( $(date +%s) - T0 )) s"; }
{
date -u
nvidia-smi
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,clocks.sm,clocks.mem,power.limit,power.default_limit,temperature.gpu,power.draw,persistence_mode --format=csv
python3 -c 'import sys,torch;print("python",sys.version.split()[0],"torch",torch.__version__,"cuda",torch.version.cuda,torch.cuda.get_device_name(0),"grouped_mm",hasattr(torch,"_grouped_mm"))'
python3 -m pip list 2>/dev/null | grep -iE '^(torch|nvidia-ml-py|numpy|pandas) '
if [ "$MODE" = smoke ]; then
  timeout 90 python3 $B/power_occupancy.py --out $ROOT/cpu --device cpu --smoke; step power_cpu_smoke $?
  timeout 90 python3 $B/lora.py --out $ROOT/cpu --device cpu --smoke; step lora_cpu_smoke $?
  timeout 120 python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_bench_power_lora.py; step pytest $?
  timeout 120 python3 $B/power_occupancy.py --out $D --warm-s 0.1 --window-s 0.25 --budget-s 90; step power_gpu_short $?
  timeout 60 python3 $B/lora.py --out $ROOT/gpu_smoke --smoke --budget-s 30; step lora_gpu_smoke $?
  timeout 60 python3 $B/lora.py --out $D --reverse --budget-s 20; step lora_gpu_reverse_probe $?
else
  timeout $((PS + 40)) python3 $B/power_occupancy.py --out $D --passes 2 --budget-s $PS; step power $?
  timeout $((LS + 40)) python3 $B/lora.py --out $D --budget-s $LS; step lora $?
fi
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
} 2>&1 | tee "$LOG"
cp "$LOG" "$D/run.log"
tar czf "$OUTD/$TAG.tar.gz" -C "$ROOT" .
for f in "$D"/*.csv; do [ -f "$f" ] && echo "$(basename $f): $(( $(wc -l <"$f") - 1 )) rows"; done
cat "$D/skipped.txt" 2>/dev/null | head -20
