"""Comparator logic without Qt: which reference a view is measured against, the metrics jobs
at dataset views, the teacher quality task, ground-truth loading and the heatmap colours.

Quality of a compared view:

- At a dataset view (snapped with [ ]) whose split the dataset has, each side is measured by a
  ``MetricsJob`` of its own: ``models.evaluation.evaluate_view`` renders the dataset camera
  exactly as ``eval`` does (native size, the camera's own intrinsics, the dataset's
  near/far/background, precision "auto") with the comparator's own instance of the backend
  (``MetricsBackends``, loaded as ``eval`` loads it), so the numbers equal ``eval``'s whatever
  the window's size or refinement. Results (``ViewMetrics``) are cached per (backend, split,
  index) by the comparator.
- Anywhere else, against the teacher's (NeRF) render of the shown full-resolution view
  (``teacher_quality_task``, run on the render thread by ``RenderWorker.submit_task`` with the
  worker's loaded backends and an abort callback checked between chunks).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from models.backends.base import RenderAborted, RendererBackend, RenderRequest
from models.cameras import Camera
from models.data import Split
from models.metrics import psnr, ssim
from models.scene import manifest_camera
from viewer.camera import ordered_splits
from viewer.colormap import turbo

TEACHER = "nerf"
"""The backend whose render is the reference away from dataset views."""


# ------------------------------------------------------------------------------ heatmap
def heatmap(a: np.ndarray, b: np.ndarray, heat_max: float) -> np.ndarray:
    """(H, W, 3) colours of the mean absolute RGB difference, turbo with ``heat_max`` at the top
    (what shaders/split.frag shows for the difference sources)."""
    err = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean(-1)
    return turbo(err / max(heat_max, 1e-6))


# ------------------------------------------------------------------------- dataset views
@dataclass(frozen=True)
class DatasetView:
    """Where a dataset camera of the viewer's [ ] list comes from."""

    split: str
    index: int
    """Index within the split."""
    name: str
    """Image name recorded in scene.json."""
    camera: Camera
    """The dataset camera itself (native size and intrinsics)."""


def dataset_view(scene, index: int) -> DatasetView | None:
    """The split and index of dataset camera ``index`` in the order [ ] walks them."""
    if index < 0:
        return None
    for split in ordered_splits(scene.cameras):
        cams = scene.cameras[split]
        if index < len(cams):
            c = cams[index]
            return DatasetView(split, index, str(c.get("name", f"{split}[{index}]")), manifest_camera(c))
        index -= len(cams)
    return None


def at_dataset_view(camera) -> bool:
    """The orbit camera sits exactly on the dataset camera it was last snapped to."""
    i = camera.dataset_index
    if i < 0 or i >= len(camera.dataset_poses):
        return False
    pose = camera.dataset_poses[i]
    return bool(np.allclose(camera.c2w(), np.asarray(pose.c2w, float), atol=1e-6)
                and abs(camera.fov_deg - pose.fov_deg) < 1e-6)


