#!/bin/bash
# Runs calibration + validation measurements on a lent GPU machine in one call.
# usage: calibration/bench/run_device.sh TAG GPU CAL_S VF_S TB_S [WORLD] [-- extra harness args]
#   TAG: name of the tarball under $OUT; GPU: catalog name (H100-SXM, H200-SXM)
#   CAL_S / VF_S / TB_S: budgets of the harness, validate_forward and train_bench (0 = skip)
#   WORLD: GPUs for collectives / TP=2 validation / DDP training (default 1)
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
TAG=$1; GPU=$2; CAL=$3; VF=$4; TB=$5; WORLD=${6:-1}; shift 6 2>/dev/null || shift $#
[ "${1:-}" = "--" ] && shift
OUTD=${OUT:-/tmp/out}; mkdir -p "$OUTD"
P=calibration/profiles/$GPU; V=calibration/validation/$GPU; mkdir -p $P $V
LOG=$OUTD/$TAG.log
{
date -u; nvidia-smi; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit --format=csv
python3 -c 'import torch,sys;print("torch",torch.__version__,"cuda",torch.version.cuda,"gpus",torch.cuda.device_count(),torch.cuda.get_device_name(0),"py",sys.version.split()[0])'
python3 -c 'import pynvml' && echo pynvml ok
} >"$LOG" 2>&1
T0=$(date +%s)
if [ "$CAL" != 0 ]; then
  timeout $((CAL + 40)) python3 calibration/bench/harness.py --out $P --catalog-gpu $GPU --budget-s $CAL "$@" >>"$LOG" 2>&1
  echo "harness rc=$? at $(( $(date +%s) - T0 )) s" >>"$LOG"
fi
if [ "$VF" != 0 ]; then
  timeout $((VF + 30)) python3 calibration/bench/validate_forward.py --out $V --budget-s $VF >>"$LOG" 2>&1
  echo "validate_forward tp1 rc=$? at $(( $(date +%s) - T0 )) s" >>"$LOG"
  if [ "$WORLD" -ge 2 ]; then
    timeout $((VF + 40)) python3 calibration/bench/validate_forward.py --out $V --budget-s $VF --tp 2 >>"$LOG" 2>&1
    echo "validate_forward tp2 rc=$? at $(( $(date +%s) - T0 )) s" >>"$LOG"
  fi
fi
if [ "$TB" != 0 ]; then
  timeout $((TB + 25)) python3 calibration/bench/train_bench.py --out $V --budget-s $TB ${TB_ARGS:---steps 20 --warmup 5} >>"$LOG" 2>&1
  echo "train_bench w1 rc=$? at $(( $(date +%s) - T0 )) s" >>"$LOG"
  if [ "$WORLD" -ge 2 ]; then
    timeout $((TB + 40)) python3 calibration/bench/train_bench.py --out $V --budget-s $TB ${TB_ARGS:---steps 20 --warmup 5} --world $WORLD --only-ok-from $V/training.csv >>"$LOG" 2>&1
    echo "train_bench ddp rc=$? at $(( $(date +%s) - T0 )) s" >>"$LOG"
  fi
fi
tar czf "$OUTD/$TAG.tar.gz" $P $V
cp $P/meta.json "$OUTD/${TAG}_meta.json" 2>/dev/null
grep -v ETA "$LOG" | tail -60
