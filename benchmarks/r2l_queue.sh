#!/usr/bin/env bash
# The R2L measurement on one GPU, as one detached job queue, each timed job alone on the GPU:
# the machine's peaks and the students' training-step throughput, the `standard` NeRF teacher on a
# Blender scene (lego 400x400), its test-view quality, the `standard` R2L distillation (the default
# student) with its PSNR-vs-time curve, its test-view quality and 800x800 render time, and
# optionally the paper's W256D88 network on the same recipe for a shorter budget.
#
#   bash benchmarks/r2l_queue.sh start WORK DATA   # starts the queue in the background (setsid)
#   bash benchmarks/r2l_queue.sh wait WORK OUT [SECONDS] [STAGE]
#        waits until STAGE (default: all) is done or SECONDS pass (default 560), then copies the
#        results of the finished stages into OUT/results.tgz
#
# WORK is a scratch folder (the queue copies the repository there, so later edits of the checkout
# never change the code under running jobs); DATA the dataset folder. Environment:
#   STAGES       stages to run, in order (default: env smoke step teacher export teval r2l reval w256; also
#                kilonerf: KiloNeRF from the same teacher, and bench: every backend of the scene in one table);
#                pipeline: teacher, KiloNeRF and R2L as one `main.py pipeline` job (PIPELINE_ARGS adds
#                options, e.g. "--set r2l.time_budget_s=300");
#                stage export writes the teacher as float16 (main.py export) to WORK/teacher_export, which
#                `wait` packs into OUT/teacher.tgz, so a later run can start from it (TEACHER=DIR
#                copies DIR to the scene instead of training, then skips stage teacher)
#   EXPORT_BACKENDS  backends written by stage export (default nerf; e.g. all)
#   DEVICE       cuda (default) or cpu (a dry run of the plumbing: set PRESET=tiny)
#   PRESET       teacher preset (default standard); R2L_PRESET (default standard)
#   viewer       stage viewer: the real window's frame rate while dragging over the scene's backends
#                (VIEWER_BACKENDS, default kilonerf,r2l) at BIG x BIG, rendering in the render process and
#                then on a thread of the GUI process (benchmarks/gpu_viewer.sh; carry .viewerkit/ and
#                .viewerkit-llvm/); compare with stage bench of the same call for the bare backend times;
#                VIEWER_MODES (default "process thread") picks the modes
#   dprofile     stage dprofile: benchmarks/r2l_distill_profile.py on the scene for each of DPROFILE_VARIANTS
#                (default "W256D88 default"; DPROFILE_ARGS adds options): the distillation step against its parts
#   STEP_ARGS    extra arguments of stage step's benchmarks/r2l_step.py (e.g. "--variants W256D88 --paths default")
#   W256_BUDGET  seconds of W256D88 distillation in stage w256 (default 0: skip it); W256_ARGS adds distill
#                options (e.g. "--set teacher_share=0.1"); KILONERF_ARGS adds options to stage kilonerf's distill
#   RENDER_VARIANTS  students timed by stage render (benchmarks/r2l_render.py; default: its own list)
#   RENDER_ARGS  extra arguments of stage render (e.g. "--sweep 64x8,128x4"); RENDER_SCENE=1 times the
#                kernels in the scene's feature box, with its occupancy masks and first test camera (--scene)
#   ABLATIONS    stage ablate: "NAME=DISTILL ARGS;NAME=DISTILL ARGS;..." (e.g. "k64=--variant
#                P8x4-512-K64-W256D12;lr=--variant P8x4-512-K64-W256D12 --set lr=1e-3"): each trains on the
#                R2L preset's schedule for ABL_SECONDS (default 160) and is then stopped, so the
#                validation curves compare at equal time; ablate/summary.txt lists them and
#                ablate/best_args holds the arguments of the highest last validation PSNR
#   ABL_COMMON   arguments added to every ablation but not to best_args (e.g. "--set validate_every=1000")
#   R2L_ARGS     extra arguments of stage r2l's distill (e.g. "--variant W256D88 --set lr=1e-3");
#                "@best": those of the best ablation
#   BIG          render size of the timing (default 800)
# Results: WORK/<stage>/... (logs, events.jsonl with the validation curve, eval and bench JSON).
set -uo pipefail
cd "$(dirname "$0")/.."
CMD=${1:?start|wait}; W=${2:?work dir}
mkdir -p "$W"
W=$(cd "$W" && pwd)
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-standard}
R2L_PRESET=${R2L_PRESET:-standard}
W256_BUDGET=${W256_BUDGET:-0}
BIG=${BIG:-800}
S=$W/scene

