"""Time the NeRF teacher's training step: eager vs the CUDA-graph step, at two sample budgets.

    python benchmarks/teacher_step_bench.py DATASET [--steps 300] [--warmup 400] [--device cuda] [--preset standard]
        [--samples 65536,262144]

For each variant a fresh job trains ``warmup`` steps (past the occupancy grid's warm-up, so
the grid has pruned empty space as in a real run), then ``steps`` timed steps (CUDA
synchronised before and after; grid updates included, as in training). Prints one table row per
variant: ms per step, steps/s, samples per step and the batch's PSNR at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from models.data import load_dataset  # noqa: E402
from models.scene import Scene  # noqa: E402
from models.training.configs import teacher_preset  # noqa: E402
from models.training.teacher import TeacherJob  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=400)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="standard", help="teacher preset (tiny: a quick CPU dry run)")
    ap.add_argument("--samples", default=f"{1 << 16},{1 << 18}", help="comma-separated samples per step")
    ap.add_argument("--variants", default="eager,graph", help="comma-separated: eager, graph")
    ap.add_argument("--headroom", type=float, default=1.25, help="graph step: sample capacity / target")
    ap.add_argument("--out", default="/tmp/teacher_step_bench_scene")
    args = ap.parse_args()
    data = load_dataset(args.data)
    dev = torch.device(args.device)
    rows = []
    for graph in (v == "graph" for v in args.variants.split(",")):
        for samples in (int(x) for x in args.samples.split(",")):
            cfg = teacher_preset(args.preset).replace(cuda_graph=graph, target_samples=samples, time_budget_s=0.0,
                                                     validate_every=0, sample_headroom=args.headroom)
            scene = Scene.create(Path(args.out) / f"g{int(graph)}_{samples}", data)
            job = TeacherJob(scene, data, cfg, dev)
            t_w = time.perf_counter()
            for s in range(args.warmup):
                out = job.train_step(s)
            torch.cuda.synchronize(dev) if dev.type == "cuda" else None
            warm_s = time.perf_counter() - t_w
            spr = []
            t = time.perf_counter()
            for s in range(args.warmup, args.warmup + args.steps):
                out = job.train_step(s)
                spr.append(out["samples_per_ray"])
            torch.cuda.synchronize(dev) if dev.type == "cuda" else None
            dt = (time.perf_counter() - t) / args.steps
            rows.append((("graph" if job.use_static else "eager"), samples, dt * 1e3, 1.0 / dt, job.batch_rays,
                         float(torch.stack(spr).mean()), float(out["psnr"]), warm_s))
            del job
            torch.cuda.empty_cache() if dev.type == "cuda" else None
    print(f"\n{torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    print("| step | samples/step target | ms/step | steps/s | rays/step | samples/ray | batch PSNR | warm-up s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.1f} | {r[4]} | {r[5]:.1f} | {r[6]:.2f} | {r[7]:.1f} |")


if __name__ == "__main__":
    main()
