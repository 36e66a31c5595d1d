#!/usr/bin/env bash
# The NeRF teacher on a GPU: NeRF teacher on lego 400x400 (standard preset, time-bounded),
# then quality (25 shared test views, fp16 and fp32) and NeRF render time at 800x800.
# Usage (device machine, repo root): bash benchmarks/gpu_teacher.sh DATA_DIR OUT_DIR [PRESET]
# Leaves OUT_DIR/scene (the scene folder), OUT_DIR/scene.tar (it without checkpoints), logs and
# OUT_DIR/bench_nerf_{fp16,fp32}/bench.{md,json}.
set -uo pipefail
DATA=${1:?dataset folder}; OUT=${2:?output folder}; PRESET=${3:-standard}
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } > "$OUT/log.txt" 2>&1
start=$(date +%s)
$PY main.py train "$DATA" --out "$OUT/scene" --preset "$PRESET" --quiet 2>&1 | tee -a "$OUT/log.txt"
echo "train wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/log.txt"
tar -C "$OUT" -cf "$OUT/scene.tar" --exclude=checkpoints scene
for prec in fp16 fp32; do
  $PY main.py bench "$OUT/scene" --backends nerf --size 800 --timing-views 2 --repeats 1 --precision $prec \
      --out "$OUT/bench_nerf_$prec" --quiet 2>&1 | tee -a "$OUT/log.txt"
  rm -f "$OUT/bench_nerf_$prec/bench.csv" "$OUT/bench_nerf_$prec/bench.png"
done
echo "total wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/log.txt"
