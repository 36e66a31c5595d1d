"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Parallel workers (pytest -n N) share the cores: each worker's torch, and the processes its tests
# start, take an equal share of them instead of one thread per core each.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
    import torch

    torch.set_num_threads(_THREADS)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The reference data folder: $NSV_DATA, else ``../shared/data`` beside the repository.

    Tests that need it are skipped (with the path in the reason) when it is absent.
    """
    env = os.environ.get("NSV_DATA")
    path = Path(env) if env else (REPO_ROOT.parent / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set NSV_DATA to point elsewhere)")
    return path


def _built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` run once per test session, its folder returned. Parallel workers (pytest -n N)
    share one: the first to need it builds it under a lock in the session's common temporary
    folder, the others wait for it and reuse it (the tiny teacher is a minute of CPU time)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    from filelock import FileLock

    folder = tmp_path_factory.getbasetemp().parent / f"shared-{name}"
    with FileLock(str(folder) + ".lock"):
        if not (folder / ".complete").exists():
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".complete").touch()
    return folder


@pytest.fixture(scope="session")
def procedural_dataset(tmp_path_factory) -> Path:
    """A small procedural dataset (64x64, 40/8/8 views), written once per test session."""
    from models.data.procedural import ProceduralScene

    folder = _built_once(tmp_path_factory, "procedural",
                         lambda f: ProceduralScene().write_dataset(f / "data", size=64, views=(40, 8, 8)))
    return folder / "data"


@pytest.fixture(scope="session")
def tiny_teacher_scene(procedural_dataset, tmp_path_factory) -> Path:
    """A scene folder with a NeRF teacher trained by the ``tiny`` preset on the procedural dataset.

    Trained once per session (about a minute on 2 CPU cores; on every core, also beside parallel
    workers) and shared by the end-to-end tests of every stage; tests that modify a scene must copy
    it first (``copy_scene``).
    """
    import torch

    from models.data import load_dataset
    from models.training.engine import checkpoint_path, run_job
    from models.training.jobs import open_or_create_scene, stage_config
    from models.training.teacher import TeacherJob

    def build(folder: Path) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(os.cpu_count() or 1)
        try:
            data = load_dataset(procedural_dataset)
            scene = open_or_create_scene(folder / "scene", data)
            job = TeacherJob(scene, data, stage_config("teacher", "tiny"), torch.device("cpu"))
            run_job(job, lambda e: None, checkpoint=checkpoint_path(scene.root, "teacher"))
        finally:
            torch.set_num_threads(threads)

    return _built_once(tmp_path_factory, "tiny_teacher", build) / "scene"


def copy_scene(src: Path, dst: Path) -> Path:
    """Copy a scene folder (weights, manifest and checkpoints) for a test that modifies it."""
    import shutil

    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------ synthetic LLFF scene
# A forward-facing scene small enough to write in a fraction of a second: LLFF_VIEWS cameras near the
# world origin, looking down -z (with a few degrees of yaw and pitch each) at a textured plane
# z = -LLFF_PLANE_DEPTH. ``poses_bounds.npy`` describes 320x240 originals (focal 280 px); the
# images are ray-traced at the resolution of each downsampled folder (images_4: 80x60, images_8:
# 40x30) with the project's pixel-centre convention, so poses, intrinsics and pixels agree exactly.
LLFF_VIEWS = 10
LLFF_FULL_HWF = (240.0, 320.0, 280.0)
LLFF_PLANE_DEPTH = 4.0


def llff_plane_colour(x, y):
    """(..., 3) RGB in [0.15, 0.85] of the plane z = -LLFF_PLANE_DEPTH at world (x, y)."""
    return np.stack([0.5 + 0.35 * np.sin(2.1 * x + 0.3), 0.5 + 0.35 * np.sin(1.7 * y - 0.4),
                     0.5 + 0.3 * np.sin(1.3 * (x + y))], -1)


def llff_camera_poses() -> np.ndarray:
    """(LLFF_VIEWS, 4, 4) float64 OpenGL camera-to-world poses of the synthetic LLFF scene."""
    poses = []
    for i in range(LLFF_VIEWS):
        yaw, pitch = np.radians(4.0 * np.sin(1.3 * i + 0.2)), np.radians(3.0 * np.cos(0.9 * i))
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        rot = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        c2w = np.eye(4)
        c2w[:3, :3] = rot
        c2w[:3, 3] = [0.5 * np.cos(0.7 * i), 0.3 * np.sin(1.1 * i), 0.1 * np.sin(0.5 * i)]
        poses.append(c2w)
    return np.stack(poses)


def render_llff_view(c2w, width: int, height: int, focal: float) -> np.ndarray:
    """(H, W, 3) float64 image of the textured plane through pixel centres of a pinhole camera."""
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    d = np.stack([(u - width / 2) / focal, -(v - height / 2) / focal, -np.ones_like(u)], -1) @ c2w[:3, :3].T
    t = (-LLFF_PLANE_DEPTH - c2w[2, 3]) / d[..., 2]
    hit = c2w[:3, 3] + t[..., None] * d
    return llff_plane_colour(hit[..., 0], hit[..., 1])


def write_llff_dataset(root: Path, factors=(4, 8)) -> Path:
    """Write the synthetic LLFF scene: ``poses_bounds.npy`` + ``images_{factor}/imageNNN.png``."""
    from PIL import Image

    h_full, w_full, f_full = LLFF_FULL_HWF
    poses = llff_camera_poses()
    rows = []
    for c2w in poses:
        # OpenGL [right, up, back] -> LLFF's [down, right, back] rotation columns, then [t | hwf]
        llff = np.concatenate([-c2w[:3, 1:2], c2w[:3, 0:1], c2w[:3, 2:3], c2w[:3, 3:4],
                               np.array([[h_full], [w_full], [f_full]])], 1)
        depth = LLFF_PLANE_DEPTH + c2w[2, 3]  # of the plane along this camera's axis, to within a few %
        rows.append(np.concatenate([llff.reshape(-1), [0.8 * depth, 1.25 * depth]]))
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "poses_bounds.npy", np.stack(rows))
    for factor in factors:
        folder = root / f"images_{factor}"
        folder.mkdir(exist_ok=True)
        w, h, f = int(w_full) // factor, int(h_full) // factor, f_full / factor
        for i, c2w in enumerate(poses):
            img = np.round(render_llff_view(c2w, w, h, f) * 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"image{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def llff_dataset(tmp_path_factory) -> Path:
    """The synthetic LLFF scene (10 views; images_4 at 80x60, images_8 at 40x30), written once
    per test session. Tests that modify it must copy it first (``shutil.copytree``)."""
    return write_llff_dataset(tmp_path_factory.mktemp("llff") / "plane")


def main_in_process(*args) -> tuple[int, str, str]:
    """``python main.py ARGS`` in this process: (exit code, stdout, stderr). For the CLI's error
    paths, which end before any work starts (a subprocess costs an interpreter and torch's import
    per case); an uncaught exception fails the calling test."""
    import contextlib
    import io

    import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main.main([str(a) for a in args])
        except SystemExit as e:  # argparse's errors exit
            code = e.code
    return code, out.getvalue(), err.getvalue()
