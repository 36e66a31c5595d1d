#!/usr/bin/env bash
# R2L on a GPU: R2L distilled from a NeRF teacher with a preset (default `standard`), its
# PSNR-vs-steps curve, test-split quality of teacher and R2L (R2L in fp16 and fp32), and 800x800
# render times of the teacher and the student in fp16 (fused Triton kernel, plain PyTorch,
# torch.compile). benchmarks/r2l_queue.sh is the newer, whole-pipeline version of this run.
#
# Usage (device machine, repo root):
#   bash benchmarks/gpu_r2l.sh TEACHER_SCENE OUT_DIR [DATA_DIR] [PRESET]
#     TEACHER_SCENE  scene folder holding a trained NeRF teacher (copied to OUT_DIR/scene, not modified)
#     DATA_DIR       the dataset (default: the path recorded in the scene's scene.json)
#     PRESET         tiny | quick | standard (default) | paper
#   PHASE=distill|eval|all (default all): run the two halves as separate commands if need be; a
#   distill phase that was cut off resumes from OUT_DIR/scene/checkpoints when run again.
#   BUDGET=SECONDS overrides the preset's time budget of the distillation job.
#   R2L_PATHS=fused,torch,compile adds torch.compile to the timed R2L paths (costs ~1 min).
# With the standard preset the whole run takes ~9 minutes on an H100 (400 s of distillation,
# ~1.5 min of evaluation and timing): one 10-minute device command. The distilled r2l.safetensors
# (24 MB) stays in OUT_DIR/scene.
# Writes OUT_DIR/summary.md, psnr_curve.csv (validation PSNR vs steps and seconds),
# train_curve.csv (training loss/PSNR every ~2 s), distill.log, bench_fp16/bench.{md,json,csv,png},
# eval_r2l_fp32.json, r2l_paths.json.
set -uo pipefail
SRC=${1:?teacher scene folder}; OUT=${2:?output folder}; DATA=${3:-}; PRESET=${4:-standard}
PHASE=${PHASE:-all}
export DEVICE=${DEVICE:-cuda}  # cpu: a dry run of the plumbing (with the tiny preset and SIZE=64)
SIZE=${SIZE:-800}
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
DATA_ARG=(); [ -n "$DATA" ] && DATA_ARG=(--data "$DATA")
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SCENE="$OUT/scene"
[ -f "$SCENE/scene.json" ] || cp -r "$SRC" "$SCENE"
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" \
    | tee -a "$OUT/gpu.txt"
else
  echo "$DEVICE" > "$OUT/gpu.txt"
fi
start=$(date +%s)

if [ "$PHASE" = all ] || [ "$PHASE" = distill ]; then
$PY - "$SCENE" "$OUT" "$DATA" "$PRESET" <<'EOF' 2>&1 | tee -a "$OUT/distill.log"
import csv, json, os, sys, time
from pathlib import Path

import torch

from models.scene import Scene
from models.training.engine import checkpoint_path, run_job
from models.training.jobs import dataset_for_scene, make_job, stage_config

scene_dir, out, data_path, preset = sys.argv[1], Path(sys.argv[2]), sys.argv[3] or None, sys.argv[4]
t_start = time.perf_counter()
scene = Scene.load(scene_dir)
data = dataset_for_scene(scene, data_path)
cfg = stage_config("r2l", preset, {"time_budget_s": float(os.environ["BUDGET"])} if os.environ.get("BUDGET") else None)
print(f"r2l {preset}: {cfg.mlp.name}, {cfg.steps} steps max, time budget {cfg.time_budget_s:.0f} s, "
      f"{cfg.pseudo_images} pseudo images of {cfg.pseudo_size} px, batch {cfg.batch_rays}")
job = make_job("r2l", scene, data, cfg, torch.device(os.environ["DEVICE"]))
print(f"setup {time.perf_counter() - t_start:.1f} s; pseudo pool {job.pool.done}/{len(job.pool)} cached")
new = not (out / "psnr_curve.csv").exists()
curve = open(out / "psnr_curve.csv", "a", newline="")
train = open(out / "train_curve.csv", "a", newline="")
cw, tw = csv.writer(curve), csv.writer(train)
if new:
    cw.writerow(["step", "elapsed_s", "val_psnr", "train_psnr", "lr", "pseudo_images"])
    tw.writerow(["step", "elapsed_s", "loss", "train_psnr", "lr", "steps_per_s"])
last = [0.0]


def on_event(e):
    el = job.elapsed()
    if e.kind == "validation":
        cw.writerow([e.step, f"{el:.1f}", f"{e.psnr:.3f}", f"{e.losses.get('psnr', float('nan')):.3f}",
                     f"{e.losses.get('lr', float('nan')):.3g}", job.pool.done])
        curve.flush()
        print(f"step {e.step:6d}  {el:6.1f} s  val PSNR {e.psnr:6.2f} dB  pool {job.pool.done}/{len(job.pool)}")
    elif e.kind == "step" and el - last[0] >= 2.0:
        last[0] = el
        tw.writerow([e.step, f"{el:.1f}", f"{e.losses.get('loss', 0):.5f}", f"{e.losses.get('psnr', 0):.3f}",
                     f"{e.losses.get('lr', 0):.3g}", f"{e.steps_per_s:.2f}"])
        train.flush()
    elif e.kind in ("log", "failed", "cancelled", "finished", "started"):
        print(f"[{e.kind}] step {e.step} {e.message}")


