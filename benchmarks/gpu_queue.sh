#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md (teacher, KiloNeRF, R2L, bench, fern, demo), back to
# back, as one detached queue on a GPU machine, so that the GPU never idles between commands and
# each timed job runs alone. Usage (device machine, repo root):
#
#   bash benchmarks/gpu_queue.sh start WORK     # starts the queue (setsid) unless it is running/done
#   bash benchmarks/gpu_queue.sh wait WORK OUT [SECONDS] [STAGE]
#        waits until STAGE is done (default: all) or SECONDS pass (default 560), then packs the
#        results of every finished stage into OUT (one tar per stage, weights split < 15 MB)
#
# Stages, in order (each writes WORK/done.<stage> when finished, WORK/queue.log says what ran):
#   teacher   lego 400x400, `train --preset standard` (time budget in the preset), alone
#   teval     the teacher on the 25 test views (fp16 and fp32 renders)
#   kilonerf  `distill --backend kilonerf --preset standard` into the same scene, alone
#   r2l       `distill --backend r2l --preset standard` (benchmarks/gpu_r2l.sh: PSNR-vs-steps curve), alone
#   bench     `bench --backends all --size 800` in fp16 and in fp32 (quality on the 25 test views at
#             400x400, timings at 800x800), R2L execution paths, KiloNeRF frame profile
#   side      fern 3 views plain and --sparse-reg side by side (360 s budget each), and the demo
#             scene (procedural 200 px, quick presets, W128D22 R2L) next to them; then fern
#             test-view evaluation, depth and colour renders of the test views, demo evaluation
# STAGES="side" (a space-separated list) runs only those stages; TRAIN_ARGS adds flags to the
# lego teacher's `train` (e.g. "--cuda-graph").
# Dry run on a CPU: DEVICE=cpu PRESET=tiny LEGO=... FERN=... bash benchmarks/gpu_queue.sh start /tmp/q
set -uo pipefail
cd "$(dirname "$0")/.."
CMD=${1:?start|wait}; W=${2:?work dir}
mkdir -p "$W"
W=$(cd "$W" && pwd)
export PYTHONUNBUFFERED=1 PY=${PY:-python3} PYTHON=${PY:-python3}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-standard}      # lego teacher / KiloNeRF / R2L preset
SIDE_PRESET=${SIDE_PRESET:-standard}   # fern teacher preset
DEMO_PRESET=${DEMO_PRESET:-quick}
FERN_BUDGET=${FERN_BUDGET:-360}
BIG=${BIG:-800}
LEGO=${LEGO:-.device_data/lego400}
FERN=${FERN:-.device_data/fern}
DEMO_SIZE=${DEMO_SIZE:-200}
DEMO_VIEWS=${DEMO_VIEWS:-100,4,8}
S=$W/run/scene   # the lego scene: teacher, then KiloNeRF and R2L added to it

# shellcheck source=benchmarks/queue_lib.sh
. benchmarks/queue_lib.sh

run_teacher() {
  mkdir -p "$W/teacher"
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"; } \
    > "$W/teacher/device.txt" 2>&1
  local t0=$(date +%s)
  $PY main.py train "$LEGO" --out "$S" --preset "$PRESET" --device "$DEVICE" --restart --quiet ${TRAIN_ARGS:-} 2>&1 \
    | tee "$W/teacher/train.log"
  echo "train wall seconds (process start to exit): $(( $(date +%s) - t0 ))" | tee -a "$W/teacher/train.log"
  $PY main.py export "$S" --out "$W/export/teacher" --backends nerf > /dev/null
}

run_teval() {  # the teacher alone on the 25 test views at 400x400 (fp16 and fp32)
  for prec in fp16 fp32; do
    $PY main.py eval "$S" --backend nerf --split test --precision $prec --device "$DEVICE" --data "$LEGO" \
      --json "$W/teacher/eval_test_$prec.json" --quiet 2>&1 | tail -n 3 | tee -a "$W/teacher/eval.log"
  done
}

run_kilonerf() {
  mkdir -p "$W/kilonerf"
  local t0=$(date +%s)
  $PY main.py distill "$S" --backend kilonerf --preset "$PRESET" --device "$DEVICE" --restart --data "$LEGO" 2>&1 \
    | tr '\r' '\n' | grep -v '^ *$' | grep -v '| *[0-9]*/[0-9]* \[' | tee "$W/kilonerf/distill.log"
  echo "distill wall seconds (process start to exit): $(( $(date +%s) - t0 ))" | tee -a "$W/kilonerf/distill.log"
  $PY main.py export "$S" --out "$W/export/kilonerf" --backends kilonerf > /dev/null
}

