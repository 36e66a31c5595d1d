"""Profile the NeRF teacher's training step on a GPU (torch.profiler, kernels sorted by GPU time).

    python benchmarks/teacher_step_profile.py DATASET [--warmup 300] [--steps 10] [--graph 0|1] [--samples N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from models.data import load_dataset  # noqa: E402
from models.scene import Scene  # noqa: E402
from models.training.configs import teacher_preset  # noqa: E402
from models.training.teacher import TeacherJob  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--graph", type=int, default=0)
    ap.add_argument("--samples", type=int, default=1 << 18)
    ap.add_argument("--rows", type=int, default=35)
    ap.add_argument("--out", default="/tmp/teacher_profile_scene")
    args = ap.parse_args()
    data = load_dataset(args.data)
    cfg = teacher_preset("standard").replace(cuda_graph=bool(args.graph), target_samples=args.samples,
                                             time_budget_s=0.0, validate_every=0)
    job = TeacherJob(Scene.create(Path(args.out), data), data, cfg, torch.device("cuda"))
    for s in range(args.warmup):
        job.train_step(s)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for s in range(args.warmup, args.warmup + args.steps):
            job.train_step(s)
        torch.cuda.synchronize()
    if job.use_static:  # phase times of the graph step, each CUDA-synchronised
        import time

        c = job.config
        ph = {"sample+march": 0.0, "load": 0.0, "replay": 0.0, "optimizer": 0.0}
        n = 20
        for s in range(n):
            t = time.perf_counter()
            o, d, target = job.batcher.sample(job.batch_rays, 1.0)
            near, far = job.near_far(o, d)
            ids, t0, t1 = job.grid.march(o, d, near, far, c.render_step_size, jitter=True, generator=job.generator)
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            job.static.load(o, d, target, job.background, ids, t0, t1)
            torch.cuda.synchronize()
            t3 = time.perf_counter()
            job.graph.replay()
            torch.cuda.synchronize()
            t4 = time.perf_counter()
            job.scaler.step(job.optimizer)
            job.scaler.update()
            torch.cuda.synchronize()
            t5 = time.perf_counter()
            for k, v in zip(ph, (t2 - t, t3 - t2, t4 - t3, t5 - t4)):
                ph[k] += v * 1e3 / n
        print("graph step phases (ms, synchronised):", {k: round(v, 2) for k, v in ph.items()},
              f"samples {ids.numel()} capacity {job.static.capacity}")
    ka = prof.key_averages()
    print(ka.table(sort_by="cuda_time_total", row_limit=args.rows, max_name_column_width=70))
    print(ka.table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=70))
    print(f"batch rays {job.batch_rays}; per step: see totals / {args.steps}")


if __name__ == "__main__":
    main()
