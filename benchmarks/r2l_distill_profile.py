"""Where an R2L distillation step spends its time: the whole step against its parts.

Builds the ``R2LDistillJob`` that ``main.py distill SCENE --backend r2l`` would build (same preset,
variant and settings), runs enough steps for the hard-example pool and the online ray buffer to
fill, then times, each over ``--steps`` steps with the device synchronised only at the ends:

- ``train_step``: the job's whole step (sampling, teacher labelling, student forward/backward,
  fused Adam, hard-example mining), with the teacher's own seconds reported apart;
- ``bare``: encoding + forward + loss + backward + Adam on one fixed batch (what
  benchmarks/r2l_step.py times);
- the step's other parts alone: drawing the batch's rays (``online`` / ``pool``, teacher calls
  included), the training-image rays, drawing from and pushing to the hard-example pool;

and prints a torch.profiler table of a few whole steps (GPU time per kernel, and host time, to
tell a launch-bound step from a device-bound one). The step's work is the job's own code, called
as the engine calls it; nothing here changes what a step does.

    python benchmarks/r2l_distill_profile.py SCENE [--preset standard] [--variant W256D88]
        [--warmup 120] [--steps 30] [--set KEY=VALUE ...] [--device cuda] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, n: int, device: torch.device) -> float:
    """Milliseconds per call of ``fn`` over ``n`` calls, synchronised at the ends only."""
    _sync(device)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / n * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene")
    ap.add_argument("--preset", default="standard")
    ap.add_argument("--variant", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--warmup", type=int, default=120,
                    help="steps before timing (the hard-example pool fills after 1 / hard_fraction x "
                         "hard_pool_factor steps: 100 for the standard preset)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.warmup < 0 or a.steps < 1 or a.profile_steps < 0:
        print("error: --warmup must be >= 0, --steps >= 1, --profile-steps >= 0", file=sys.stderr)
        return 2

    from models import devices
    from models.scene import Scene, SceneError
    from models.training.jobs import dataset_for_scene, stage_config, stage_overrides

    try:
        device = devices.resolve_device(a.device)
        scene = Scene.load(Path(a.scene))
        data = dataset_for_scene(scene)
        cfg = stage_config("r2l", a.preset, stage_overrides("r2l", a.preset, variant=a.variant, settings=a.set))
    except (SceneError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # no validation, checkpoints or snapshots inside the timed steps (the engine adds those apart)
    cfg = cfg.replace(validate_every=0, checkpoint_every_s=1e9, snapshot_every_s=0.0, time_budget_s=0.0,
                      steps=max(cfg.steps, a.warmup + 10 * a.steps + 100))
    from models.training.distill_r2l import R2LDistillJob

    job = R2LDistillJob(scene, data, cfg, device)
    c = job.config
    print(f"R2L {c.mlp.name}, preset {a.preset}, batch {c.batch_rays} rays, pseudo source {c.pseudo_source}, "
          f"teacher {job.teacher.kind}, device {device}" + (f" ({torch.cuda.get_device_name(device)})"
                                                             if device.type == "cuda" else ""))
    for note in job.notes:
        print("  " + note)
    step = 0

    def one_step():
        nonlocal step
        job.train_step(step)
        step += 1

    t0 = time.perf_counter()
    for _ in range(a.warmup):
        one_step()
    _sync(device)
    print(f"warm-up: {a.warmup} steps in {time.perf_counter() - t0:.1f} s (hard pool full: {job.hard.full})")

    rows: dict[str, float] = {}
    teacher_s, teacher_rays = job.teacher.seconds, job.teacher.rays
    rows["train_step (whole step)"] = timed(one_step, a.steps, device)
    rows["  of which teacher labelling (in the step)"] = (job.teacher.seconds - teacher_s) / a.steps * 1e3
    teacher_rays = job.teacher.rays - teacher_rays

    # the bare student step on one fixed batch drawn as the job draws it
    n = c.batch_rays
    near, far = job.bounds(n)
    rays = torch.cat(job.batcher.sample(n), -1)
    o, d, target = rays[:, :3], rays[:, 3:6], rays[:, 6:9]

    def bare():
        pred = job.model(o, d, near, far)
        loss = ((pred.float() - target) ** 2).mean()
        job.optimizer.zero_grad(set_to_none=True)
        job.scaler.scale(loss).backward()
        job.scaler.step(job.optimizer)
        job.scaler.update()

    rows["bare student step (encode, fwd, bwd, Adam)"] = timed(bare, a.steps, device)

    def fwd_only():
        with torch.no_grad():
            job.model(o, d, near, far)

    rows["  student forward alone (no grad)"] = timed(fwd_only, a.steps, device)
    n_hard = int(round(c.hard_fraction * n)) if job.hard.full else 0
    n_fresh = n - n_hard
    n_real = int(round(job.real_fraction_at(0.5) * n_fresh))
    if n_real:
        rows[f"training-image rays ({n_real})"] = timed(lambda: job.batcher.sample(n_real), a.steps, device)
    if n_fresh - n_real:
        if job.online is not None:
            t_s = job.teacher.seconds
            rows[f"online rays ({n_fresh - n_real}, buffer draw + teacher when due)"] = timed(
                lambda: job.online.sample(n_fresh - n_real), a.steps, device)
            rows["  of which teacher labelling (in the draws)"] = (job.teacher.seconds - t_s) / a.steps * 1e3
        elif job.pool is not None:
            rows[f"pool rays ({n_fresh - n_real})"] = timed(lambda: job.pool.sample(n_fresh - n_real), a.steps, device)
    if n_hard:
        rows[f"hard pool draw ({n_hard} of {job.hard.capacity})"] = timed(lambda: job.hard.draw(n_hard), a.steps,
                                                                          device)
        err = torch.rand(n_fresh, device=device)
        fresh = rays[:n_fresh]
        slots, _ = job.hard.draw(n_hard)
        rows["hard pool push (top-k + scatter)"] = timed(lambda: job.hard.push(fresh, err, n_hard, slots), a.steps,
                                                         device)

    flops = 3 * job.student.flops_per_ray() * n
    print()
    print("| part | ms per step |")
    print("|---|---:|")
    for k, v in rows.items():
        print(f"| {k} | {v:.2f} |")
    whole = rows["train_step (whole step)"] - rows["  of which teacher labelling (in the step)"]
    bare_ms = rows["bare student step (encode, fwd, bwd, Adam)"]
    print()
    print(f"whole step without the teacher: {whole:.2f} ms = {n / whole * 1e3 / 1e6:.2f} M rays/s, "
          f"{flops / whole / 1e9:.1f} TFLOP/s; bare step {bare_ms:.2f} ms = {flops / bare_ms / 1e9:.1f} TFLOP/s "
          f"(3 x {job.student.flops_per_ray() / 1e6:.2f} MFLOP per ray); teacher labelled {teacher_rays} rays "
          f"over the {a.steps} timed steps")
    result = {"variant": c.mlp.name, "preset": a.preset, "batch_rays": n, "teacher": job.teacher.kind,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "ms": {k.strip(): round(v, 3) for k, v in rows.items()},
              "whole_without_teacher_ms": round(whole, 3), "teacher_rays_timed": teacher_rays,
              "tflops_whole": round(flops / whole / 1e9, 2), "tflops_bare": round(flops / bare_ms / 1e9, 2)}

    if a.profile_steps:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(a.profile_steps):
                one_step()
            _sync(device)
        sort = "cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"\n== torch.profiler, {a.profile_steps} whole steps, by GPU time")
        print(prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60))
        print("\n== by host (self CPU) time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    job.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
