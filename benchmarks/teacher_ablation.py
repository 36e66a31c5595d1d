"""Teacher recipe ablation: several configs trained side by side (same GPU), validation PSNR vs step.

Usage: python benchmarks/teacher_ablation.py DATA OUT_DIR SECONDS NAME=key:value,key:value ...
Each variant is the `standard` preset with overrides; all run concurrently in threads-free
subprocesses so they share the device. Prints a table of validation PSNR per step.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child(data, out, seconds, overrides):
    import torch

    from models.data import load_dataset
    from models.training.engine import run_job
    from models.training.jobs import open_or_create_scene, parse_settings, stage_config
    from models.training.teacher import TeacherJob

    ov = {"time_budget_s": float(seconds), "validate_every": 1000, "validation_size": 200, "checkpoint_every_s": 1e9}
    # key:value pairs, parsed the way `--set key=value` is (schedule settings by their bare names too)
    ov.update(parse_settings("teacher", "standard", [kv.replace(":", "=", 1) for kv in overrides.split(",")]
                             if overrides else None))
    data = load_dataset(data)
    scene = open_or_create_scene(Path(out), data)
    job = TeacherJob(scene, data, stage_config("teacher", "standard", ov), torch.device("cuda"))
    log = []

    def ev(e):
        if e.kind == "validation":
            log.append((e.step, round(e.psnr, 2), round(e.losses.get("psnr", 0), 2), round(e.elapsed_s)))
            print(out, log[-1], flush=True)

    run_job(job, ev)
    (Path(out) / "curve.json").write_text(json.dumps(log))


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        sys.exit(0)
    data, out, seconds = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    procs = {}
    for spec in sys.argv[4:]:
        name, _, ov = spec.partition("=")
        procs[name] = subprocess.Popen([sys.executable, __file__, "--child", data, str(out / name), seconds, ov])
    for p in procs.values():
        p.wait()
    print("\nvariant: (step, val PSNR, batch PSNR, seconds)")
    for name in procs:
        f = out / name / "curve.json"
        print(name, json.loads(f.read_text()) if f.exists() else "FAILED")
