"""Backends without weights: the render path's own cost, and the base of test backends."""

from __future__ import annotations

import torch

from .base import RendererBackend


class WeightlessBackend(RendererBackend):
    """A backend with no network or weights: always available, nothing to load."""

    @classmethod
    def availability(cls, scene):
        return True, ""

    def load(self, scene) -> None:
        self.ndc = None

    def load_state_dict(self, state, config=None) -> None:
        pass

    def modules(self):
        return []

    def flops_per_sample(self) -> float:
        return 0.0


class NullBackend(WeightlessBackend):
    """Rays coloured by direction: the cost of the render path (ray generation, chunking, the copy
    to the host and the viewer's upload) without any network. Not registered: benchmarks add it."""

    name = "null"
    label = "Null"

    def chunk_size(self) -> int:
        return 1 << 20

    def render_rays(self, origins, dirs, near, far, background, outputs, half):
        rgb = 0.5 + 0.5 * torch.nn.functional.normalize(dirs, dim=-1)
        return {"rgb": rgb, "depth": near, "acc": torch.ones_like(near), "samples": torch.zeros_like(near)}
