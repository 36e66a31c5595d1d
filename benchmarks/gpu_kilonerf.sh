#!/usr/bin/env bash
# KiloNeRF on a GPU: distil the `standard` preset from a lego teacher, evaluate, time 800x800.
#
# usage: bash benchmarks/gpu_kilonerf.sh TEACHER_SCENE OUT_DIR [DATASET_DIR]
#   TEACHER_SCENE  scene folder holding a trained NeRF teacher (nerf.safetensors); it is copied to
#                  OUT_DIR/scene (without its checkpoints) and never modified
#   OUT_DIR        where the copy, logs and JSON reports go
#   DATASET_DIR    the lego dataset, when the path recorded in scene.json is not valid here
#                  (e.g. a copy of ../shared/data/nerf_synthetic_400/lego)
# STAGE=distill|eval|bench|all (default all) runs one part, so that each fits a 10-minute command:
#   distill  ~8 min: copy + `main.py distill --preset standard` (wall time must stay under 9 min)
#   eval     ~2 min: test split at 400x400 (NeRF and KiloNeRF, KiloNeRF also in fp32), 800x800 timings
#   bench    ~1 min: warm 800x800 frame times of the 25 test views, a profile of one frame and a
#            sweep of renderer settings (ms, samples/ray, passes, PSNR change vs the default),
#            including torch marching (fused network kernel) and the torch path throughout next to
#            the default (Triton marcher + fused network kernel)
# Dry run on a CPU with a small scene: DEVICE=cpu PRESET=tiny SMALL=32 BIG=48 bash benchmarks/gpu_kilonerf.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  sed -n '2,17p' "$0"
  exit 2
fi
SRC=$1
OUT=$2
DATA=${3:-}
STAGE=${STAGE:-all}
PY=${PYTHON:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-standard}
SMALL=${SMALL:-400}
BIG=${BIG:-800}
SCENE="$OUT/scene"
DATA_ARGS=()
if [ -n "$DATA" ]; then DATA_ARGS=(--data "$DATA"); fi
DATA_ARGS+=(--device "$DEVICE")
mkdir -p "$OUT"

if [ "$STAGE" = all ] || [ "$STAGE" = distill ]; then
  rm -rf "$SCENE"
  mkdir -p "$SCENE"
  for f in "$SRC"/*; do
    [ "$(basename "$f")" = checkpoints ] || cp -r "$f" "$SCENE/"
  done
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt" || true
  start=$(date +%s)
  # progress bars go to stderr; keep the validation lines and the final metrics
  "$PY" main.py distill "$SCENE" --backend kilonerf --preset "$PRESET" --restart "${DATA_ARGS[@]}" 2>&1 \
    | tr '\r' '\n' | grep -v '^ *$' | grep -v '| *[0-9]*/[0-9]* \[' | tee "$OUT/distill.log"
  end=$(date +%s)
  echo "distill wall time (process start to exit): $((end - start)) s" | tee -a "$OUT/distill.log"
fi

if [ "$STAGE" = all ] || [ "$STAGE" = eval ]; then
  "$PY" main.py eval "$SCENE" --backend nerf,kilonerf --size "$SMALL" --quiet "${DATA_ARGS[@]}" \
    --json "$OUT/eval_small.json" | grep -E '^(nerf|kilonerf):|^mean'
  "$PY" main.py eval "$SCENE" --backend kilonerf --size "$SMALL" --precision fp32 --quiet "${DATA_ARGS[@]}" \
    --json "$OUT/eval_small_kilonerf_fp32.json" | grep -E '^kilonerf:|^mean'
  "$PY" main.py eval "$SCENE" --backend kilonerf --size "$BIG" --quiet "${DATA_ARGS[@]}" \
    --json "$OUT/eval_big_kilonerf.json" | grep -E '^kilonerf:|^mean'
  "$PY" main.py eval "$SCENE" --backend nerf --size "$BIG" --max-views 3 --quiet "${DATA_ARGS[@]}" \
    --json "$OUT/eval_big_nerf.json" | grep -E '^nerf:|^mean'
fi

if [ "$STAGE" = all ] || [ "$STAGE" = bench ]; then
  "$PY" - "$SCENE" "$OUT" "$DEVICE" "$BIG" <<'PYEOF'
"""Warm BIGxBIG KiloNeRF frame times on the scene's test cameras, a profile, a settings sweep."""
import dataclasses
import json
import sys
import time

import torch

from models.backends.base import RenderRequest
from models.backends.kilonerf import KiloNerfBackend
from models.metrics import psnr
from models.scene import Scene

scene = Scene.load(sys.argv[1])
out_dir, device, size = sys.argv[2], sys.argv[3], int(sys.argv[4])
b = KiloNerfBackend(device)
b.load(scene)
cams = [c.scaled(size, size) for c in scene.camera_list("test")]
reqs = [RenderRequest.from_camera(c, scene.near, scene.far, background=tuple(scene.background)) for c in cams]
f = b.field
name = torch.cuda.get_device_name() if device.startswith("cuda") else device
print(f"{name}  networks {f.n_networks} on {list(f.resolution)}, occupancy "
      f"{list(b.ess.resolution)} ({float(b.ess.grid.occupied.float().mean()):.3f} occupied), "
      f"step {b.render_config.step_size:.5f}, {f.params_per_network()} params/net, "
      f"{f.flops_per_sample():.0f} FLOP/sample")


def run(config, reqs, rounds=2):
    b.render_config = config
    b.render(reqs[0])  # warm-up (packing, cuBLAS handles, allocator)
    rows = []
    for _ in range(rounds):
        rows = []
        for r in reqs:
            res = b.render(r)
            rows.append((res.elapsed_ms, res.samples_per_ray, b.last_passes, res.rgb))
    return rows


base = b.render_config
accel = b.accel
rows = run(base, reqs)
ms = [r[0] for r in rows]
spr = [r[1] for r in rows]
report = {"device": name, "size": size, "views": len(rows), "ms_mean": sum(ms) / len(ms),
          "ms_min": min(ms), "ms_max": max(ms), "fps_mean": 1000 * len(ms) / sum(ms),
          "samples_per_ray": sum(spr) / len(spr), "passes_mean": sum(r[2] for r in rows) / len(rows),
          "gsamples_per_s": sum(s * size * size for s in spr) / (sum(ms) / 1000) / 1e9, "render_config": base.to_dict()}
report["network_path"], report["accel_note"] = b.active_path(), b.accel_note
print(f"network evaluation: {b.active_path()} {b.accel_note}")
print(f"{size}x{size} warm, {len(rows)} views: {report['ms_mean']:.1f} ms/frame mean ({report['fps_mean']:.1f} FPS), "
      f"min {report['ms_min']:.1f}, max {report['ms_max']:.1f}; {report['samples_per_ray']:.2f} samples/ray, "
      f"{report['passes_mean']:.1f} passes, {report['gsamples_per_s']:.2f} G samples/s incl. marching")
reference = [r[3] for r in rows]

from torch.profiler import ProfilerActivity, profile

acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
with profile(activities=acts) as prof:
    b.render(reqs[0])
if device.startswith("cuda"):
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))

