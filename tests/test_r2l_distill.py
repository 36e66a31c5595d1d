"""End-to-end R2L distillation on CPU: tiny teacher (procedural scene) -> W64D8 light field.

Measured on the 2-core CPU machine (2026-11-21, `tiny` preset: 1000 steps of 1024 rays, 48
pseudo images of 24x24 rendered by the teacher by occupancy marching, fine-tuning with real rays
from step 500):
on the first 4 procedural test views (64x64) the R2L student scores 20.7 dB against the
ground truth and 22.9 dB against its teacher's renders, the teacher itself
25.0 dB (the best constant colour: about 11 dB). The job takes about 8 s on
idle cores (pool rendering included; this module about 15 s beyond the shared teacher fixture;
several times that when the machine is shared).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import copy_scene
from models.backends.nerf import NerfBackend
from models.backends.r2l import R2LBackend
from models.data import load_dataset
from models.evaluation import evaluate
from models.metrics import psnr
from models.scene import Scene
from models.training.distill_r2l import R2LDistillJob
from models.training.engine import checkpoint_path, run_job
from models.training.jobs import stage_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def distilled(tiny_teacher_scene, procedural_dataset, tmp_path_factory):
    """(scene folder, dataset, run_job metrics, events) of one tiny R2L distillation."""
    root = copy_scene(tiny_teacher_scene, tmp_path_factory.mktemp("r2l") / "scene")
    data = load_dataset(procedural_dataset)
    job = R2LDistillJob(Scene.load(root), data, stage_config("r2l", "tiny"), torch.device("cpu"))
    events = []
    metrics = run_job(job, events.append, checkpoint=checkpoint_path(root, "r2l"))
    return root, data, metrics, events


@pytest.mark.slow
def test_tiny_r2l_distillation_approaches_its_teacher(distilled):
    root, data, metrics, events = distilled
    scene = Scene.load(root)
    entry = scene.backends["r2l"]
    assert entry["config"]["mlp"]["width"] == 64 and entry["config"]["near"] == data.near
    assert metrics["pseudo_images"] == 48 and metrics["steps"] == 1000
    vals = [e.psnr for e in events if e.kind == "validation"]
    assert len(vals) >= 4 and vals[-1] > vals[0]  # the PSNR-vs-steps curve rises
    r2l, nerf = R2LBackend("cpu"), NerfBackend("cpu")
    r2l.load(scene)
    nerf.load(scene)
    test = data.splits["test"]
    er = evaluate(r2l, test, data.near, data.far, data.background, max_views=4, keep_images=True)
    en = evaluate(nerf, test, data.near, data.far, data.background, max_views=4, keep_images=True)
    vs_teacher = sum(psnr(a, b) for a, b in zip(er["images"], en["images"])) / 4
    print(f"R2L vs GT {er['psnr']:.2f} dB, R2L vs teacher {vs_teacher:.2f} dB, teacher vs GT {en['psnr']:.2f} dB")
    assert vs_teacher > 21.0, vs_teacher
    assert er["psnr"] > 19.0, er["psnr"]
    assert er["views"][0]["flops_per_ray"] == 178_560 and er["views"][0]["samples_per_ray"] == 1.0


@pytest.mark.slow
def test_pseudo_pool_is_cached_and_reused(distilled):
    root, data, _, _ = distilled
    assert (root / "checkpoints" / R2LDistillJob.POOL_FILE).exists()
    job = R2LDistillJob(Scene.load(root), data, stage_config("r2l", "tiny"), torch.device("cpu"))
    assert job.pool.full and job.pool.images.float().mean() > 10  # loaded, not re-rendered
    assert job.fill_pool(4) == 0
    other = R2LDistillJob(Scene.load(root), data, stage_config("r2l", "tiny", {"pseudo_size": 20}),
                          torch.device("cpu"))
    assert other.pool.done == 0  # different pool settings: a fresh pool


@pytest.mark.slow
def test_cli_distill_and_eval_r2l(distilled, tmp_path):
    root, _, _, _ = distilled
    scene = copy_scene(root, tmp_path / "scene")
    out = subprocess.run([sys.executable, "main.py", "distill", str(scene), "--backend", "r2l", "--preset", "tiny",
                          "--steps", "20", "--restart", "--quiet"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert Scene.load(scene).backends["r2l"]["metrics"]["distill"]["steps"] == 20
    out = subprocess.run([sys.executable, "main.py", "eval", str(scene), "--backend", "r2l", "--max-views", "1",
                          "--quiet", "--json", str(tmp_path / "e.json")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    rep = json.loads((tmp_path / "e.json").read_text())
    assert rep["backends"]["r2l"]["n_views"] == 1 and rep["backends"]["r2l"]["psnr"] > 12
