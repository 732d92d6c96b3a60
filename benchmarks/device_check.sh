#!/usr/bin/env bash
# GPU checks for issue #5 (run on a lent GPU machine through the device tool; writes to $OUT).
# 1. UFM runs on CUDA (linear fast path, ReLU autograd path) + analysis of the CUDA checkpoint;
# 2. epoch timings (benchmarks/bench_real_epoch.py, float32 and bf16 autocast);
# 3. a short --amp true resnet20 run through the CLI;
# 4. the result run (ResNet-20 + 3 linear, digits) on CUDA, stopped by SIGTERM at the
#    time limit if it is not done (it then checkpoints and says "cancelled"), packed into $OUT.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
RESULT_STEPS=${RESULT_STEPS:-20000}; RESULT_LIMIT=${RESULT_LIMIT:-330}
log() { echo "=== $(date +%T) $*"; }
{
log env; nvidia-smi -L; python3 -c "import torch, sklearn; print(torch.__version__, torch.cuda.is_available(), sklearn.__version__)"
log "UFM case A on cuda"
timeout 120 python3 -m dufm_core train --device cuda --runs-dir /tmp/ufm --name caseA | tail -3
timeout 60 python3 -m dufm_core analyze /tmp/ufm/*caseA* | tail -5
log "ReLU UFM on cuda"
timeout 90 python3 -m dufm_core train --device cuda --runs-dir /tmp/ufm --activation relu --width 65 --steps 3000 --name relu | tail -2
log "epoch timings"
timeout 200 python3 -m benchmarks.bench_real_epoch --device cuda --amp --cifar-batches 128,512,2048,10000 --repeats 10 --out "$OUT/bench_real_epoch_cuda.json" 2>&1 | tail -14
log "amp run via the CLI"
timeout 60 python3 -m dufm_core train --model resnet20 --device cuda --amp true --steps 30 --runs-dir /tmp/amp --name amp | tail -2
log "result run: $RESULT_STEPS steps, limit $RESULT_LIMIT s"
timeout -s TERM "$RESULT_LIMIT" python3 -m dufm_core train --model resnet20 --device cuda --steps "$RESULT_STEPS" --checkpoint_points 16 --log_points 400 --runs-dir /tmp/result --name digits-resnet20-L3 | tail -4
sleep 2; cat /tmp/result/*/status.json
log pack
(cd /tmp/result && tar czf - .) | split -b 15M - "$OUT/result.tgz.part-"
ls -la "$OUT"
} 2>&1 | tee "$OUT/device_log.txt"
