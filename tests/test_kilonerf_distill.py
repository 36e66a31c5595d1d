"""End-to-end: tiny NeRF teacher (procedural scene) -> KiloNeRF ``tiny`` preset on CPU -> eval.

Measured on the 2-core CPU machine (2026-11-21), 8 procedural test views at 64x64, in this test:
teacher (NeRF backend) 25.00 dB; KiloNeRF after the tiny preset (750 distillation + 750
fine-tuning steps, 88 networks on a 6x6x4 grid) 25.75 dB at 4.9 samples per ray; the job took
~12 s on idle cores (24 s with other work on the machine). A separately trained tiny teacher gave
24.87 vs 26.14 dB. The student can beat this teacher because fine-tuning keeps fitting the
training images that the 600-step teacher under-fits; the assertion (student > teacher - 0.5 dB)
leaves margin for run-to-run noise.
"""

import dataclasses
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from models.backends.kilonerf import KiloNerfBackend
from models.backends.nerf import NerfBackend
from models.backends.registry import create
from models.data import load_dataset
from models.evaluation import evaluate
from models.scene import Scene
from models.training.distill_kilonerf import PRESETS, KiloNerfDistillJob
from models.training.engine import JobCancelled, JobControl, checkpoint_path, read_checkpoint, run_job
from conftest import copy_scene

