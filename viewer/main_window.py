"""The main window: GL view in the centre, a side panel (dock) on the right, menus, status bar.

The window is the composition root. It owns the view state (scene, camera, displayed backends,
display mode, the frame on screen), the render thread and the widgets, sends the view to the
render thread (``request_render``) and shows what comes back. The rest is done by controllers
that it creates and wires together:

- ``scene_controller`` (viewer/scene_controller.py): opening scenes, loading their backends,
  training previews;
- ``capture`` (viewer/capture.py): screenshots, the camera path's model, videos, offline render jobs;
- ``camera_path`` (viewer/panels/camera_path_panel.py): the camera-path panel (a dock), its
  preview in the viewport, saving and loading the path;
- ``hud_presenter`` (viewer/hud.py): the HUD's and the status bar's text, the frame rate;
- ``menus`` (viewer/menus.py): the menu bar, its actions and shortcuts;
- ``training`` (viewer/panels/training_controller.py) and ``comparator``
  (viewer/panels/comparator.py): training jobs and compare mode. A comparison is a second
  backend name in the view job (``set_compare_backend``): the worker renders both and the canvas
  splits them.

Nothing here runs torch: scenes are opened (JSON manifest) on the GUI thread, everything else
(backend creation, weights, rendering, writing screenshots and videos of new renders) happens
in the RenderWorker's thread.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from PyQt6.QtCore import QEvent, QSettings, Qt, QThread, pyqtSignal
from PyQt6.QtWidgets import QDockWidget, QLabel, QMainWindow, QScrollArea, QVBoxLayout, QWidget

from models.backends import registry
from models.scene import Scene
from viewer.camera import OrbitCamera, view_bounds
from viewer.capture import CaptureController
from viewer.gl_canvas import GLCanvas
from viewer.hud import HudPresenter
from viewer.menus import WindowMenus
from viewer.panels.backends import BackendSelector, backend_label
from viewer.panels.camera_path_panel import CameraPathController
from viewer.panels.comparator import Comparator
from viewer.panels.overlays import ColourBar, HelpOverlay, HudOverlay, MessageBanner
from viewer.panels.training_controller import TrainingController
from viewer.panels.video_dialog import VideoSettings
from viewer.panels.view_panel import MODE_LABELS, CameraBox, DisplayModeBox, PerformanceBox, ScreenshotBox
from viewer.render_worker import MODES, BackendInfo, Frame, RenderWorker, ViewJob
from viewer.scene_controller import FASTEST_FIRST, SceneController, opening_backend

__all__ = ["APP_NAME", "DEMO_SCENE", "FASTEST_FIRST", "MainWindow", "opening_backend", "scaled_size"]

APP_NAME = "Neural Scene Viewer"
DEMO_SCENE = Path(__file__).resolve().parent.parent / "assets" / "demo_scene"


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """``width x height`` times ``scale`` (at least 1x1)."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def render_threads(device: str | None) -> int:
    """torch threads of the render process: on the CPU all cores but one (the GUI's), else 0
    (torch's default)."""
    import os

    from models import devices

    if devices.resolve_device(device).type == "cpu":
        return max(1, (os.cpu_count() or 2) - 1)
    return 0