# shellcheck source=benchmarks/queue_lib.sh
. benchmarks/queue_lib.sh
stage() { queue_stage "$1" "$W/$1/stage.log"; }

run_env() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" || true
  nproc; date -u
}

run_smoke() {  # the CUDA tests of the R2L kernels (fused renderers, feature-plane gather/scatter)
  $PY -m pytest -q -x tests/test_r2l.py -k "cuda" -p no:cacheprovider
}

run_render() {  # render time of students at BIG x BIG (random weights), RENDER_VARIANTS comma list
  local extra=()
  if [ "${RENDER_SCENE:-0}" = 1 ]; then extra=(--scene "$S"); fi
  # shellcheck disable=SC2086
  $PY benchmarks/r2l_render.py --size "$BIG" --json "$W/render/render.json" \
    ${RENDER_VARIANTS:+--variants "$RENDER_VARIANTS"} "${extra[@]}" ${RENDER_ARGS:-}
}

run_step() {
  # shellcheck disable=SC2086
  $PY benchmarks/r2l_step.py --json "$W/step/step.json" ${STEP_ARGS:-}
}

run_teacher() {
  if [ -n "${TEACHER:-}" ]; then
    rm -rf "$S" && cp -r "$TEACHER" "$S" && echo "teacher copied from $TEACHER"; return 0
  fi
  local t0=$(date +%s)
  $PY main.py train "$DATA" --out "$S" --preset "$PRESET" --device "$DEVICE" --restart --quiet \
    --events "$W/teacher/events.jsonl"
  echo "train wall seconds (process start to exit): $(( $(date +%s) - t0 ))"
}

run_export() {
  $PY main.py export "$S" --out "$W/teacher_export" --backends "${EXPORT_BACKENDS:-nerf}" --force && ls -la "$W/teacher_export"
}

run_teval() {
  $PY main.py eval "$S" --backend nerf --split test --precision fp16 --device "$DEVICE" --quiet \
    --json "$W/teval/eval_nerf.json" | tail -n 3
}

run_r2l() {
  local t0=$(date +%s) args=${R2L_ARGS:-}
  if [ "$args" = "@best" ]; then args=$(cat "$W/ablate/best_args" 2>/dev/null || true); fi
  echo "distill arguments: ${args:-none}"
  # shellcheck disable=SC2086
  $PY main.py distill "$S" --backend r2l --preset "$R2L_PRESET" --device "$DEVICE" --restart --quiet \
    --events "$W/r2l/events.jsonl" $args
  echo "distill wall seconds (process start to exit): $(( $(date +%s) - t0 ))"
}

run_reval() {
  $PY main.py eval "$S" --backend r2l --split test --precision fp16 --device "$DEVICE" --quiet \
    --json "$W/reval/eval_r2l.json" | tail -n 3
  $PY main.py bench "$S" --backends r2l --size "$BIG" --precision fp16 --device "$DEVICE" --views 1 \
    --out "$W/reval/bench" --quiet
}

run_kilonerf() {  # KiloNeRF distilled from the same teacher, and its test-view quality
  local t0=$(date +%s)
  # shellcheck disable=SC2086
  $PY main.py distill "$S" --backend kilonerf --preset "${KILONERF_PRESET:-standard}" --device "$DEVICE" --restart \
    --quiet --events "$W/kilonerf/events.jsonl" ${KILONERF_ARGS:-}
  echo "distill wall seconds (process start to exit): $(( $(date +%s) - t0 ))"
  $PY main.py eval "$S" --backend kilonerf --split test --precision fp16 --device "$DEVICE" --quiet \
    --json "$W/kilonerf/eval_kilonerf.json" | tail -n 3
}

run_pipeline() {  # teacher, KiloNeRF and R2L as one `main.py pipeline` job (the results table's command)
  local t0=$(date +%s)
  # shellcheck disable=SC2086
  $PY main.py pipeline "$DATA" --out "$S" --preset "$PRESET" --device "$DEVICE" --restart --quiet \
    --events "$W/pipeline/events.jsonl" ${PIPELINE_ARGS:-}
  echo "pipeline wall seconds (process start to exit): $(( $(date +%s) - t0 ))"
}

