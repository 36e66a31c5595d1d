#!/usr/bin/env bash
# One device call that runs several GPU jobs side by side (they share the GPU; each is
# time-bounded). Usage: bash benchmarks/gpu_batch.sh PART WORK_DIR OUT_DIR
#   PART a: KiloNeRF + R2L distillation from the lego teacher, fern 3-view plain vs RegNeRF
#   PART b: evaluations/benchmarks of part a (run alone for clean timings) + fern eval/depth
# Logs and small results are packed into OUT_DIR/results_<part>.tar.
set -uo pipefail
PART=${1:?a|b}; W=${2:?work dir}; OUT=${3:?out dir}
export PYTHONUNBUFFERED=1 PY=python3 PYTHON=python3
mkdir -p "$W" "$OUT"
D=.device_data
wait_for_jobs() {  # wait until every job listed in $W/pids has exited, at most $1 seconds
  local limit=$1 t=0
  while [ $t -lt "$limit" ]; do
    local alive=0
    for p in $(cat "$W/pids" 2>/dev/null); do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 5; t=$((t + 5))
  done
  echo "jobs still running after $limit s"
  return 1
}
if [ "$PART" = a ]; then
  : > "$W/pids"
  # setsid: the jobs survive the end of this device call; part b waits for them
  setsid bash -c "STAGE=distill bash benchmarks/gpu_kilonerf.sh $D/lego_teacher $W/kilo $D/lego400 > $W/kilo.out 2>&1" &
  echo $! >> "$W/pids"
  setsid bash -c "PHASE=distill bash benchmarks/gpu_r2l.sh $D/lego_teacher $W/r2l $D/lego400 standard > $W/r2l.out 2>&1" &
  echo $! >> "$W/pids"
  for v in plain reg; do
    flag=""; [ $v = reg ] && flag="--sparse-reg"
    setsid bash -c "python3 main.py train $D/fern --out $W/fern_$v --preset standard --factor 8 --views 3 $flag \
        --time-budget 360 --quiet --restart > $W/fern_$v.log 2>&1" &
    echo $! >> "$W/pids"
  done
  wait_for_jobs "${WAIT_S:-540}"
  tail -n 4 "$W"/kilo.out "$W"/r2l.out "$W"/fern_*.log
fi
if [ "$PART" = b ]; then
  wait_for_jobs 300
  # the distilled models travel back too (float16 exports, split below the 16 MB file limit)
  python3 main.py export "$W/kilo/scene" --out "$W/export/kilonerf" --backends kilonerf
  python3 main.py export "$W/r2l/scene" --out "$W/export/r2l" --backends r2l
  tar -C "$W/export" -cf - . | split -b 15m - "$OUT/models.tar.part-"
  STAGE=eval bash benchmarks/gpu_kilonerf.sh $D/lego_teacher "$W/kilo" $D/lego400 > "$W/kilo_eval.out" 2>&1
  STAGE=bench bash benchmarks/gpu_kilonerf.sh $D/lego_teacher "$W/kilo" $D/lego400 > "$W/kilo_bench.out" 2>&1
  PHASE=eval bash benchmarks/gpu_r2l.sh $D/lego_teacher "$W/r2l" $D/lego400 standard > "$W/r2l_eval.out" 2>&1
  for v in plain reg; do
    python3 main.py eval "$W/fern_$v" --split test --json "$W/fern_${v}_eval.json" --quiet > "$W/fern_${v}_eval.txt" 2>&1
    python3 main.py render "$W/fern_$v" --path test --views 0,1,2 --output depth --out "$W/fern_${v}_depth" --quiet
    python3 main.py render "$W/fern_$v" --path test --views 0,1,2 --out "$W/fern_${v}_rgb" --quiet
  done
  tail -n 30 "$W"/kilo_eval.out "$W"/kilo_bench.out "$W"/r2l_eval.out "$W"/fern_*_eval.txt
fi
( cd "$W" && find . -maxdepth 3 \( -name '*.log' -o -name '*.out' -o -name '*.json' -o -name '*.csv' -o -name '*.md' \
    -o -name '*.txt' -o -name '*.png' \) ! -path '*/checkpoints/*' | tar -cf "$OUT/results_$PART.tar" -T - )
ls -la "$OUT"