metrics = run_job(job, on_event, checkpoint=checkpoint_path(scene.root, "r2l"))
metrics["wall_s_this_run"] = round(time.perf_counter() - t_start, 1)
(out / "distill_metrics.json").write_text(json.dumps(metrics, indent=2))
print(json.dumps(metrics))
EOF
echo "distill wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/distill.log"
fi

if [ "$PHASE" = all ] || [ "$PHASE" = eval ]; then
  # quality of teacher and R2L on every test view at native resolution (fp16) + 800x800 timing
  $PY main.py bench "$SCENE" --backends nerf,r2l --size "$SIZE" --timing-views 1 --repeats 5 --precision fp16 \
      --device "$DEVICE" --out "$OUT/bench_fp16" --quiet "${DATA_ARG[@]}" 2>&1 | tee "$OUT/bench_fp16.log"
  # the PSNR cost of fp16: R2L in fp32 on the same views
  $PY main.py eval "$SCENE" --backend r2l --precision fp32 --device "$DEVICE" --quiet \
      --json "$OUT/eval_r2l_fp32.json" "${DATA_ARG[@]}" 2>&1 | tail -n 3
  # the R2L execution paths at 800x800 (fp16): whole render() and network only
  [ "$DEVICE" = cuda ] && $PY - "$SCENE" "$OUT" <<'EOF' 2>&1 | tee "$OUT/r2l_paths.log"
import json, os, statistics, sys, time
from pathlib import Path

import torch

from models.backends.base import RenderRequest
from models.backends.r2l import R2LBackend
from models.scene import Scene

scene, out = Scene.load(sys.argv[1]), Path(sys.argv[2])
cam = (scene.camera_list("test") or scene.camera_list("train"))[0]
cam = cam.scaled(800, round(800 * cam.height / cam.width))
req = RenderRequest.from_camera(cam, scene.near, scene.far, background=tuple(scene.background), precision="fp16")
rows, ref = {}, None
for accel in os.environ.get("R2L_PATHS", "fused,torch").split(","):
    try:
        b = R2LBackend("cuda", accel=accel)
        t0 = time.perf_counter()
        b.load(scene)  # builds and checks the fused kernel on CUDA
        img = b.render(req).rgb
        first = time.perf_counter() - t0
        for _ in range(3):
            b.render(req)
        ms = []
        for _ in range(10):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            b.render(req)
            ms.append((time.perf_counter() - t0) * 1e3)
        o, d, near, far = b.rays_for(req)
        net_ms = []
        for _ in range(10):  # network only (rays already on the GPU), CUDA events
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            b.render_rays(o, d, near, far, None, frozenset({"rgb"}), True)
            e.record()
            torch.cuda.synchronize()
            net_ms.append(s.elapsed_time(e))
    except Exception as ex:  # noqa: BLE001 - record and go on with the other paths
        rows[accel] = {"path": "failed", "note": f"{type(ex).__name__}: {str(ex)[:200]}", "first_call_s": 0,
                       "render_ms_median": 0, "fps": 0, "network_ms_median": 0, "tflops": 0}
        print(accel, rows[accel])
        continue
    if ref is None:
        ref = img
    diff = float((img - ref).abs().max())
    rows[accel] = {"path": b.active_path(), "note": b.accel_note, "first_call_s": round(first, 2),
                   "render_ms_median": round(statistics.median(ms), 2), "fps": round(1e3 / statistics.median(ms), 1),
                   "network_ms_median": round(statistics.median(net_ms), 2),
                   "max_abs_diff_vs_first": diff, "tflops": round(o.shape[0] * b.flops_per_sample() /
                                                                  (statistics.median(net_ms) * 1e-3) / 1e12, 1)}
    print(accel, rows[accel])
(out / "r2l_paths.json").write_text(json.dumps({"width": req.width, "height": req.height, "paths": rows}, indent=2))
EOF
  # one summary
  $PY - "$OUT" <<'EOF'
import csv, json, sys, time
from pathlib import Path

out = Path(sys.argv[1])
lines = [f"# R2L GPU run ({time.strftime('%Y-%m-%d')}, {(out / 'gpu.txt').read_text().splitlines()[0]})", ""]
m = out / "distill_metrics.json"
if m.exists():
    lines += ["## Distillation", "", "```", m.read_text().strip(), "```", ""]
c = out / "psnr_curve.csv"
if c.exists():
    lines += ["## Validation PSNR vs steps", "", "| step | seconds | val PSNR | pool |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['elapsed_s']} | {r['val_psnr']} | {r['pseudo_images']} |"
              for r in csv.DictReader(c.open())]
    lines.append("")
b = out / "bench_fp16" / "bench.md"
if b.exists():
    lines += ["## Test views (fp16) and 800x800 timing", "", b.read_text().strip(), ""]
e = out / "eval_r2l_fp32.json"
if e.exists():
    r = json.loads(e.read_text())["backends"]["r2l"]
    lines += [f"R2L fp32 on the same views: PSNR {r['psnr']:.3f}, SSIM {r['ssim']:.4f}", ""]
p = out / "r2l_paths.json"
if p.exists():
    lines += ["## R2L execution paths (800x800, fp16)", "", "| accel | path | render ms | FPS | network ms | TFLOP/s | "
              "first call s |", "|---|---|---|---|---|---|---|"]
    for k, r in json.loads(p.read_text())["paths"].items():
        lines.append(f"| {k} | {r['path']} | {r['render_ms_median']} | {r['fps']} | {r['network_ms_median']} | "
                     f"{r['tflops']} | {r['first_call_s']} |")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
fi
echo "total wall seconds: $(( $(date +%s) - start ))"
