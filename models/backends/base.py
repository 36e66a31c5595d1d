"""The renderer-backend interface shared by NeRF, KiloNeRF and R2L.

A backend *owns* its nn.Modules (it is not one, so the abstract methods stay enforced). The
viewer, the comparator, ``eval``, ``render`` and ``bench`` only talk to this interface.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar

import torch

from models import devices
from models.cameras import Camera, camera_rays, ndc_rays

if TYPE_CHECKING:
    from models.scene import Scene

OUTPUT_KINDS = frozenset({"rgb", "depth", "acc"})


class RenderAborted(Exception):
    """Raised by ``render`` when ``should_abort()`` returned True between chunks."""


class BackendUnavailable(Exception):
    """The scene has no (valid) weights for this backend; the message says why."""


@dataclass(frozen=True)
class RenderRequest:
    """Everything needed to render one frame; hashable and cheap to copy between threads."""

    c2w: tuple[tuple[float, ...], ...]
    """4x4 camera-to-world matrix as nested tuples (OpenGL convention)."""
    width: int
    """Output width in pixels."""
    height: int
    """Output height in pixels."""
    fx: float
    """Focal length x in pixels (for this width)."""
    fy: float
    """Focal length y in pixels (for this height)."""
    cx: float
    """Principal point x in pixels."""
    cy: float
    """Principal point y in pixels."""
    near: float
    """Near bound of the rays (world units; NDC scenes ignore it)."""
    far: float
    """Far bound of the rays."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour composited behind the scene."""
    outputs: frozenset[str] = frozenset({"rgb"})
    """Output kinds wanted: any of rgb, depth, acc."""
    precision: str = "auto"
    """"fp32", "fp16" or "auto" (fp16 on CUDA, fp32 elsewhere)."""

    @staticmethod
    def from_camera(camera: Camera, near: float, far: float, **kw) -> "RenderRequest":
        c2w = tuple(tuple(float(x) for x in row) for row in camera.c2w.tolist())
        return RenderRequest(c2w, camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy,
                             near, far, **kw)

    def camera(self) -> Camera:
        return Camera(torch.tensor(self.c2w, dtype=torch.float32), self.width, self.height,
                      self.fx, self.fy, self.cx, self.cy)

    def scaled(self, width: int, height: int) -> "RenderRequest":
        """The same view at another resolution (dynamic resolution, thumbnails)."""
        sx, sy = width / self.width, height / self.height
        return RenderRequest(self.c2w, width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy,
                             self.near, self.far, self.background, self.outputs, self.precision)


@dataclass
class RenderResult:
    """A rendered frame on the CPU."""

    rgb: torch.Tensor
    """(H, W, 3) float32 in [0, 1]."""
    depth: torch.Tensor | None = None
    """(H, W) float32 expected depth along the optical axis, or None."""
    acc: torch.Tensor | None = None
    """(H, W) float32 accumulated opacity in [0, 1], or None."""
    elapsed_ms: float = 0.0
    """Wall time of the render, device work included (synchronised)."""
    samples_per_ray: float = 0.0
    """Mean number of network samples evaluated per ray."""
    flops_per_ray: float = 0.0
    """Mean multiply-add FLOPs (2 per MAC) per ray of the network evaluations."""
    extras: dict = field(default_factory=dict)