sweep = {
    "paper-like: 8/pass constant, no jumps": dict(pass_growth=1.0, initial_jumps=0, jumps_per_pass=0),
    "8/pass constant": dict(pass_growth=1.0),
    "16 first pass": dict(samples_per_pass=16),
    "4 first pass": dict(samples_per_pass=4),
    "window 16": dict(window=16),
    "window 64": dict(window=64),
    "8 initial jumps": dict(initial_jumps=8),
    "no jumps between passes": dict(jumps_per_pass=0),
    "max 3 passes": dict(max_passes=3),
    "max 4 passes": dict(max_passes=4),
    "ERT 0.03": dict(ert_threshold=0.03),
    "fp32": "fp32",
    "fused network kernel, torch marching": "fused-net",
    "torch path (no fused kernel)": "torch",
    "torch marching, torch.compile'd stages": "compile",
}
report["sweep"] = {}
sub = reqs[::3]
ref_sub = reference[::3]
for name, change in sweep.items():
    try:
        if change == "fp32":
            rows = run(base, [dataclasses.replace(r, precision="fp32") for r in sub], rounds=1)
        elif change in ("torch", "fused-net"):
            b.accel = change
            rows = run(base, sub, rounds=2)
        elif change == "compile":
            b.accel, b.compile = "fused-net", True
            t = time.perf_counter()
            b.render(sub[0])
            print(f"  (compiling took {time.perf_counter() - t:.1f} s)")
            rows = run(base, sub, rounds=2)
        else:
            rows = run(dataclasses.replace(base, **change), sub, rounds=1)
    except Exception as e:  # noqa: BLE001 - report and go on with the sweep
        print(f"{name:<40} failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        continue
    finally:
        b.compile = False
        b.accel = accel
    d = sum(psnr(r[3], ref) for r, ref in zip(rows, ref_sub)) / len(rows)
    m = sum(r[0] for r in rows) / len(rows)
    s = sum(r[1] for r in rows) / len(rows)
    p = sum(r[2] for r in rows) / len(rows)
    report["sweep"][name] = {"ms": m, "samples_per_ray": s, "passes": p, "psnr_vs_default": d}
    print(f"{name:<40} {m:7.1f} ms  {s:6.2f} spr  {p:4.1f} passes  PSNR vs default {d:6.2f} dB")
b.render_config = base
with open(f"{out_dir}/bench_big.json", "w") as fh:
    json.dump(report, fh, indent=2)
print(f"wrote {out_dir}/bench_big.json")
PYEOF
fi
