#!/bin/bash
# Board power of whole HF transformers forward passes and training steps (hf_power.py) on a lent GPU.
# usage (repo root): bash calibration/bench/engines/run_power_e2e.sh TAG [full|smoke] [GPU] [BUDGET_S]
#   full:  hf_power.py within BUDGET_S (default 360; the whole call stays under 7 minutes); results
#          are copied into the repo layout under $OUT: $OUT/calibration/validation/GPU/engines/
#          (hf_power.csv, hf_power_meta.json, hf_power_samples.csv.gz, hf_power_run.log,
#          hf_power_skipped.txt when a point was skipped)
#   smoke: CPU smoke, the pytest file, then the GPU plan's smoke shapes on 2-layer real-width
#          models with 0.3 s windows; results under $OUT/smoke/ only (not the repo layout)
# Also $OUT/TAG.log (everything printed) and $OUT/TAG.tar.gz (the working folder).
set -u -o pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
TAG=$1; MODE=${2:-full}; GPU=${3:-H200-SXM}; BUDGET=${4:-360}
OUTD=${OUT:-/tmp/out}; mkdir -p "$OUTD"
E=calibration/bench/engines
W=/tmp/hf_power/$GPU
rm -rf /tmp/hf_power; mkdir -p "$W"
LOG=$OUTD/$TAG.log
T0=$(date +%s)
step() { echo "== $1 rc=$2 at $(( $(date +%s) - T0 )) s"; }
{
date -u
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,clocks.sm,clocks.mem,power.limit,power.default_limit,temperature.gpu,power.draw,memory.total --format=csv
python3 -c 'import sys,torch,transformers;print("python",sys.version.split()[0],"torch",torch.__version__,"cuda",torch.version.cuda,"transformers",transformers.__version__,torch.cuda.get_device_name(0))'
python3 -m pip list 2>/dev/null | grep -iE '^(torch|transformers|nvidia-ml-py|pynvml) '
if [ "$MODE" = smoke ]; then
  timeout 120 python3 $E/hf_power.py --out /tmp/hf_power/cpu --device cpu --smoke; step hf_power_cpu_smoke $?
  timeout 150 python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_bench_hf_power.py; step pytest $?
  timeout 150 python3 $E/hf_power.py --out $W --smoke --window-s 0.3 --warm-s 0.2 --idle-s 0.5 --budget-s 120; step hf_power_gpu_smoke $?
else
  timeout $((BUDGET + 50)) python3 $E/hf_power.py --out $W --budget-s $BUDGET; step hf_power $?
fi
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
} 2>&1 | grep -v -e FutureWarning -e 'return forward_call' -e 'warnings.warn(' | tee "$LOG"
cp "$LOG" "$W/hf_power_run.log"
[ -f "$W/skipped.txt" ] && mv "$W/skipped.txt" "$W/hf_power_skipped.txt"
[ -f "$W/hf_power_samples.csv" ] && gzip -f "$W/hf_power_samples.csv"
tar czf "$OUTD/$TAG.tar.gz" -C /tmp/hf_power .
if [ "$MODE" = smoke ]; then
  R=$OUTD/smoke
else
  R=$OUTD/calibration/validation/$GPU/engines
fi
mkdir -p "$R"
for f in hf_power.csv hf_power_meta.json hf_power_samples.csv.gz hf_power_run.log hf_power_skipped.txt; do
  [ -f "$W/$f" ] && cp "$W/$f" "$R/"
done
[ -f "$W/hf_power.csv" ] && echo "hf_power.csv: $(( $(wc -l <"$W/hf_power.csv") - 1 )) rows -> $R"
cat "$W/hf_power_skipped.txt" 2>/dev/null | head -20