class GroundTruthStore:
    """The scene's dataset, loaded lazily and at most once per split (thread-safe).

    Blender-format datasets load only the splits asked for (a full lego is ~3 GB of float
    images); other formats load whole. ``data`` blocks while it loads (call it off the GUI
    thread); ``split`` never blocks. A failure is remembered and raised again.
    """

    def __init__(self, scene):
        self.scene = scene
        self._load_lock = threading.Lock()
        """Held while loading (one load at a time)."""
        self._lock = threading.Lock()
        """Held briefly to publish or read the loaded state."""
        self._data = None
        self._splits: dict = {}
        self._tried: set[str] = set()
        self._all = False
        self.error: str | None = None

    def _load(self, splits: tuple[str, ...]):
        from models.data.detect import detect_kind
        from models.training.jobs import dataset_for_scene

        path = self.scene.dataset.get("path")
        if path and detect_kind(Path(path))[0] == "blender":
            return dataset_for_scene(self.scene, split_names=tuple(splits)), False
        return dataset_for_scene(self.scene), True

    def _covers(self, splits) -> bool:
        return self._all or set(splits) <= self._tried

    def data(self, splits: tuple[str, ...]):
        """A SceneData with every split of ``splits`` that the dataset has (blocks while loading)."""
        with self._load_lock:
            with self._lock:
                if self.error is not None:
                    raise RuntimeError(self.error)
                if self._data is not None and self._covers(splits):
                    return self._data
                missing = tuple(s for s in splits if s not in self._tried)
            try:
                data, complete = self._load(missing)
            except Exception as e:  # noqa: BLE001 - remembered and shown by the viewer
                with self._lock:
                    self.error = f"{type(e).__name__}: {e}".splitlines()[0]
                raise RuntimeError(self.error) from e
            with self._lock:
                self._splits.update(data.splits)
                data.splits = dict(self._splits)
                self._data = data
                self._tried |= set(missing)
                self._all = self._all or complete
                return self._data

    def split(self, name: str):
        """(SceneData, Split) when ``name`` is loaded, else None; never blocks on a load."""
        with self._lock:
            if self._data is None or name not in self._splits:
                return None
            return self._data, self._splits[name]

    def has_split(self, name: str) -> bool:
        return self.split(name) is not None


# --------------------------------------------------------------------------- quality tasks
@dataclass
class QualityResult:
    """PSNR/SSIM of both sides against a reference, with the images they were taken on."""

    key: tuple
    """Which view/backends/reference this is for (the comparator's cache key)."""
    reference: str
    """"gt" or "teacher"."""
    reference_label: str
    """For the overlay, e.g. "ground truth (test r_3)" or "NeRF teacher render"."""
    backends: tuple[str, ...]
    psnr: list[float | None]
    """Per side; None where the side is the reference itself."""
    ssim: list[float | None]
    render_ms: list[float | None]
    """Per side: time of the render the metric was taken on (None: reused the shown frame)."""
    images: list[np.ndarray] = field(default_factory=list)
    """[A, B, reference] (H, W, 3) float32, all the same size."""
    request: RenderRequest | None = None
    """The view the images show."""


def reference_label(split: str, name: str) -> str:
    """The overlay's name of the ground truth of view ``name`` of ``split``."""
    return f"ground truth ({name if split in name else f'{split} {name}'})"


@dataclass(frozen=True)
class ViewMetrics:
    """One backend's PSNR/SSIM at one dataset view, as ``eval`` measures it."""

    backend: str
    split: str
    index: int
    """Index within the split."""
    psnr: float
    ssim: float
    render_ms: float
    rgb: np.ndarray
    """(H, W, 3) float32: the render the metrics were taken on (native size)."""
    gt: np.ndarray
    """(H, W, 3) float32: the ground truth it was measured against."""
    request: RenderRequest
    """The dataset camera as rendered."""

    @property
    def key(self) -> tuple[str, str, int]:
        return self.backend, self.split, self.index


@dataclass
class MetricsJob:
    """Measure one backend at one dataset view (``MetricsBackends.run``)."""

    backend: str
    split_name: str
    index: int
    """Index within the split."""
    split: Split
    near: float
    far: float
    background: tuple[float, float, float]
    scene: object
    """The scene the backend is loaded from."""
    version: tuple = ()
    """The submitter's stamp of the scene and weights (a result with an old stamp is stale)."""
    cancel: threading.Event = field(default_factory=threading.Event)
    """Set to abort the job at the next chunk of its render."""

    @property
    def key(self) -> tuple[str, str, int]:
        return self.backend, self.split_name, self.index


