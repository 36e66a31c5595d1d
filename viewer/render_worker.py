"""The render worker: every backend call of the viewer happens here, on its own QThread (the
backends themselves run in the render process, ``viewer.render_process``, or on this thread).

Scheduling (see ../shared/ARCHITECTURE.md, "Threading in the viewer"):

- The GUI thread calls ``submit(ViewJob)`` for every camera/backend/mode/size change. The worker
  keeps one pending job: a newer job replaces it and makes the frame in progress abort at its
  next chunk (``should_abort`` compares a generation counter), so the worker always works on
  the newest view. Starvation guard: if the screen has not been updated for ``max_stale_ms``
  (a drag over a backend slower than the mouse), the interactive frame in flight is allowed to
  finish, so the user keeps seeing frames; refinement strips are always abortable.
- Interactive frames are rendered at a dynamic resolution that holds a target frame rate
  (``DynamicResolution``, one state per backend combination since their speeds differ by 1000x).
- When no new job has arrived for ``refine_delay_ms`` (200 ms), the view is refined to full
  resolution coarse-to-fine: resolution doubles per level, each level rendered in row strips of
  about ``strip_ms`` of work drawn over the previous level, each strip emitted, every strip
  abortable by the next move (the schedule is ``viewer.refinement.refine_frames``, a Qt-free
  generator). After the full-resolution level the worker does nothing until the next job
  (idle CPU/GPU).
- Offline jobs (screenshots, videos) run on the same thread and are not aborted by camera
  moves; they have their own cancel flag.
- Backends are created and loaded here too (``load_backend``), and stay loaded, so switching
  between loaded backends is instant.

A job may name two backends (the comparator): both render the same request and the frame
carries both images, with per-backend timings (``Frame.side_stats``); the dynamic resolution of
a pair is driven by the time of both renders together. ``submit_task`` runs a function with the
loaded backends on this thread when no view is pending (the comparator's quality metrics);
a newer view aborts it.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from PyQt6.QtCore import QObject, QTimer, pyqtSignal, pyqtSlot

from models import devices
from models.backends import registry
from models.backends.base import BackendUnavailable, RenderAborted, RendererBackend, RenderRequest
from viewer.refinement import SideStats, crop_rows, refine_frames  # noqa: F401 - crop_rows: part of this module's API

MODES = ("rgb", "depth", "acc")
"""Display modes: colour, colour-mapped depth, opacity (accumulated alpha)."""


# ------------------------------------------------------------------------ dynamic resolution
class DynamicResolution:
    """Render-resolution scale that holds a target frame rate (instant-ngp's rule).

    After each interactive frame: ``ema_ms`` is an exponential moving average of frame time and

        proposed = sqrt(target_ms / ema_ms * rendered_pixels / full_pixels)   clamped to [1/16, 1]

    (a linear factor applied to width and height). The scale only changes when
    proposed / scale leaves the 0.8-1.2 band (hysteresis against flicker), or to reach a clamp
    limit that the band would never let it reach. When it changes, the EMA is rescaled by the
    pixel ratio so it predicts the frame time at the new resolution; without that, the old,
    slower average would push the scale down again on the next frame and oscillate.
    """

    def __init__(self, target_fps: float = 30.0, smoothing: float = 0.3, band: tuple[float, float] = (0.8, 1.2),
                 min_scale: float = 1.0 / 16, max_scale: float = 1.0, initial_scale: float = 0.125):
        self.target_fps = float(target_fps)
        self.smoothing = float(smoothing)
        """Weight of the newest frame in the EMA."""
        self.band = band
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.scale = float(np.clip(initial_scale, min_scale, max_scale))
        self.ema_ms: float | None = None

    @property
    def target_ms(self) -> float:
        return 1000.0 / self.target_fps

    def size_for(self, full_width: int, full_height: int) -> tuple[int, int]:
        """Render size at the current scale (at least 1x1, at most the full size)."""
        return (max(1, min(full_width, round(full_width * self.scale))),
                max(1, min(full_height, round(full_height * self.scale))))

    def update(self, frame_ms: float, rendered_pixels: int, full_pixels: int) -> bool:
        """Account one interactive frame; returns True if the scale changed."""
        frame_ms = max(float(frame_ms), 1e-3)
        a = self.smoothing
        self.ema_ms = frame_ms if self.ema_ms is None else a * frame_ms + (1 - a) * self.ema_ms
        ratio_pixels = rendered_pixels / max(full_pixels, 1)
        proposed = math.sqrt(self.target_ms / self.ema_ms * ratio_pixels)
        proposed = float(np.clip(proposed, self.min_scale, self.max_scale))
        change = proposed / self.scale
        to_limit = proposed in (self.min_scale, self.max_scale) and proposed != self.scale
        if change < self.band[0] or change > self.band[1] or to_limit:
            old_pixels = max(rendered_pixels, 1)
            new_pixels = proposed * proposed * full_pixels
            self.ema_ms *= new_pixels / old_pixels
            self.scale = proposed
            return True
        return False


# -------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class ViewJob:
    """What the GUI wants on screen: a full-resolution request, backends and a display mode."""

    request: RenderRequest
    """The view at full (window) resolution; the worker scales it."""
    backends: tuple[str, ...]
    """One backend name, or two for a split comparison."""
    mode: str = "rgb"
    """rgb, depth or acc."""
    serial: int = 0
    """Set by the GUI, echoed in frames."""


@dataclass
class Frame:
    """One image (or two, split view) ready for the canvas."""

    images: list[np.ndarray]
    """Per backend: (H, W, 3) float32 rgb in [0, 1], or (H, W) float32 for depth/acc."""
    mode: str
    width: int
    """Render resolution."""
    height: int
    full_width: int
    """Resolution of the window the view was requested for."""
    full_height: int
    backends: tuple[str, ...]
    render_ms: float
    """Time spent in backend.render for this frame (sum over backends; strips summed)."""
    frame_ms: float
    """Worker wall time from starting the frame to emitting it."""
    samples_per_ray: float
    value_range: tuple[float, float] = (0.0, 1.0)
    """Range mapped onto the colour map (depth mode)."""
    final: bool = False
    """Full resolution, complete: nothing more will come for this view."""
    refining: bool = False
    """Part of the still-camera refinement (not an interactive frame)."""
    progress: float = 1.0
    """Refinement: fraction of the pixels of all refinement levels rendered so far."""
    serial: int = 0
    emitted_at: float = 0.0
    """time.perf_counter() when emitted (for latency measurements)."""
    request: RenderRequest | None = None
    """The full-resolution request this frame shows."""
    side_stats: tuple[SideStats, ...] = ()
    """Per backend (same order as ``backends``); for refinement strips, time summed and
    samples/FLOPs averaged over the strips of the current level so far (the final frame: a whole
    full-resolution render)."""


@dataclass
class WorkerTask:
    """A function run on the render thread with the loaded backends (comparator quality metrics).

    ``fn(backends, should_abort)`` gets the dict name -> loaded backend and returns any result,
    emitted as ``taskFinished(tag, result)``. Tasks run when no view is pending; a newer view,
    an offline job or ``cancel`` aborts them (``taskFailed(tag, "aborted")``).
    """

    tag: object
    fn: Callable
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class BackendInfo:
    """What the GUI may know about a loaded backend (no torch objects cross threads)."""

    name: str
    label: str
    device: str
    parameters: int
    supported_outputs: frozenset[str]
    load_ms: float
    accel: str = "auto"
    """The execution path asked of the backend ("auto": the fastest that works)."""


@dataclass
class OfflineJob:
    """Render a list of full-resolution requests with one backend, in order, and write them.

    ``kind`` "screenshot": one request, PNG at ``path``. ``kind`` "video": MP4/GIF at ``path``
    (by extension) at ``fps`` frames per second.
    """

    kind: str
    requests: list[RenderRequest]
    backend: str
    path: str
    mode: str = "rgb"
    fps: int = 24
    cancel: threading.Event = field(default_factory=threading.Event)


def output_kinds(mode: str) -> frozenset[str]:
    return frozenset({"rgb"}) if mode == "rgb" else frozenset({"rgb", mode})


def depth_range(depth: np.ndarray) -> tuple[float, float]:
    """Robust (2nd, 98th percentile) range of the depths of hit pixels (depth > 0)."""
    d = depth[::2, ::2].ravel()
    d = d[d > 0]
    if d.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(d, [2, 98])
    return float(lo), float(max(hi, lo + 1e-6))


def to_display(result, mode: str) -> np.ndarray:
    """The array the canvas shows for a RenderResult in ``mode``."""
    if mode == "depth" and result.depth is not None:
        return result.depth.numpy().astype(np.float32, copy=False)
    if mode == "acc" and result.acc is not None:
        return result.acc.numpy().astype(np.float32, copy=False)
    return result.rgb.numpy().astype(np.float32, copy=False)


# --------------------------------------------------------------------------------- worker
class RenderWorker(QObject):
    """Owns the backends; renders view jobs and offline jobs on the thread it is moved to."""

    frameReady = pyqtSignal(object)
    """Frame"""
    backendLoaded = pyqtSignal(object)
    """BackendInfo"""
    backendFailed = pyqtSignal(str, str)
    """name, message"""
    renderFailed = pyqtSignal(str, str)
    """backend name, message"""
    offlineProgress = pyqtSignal(int, int)
    """frames done, frames total"""
    offlineFinished = pyqtSignal(str)
    """path written"""
    offlineFailed = pyqtSignal(str)
    """message ("cancelled" when cancelled)"""
    idle = pyqtSignal()
    """Emitted when the worker has nothing left to do (refinement finished or nothing to refine)."""
    taskFinished = pyqtSignal(object, object)
    """WorkerTask.tag, result"""
    taskFailed = pyqtSignal(object, str)
    """WorkerTask.tag, message ("aborted" when a newer view or cancel stopped it)"""
    weightsPublished = pyqtSignal(str, object, object)
    """name, state, config: ``publish_weights`` was called (emitted on the caller's thread)"""

    _wake = pyqtSignal()
    _load = pyqtSignal(object, str)
    _clear = pyqtSignal()
    _swap = pyqtSignal(str, object, object)

    def __init__(self, device: str | None = None, target_fps: float = 30.0, accel: dict[str, str] | None = None,
                 backend_factory: Callable | None = None):
        super().__init__()
        self.device = device
        self.backend_factory = backend_factory or registry.create
        """``(name, device, accel) -> backend``: ``registry.create`` (backends on this thread) or a
        ``viewer.render_process.RenderServer``'s ``create`` (backends in the render process)."""
        self.accel = dict(accel or {})
        """Execution path per backend name (``main.py view --accel``; "auto" for the others)."""
        self.target_fps = target_fps
        self.dynamic = True
        """Dynamic resolution on; off: every interactive frame renders at full resolution."""
        self.refine_delay_ms = 200
        self.strip_ms = 100.0
        """Approximate work per refinement strip (abort/progress granularity)."""
        self.max_stale_ms = 400.0
        """Starvation guard: a newer view aborts the interactive frame in flight only while the
        screen was updated less than this long ago (or 3 target frame times, if longer). Otherwise
        the frame finishes, so a drag over a slow backend still shows frames."""
        self._shown_at = time.perf_counter()
        self._frame_started = time.perf_counter()
        self._idle = True
        self._lock = threading.Lock()
        self._pending: ViewJob | None = None
        self._blocked: ViewJob | None = None
        self._generation = 0
        self._inflight_backends: tuple[str, ...] = ()
        self._inflight_mode = ""
        """Backends and output of the interactive frame being rendered (a request for others aborts it)."""
        self._last_submit = time.perf_counter()
        self._offline: list[OfflineJob] = []
        self._offline_running: OfflineJob | None = None
        self._tasks: list[WorkerTask] = []
        self._backends: dict[str, RendererBackend] = {}
        self._failed: dict[str, str] = {}
        self._dynres: dict[tuple[str, ...], DynamicResolution] = {}
        self._last_job: ViewJob | None = None
        self._last_frame: Frame | None = None
        self.frames_rendered = 0
        self._refine_timer = QTimer(self)
        self._refine_timer.setSingleShot(True)
        self._refine_timer.timeout.connect(self._refine)
        self._wake.connect(self._process)
        self._load.connect(self._load_backend)
        self._clear.connect(self._clear_backends)
        self._swap.connect(self._swap_weights)

    # ------------------------------------------------------------------ API for the GUI thread
    def submit(self, job: ViewJob) -> None:
        """Show ``job`` as soon as possible: replaces the pending job, aborts the frame in flight."""
        with self._lock:
            self._pending = job
            self._generation += 1
            self._last_submit = time.perf_counter()
        self._wake.emit()

    def load_backend(self, scene, name: str) -> None:
        """Create and load backend ``name`` from ``scene`` (asynchronously; see backendLoaded)."""
        self._load.emit(scene, name)

    def clear_backends(self) -> None:
        """Forget all loaded backends (new scene); aborts the frame in flight."""
        with self._lock:
            self._pending = None
            self._blocked = None
            self._generation += 1
            for task in self._tasks:
                task.cancel.set()
            self._tasks.clear()
        self._clear.emit()

    def publish_weights(self, name: str, state: dict, config: dict | None = None) -> None:
        """Hot-swap the weights of a loaded backend (a trainer's snapshot)."""
        self._swap.emit(name, state, config)
        self.weightsPublished.emit(name, state, config)

    def submit_task(self, task: WorkerTask) -> None:
        """Run ``task`` on this thread once no view is pending (see WorkerTask)."""
        with self._lock:
            self._tasks.append(task)
        self._wake.emit()

    def submit_offline(self, job: OfflineJob) -> None:
        with self._lock:
            self._offline.append(job)
        self._wake.emit()

    def set_target_fps(self, fps: float) -> None:
        self.target_fps = float(fps)
        for d in list(self._dynres.values()):
            d.target_fps = self.target_fps

    def dynamic_scale(self, backends: tuple[str, ...]) -> float:
        d = self._dynres.get(tuple(backends))
        return d.scale if d else 1.0

    # --------------------------------------------------------------------- worker-thread side
    def _aborted(self, generation: int) -> bool:
        """should_abort of refinement strips: any newer view or an offline job."""
        return self._generation != generation or bool(self._offline)

    def _interactive_aborted(self, generation: int) -> bool:
        """should_abort of interactive frames: a request for another backend (or pair, or output)
        aborts the frame in flight at once; a newer view of the same ones only once the frame has
        overrun its budget (twice the target frame time), and never while the screen is stale
        (starvation guard).

        Interactive frames are sized by the dynamic resolution to take one frame time; aborting
        them as soon as the mouse moves again (every 8-16 ms while dragging) would throw away
        nearly every frame. Finishing them and starting the next one from the newest view keeps
        the frame rate at the target with at most two frame times of latency; only frames that are
        far over budget (say, the first one after a scene or backend switch) are cut short."""
        if self._offline:
            return True
        if self._generation == generation:
            return False
        pending = self._pending
        if pending is not None and (pending.backends != self._inflight_backends or pending.mode != self._inflight_mode):
            return True  # another backend or output was asked for: this frame would never be shown
        now = time.perf_counter()
        budget_ms = 1000.0 / max(self.target_fps, 1e-3)
        if (now - self._frame_started) * 1000.0 < 2.0 * budget_ms:
            return False
        stale_ms = (now - self._shown_at) * 1000.0
        return stale_ms < max(self.max_stale_ms, 3.0 * budget_ms)

    @pyqtSlot()
    def _process(self) -> None:
        # Wakes are queued once per submit, so most find nothing left to do: those must not
        # touch the refinement timer (stopping it here would cancel the pending refinement).
        while True:
            with self._lock:
                if self._offline:
                    job = self._offline.pop(0)
                    self._offline_running = job
                else:
                    job = None
            if job is not None:
                self._refine_timer.stop()
                self._run_offline(job)
                self._offline_running = None
                if self._last_frame is not None and not self._last_frame.final:
                    self._refine_timer.start(self.refine_delay_ms)  # resume the interrupted refinement
                continue
            with self._lock:
                view, self._pending = self._pending, None
                generation = self._generation
                task = self._tasks.pop(0) if view is None and self._tasks else None
            if task is not None:
                self._run_task(task, generation)
                continue
            if view is None:
                self._idle = True
                return
            self._refine_timer.stop()
            if self._idle:  # the screen is up to date until now: start the staleness clock
                self._idle = False
                self._shown_at = time.perf_counter()
            missing = [n for n in view.backends if n not in self._backends]
            if missing:
                failed = [n for n in missing if n in self._failed]
                if failed:
                    self.renderFailed.emit(failed[0], self._failed[failed[0]])
                else:
                    self._blocked = view  # rendered when the backend has loaded
                continue
            self._blocked = None
            self._render_interactive(view, generation)

    def _dyn(self, names: tuple[str, ...]) -> DynamicResolution:
        d = self._dynres.get(names)
        if d is None:
            d = self._dynres[names] = DynamicResolution(self.target_fps)
        return d

    def _render_interactive(self, job: ViewJob, generation: int) -> None:
        full = job.request
        dyn = self._dyn(job.backends)
        w, h = dyn.size_for(full.width, full.height) if self.dynamic else (full.width, full.height)
        req = replace(full, outputs=output_kinds(job.mode)).scaled(w, h)
        t0 = self._frame_started = time.perf_counter()
        self._inflight_backends, self._inflight_mode = job.backends, job.mode
        try:
            images, render_ms, spr, stats = self._render_all(job.backends, req, job.mode,
                                                             lambda: self._interactive_aborted(generation))
        except RenderAborted:
            return
        except Exception as e:  # noqa: BLE001 - any backend failure becomes a message, never a crash
            self._report(job.backends, e)
            return
        frame_ms = (time.perf_counter() - t0) * 1000.0
        if self.dynamic:
            dyn.update(frame_ms, w * h, full.width * full.height)
        final = (w, h) == (full.width, full.height)
        self._last_job = job
        self._emit(Frame(images, job.mode, w, h, full.width, full.height, job.backends, render_ms, frame_ms, spr,
                         value_range=self._range(images, job.mode), final=final, serial=job.serial,
                         request=full, side_stats=stats))
        if final:
            self.idle.emit()
        else:
            since = (time.perf_counter() - self._last_submit) * 1000.0
            self._refine_timer.start(max(0, int(self.refine_delay_ms - since)))

    def _render_all(self, names, request, mode, should_abort):
        images, total_ms, spr, stats = [], 0.0, 0.0, []
        for name in names:
            backend = self._backends[name]
            self._current = name
            res = backend.render(request, should_abort)
            images.append(to_display(res, mode if mode in backend.supported_outputs else "rgb"))
            total_ms += res.elapsed_ms
            spr = max(spr, res.samples_per_ray)
            stats.append(SideStats(res.elapsed_ms, res.samples_per_ray, res.flops_per_ray))
        return images, total_ms, spr, tuple(stats)

    def _run_task(self, task: WorkerTask, generation: int) -> None:
        if task.cancel.is_set():
            self.taskFailed.emit(task.tag, "aborted")
            return
        try:
            result = task.fn(self._backends, lambda: task.cancel.is_set() or self._aborted(generation))
        except RenderAborted:
            self.taskFailed.emit(task.tag, "aborted")
            return
        except Exception as e:  # noqa: BLE001 - a failing metric must not stop the viewer
            traceback.print_exception(e)
            self.taskFailed.emit(task.tag, describe_error(e))
            return
        self.taskFinished.emit(task.tag, result)

    def _range(self, images, mode) -> tuple[float, float]:
        if mode == "depth" and images and images[0].ndim == 2:
            return depth_range(images[0])
        return 0.0, 1.0

    def _emit(self, frame: Frame) -> None:
        frame.emitted_at = time.perf_counter()
        self._shown_at = frame.emitted_at
        self._last_frame = frame
        self.frames_rendered += 1
        self.frameReady.emit(frame)

    def _report(self, names, exc: Exception) -> None:
        name = getattr(self, "_current", names[0])
        msg = describe_error(exc)
        traceback.print_exception(exc)
        self.renderFailed.emit(name, msg)

    @pyqtSlot()
    def _refine(self) -> None:
        """Coarse-to-fine full-resolution render of the last job (``refine_frames``): every strip
        is emitted as a frame, a newer view or an offline job aborts it between strips."""
        with self._lock:
            busy = self._pending is not None or bool(self._offline)
            generation = self._generation
        if busy:
            self._process()
            return
        job, last = self._last_job, self._last_frame
        if job is None or last is None or last.final or last.request != job.request:
            return
        full = job.request

        def render_strip(request, should_abort):
            images, _, _, stats = self._render_all(job.backends, request, job.mode, should_abort)
            return images, stats

        steps = refine_frames(render_strip, replace(full, outputs=output_kinds(job.mode)), last.images,
                              last.frame_ms, self.strip_ms, lambda: self._aborted(generation))
        step = None
        try:
            for step in steps:
                self._emit(Frame(step.images, job.mode, step.width, step.height, full.width, full.height,
                                 job.backends, step.render_ms, step.elapsed_ms, step.samples_per_ray,
                                 value_range=self._range(step.images, job.mode) if step.level_done
                                 else last.value_range,
                                 final=step.final, refining=True, progress=step.progress, serial=job.serial,
                                 request=full, side_stats=step.side_stats))
        except Exception as e:  # noqa: BLE001 - any backend failure becomes a message, never a crash
            self._report(job.backends, e)
            return
        if step is not None and step.final and not self._aborted(generation):
            self.idle.emit()
        else:  # aborted: a newer view or an offline job is waiting
            self._process()

    @pyqtSlot(object, str)
    def _load_backend(self, scene, name: str) -> None:
        if name in self._backends:
            b = self._backends[name]
            self.backendLoaded.emit(self._info(b, 0.0))
            return
        t0 = time.perf_counter()
        try:
            backend = self.backend_factory(name, self.device, self.accel.get(name, "auto"))
            backend.load(scene)
        except BackendUnavailable as e:
            self._failed[name] = str(e)
            self.backendFailed.emit(name, str(e))
            return
        except Exception as e:  # noqa: BLE001
            traceback.print_exception(e)
            self._failed[name] = describe_error(e)
            self.backendFailed.emit(name, describe_error(e))
            return
        self._backends[name] = backend
        self._failed.pop(name, None)
        self.backendLoaded.emit(self._info(backend, (time.perf_counter() - t0) * 1000.0))
        blocked = self._blocked
        if blocked is not None and all(n in self._backends for n in blocked.backends):
            with self._lock:
                if self._pending is None:
                    self._pending = blocked
            self._blocked = None
            self._process()

    @staticmethod
    def _info(b: RendererBackend, load_ms: float) -> BackendInfo:
        return BackendInfo(b.name, b.label or b.name, devices.describe(b.device), b.parameter_count(),
                           frozenset(b.supported_outputs), load_ms, b.accel)

    @pyqtSlot()
    def _clear_backends(self) -> None:
        self._refine_timer.stop()
        for b in self._backends.values():
            release = getattr(b, "release", None)  # a backend of the render process: free it there
            if release is not None:
                release()
        self._backends.clear()
        self._failed.clear()
        self._dynres.clear()
        self._last_job = self._last_frame = None

    @pyqtSlot(str, object, object)
    def _swap_weights(self, name: str, state, config) -> None:
        b = self._backends.get(name)
        if b is None:
            return
        try:
            b.load_state_dict(state, config)
        except Exception as e:  # noqa: BLE001
            self.renderFailed.emit(name, describe_error(e))
            return
        if self._last_job is not None and name in self._last_job.backends:
            with self._lock:
                if self._pending is None:
                    self._pending = self._last_job
                    self._generation += 1
            self._process()

    # -------------------------------------------------------------------------- offline jobs
    def cancel_offline(self) -> None:
        for job in [self._offline_running, *self._offline]:
            if job is not None:
                job.cancel.set()

    def _run_offline(self, job: OfflineJob) -> None:
        import imageio.v2 as imageio

        from viewer.colormap import display_to_uint8

        backend = self._backends.get(job.backend)
        if backend is None:
            self.offlineFailed.emit(self._failed.get(job.backend, f"backend '{job.backend}' is not loaded"))
            return
        writer = None
        n = len(job.requests)
        try:
            if job.kind == "video":
                ext = job.path.lower().rsplit(".", 1)[-1]
                if ext == "gif":
                    writer = imageio.get_writer(job.path, mode="I", duration=1000.0 / job.fps, loop=0)
                else:
                    writer = imageio.get_writer(job.path, fps=job.fps, codec="libx264", quality=8,
                                                macro_block_size=1, ffmpeg_log_level="error")
            mode = job.mode if job.mode in backend.supported_outputs else "rgb"
            for i, req in enumerate(job.requests):
                if job.cancel.is_set():
                    raise RenderAborted()
                res = backend.render(replace(req, outputs=output_kinds(mode)), job.cancel.is_set)
                img = to_display(res, mode)
                rng = depth_range(img) if mode == "depth" else (0.0, 1.0)
                pixels = display_to_uint8(img, mode, rng)
                if writer is None:
                    imageio.imwrite(job.path, pixels)
                else:
                    writer.append_data(pixels)
                self.offlineProgress.emit(i + 1, n)
            if writer is not None:
                writer.close()
                writer = None
        except RenderAborted:
            self._discard(writer, job.path)
            self.offlineFailed.emit("cancelled")
            return
        except Exception as e:  # noqa: BLE001
            traceback.print_exception(e)
            self._discard(writer, job.path)
            self.offlineFailed.emit(describe_error(e))
            return
        self.offlineFinished.emit(job.path)

    @staticmethod
    def _discard(writer, path: str) -> None:
        import os

        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001, S110 - already failing; the partial file is removed below
                pass
        if os.path.exists(path):
            os.remove(path)


def describe_error(exc: BaseException) -> str:
    """One readable line for the window (CUDA OOM gets advice)."""
    text = f"{type(exc).__name__}: {exc}".strip()
    if "OutOfMemoryError" in type(exc).__name__ or "out of memory" in str(exc).lower():
        return ("GPU out of memory even after retrying with smaller chunks. Try a smaller window, "
                "a lower target frame rate, or close other GPU programs. (" + text.splitlines()[0] + ")")
    return text.splitlines()[0] if text else type(exc).__name__
