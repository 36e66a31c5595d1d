"""Plain registry: backend name -> backend class, in the order the viewer lists them (keys 1, 2, 3).

A backend is created with an execution path (``accel``, one of its class's ``ACCEL_CHOICES``;
"auto" picks the fastest one that works), e.g. ``create("kilonerf", "cuda", accel="torch")``.
``parse_accel`` reads the command line's ``--accel kilonerf=torch,r2l=fused``.
"""

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


def accel_choices(name: str) -> tuple[str, ...]:
    """The execution paths backend ``name`` can be asked for (``accel``), "auto" first."""
    return backend_class(name).ACCEL_CHOICES


def parse_accel(text: str) -> dict[str, str]:
    """``"kilonerf=torch,r2l=fused"`` -> ``{"kilonerf": "torch", "r2l": "fused"}``, every backend and
    path checked; a ValueError names what is wrong (and the valid backends or paths)."""
    out: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, path = (s.strip() for s in item.partition("="))
        if not sep or not name or not path:
            raise ValueError(f"expected BACKEND=PATH such as kilonerf=torch, got {item!r}")
        cls = backend_class(name)
        if name in out:
            raise ValueError(f"{name} is given twice")
        out[name] = cls.check_accel(path)
    if not out:
        raise ValueError(f"expected BACKEND=PATH[,BACKEND=PATH] such as kilonerf=torch,r2l=fused, got {text!r}")
    return out


def create(name: str, device: torch.device | str | None = None, accel: str = "auto") -> RendererBackend:
    """A fresh, unloaded backend instance of the given name, set to execution path ``accel``
    (a ValueError naming the valid paths if the backend has no such path)."""
    cls = backend_class(name)
    cls.check_accel(accel)
    # a backend whose only path is "auto" need not take the argument
    return cls(device) if accel == "auto" else cls(device, accel=accel)


def load_backend(scene, name: str, device, accel: str = "auto") -> RendererBackend:
    """A backend created on ``device`` with execution path ``accel`` and loaded from ``scene``
    (the CLI's and the benchmark's way in)."""
    b = create(name, device, accel)
    b.load(scene)
    return b