ROOT = Path(__file__).resolve().parents[1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def distilled(tiny_teacher_scene, procedural_dataset, tmp_path_factory):
    root = copy_scene(tiny_teacher_scene, tmp_path_factory.mktemp("kilonerf") / "scene")
    occupancy_before = digest(root / "occupancy.safetensors")
    scene = Scene.load(root)
    data = load_dataset(procedural_dataset)
    job = KiloNerfDistillJob(scene, data, PRESETS["tiny"], torch.device("cpu"))
    events = []
    t = time.perf_counter()
    metrics = run_job(job, events.append, checkpoint=checkpoint_path(root, "kilonerf"))
    return {"root": root, "data": data, "metrics": metrics, "events": events,
            "seconds": time.perf_counter() - t, "occupancy_before": occupancy_before}


@pytest.mark.slow
def test_tiny_kilonerf_matches_its_teacher(distilled):
    data, root = distilled["data"], distilled["root"]
    scene = Scene.load(root)
    teacher = NerfBackend("cpu")
    teacher.load(scene)
    student = KiloNerfBackend("cpu")
    student.load(scene)
    test = data.splits["test"]
    t_res = evaluate(teacher, test, data.near, data.far, data.background)
    s_res = evaluate(student, test, data.near, data.far, data.background)
    print(f"teacher {t_res['psnr']:.2f} dB, kilonerf {s_res['psnr']:.2f} dB, "
          f"{sum(v['samples_per_ray'] for v in s_res['views']) / len(test):.1f} samples/ray, "
          f"job {distilled['seconds']:.1f} s")
    assert s_res["psnr"] > t_res["psnr"] - 0.5, (s_res["psnr"], t_res["psnr"])
    assert s_res["psnr"] > 23.0 and s_res["ssim"] > 0.85
    assert all(0 < v["samples_per_ray"] < 20 for v in s_res["views"])
    # the events of one resumable job: both phases ran, the final model is in the scene
    m = distilled["metrics"]
    assert m["distill_steps"] == m["finetune_steps"] == 750 and m["params_per_network"] == 6212
    kinds = {e.kind for e in distilled["events"]}
    assert {"started", "step", "checkpoint", "finished"} <= kinds


@pytest.mark.slow
def test_scene_folder_holds_the_model_and_keeps_the_teacher_grid(distilled):
    root = distilled["root"]
    scene = Scene.load(root)
    assert "kilonerf" in scene.backends and (root / "kilonerf.safetensors").exists()
    assert digest(root / "occupancy.safetensors") == distilled["occupancy_before"]
    entry = scene.backends["kilonerf"]
    assert entry["config"]["render"]["ert_threshold"] == 0.01
    assert entry["metrics"]["distill"]["networks"] == entry["config"]["networks"] > 10
    b = create("kilonerf", "cpu")  # what the viewer and the CLI do
    b.load(scene)
    assert KiloNerfBackend.availability(scene)[0]
    assert b.ess.grid.occupied.any() and b.field.n_networks == entry["config"]["networks"]


@pytest.mark.slow
def test_job_resumes_from_its_checkpoint_across_the_phase_boundary(tiny_teacher_scene, procedural_dataset, tmp_path):
    root = copy_scene(tiny_teacher_scene, tmp_path / "scene")
    data = load_dataset(procedural_dataset)
    cfg = PRESETS["tiny"].replace(steps=40, checkpoint_every_s=0.0)
    ckpt = checkpoint_path(root, "kilonerf")
    control = JobControl()

    def stop_after_distillation(ev):
        if ev.kind == "step" and ev.step >= 25:
            control.cancel()

    job = KiloNerfDistillJob(Scene.load(root), data, cfg, torch.device("cpu"))
    with pytest.raises(JobCancelled):
        run_job(job, stop_after_distillation, control, ckpt, event_interval_s=0.0)
    events = []
    job = KiloNerfDistillJob(Scene.load(root), data, cfg, torch.device("cpu"))
    metrics = run_job(job, events.append, checkpoint=ckpt, event_interval_s=0.0)
    started = next(e for e in events if e.kind == "started")
    assert 25 <= started.step < 40 and job.phase == 1  # resumed inside fine-tuning
    assert metrics["steps"] == 40 and metrics["distill_steps"] == 20
    assert Scene.load(root).backends["kilonerf"]["metrics"]["distill"]["steps"] == 40


@pytest.mark.slow
def test_time_budget_cuts_both_phases(tiny_teacher_scene, procedural_dataset, tmp_path):
    root = copy_scene(tiny_teacher_scene, tmp_path / "scene")
    data = load_dataset(procedural_dataset)
    cfg = dataclasses.replace(PRESETS["tiny"], steps=10**6, time_budget_s=3.0)
    t = time.perf_counter()
    metrics = run_job(KiloNerfDistillJob(Scene.load(root), data, cfg, torch.device("cpu")), lambda e: None)
    assert time.perf_counter() - t < 30
    assert 0 < metrics["distill_steps"] < 10**6 and 0 < metrics["finetune_steps"] < 10**6
    assert metrics["steps"] == metrics["distill_steps"] + metrics["finetune_steps"]


@pytest.mark.slow
def test_cli_distill_and_eval_kilonerf(tiny_teacher_scene, tmp_path):
    root = copy_scene(tiny_teacher_scene, tmp_path / "scene")
    out = subprocess.run([sys.executable, "main.py", "distill", str(root), "--backend", "kilonerf", "--preset",
                          "tiny", "--steps", "60", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "kilonerf saved to" in out.stdout
    out = subprocess.run([sys.executable, "main.py", "eval", str(root), "--backend", "kilonerf", "--quiet",
                          "--max-views", "1", "--json", str(tmp_path / "e.json")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rep = json.loads((tmp_path / "e.json").read_text())["backends"]["kilonerf"]
    # Reference: the evaluated view (the first test view) filled with its own mean colour, which
    # is all an untrained or collapsed student can reach. Measured on the 2-core machine: that flat
    # image 12.56 dB, KiloNeRF after these 60 steps 17.32 dB (its teacher 24.02 dB on the view);
    # the 3 dB margin leaves 1.8 dB for run-to-run noise.
    view = load_dataset(Scene.load(root).dataset["path"]).splits["test"].images[0]
    flat = float(-10 * torch.log10(((view - view.reshape(-1, 3).mean(0)) ** 2).mean()))
    print(f"KiloNeRF after 60 steps {rep['psnr']:.2f} dB, mean-colour image {flat:.2f} dB")
    assert rep["n_views"] == 1 and rep["psnr"] > flat + 3.0 and rep["views"][0]["samples_per_ray"] > 0, (rep, flat)


@pytest.mark.slow
def test_validation_events_at_the_cadence_and_a_resumed_clock(tiny_teacher_scene, procedural_dataset, tmp_path):
    """Like the teacher and R2L jobs, the KiloNeRF job reports validations (held-out views
    rendered by the KiloNeRF backend: PSNR, render and ground truth) every ``validate_every``
    steps, in both phases; a job resumed from its checkpoint continues them and its clock."""
    import numpy as np

    from models.training.engine import TimeBudget

    root = copy_scene(tiny_teacher_scene, tmp_path / "scene")
    data = load_dataset(procedural_dataset)
    cfg = PRESETS["tiny"].replace(steps=24, validate_every=8, checkpoint_every_s=0.0)
    ckpt = checkpoint_path(root, "kilonerf")
    control = JobControl()
    first = []

    def stop_after_a_validation(ev):
        first.append(ev)
        if ev.kind == "step" and ev.step >= 12:
            control.cancel()

    job = KiloNerfDistillJob(Scene.load(root), data, cfg, torch.device("cpu"))
    assert isinstance(job, TimeBudget)  # the engine's ETA and progress follow the job's own clock
    with pytest.raises(JobCancelled):
        run_job(job, stop_after_a_validation, control, ckpt, event_interval_s=0.0)
    spent = job.phase_seconds
    # the checkpoint carries the job's clock, and a new job restored from it starts where it stopped
    _, tensors = read_checkpoint(ckpt)
    clock = KiloNerfDistillJob(Scene.load(root), data, cfg, torch.device("cpu"))
    clock.restore(tensors)
    assert clock.phase_seconds == spent and clock.elapsed() == sum(spent)
    resumed = []
    job = KiloNerfDistillJob(Scene.load(root), data, cfg, torch.device("cpu"))
    run_job(job, resumed.append, checkpoint=ckpt, event_interval_s=0.0)

    vals = [e for e in first + resumed if e.kind == "validation"]
    assert [e.step for e in vals] == [8, 16, 24]  # distillation (step 8) and fine-tuning (16, 24)
    side = cfg.schedule.validation_size
    for e in vals:
        assert e.stage == "kilonerf" and np.isfinite(e.psnr) and e.psnr > 5.0
        assert e.image.dtype == np.uint8 and e.image.shape == e.target.shape and max(e.image.shape[:2]) == side
        assert e.image.std() > 0  # a render, not a blank frame
    steps = [e for e in resumed if e.kind == "step"]
    assert steps[0].step == 13 and steps[-1].progress == 1.0
