"""Plain registry: backend name -> backend class, in the order the viewer lists them (keys 1, 2, 3)."""

from __future__ import annotations

import torch

from models.backends.base import RendererBackend
from models.backends.kilonerf import KiloNerfBackend
from models.backends.nerf import NerfBackend
from models.backends.r2l import R2LBackend

BACKENDS: dict[str, type[RendererBackend]] = {
    NerfBackend.name: NerfBackend,
    KiloNerfBackend.name: KiloNerfBackend,
    R2LBackend.name: R2LBackend,
}


def backend_class(name: str) -> type[RendererBackend]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend '{name}' (known: {', '.join(BACKENDS)})") from None


def create(name: str, device: torch.device | str | None = None) -> RendererBackend:
    """A fresh, unloaded backend instance of the given name."""
    return backend_class(name)(device)


def load_backend(scene, name: str, device) -> RendererBackend:
    """A backend created on ``device`` and loaded from ``scene`` (the CLI's and the benchmark's way in)."""
    b = create(name, device)
    b.load(scene)
    return b
