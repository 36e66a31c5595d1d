"""End-to-end R2L distillation on CPU: tiny teacher (procedural scene) -> feature-plane light field.

The `tiny` preset trains the CPU-scale feature-plane student (P8x4-128-K32-W128D8) for 1000 steps
of 1024 rays, every ray fresh from a random pose and labelled by the teacher's occupancy-grid
marcher, with fine-tuning on real rays from step 500. On the 8 procedural test views (64x64) it
ends within a few tenths of a dB of its teacher (measured 2026-12-01 on the 2-core machine:
teacher 25.00 dB, R2L 25.46 dB; the paper's W256D88 recipe reached 20.6 dB at this scale). The job
takes about 50 s on idle cores.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import copy_scene, main_in_process
from models.backends.nerf import NerfBackend
from models.backends.r2l import R2LBackend
from models.data import load_dataset
from models.evaluation import evaluate
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


def _test_psnr(root, data, backend_cls) -> float:
    b = backend_cls("cpu")
    b.load(Scene.load(root))
    return evaluate(b, data.splits["test"], data.near, data.far, data.background)["psnr"]


@pytest.mark.slow
def test_tiny_r2l_distillation_reaches_its_teacher(distilled):
    root, data, metrics, events = distilled
    scene = Scene.load(root)
    entry = scene.backends["r2l"]
    assert entry["config"]["mlp"]["encoding"] == "planes" and entry["config"]["near"] == data.near
    assert metrics["steps"] == 1000 and metrics["pseudo_source"] == "online" and metrics["teacher"] == "march"
    assert metrics["teacher_rays"] > 500 * 1024  # fresh rays every step (hard examples and real rays aside)
    vals = [e.psnr for e in events if e.kind == "validation"]
    assert len(vals) >= 4 and vals[-1] > vals[0]  # the PSNR-vs-steps curve rises
    r2l, teacher = _test_psnr(root, data, R2LBackend), _test_psnr(root, data, NerfBackend)
    print(f"R2L {r2l:.2f} dB, teacher {teacher:.2f} dB on the test views")
    assert r2l > teacher - 1.0, (r2l, teacher)


@pytest.mark.slow
def test_pool_mode_caches_and_reuses_its_images(distilled, tmp_path):
    root, data, _, _ = distilled
    scene = copy_scene(root, tmp_path / "scene")
    cfg = stage_config("r2l", "tiny", {"pseudo_source": "pool", "steps": 30, "pseudo_images": 8, "pseudo_size": 16})
    job = R2LDistillJob(Scene.load(scene), data, cfg, torch.device("cpu"))
    run_job(job, lambda e: None, checkpoint=checkpoint_path(scene, "r2l"), resume=False)
    assert (scene / "checkpoints" / R2LDistillJob.POOL_FILE).exists()
    job = R2LDistillJob(Scene.load(scene), data, cfg, torch.device("cpu"))
    assert job.pool.full and job.pool.images.float().mean() > 10  # loaded, not re-rendered
    assert job.fill_pool(4) == 0
    other = R2LDistillJob(Scene.load(scene), data, stage_config("r2l", "tiny", {"pseudo_source": "pool",
                                                                               "pseudo_images": 8, "pseudo_size": 20}),
                          torch.device("cpu"))
    assert other.pool.done == 0  # different pool settings: a fresh pool


def _main(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.slow
def test_cli_distill_the_papers_network_and_eval(distilled, tmp_path):
    root, data, _, _ = distilled
    scene = copy_scene(root, tmp_path / "scene")
    out = _main("distill", str(scene), "--backend", "r2l", "--preset", "tiny", "--variant", "W64D8", "--steps", "20",
                "--restart", "--quiet")
    assert out.returncode == 0, out.stderr
    entry = Scene.load(scene).backends["r2l"]
    assert entry["metrics"]["distill"]["steps"] == 20 and entry["config"]["mlp"]["encoding"] == "pe"
    out = _main("eval", str(scene), "--backend", "r2l", "--max-views", "1", "--quiet", "--json", str(tmp_path / "e.json"))
    assert out.returncode == 0, out.stderr
    rep = json.loads((tmp_path / "e.json").read_text())
    # Reference: the evaluated view (the first test view) filled with its own mean colour, which
    # is all an untrained or collapsed network can reach. Measured on the 2-core machine: that flat
    # image 12.56 dB, this 20-step W64D8 student 14.07 dB (its teacher 24.02 dB on the view); the
    # 0.5 dB margin asks for learned structure and leaves 1 dB for run-to-run noise.
    view = data.splits["test"].images[0]
    flat = float(-10 * torch.log10(((view - view.reshape(-1, 3).mean(0)) ** 2).mean()))
    print(f"R2L W64D8 after 20 steps {rep['backends']['r2l']['psnr']:.2f} dB, mean-colour image {flat:.2f} dB")
    assert rep["backends"]["r2l"]["n_views"] == 1 and rep["backends"]["r2l"]["psnr"] > flat + 0.5, (rep, flat)


@pytest.mark.parametrize("args, message", [
    (["--variant", "W7D3"], "R2L depth must be an even number"),
    (["--variant", "huge"], "R2L variant names look like"),
    (["--batch-rays", "0"], "argument --batch-rays: must be an integer >= 1, got 0"),
    (["--time-budget", "-5"], "argument --time-budget: must be a positive, finite number"),
    (["--time-budget", "nan"], "argument --time-budget: must be a positive, finite number"),
    (["--steps", "0"], "argument --steps: must be an integer >= 1"),
    (["--device", "tpu"], "argument --device: must be cuda, cuda:N, mps or cpu"),
    (["--set", "lr=fast"], "--set lr=fast: not a valid float"),
    (["--set", "no_such=1"], "--set no_such: r2l has no setting 'no_such'"),
    (["--set", "real_fraction=1.5"], "--set real_fraction=1.5: a fraction, at most 1"),
    (["--set", "batch_rays=-4"], "--set batch_rays=-4: must not be negative"),
    (["--set", "mlp=W64D8"], "only scalar settings can be set this way"),
    (["--set", "lr"], "expected KEY=VALUE"),
])
def test_cli_distill_rejects_bad_settings(tmp_path, args, message):
    code, _, err = main_in_process("distill", tmp_path / "nowhere", "--backend", "r2l", *args)
    assert code == 2 and err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1, err


def test_cli_distill_options_of_r2l_are_refused_for_kilonerf(tmp_path):
    out = _main("distill", str(tmp_path / "nowhere"), "--backend", "kilonerf", "--variant", "W256D88", timeout=120)
    assert out.returncode == 2 and "apply to --backend r2l only" in out.stderr and "Traceback" not in out.stderr, \
        out.stderr


def test_set_overrides_reach_the_stage_config():
    """`--set KEY=VALUE` becomes a typed override of the preset's setting (float, int, bool, str)."""
    from models.training.jobs import parse_settings, stage_config

    got = parse_settings("r2l", "tiny", ["lr=2e-3", "batch_rays=512", "mixed_precision=false", "pseudo_source=pool"])
    assert got == {"lr": 2e-3, "batch_rays": 512, "mixed_precision": False, "pseudo_source": "pool"}
    cfg = stage_config("r2l", "tiny", got)
    assert (cfg.lr, cfg.batch_rays, cfg.mixed_precision, cfg.pseudo_source) == (2e-3, 512, False, "pool")
    assert parse_settings("teacher", "tiny", ["grid_update_every=4"]) == {"grid_update_every": 4}
    assert parse_settings("kilonerf", "tiny", None) == {}
