"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="session")
def procedural_dataset(tmp_path_factory) -> Path:
    """A small procedural dataset (64x64, 40/8/8 views), written once per test session."""
    from models.data.procedural import ProceduralScene

    out = tmp_path_factory.mktemp("procedural") / "data"
    return ProceduralScene().write_dataset(out, size=64, views=(40, 8, 8))


@pytest.fixture(scope="session")
def tiny_teacher_scene(procedural_dataset, tmp_path_factory) -> Path:
    """A scene folder with a NeRF teacher trained by the ``tiny`` preset on the procedural dataset.

    Trained once per session (about a minute on 2 CPU cores) and shared by the end-to-end tests
    of every stage; tests that modify a scene must copy it first (``copy_scene``).
    """
    import torch

    from models.data import load_dataset
    from models.training.engine import checkpoint_path, run_job
    from models.training.jobs import open_or_create_scene, stage_config
    from models.training.teacher import TeacherJob

    data = load_dataset(procedural_dataset)
    scene = open_or_create_scene(tmp_path_factory.mktemp("tiny_teacher") / "scene", data)
    job = TeacherJob(data, scene, stage_config("teacher", "tiny"), torch.device("cpu"))
    run_job(job, lambda e: None, checkpoint=checkpoint_path(scene.root, "teacher"))
    return scene.root


def copy_scene(src: Path, dst: Path) -> Path:
    """Copy a scene folder (weights, manifest and checkpoints) for a test that modifies it."""
    import shutil

    shutil.copytree(src, dst)
    return dst
