# Shared plumbing of the detached measurement queues (r2l_queue.sh, gpu_queue.sh); sourced, not
# run. A queue script sets W (its work folder, absolute), defines run_<stage> functions and
# pack OUT (copies the finished stages' results to OUT), then calls queue_main "$@".
#
#   SCRIPT start W [ARGS]   copies the repository to W/repo (so later edits of the checkout never
#                           change the code under running jobs) and runs the stages there in the
#                           background (setsid), unless the queue is already running
#   SCRIPT wait W OUT [SECONDS] [STAGE]
#                           waits until STAGE (default: all) is done or SECONDS pass (default
#                           560), then calls pack OUT
# Each stage runs once: W/done.<stage> holds its exit status and seconds, W/queue.log what ran.

queue_log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$W/queue.log"; }

queue_stage() {  # queue_stage NAME [LOGFILE]: run_NAME once (its output to LOGFILE if given)
  local name=$1 logfile=${2:-}
  if [ -f "$W/done.$name" ]; then queue_log "skip $name (done)"; return 0; fi
  queue_log "start $name"
  local t0 rc
  t0=$(date +%s)
  if [ -n "$logfile" ]; then
    mkdir -p "$(dirname "$logfile")"
    "run_$name" > "$logfile" 2>&1
  else
    "run_$name"
  fi
  rc=$?
  queue_log "end $name rc=$rc in $(( $(date +%s) - t0 )) s"
  echo "$rc $(( $(date +%s) - t0 ))" > "$W/done.$name"
}

queue_finish() { queue_log "queue finished"; touch "$W/done.all"; }

queue_pack_small() {  # queue_pack_small OUT NAME-PATTERN...: W's small result files to OUT/results.tgz
  local out=$1; shift
  local expr=() p
  for p in "$@"; do expr+=(-o -name "$p"); done
  mkdir -p "$out"
  cp "$W/queue.log" "$out/" 2>/dev/null
  ( set -f; cd "$W" && find . \( "${expr[@]:1}" \) ! -path './repo/*' ! -path '*/checkpoints/*' ${QUEUE_PACK_EXCLUDE:-} \
      -size -4M | tar -czf "$out/results.tgz" -T - )
}

queue_main() {  # queue_main CMD W ...: start | _queue | wait (see the header)
  local cmd=$1 script
  script=benchmarks/$(basename "$0")
  case "$cmd" in
    start)
      if [ -f "$W/queue.pid" ] && kill -0 "$(cat "$W/queue.pid")" 2>/dev/null; then
        queue_log "queue already running"
      else
        rm -rf "$W/repo" && mkdir -p "$W/repo" && cp -a . "$W/repo/" && rm -rf "$W/repo/.git"
        ( cd "$W/repo" && setsid bash "$script" _queue "$W" > "$W/queue.out" 2>&1 < /dev/null & )
        # setsid forks when it leads its process group, so $! is not the queue: look it up
        sleep 1
        pgrep -f "[_]queue $W\$" | head -n 1 > "$W/queue.pid"
        queue_log "queue started (pid $(cat "$W/queue.pid"))${QUEUE_ON:+ on $QUEUE_ON}"
      fi
      ;;
    _queue) queue ;;
    wait)
      local out=${3:?out dir} limit=${4:-560} until=${5:-all} t=0
      while [ $t -lt "$limit" ] && [ ! -f "$W/done.$until" ] && [ ! -f "$W/done.all" ]; do
        if ! kill -0 "$(cat "$W/queue.pid" 2>/dev/null)" 2>/dev/null; then echo "queue not running"; break; fi
        sleep 5; t=$((t + 5))
      done
      tail -n 30 "$W/queue.log"
      pack "$out"
      ls -la "$out"
      ;;
    *) echo "unknown command $cmd"; exit 2 ;;
  esac
}