class MetricsBackends:
    """Backend instances of their own for metrics jobs, used by one thread at a time.

    A backend is loaded on first use as ``eval`` loads it (``registry.load_backend``), or, once a
    trainer published weights for it, from those (``PreviewScene``), and follows later
    publications; the render thread's instances are never touched.
    """

    def __init__(self, device):
        self.device = device
        self._backends: dict[str, RendererBackend] = {}
        self._published: dict[str, tuple[dict, dict | None]] = {}

    def backend(self, scene, name: str) -> RendererBackend:
        b = self._backends.get(name)
        if b is None:
            from models.backends import registry

            if name in self._published:
                from models.training.pipeline import PreviewScene

                b = registry.create(name, self.device)
                b.load(PreviewScene(scene, name, *self._published[name]))
            else:
                b = registry.load_backend(scene, name, self.device)
            self._backends[name] = b
        return b

    def publish(self, name: str, state: dict, config: dict | None) -> None:
        """A trainer's weights for ``name``: used from now on."""
        self._published[name] = (state, config)
        b = self._backends.get(name)
        if b is not None:
            b.load_state_dict(state, config)

    def forget(self, name: str | None = None) -> None:
        """Drop backend ``name`` (None: all) and its published weights; reloaded on next use."""
        for d in (self._backends, self._published):
            if name is None:
                d.clear()
            else:
                d.pop(name, None)

    def run(self, job: MetricsJob) -> ViewMetrics:
        """``evaluate_view`` of the job's view; raises RenderAborted once ``job.cancel`` is set."""
        from models.evaluation import evaluate_view

        if job.cancel.is_set():
            raise RenderAborted()
        backend = self.backend(job.scene, job.backend)
        row = evaluate_view(backend, job.split, job.index, job.near, job.far, job.background,
                            should_abort=job.cancel.is_set)
        return ViewMetrics(job.backend, job.split_name, job.index, row["psnr"], row["ssim"], row["ms"],
                           row["rgb"].cpu().numpy().astype(np.float32), row["gt"].cpu().numpy().astype(np.float32),
                           row["request"])


def dataset_quality(key: tuple, label: str, sides: list[ViewMetrics]) -> QualityResult:
    """Both sides' metrics at one dataset view as one QualityResult (images [A, B, ground truth])."""
    return QualityResult(key, "gt", label, tuple(m.backend for m in sides), [m.psnr for m in sides],
                         [m.ssim for m in sides], [m.render_ms for m in sides],
                         [m.rgb for m in sides] + [sides[0].gt], request=sides[0].request)


def teacher_quality_task(key: tuple, backends: tuple[str, ...], request: RenderRequest,
                         images: list[np.ndarray] | None, teacher: str = TEACHER):
    """Task: metrics of both sides of a view against the teacher's render of the same request.

    ``images`` are the sides' RGB renders of ``request`` when the caller has them (the final
    frame on screen); otherwise they are rendered here too.
    """
    req = replace(request, outputs=frozenset({"rgb"}))

    def run(loaded: dict, should_abort) -> QualityResult:
        out = QualityResult(key, "teacher", f"{loaded[teacher].label or teacher} teacher render", tuple(backends),
                            [], [], [], request=request)
        sides, times = [], []
        for i, name in enumerate(backends):
            if images is not None:
                sides.append(torch.from_numpy(np.ascontiguousarray(images[i], np.float32)))
                times.append(None)
            else:
                res = loaded[name].render(req, should_abort)
                sides.append(res.rgb)
                times.append(res.elapsed_ms)
        if teacher in backends:
            ref = sides[backends.index(teacher)]
        else:
            ref = loaded[teacher].render(req, should_abort).rgb
        for name, img, t in zip(backends, sides, times):
            if name == teacher:
                out.psnr.append(None)
                out.ssim.append(None)
            else:
                out.psnr.append(psnr(img, ref))
                out.ssim.append(ssim(img, ref))
            out.render_ms.append(t)
            out.images.append(img.numpy().astype(np.float32))
        out.images.append(ref.numpy().astype(np.float32))
        return out

    return run


def format_quality(value_psnr: float | None, value_ssim: float | None) -> str:
    if value_psnr is None:
        return "reference"
    p = "inf" if value_psnr > 99 else f"{value_psnr:.2f}"
    return f"PSNR {p} dB · SSIM {value_ssim:.4f}"