run_viewer() {  # the window while dragging, render process against thread (the same backends as bench)
  local mode rc=0
  for mode in ${VIEWER_MODES:-process thread}; do
    echo "[$(date +%H:%M:%S)] viewer, rendering in: $mode"
    bash benchmarks/gpu_viewer.sh "$S" "$W/viewer/$mode" --size "$BIG" --seconds 6 \
      --backends "${VIEWER_BACKENDS:-kilonerf,r2l}" --render "$mode" || rc=$?
    tail -n 6 "$W/viewer/$mode/bench.log" 2>/dev/null || true
  done
  return $rc
}

run_bench() {  # every trained backend of the scene at BIG x BIG: one table (quality on the test views)
  $PY main.py bench "$S" --backends all --size "$BIG" --precision fp16 --device "$DEVICE" \
    ${BENCH_VIEWS:+--views "$BENCH_VIEWS"} --out "$W/bench/out" --quiet
}

run_w256() {
  if [ "$W256_BUDGET" = 0 ]; then echo "skipped (W256_BUDGET=0)"; return 0; fi
  rm -rf "$W/scene_w256" && cp -r "$S" "$W/scene_w256"
  local t0=$(date +%s)
  $PY main.py distill "$W/scene_w256" --backend r2l --preset "$R2L_PRESET" --variant W256D88 \
    --time-budget "$W256_BUDGET" --device "$DEVICE" --restart --quiet --events "$W/w256/events.jsonl" ${W256_ARGS:-}
  echo "distill wall seconds (process start to exit): $(( $(date +%s) - t0 ))"
  $PY main.py eval "$W/scene_w256" --backend r2l --split test --precision fp16 --device "$DEVICE" --quiet \
    --json "$W/w256/eval_r2l.json" | tail -n 3
  $PY main.py bench "$W/scene_w256" --backends r2l --size "$BIG" --precision fp16 --device "$DEVICE" --views 1 \
    --out "$W/w256/bench" --quiet
}

run_dprofile() {  # where a distillation step's time goes (benchmarks/r2l_distill_profile.py), per variant
  local v rc=0
  for v in ${DPROFILE_VARIANTS:-W256D88 default}; do
    echo "[$(date +%H:%M:%S)] distillation step profile: $v"
    # shellcheck disable=SC2086
    $PY benchmarks/r2l_distill_profile.py "$S" --preset "$R2L_PRESET" --device "$DEVICE" \
      $([ "$v" = default ] || echo --variant "$v") --json "$W/dprofile/$v.json" ${DPROFILE_ARGS:-} || rc=$?
  done
  return $rc
}

run_ablate() {  # each "NAME=ARGS" of ABLATIONS for ABL_SECONDS, then the best by last validation PSNR
  if [ -z "${ABLATIONS:-}" ]; then echo "skipped (no ABLATIONS)"; return 0; fi
  local spec name args
  IFS=';' read -ra specs <<< "$ABLATIONS"
  for spec in "${specs[@]}"; do
    name=${spec%%=*}; args=${spec#*=}
    echo "[$(date +%H:%M:%S)] ablation $name: $args"
    rm -rf "$W/scene_abl" && cp -r "$S" "$W/scene_abl"
    # shellcheck disable=SC2086
    timeout "${ABL_SECONDS:-160}" $PY main.py distill "$W/scene_abl" --backend r2l --preset "$R2L_PRESET" \
      --device "$DEVICE" --restart --quiet --events "$W/ablate/$name.jsonl" $args ${ABL_COMMON:-} \
      > "$W/ablate/$name.log" 2>&1
    echo "$args" > "$W/ablate/$name.args"
  done
  rm -rf "$W/scene_abl"
  $PY benchmarks/ablation_summary.py "$W/ablate" | tee "$W/ablate/summary.txt"
}

queue() {
  for st in ${STAGES:-env smoke step teacher export teval r2l reval w256}; do
    stage "$st"
  done
  queue_finish
}

pack() {  # the finished stages' small result files into $1/results.tgz, the teacher export apart
  local out=$1
  queue_pack_small "$out" '*.log' '*.jsonl' '*.json' '*.csv' '*.md' '*.txt' best_args '*.png'
  if [ -f "$W/done.export" ] && [ ! -f "$out/teacher.tgz" ]; then
    ( cd "$W/teacher_export" && tar -czf "$out/teacher.tgz" . )
  fi
}

if [ "$CMD" = start ]; then
  DATA=${3:?dataset folder}; DATA=$(cd "$DATA" && pwd); export DATA QUEUE_ON=$DATA
fi
queue_main "$@"