class MainWindow(QMainWindow):
    sceneOpened = pyqtSignal(str)
    """Path of a scene that opened."""
    screenshotSaved = pyqtSignal(str)
    videoSaved = pyqtSignal(str)
    offlineFailed = pyqtSignal(str)
    backendChanged = pyqtSignal(str)
    """The displayed backend (A in compare mode) changed."""
    viewRequested = pyqtSignal()
    """request_render ran (the view may have changed, or a snap kept the same pixels)."""

    def __init__(self, settings: QSettings | None = None, device: str | None = None, parent=None,
                 accel: dict[str, str] | None = None, render_process: bool = False,
                 extra_backends: dict[str, str] | None = None):
        super().__init__(parent)
        self.settings = settings if settings is not None else QSettings("neural-scene-viewer", "viewer")
        self.setWindowTitle(APP_NAME)
        self.scene: Scene | None = None
        self.camera: OrbitCamera | None = None
        self.backend: str | None = None
        self.compare_backend: str | None = None
        self.mode = "rgb"
        self.infos: dict[str, BackendInfo] = {}
        self.last_frame: Frame | None = None
        self._serial = 0
        self._last_job_key = None
        self.render_scale = min(max(float(self.settings.value("render_scale", 1.0, type=float)), 0.05), 1.0)
        """Fraction of the window's width and height views are rendered at (refined to)."""

        # --- render thread
        self.render_thread = QThread(self)
        self.render_thread.setObjectName("render")
        self.render_server = None
        """``viewer.render_process.RenderServer`` when the backends live in a render process."""
        factory = None
        if render_process:
            from viewer.render_process import RenderServer

            self.render_server = RenderServer(threads=render_threads(device), extra_backends=extra_backends)
            self.render_server.start()  # the child imports torch while the window builds itself
            factory = self.render_server.create
        self.worker = RenderWorker(device, float(self.settings.value("target_fps", 30.0, type=float)), accel,
                                   backend_factory=factory)
        self.worker.moveToThread(self.render_thread)
        self.render_thread.start()
        self.worker.frameReady.connect(self._on_frame)
        self.scene_controller = SceneController(self, APP_NAME)
        """Opening scenes, loading their backends, training previews."""
        self.capture = CaptureController(self)
        """Screenshots, keyframes, videos."""
        self.hud_presenter = HudPresenter(self, backend_label, MODE_LABELS)
        """The HUD's and the status bar's text, the frame rate."""

        # --- central view and overlays
        self.canvas = GLCanvas(self)
        self.setCentralWidget(self.canvas)
        self.hud = HudOverlay(self.canvas)
        self.hud.setVisible(self.settings.value("hud", True, type=bool))
        self.help = HelpOverlay(self.canvas)
        self.banner = MessageBanner(self.canvas)
        self.colour_bar = ColourBar(self.canvas)
        self.canvas.installEventFilter(self)
        self.canvas.viewChanged.connect(self.request_render)
        self.canvas.resized.connect(self.request_render)
        self.canvas.glError.connect(lambda m: self.show_error(m))

        # --- side panel
        self.backend_selector = BackendSelector()
        self.backend_selector.selected.connect(self.set_backend)
        self.display_box = DisplayModeBox()
        self.display_box.modeChanged.connect(self.set_mode)
        self.performance_box = PerformanceBox(self.worker.target_fps, render_scale=self.render_scale)
        self.performance_box.targetFpsChanged.connect(self.set_target_fps)
        self.performance_box.dynamicChanged.connect(self.set_dynamic_resolution)
        self.performance_box.renderScaleChanged.connect(self.set_render_scale)
        self.camera_box = CameraBox()
        self.camera_box.fovChanged.connect(self.set_fov)
        self.camera_box.resetRequested.connect(self.reset_camera)
        self.camera_box.snapRequested.connect(self.snap_camera)
        self.camera_box.addKeyframe.connect(self.capture.add_keyframe)
        self.camera_box.clearKeyframes.connect(self.capture.clear_keyframes)
        self.camera_box.cameraChosen.connect(self.snap_to_camera)
        self.screenshot_box = ScreenshotBox()
        self.screenshot_box.set_size(self.screenshot_size)
        self.screenshot_box.sizeChanged.connect(self.capture.set_screenshot_size)
        self.screenshot_box.invalidSize.connect(self.show_input_error)
        self.scene_label = QLabel("No scene")
        self.scene_label.setWordWrap(True)
        self.scene_label.setStyleSheet("color: gray;")
        panel = QWidget()
        lay = QVBoxLayout(panel)
        for w in (self.backend_selector, self.display_box, self.performance_box, self.camera_box,
                  self.screenshot_box, self.scene_label):
            lay.addWidget(w)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(panel)
        scroll.setWidgetResizable(True)
        self.side_dock = QDockWidget("Scene", self)
        self.side_dock.setObjectName("scene-dock")
        self.side_dock.setWidget(scroll)
        self.side_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                   | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                                   | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.side_dock)
        self.side_dock.setMinimumWidth(250)
        self.camera_path = CameraPathController(self)
        """The camera-path panel (a dock tabbed beside the Scene panel) and its preview."""
        self.camera_box.editPath.connect(self.camera_path.show_panel)

        # --- status bar
        self.status_backend = QLabel("")
        self.status_res = QLabel("")
        self.statusBar().addPermanentWidget(self.status_res)
        self.statusBar().addPermanentWidget(self.status_backend)

        # --- menus
        self.menus = WindowMenus(self)
        """The menu bar and the actions other parts read."""
        self.recent_menu = self.menus.recent_menu
        self.backend_menu = self.menus.backend_menu
        self.backend_actions = self.menus.backend_actions
        self.shot_guides_action = self.menus.shot_guides_action
        self.hud_action = self.menus.hud_action
        self.guides_action = self.menus.guides_action
        self.train_menu = self.menus.train_menu
        self.canvas.set_guides_visible(self.guides_action.isChecked())

        self.training = TrainingController(self, self.train_menu)
        """Train menu, progress dock, live preview of a running job."""
        self.comparator = Comparator(self)
        """Compare mode (C): two backends on one camera, their quality, the benchmark."""
        self._size_window()
        self.update_hud()

    def _size_window(self) -> None:
        geo = self.settings.value("geometry")
        if geo is not None and self.restoreGeometry(geo):
            return
        screen = self.screen().availableGeometry() if self.screen() else None
        if screen is not None:
            w, h = min(1400, int(screen.width() * 0.8)), min(900, int(screen.height() * 0.85))
        else:
            w, h = 1200, 800
        self.resize(w, h)

    def eventFilter(self, obj, event) -> bool:
        if obj is self.canvas and event.type() == QEvent.Type.Resize:
            self.banner.place() if self.banner.isVisible() else None
            self.help.place()
            self.colour_bar.place()
        return super().eventFilter(obj, event)

    # ----------------------------------------------------------------------------- scenes
    def open_scene(self, path: str | Path) -> bool:
        """Open a scene folder; on failure the window says why and keeps the previous scene."""
        return self.scene_controller.open_scene(path)

    def open_scene_dialog(self) -> None:
        self.scene_controller.open_scene_dialog()

    def recent_scenes(self) -> list[str]:
        return self.scene_controller.recent_scenes()

    def _fill_recent(self) -> None:
        self.menus.fill_recent()

    def show_welcome(self) -> None:
        self.scene_controller.show_welcome()

    def show_training_snapshot(self, name: str, state: dict, config: dict | None, note: str = "",
                               final: bool = False) -> None:
        """Show a trainer's weights for backend ``name`` (``SceneController.show_training_snapshot``)."""
        self.scene_controller.show_training_snapshot(name, state, config, note, final)

    # ------------------------------------------------------------------ screenshots / video
    @property
    def screenshot_size(self) -> tuple[int, int] | None:
        """Width and height of screenshots (None: the window's render size)."""
        return self.capture.screenshot_size

    def set_screenshot_size(self, size) -> bool:
        return self.capture.set_screenshot_size(size)

    def save_screenshot(self, path: str | None = None) -> str | None:
        """Save the current view as PNG (``CaptureController.save_screenshot``)."""
        return self.capture.save_screenshot(path)

    def export_video(self, settings: VideoSettings) -> bool:
        """Render a camera path to MP4/GIF on the worker (progress dialog with Cancel)."""
        return self.capture.export_video(settings)

    def add_keyframe(self) -> None:
        self.capture.add_keyframe()

    @property
    def keyframes(self):
        """The camera path's keyframes (a tuple of CameraPose, in path order)."""
        return self.capture.keyframes

    def _default_output(self, suffix: str) -> Path:
        return self.capture.default_output(suffix)

    @property
    def _progress(self):
        """The progress dialog of the screenshot or video being rendered (None when idle)."""
        return self.capture.progress

    # ---------------------------------------------------------------------------- backends
    def set_backend(self, name: str) -> bool:
        """Switch the displayed backend (keys 1/2/3); False (with a message) if it is unavailable."""
        if name not in registry.BACKENDS:
            return False
        if not self.backend_selector.is_enabled(name):
            label = backend_label(name)
            self.statusBar().showMessage(f"{label}: {self.backend_selector.reasons.get(name, 'unavailable')}", 5000)
            self.backend_selector.set_current(self.backend)
            return False
        self.backend = name
        self.backend_selector.set_current(name)
        if self.banner.kind == "error":
            self.banner.hide()
        self.sync_modes()
        self.request_render()
        self.update_hud()  # the HUD names the new backend at once, not at its first frame
        self.backendChanged.emit(name)
        return True

    def set_compare_backend(self, name: str | None) -> None:
        """Show ``name`` next to the current backend in a split view (None: single view)."""
        self.compare_backend = name if name and name != self.backend else None
        self.sync_modes()
        self.request_render()

    def _outputs_of(self, name: str) -> frozenset[str]:
        info = self.infos.get(name)
        return info.supported_outputs if info else frozenset(registry.BACKENDS[name].supported_outputs)

    def sync_modes(self) -> None:
        """Offer the display modes the shown backends render (back to RGB if the current one is not)."""
        if not self.backend:
            return
        outputs = self._outputs_of(self.backend)
        if self.compare_backend:
            outputs = outputs & self._outputs_of(self.compare_backend)
        self.display_box.set_supported(outputs, backend_label(self.backend))
        if self.mode != "rgb" and self.mode not in outputs:
            self.mode = "rgb"
            self.display_box.set_mode("rgb")

    # -------------------------------------------------------------------------- rendering
    def current_request(self, width: int | None = None, height: int | None = None):
        """The current view at ``width x height``; by default at the render size, the window (one
        pane when the comparator shows two side by side) times ``render_scale``."""
        if not width or not height:
            width, height = scaled_size(*self.canvas.view_size(), self.render_scale)
        near, far = view_bounds(self.scene, self.camera.eye)  # follow the camera: zooming out never clips
        return self.camera.request(width, height, near, far,
                                   background=tuple(float(x) for x in self.scene.background))

    def _sync_camera_widgets(self) -> None:
        """Field of view, dataset camera label and list, highlighted frustum; the guides follow
        the camera at once (repaint without waiting for the next frame)."""
        self.camera_box.set_fov(self.camera.fov_deg)
        idx = self.camera.dataset_index
        self.camera_box.dataset.setText(f"#{idx + 1} of {len(self.camera.dataset_poses)}" if idx >= 0 else "free")
        self.camera_box.set_current_camera(idx)
        self.canvas.set_guides_current(idx)
        if self.canvas.guides_drawn():
            self.canvas.update()

    def request_render(self) -> None:
        """Send the current view to the worker (skipped when nothing changed)."""
        if self.scene is None or self.camera is None:
            return
        self._sync_camera_widgets()
        if self.backend is None:
            return
        req = self.current_request()
        backends = (self.backend, self.compare_backend) if self.compare_backend else (self.backend,)
        key = (req, backends, self.mode)
        self.viewRequested.emit()
        if key == self._last_job_key:
            return
        self._last_job_key = key
        self._serial += 1
        self.worker.submit(ViewJob(req, backends, self.mode, self._serial))

    def clear_view_state(self) -> None:
        """Forget the previous scene's backends, frames and frame rate (a scene is opening)."""
        self.infos.clear()
        self.last_frame = None
        self.hud_presenter.reset()
        self.canvas.set_frame(None)
        self.colour_bar.set_range("rgb", (0.0, 1.0))
        self._last_job_key = None

    def _on_frame(self, frame: Frame) -> None:
        self.canvas.set_frame(frame)
        self.last_frame = frame
        self.colour_bar.set_range(frame.mode, frame.value_range)  # hidden in RGB
        self.hud_presenter.frame_shown(frame)
        if self.banner.isVisible() and self.banner.kind == "error" and "failed to render" in self.banner.text():
            self.banner.hide()
        self.update_hud()

    @property
    def last_interactive(self) -> Frame | None:
        """The last frame rendered for a moving camera (its timings are the HUD's ms/frame)."""
        return self.hud_presenter.last_interactive

    @property
    def fps_ema(self) -> float | None:
        """Frames per second of interactive frames (moving average; None before two frames)."""
        return self.hud_presenter.frame_rate.ema

    def update_hud(self) -> None:
        self.hud_presenter.update()

    # ------------------------------------------------------------------------ view options
    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            return
        if mode != "rgb" and mode not in self._outputs_of(self.backend or ""):
            if self.backend:
                self.statusBar().showMessage(
                    f"{registry.BACKENDS[self.backend].label} does not render {MODE_LABELS[mode].lower()}", 4000)
            self.display_box.set_mode(self.mode)
            return
        self.mode = mode
        self.display_box.set_mode(mode)
        self.request_render()
        self.update_hud()

    def _outputs_of_safe(self) -> frozenset[str]:
        return self._outputs_of(self.backend) if self.backend else frozenset({"rgb"})

    def cycle_mode(self) -> None:
        outputs = self._outputs_of_safe()
        modes = [m for m in MODES if m == "rgb" or m in outputs]
        self.set_mode(modes[(modes.index(self.mode) + 1) % len(modes)] if self.mode in modes else "rgb")

    def set_target_fps(self, fps: float) -> None:
        self.worker.set_target_fps(fps)
        self.settings.setValue("target_fps", fps)
        self.update_hud()

    def set_dynamic_resolution(self, on: bool) -> None:
        self.worker.dynamic = bool(on)
        self._last_job_key = None
        self.request_render()

    def set_render_scale(self, scale: float) -> None:
        """Render (and refine) views at ``scale`` of the window's width and height (0 < scale <= 1)."""
        scale = float(scale)
        if not 0.0 < scale <= 1.0:
            self.show_input_error(f"Render resolution must be above 0% and at most 100% of the window, "
                                  f"not {100 * scale:g}%")
            self.performance_box.set_render_scale(self.render_scale)
            return
        self.render_scale = scale
        self.settings.setValue("render_scale", scale)
        self.performance_box.set_render_scale(scale)
        self.request_render()
        self.update_hud()

    def set_guides_visible(self, on: bool) -> None:
        """Show / hide the dataset cameras' frustums and the scene bounds (F)."""
        self.canvas.set_guides_visible(on)
        self.settings.setValue("guides", bool(on))
        if self.guides_action.isChecked() != bool(on):
            self.guides_action.setChecked(bool(on))

    def set_hud_visible(self, on: bool) -> None:
        self.hud.setVisible(on)
        self.settings.setValue("hud", bool(on))

    def toggle_hud(self) -> None:
        self.hud_action.toggle()

    def toggle_help(self) -> None:
        self.help.setVisible(not self.help.isVisible())
        if self.help.isVisible():
            self.help.place()
            self.help.raise_()

    # ------------------------------------------------------------------------------ camera
    def reset_camera(self) -> None:
        if self.camera:
            self.camera.reset()
            self.request_render()

    def snap_camera(self, step: int) -> None:
        if self.camera is None:
            return
        if not self.camera.snap_next(step):
            self.statusBar().showMessage("This scene has no dataset cameras", 3000)
            return
        self.request_render()

    def snap_to_camera(self, index: int) -> None:
        """View the scene from dataset camera ``index`` (the Camera box's list)."""
        if self.camera is None or not self.camera.snap_to(index):
            return
        self.request_render()

    def set_fov(self, fov: float) -> None:
        if self.camera:
            self.camera.set_fov(fov)
            self.request_render()

    def nudge_fov(self, delta: float) -> None:
        if self.camera:
            self.set_fov(self.camera.fov_deg + delta)

    # ------------------------------------------------------------------------------ errors
    def show_error(self, message: str, kind: str = "error") -> None:
        """Show a message in the window (banner + status bar); never raises."""
        self.banner.show_message(message, kind)
        self.statusBar().showMessage(message.splitlines()[0], 10000)

    def show_input_error(self, message: str) -> None:
        """A value typed into the side panel cannot be used: say why for a few seconds."""
        self.banner.show_message(message, "error", 8000)
        self.statusBar().showMessage(message, 8000)

    def report_exception(self, exc_type, exc, tb) -> None:
        """sys.excepthook target: an unexpected error in a slot becomes a message, not a crash."""
        traceback.print_exception(exc_type, exc, tb)
        self.show_error(f"Unexpected error: {exc_type.__name__}: {exc}")

    # ----------------------------------------------------------------------------- closing
    SHUTDOWN_WAIT_MS = 5000
    """How long closing waits for the render thread to finish what it is doing (a frame aborts at
    its next chunk; loading a backend, e.g. building KiloNeRF's grids, cannot be interrupted)."""

    def shutdown(self) -> bool:
        """Stop a training job and the render thread (aborts the frame in flight at its next chunk).
        Returns False if the render thread was still busy after ``SHUTDOWN_WAIT_MS``: the caller
        then ends the process without waiting for it (closing never hangs)."""
        self.training.shutdown()
        self.comparator.shutdown()
        if not self.render_thread.isRunning():
            if self.render_server is not None:
                self.render_server.stop()
            return True
        self.worker.cancel_offline()
        self.worker.clear_backends()
        self.render_thread.quit()
        if self.render_server is None:
            return self.render_thread.wait(self.SHUTDOWN_WAIT_MS)
        done = self.render_thread.wait(min(1000, self.SHUTDOWN_WAIT_MS))
        self.render_server.stop()  # a child still inside a frame is killed: the thread's call returns
        return done or self.render_thread.wait(self.SHUTDOWN_WAIT_MS)

    def closeEvent(self, event) -> None:
        if not self.training.confirm_close():  # a running job: ask, stop it, close when it ended
            event.ignore()
            return
        self.settings.setValue("geometry", self.saveGeometry())
        self.shutdown()
        super().closeEvent(event)