class RendererBackend(abc.ABC):
    """Base class of renderer backends: ray generation, chunking, abort and OOM handling."""

    name: ClassVar[str] = ""
    """Registry key, e.g. "nerf"."""
    label: ClassVar[str] = ""
    """Display name, e.g. "NeRF"."""
    supported_outputs: ClassVar[frozenset[str]] = OUTPUT_KINDS
    """Which of rgb/depth/acc this backend can produce."""
    ACCEL_CHOICES: ClassVar[tuple[str, ...]] = ("auto",)
    """Execution paths this backend can be asked for (``accel``); "auto" picks the fastest one that
    works on the device. A backend that lists more than "auto" takes ``accel=`` in its constructor."""

    def __init__(self, device: torch.device | str | None = None, accel: str = "auto"):
        self.device = devices.resolve_device(device if device is None else str(device))
        self.ndc: dict | None = None
        self.chunk_override: int | None = None
        self.accel = self.check_accel(accel)
        """The execution path asked for, one of ``ACCEL_CHOICES`` (``active_path()`` says which one renders)."""

    @classmethod
    def check_accel(cls, accel: str) -> str:
        """``accel`` if it is one of ``ACCEL_CHOICES``, else a ValueError naming the valid ones."""
        if accel not in cls.ACCEL_CHOICES:
            raise ValueError(f"{cls.name or cls.__name__} has no execution path {accel!r} "
                             f"(choose from {', '.join(cls.ACCEL_CHOICES)})")
        return accel

    # ----------------------------------------------------------------- what a backend implements
    @classmethod
    def availability(cls, scene: "Scene") -> tuple[bool, str]:
        """(True, "") if ``scene`` holds weights for this backend, else (False, reason)."""
        if cls.name in scene.backends:
            return True, ""
        return False, f"{cls.label} not trained/distilled for this scene yet"

    def scene_weights(self, scene: "Scene") -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, config) of this backend's model in ``scene``, on this device; a missing or
        unreadable model becomes BackendUnavailable (the viewer greys the backend out with it)."""
        from models.scene import SceneError

        try:
            tensors, config = scene.load_model(self.name, self.device)
        except SceneError as e:
            raise BackendUnavailable(str(e)) from None
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise BackendUnavailable(f"{scene.root}: {self.name} weights hold NaN or inf values ({', '.join(bad[:3])}"
                                     f"{', ...' if len(bad) > 3 else ''}); retrain or restore them")
        return tensors, config

    @abc.abstractmethod
    def load(self, scene: "Scene") -> None:
        """Load this backend's weights (and occupancy grid etc.) from a scene folder."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, torch.Tensor], config: dict | None = None) -> None:
        """Hot-swap weights (e.g. a snapshot published by a trainer)."""

    @abc.abstractmethod
    def modules(self) -> list[torch.nn.Module]:
        """The nn.Modules this backend owns (for .to(), parameter counts)."""

    @abc.abstractmethod
    def render_rays(
        self,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        near: torch.Tensor,
        far: torch.Tensor,
        background: torch.Tensor,
        outputs: frozenset[str],
        half: bool,
    ) -> dict[str, torch.Tensor]:
        """Render one chunk of rays.

        Args:
            origins, dirs: (R, 3) on ``self.device`` (already in NDC for forward-facing scenes).
            near, far: (R,) bounds.
            background: (3,) colour.
        Returns:
            dict with rgb (R, 3) and, if asked and supported, depth (R,), acc (R,); plus
            "samples" (R,) number of network samples spent on each ray.
        """

    @abc.abstractmethod
    def flops_per_sample(self) -> float:
        """FLOPs of one network evaluation (one sample, or one ray for a light field)."""

    def bytes_per_ray(self) -> int:
        """Rough peak activation memory per ray, used to size chunks from free memory."""
        return 64 * 1024

    # ----------------------------------------------------------------------- shared machinery
    def to(self, device: torch.device | str) -> "RendererBackend":
        self.device = torch.device(device)
        for m in self.modules():
            m.to(self.device)
        return self

    def active_path(self) -> str:
        """Which execution path renders a frame at the default precision: "torch-fp16" on CUDA,
        "torch-fp32" elsewhere (backends with faster paths name theirs)."""
        return "torch-fp16" if self.device.type == "cuda" else "torch-fp32"

    def parameter_count(self) -> int:
        return sum(p.numel() for m in self.modules() for p in m.parameters())

    def chunk_size(self) -> int:
        """Rays per chunk: from free GPU memory on CUDA; on CPU small enough to abort promptly."""
        if self.chunk_override:
            return self.chunk_override
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            n = int(0.5 * free / max(self.bytes_per_ray(), 1))
            return int(max(1024, min(n, 1 << 20)))
        return 4096

    def use_half(self, request: RenderRequest) -> bool:
        if request.precision == "fp16":
            return self.device.type == "cuda"
        if request.precision == "fp32":
            return False
        return self.device.type == "cuda"

    def rays_for(self, request: RenderRequest) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flattened (H*W, 3) origins/directions and (H*W,) near/far for a request."""
        cam = request.camera()
        o, d = camera_rays(cam, self.device)
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        n = o.shape[0]
        if self.ndc is not None:
            o, d = ndc_rays(self.ndc["height"], self.ndc["width"], self.ndc["focal"], self.ndc["near"], o, d)
            near = torch.zeros(n, device=self.device)
            far = torch.ones(n, device=self.device)
        else:
            near = torch.full((n,), float(request.near), device=self.device)
            far = torch.full((n,), float(request.far), device=self.device)
        return o, d, near, far

    @torch.no_grad()
    def render(self, request: RenderRequest, should_abort: Callable[[], bool] = lambda: False) -> RenderResult:
        """Render a frame in chunks; raises RenderAborted if ``should_abort()`` turns True."""
        t0 = time.perf_counter()
        outputs = frozenset(request.outputs) & self.supported_outputs | {"rgb"}
        o, d, near, far = self.rays_for(request)
        bg = torch.tensor(request.background, dtype=torch.float32, device=self.device)
        half = self.use_half(request)
        n = o.shape[0]
        chunk = self.chunk_size()
        parts: dict[str, list[torch.Tensor]] = {}
        start = 0
        while start < n:
            if should_abort():
                raise RenderAborted()
            end = min(start + chunk, n)
            try:
                out = self.render_rays(o[start:end], d[start:end], near[start:end], far[start:end], bg, outputs, half)
            except torch.cuda.OutOfMemoryError:
                if chunk <= 256:
                    raise
                torch.cuda.empty_cache()
                chunk //= 2  # retry this chunk with half the rays
                self.chunk_override = chunk
                continue
            for k, v in out.items():
                if k in outputs or k == "samples":  # only what was asked for leaves the device
                    parts.setdefault(k, []).append(v)
            start = end
        h, w = request.height, request.width
        samples = parts.pop("samples", None)
        spr = float(torch.cat(samples).float().mean()) if samples else 0.0  # a scalar, not a frame
        host = self._to_host({k: torch.cat(v) for k, v in parts.items()})
        return RenderResult(
            rgb=host["rgb"].reshape(h, w, 3).clamp_(0, 1),
            depth=host["depth"].reshape(h, w) if "depth" in host else None,
            acc=host["acc"].reshape(h, w) if "acc" in host else None,
            elapsed_ms=(time.perf_counter() - t0) * 1000.0,
            samples_per_ray=spr,
            flops_per_ray=spr * self.flops_per_sample() if samples else self.flops_per_sample(),
        )

    def _to_host(self, frames: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Device frames -> float32 CPU tensors in one transfer. On CUDA the outputs are packed
        into one (N, C) tensor and copied into pinned memory (PyTorch caches pinned blocks): one
        DMA at full bus speed instead of one pageable copy per output (measured on an H100 at
        800x800: four pageable copies took 7 ms of a 30 ms KiloNeRF frame)."""
        if self.device.type != "cuda":
            return {k: v.float().cpu() for k, v in frames.items()}
        keys = list(frames)
        cols = [frames[k].float().reshape(frames[k].shape[0], -1) for k in keys]
        packed = torch.cat(cols, 1) if len(cols) > 1 else cols[0]
        host = torch.empty(packed.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(packed, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        out, c = {}, 0
        for k, col in zip(keys, cols):
            n = col.shape[1]
            out[k] = host[:, c:c + n].squeeze(1) if n == 1 else host[:, c:c + n]
            c += n
        return out


def check_shapes(make_module, state: dict[str, torch.Tensor], what: str, prefix: str = "") -> None:
    """Compare the tensors a module built from the manifest's settings would hold with the
    weights file, before anything is allocated: the module is built on the meta device (no
    memory), so a manifest naming a huge network cannot exhaust memory. Raises BackendUnavailable."""
    try:
        with torch.device("meta"):
            probe = make_module()
    except (TypeError, ValueError, RuntimeError) as e:
        raise BackendUnavailable(f"{what} network settings in the manifest are invalid ({e})") from None
    for k, v in probe.state_dict().items():
        t = state.get(prefix + k)
        if t is None:
            raise BackendUnavailable(f"{what} weights lack {prefix + k} that the manifest's network needs")
        if tuple(t.shape) != tuple(v.shape):
            raise BackendUnavailable(f"{what} weights do not match the manifest's network: {prefix + k} is "
                                     f"{tuple(t.shape)}, the network needs {tuple(v.shape)}")


def linear_flops(module: torch.nn.Module) -> float:
    """FLOPs (2 per multiply-add) of all nn.Linear layers of ``module`` for one input vector."""
    return float(sum(2 * m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear)))
