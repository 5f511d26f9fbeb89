#!/bin/bash
# Engine ground truth (HF transformers eager / CUDA graph / torch.compile) on a lent GPU in one call.
# usage: calibration/bench/engines/run_engines.sh TAG [smoke|full] [GPU]
#   smoke: real configs, one or two tiny shapes per mode, results under /tmp (not the repo)
#   full:  writes calibration/validation/<GPU>/engines/ (GPU default H200-SXM)
# Everything to bring back lands in $OUT/TAG.tar.gz and $OUT/TAG.log.
set -u -o pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
TAG=$1; MODE=${2:-full}; GPU=${3:-H200-SXM}
OUTD=${OUT:-/tmp/out}; mkdir -p "$OUTD"
E=calibration/bench/engines
V=calibration/validation/$GPU/engines
[ "$MODE" = smoke ] && V=/tmp/engines_smoke
rm -rf "$V"; mkdir -p "$V"
LOG=$OUTD/$TAG.log
T0=$(date +%s)
step() { echo "== $1 rc=$2 at $(( $(date +%s) - T0 )) s"; }
{
date -u
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,clocks.sm,power.limit,memory.total --format=csv
python3 -c 'import sys,torch,transformers,triton;print("python",sys.version.split()[0],"torch",torch.__version__,"cuda",torch.version.cuda,"transformers",transformers.__version__,"triton",triton.__version__,torch.cuda.get_device_name(0))'
python3 -m pip list 2>/dev/null | grep -iE '^(torch|transformers|triton|peft|accelerate|safetensors) '
if [ "$MODE" = smoke ]; then
  timeout 170 python3 $E/hf_forward.py --out $V --smoke --profile --budget-s 130; step hf_forward_smoke $?
  timeout 130 python3 $E/hf_train.py --out $V --smoke --profile --budget-s 100; step hf_train_smoke $?
else
  timeout 200 python3 $E/hf_forward.py --out $V --only eager --budget-s 170; step hf_forward_eager $?
  timeout 150 python3 $E/hf_forward.py --out $V --only compile,profile --profile --budget-s 115; step hf_forward_compile_profile $?
  timeout 155 python3 $E/hf_train.py --out $V --profile --budget-s 125; step hf_train $?
fi
nvidia-smi --query-gpu=clocks.sm,temperature.gpu,power.draw --format=csv
} 2>&1 | grep -v -e FutureWarning -e 'return forward_call' -e 'output = func' | tee "$LOG"
cp "$LOG" "$V/run.log"
tar czf "$OUTD/$TAG.tar.gz" -C "$(dirname $V)" "$(basename $V)"
for f in "$V"/*.csv; do [ -f "$f" ] && echo "$(basename $f): $(( $(wc -l <"$f") - 1 )) rows"; done
cat "$V/skipped.txt" 2>/dev/null | head -20