run_r2l() {
  # gpu_r2l.sh works in OUT/scene = $S (already there, so not copied)
  PHASE=distill DEVICE=$DEVICE bash benchmarks/gpu_r2l.sh "$S" "$W/run" "$LEGO" "$PRESET" > "$W/run/r2l_distill.out" 2>&1
  $PY main.py export "$S" --out "$W/export/r2l" --backends r2l > /dev/null
}

run_bench() {
  for prec in fp16 fp32; do
    $PY main.py bench "$S" --backends all --size "$BIG" --precision $prec --device "$DEVICE" --data "$LEGO" \
      --out "$W/bench_$prec" --quiet 2>&1 | tee "$W/bench_$prec.log"
  done
  # R2L execution paths at 800x800 and the teacher-vs-R2L summary (no distillation: PHASE=eval
  # minus its bench, which bench_fp16 above already made)
  if [ "$DEVICE" = cuda ]; then
    STAGE=bench PYTHON=$PY DEVICE=$DEVICE BIG=$BIG bash benchmarks/gpu_kilonerf.sh "$S" "$W/run" "$LEGO" \
      > "$W/run/kilonerf_bench.out" 2>&1
  fi
}

run_side() {
  mkdir -p "$W/fern" "$W/demo"
  local pids=()
  for v in plain reg; do
    local flag=""; [ $v = reg ] && flag="--sparse-reg"
    ( t0=$(date +%s)
      $PY main.py train "$FERN" --out "$W/fern/$v" --preset "$SIDE_PRESET" --factor 8 --views 3 $flag \
        --time-budget "$FERN_BUDGET" --device "$DEVICE" --restart --quiet > "$W/fern/train_$v.log" 2>&1
      echo "train wall seconds: $(( $(date +%s) - t0 ))" >> "$W/fern/train_$v.log" ) &
    pids+=($!)
  done
  ( set -e
    t0=$(date +%s)
    $PY main.py make-scene "$W/demo/data" --size "$DEMO_SIZE" --views "$DEMO_VIEWS"
    $PY main.py train "$W/demo/data" --out "$W/demo/scene" --preset "$DEMO_PRESET" --device "$DEVICE" --restart --quiet
    echo "teacher done at $(( $(date +%s) - t0 )) s"
    $PY main.py distill "$W/demo/scene" --backend kilonerf --preset "$DEMO_PRESET" --device "$DEVICE" --restart --quiet
    echo "kilonerf done at $(( $(date +%s) - t0 )) s"
    $PY main.py distill "$W/demo/scene" --backend r2l --preset "$DEMO_PRESET" --device "$DEVICE" --restart --quiet
    echo "r2l done at $(( $(date +%s) - t0 )) s"
  ) > "$W/demo/train.log" 2>&1 &
  pids+=($!)
  wait "${pids[@]}"
  for v in plain reg; do
    $PY main.py eval "$W/fern/$v" --split test --device "$DEVICE" --json "$W/fern/eval_$v.json" --quiet \
      > "$W/fern/eval_$v.txt" 2>&1
    $PY main.py render "$W/fern/$v" --path test --output depth --out "$W/fern/depth_$v" --device "$DEVICE" --quiet
    $PY main.py render "$W/fern/$v" --path test --out "$W/fern/rgb_$v" --device "$DEVICE" --quiet
  done
  $PY main.py eval "$W/demo/scene" --backend all --device "$DEVICE" --json "$W/demo/eval.json" --quiet \
    > "$W/demo/eval.txt" 2>&1
  $PY main.py export "$W/demo/scene" --out "$W/export/demo" > /dev/null
}

queue() {
  for st in ${STAGES:-teacher kilonerf r2l bench side}; do
    queue_stage "$st"
  done
  queue_finish
}

pack() {  # pack finished stages' results into $1 (small files only; weights as split tars)
  local out=$1
  QUEUE_PACK_EXCLUDE="! -path ./export/* ! -path ./demo/data/* ! -path ./fern/*/images*" \
    queue_pack_small "$out" '*.log' '*.out' '*.json' '*.csv' '*.md' '*.txt' '*.png'
  if [ -d "$W/export" ]; then
    tar -C "$W/export" -cf - . | split -b 15m - "$out/export.tar.part-"
  fi
}

queue_main "$@"
