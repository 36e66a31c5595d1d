"""Datasets: Blender, LLFF, transforms.json (instant-ngp/nerfstudio) and the procedural scene.

Every loader returns a ``SceneData``: images as float32 in [0, 1] already composited over the
background, OpenGL-convention c2w poses, per-image intrinsics and the scene bounds.
``load_dataset`` detects the format from the folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch


class DatasetError(Exception):
    """Malformed or unreadable dataset; the message is one line naming the file and problem."""


@dataclass
class Split:
    """One split (train/val/test) of a dataset; all images share one size."""

    names: list[str]
    """Image file names (for reports), length N."""
    images: torch.Tensor
    """(N, H, W, 3) float32 in [0, 1], composited over the dataset background."""
    c2w: torch.Tensor
    """(N, 4, 4) float32 camera-to-world, OpenGL convention."""
    intrinsics: torch.Tensor
    """(N, 4) float32 fx, fy, cx, cy in pixels."""
    depth: torch.Tensor | None = None
    """(N, H, W) float32 ground-truth depth when the dataset has it (procedural scene)."""
    alpha: torch.Tensor | None = None
    """(N, H, W) float32 ground-truth opacity when the dataset has it."""

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class SceneData:
    """A loaded dataset: splits plus the geometry a renderer needs."""

    kind: str
    """"blender", "llff", "transforms_json" or "procedural"."""
    root: Path
    splits: dict[str, Split]
    near: float
    far: float
    aabb: torch.Tensor
    """(2, 3) axis-aligned bounds of the content (world units, or NDC box for LLFF)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ndc: dict | None = None
    """For forward-facing scenes: {width, height, focal, near} of the NDC mapping; else None."""
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """World up vector (for the viewer's orbit camera)."""
    extra: dict = field(default_factory=dict)


def load_dataset(path: str | Path, **options) -> SceneData:
    """Detect the dataset format of ``path`` and load it (options go to the loader)."""
    from models.data.detect import load_dataset as _load

    return _load(path, **options)
