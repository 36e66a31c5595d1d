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
