"""The main window: GL view in the centre, a side panel (dock) on the right, menus, status bar.

Layout is built for growth: the side panel is a dock of group boxes (a training panel is one
more dock/group), and a comparison is a second backend name in the view job
(``set_compare_backend``): the worker renders both and the canvas splits them.

Nothing here runs torch: scenes are opened (JSON manifest) on the GUI thread, everything else
(backend creation, weights, rendering, writing screenshots and videos of new renders) happens
in the RenderWorker's thread.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QEvent, QSettings, Qt, QThread, pyqtSignal
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QProgressDialog,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from models.backends import registry
from models.scene import Scene
from viewer.camera import (
    CameraPose,
    OrbitCamera,
    dataset_cameras,
    interpolate_poses,
    orbit_path,
    request_for_pose,
    view_bounds,
)
from viewer.gl_canvas import GLCanvas
from viewer.panels.backends import BackendSelector
from viewer.panels.comparator import Comparator
from viewer.panels.overlays import ColourBar, HelpOverlay, HudOverlay, MessageBanner
from viewer.panels.training_controller import TrainingController
from viewer.panels.video_dialog import VideoDialog, VideoSettings
from viewer.panels.view_panel import (
    MODE_LABELS,
    CameraBox,
    DisplayModeBox,
    PerformanceBox,
    ScreenshotBox,
    parse_size,
)
from viewer.render_worker import MODES, BackendInfo, Frame, OfflineJob, RenderWorker, ViewJob
from viewer.scene_guides import SceneGuides, project_segments

APP_NAME = "Neural Scene Viewer"
MAX_RECENT = 8
DEMO_SCENE = Path(__file__).resolve().parent.parent / "assets" / "demo_scene"


FASTEST_FIRST = ("kilonerf", "r2l", "nerf")
"""Backends by frame time (docs/benchmarks.md): the one a scene opens on is the first it has."""


def opening_backend(current: str | None, suggested: str | None, available: list[str]) -> str | None:
    """The backend a newly opened scene shows: the current one if the scene has it, else the
    scene's own suggestion, else its fastest (``FASTEST_FIRST``), else None."""
    if current in available:
        return current
    if suggested in available:
        return suggested
    fastest = [n for n in FASTEST_FIRST if n in available] + [n for n in available if n not in FASTEST_FIRST]
    return fastest[0] if fastest else None


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """``width x height`` times ``scale`` (at least 1x1)."""
    return max(1, round(width * scale)), max(1, round(height * scale))


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

    def __init__(self, settings: QSettings | None = None, device: str | None = None, parent=None):
        super().__init__(parent)
        self.settings = settings if settings is not None else QSettings("neural-scene-viewer", "viewer")
        self.setWindowTitle(APP_NAME)
        self.scene: Scene | None = None
        self.camera: OrbitCamera | None = None
        self.backend: str | None = None
        self.compare_backend: str | None = None
        self.mode = "rgb"
        self.infos: dict[str, BackendInfo] = {}
        self.keyframes: list[CameraPose] = []
        self.last_frame: Frame | None = None
        self.last_interactive: Frame | None = None
        """The last frame rendered for a moving camera (its timings are the HUD's ms/frame)."""
        self.fps_ema: float | None = None
        self._last_interactive_t: float | None = None
        self._serial = 0
        self._last_job_key = None
        self._offline_kind: str | None = None
        self._offline_path: str | None = None
        self._progress: QProgressDialog | None = None
        self.render_scale = min(max(float(self.settings.value("render_scale", 1.0, type=float)), 0.05), 1.0)
        """Fraction of the window's width and height views are rendered at (refined to)."""
        self.screenshot_size: tuple[int, int] | None = None
        """Width and height of screenshots (None: the window's render size)."""
        try:
            saved = str(self.settings.value("screenshot_size", "") or "")
            self.screenshot_size = parse_size(saved) if saved else None
        except ValueError:
            self.screenshot_size = None
        self._shot_guides = None
        """The request of the screenshot being saved, when the scene guides are drawn onto it."""

        # --- render thread
        self.render_thread = QThread(self)
        self.render_thread.setObjectName("render")
        self.worker = RenderWorker(device, float(self.settings.value("target_fps", 30.0, type=float)))
        self.worker.moveToThread(self.render_thread)
        self.render_thread.start()
        self.worker.frameReady.connect(self._on_frame)
        self.worker.backendLoaded.connect(self._on_backend_loaded)
        self.worker.backendFailed.connect(self._on_backend_failed)
        self.worker.renderFailed.connect(self._on_render_failed)
        self.worker.offlineProgress.connect(self._on_offline_progress)
        self.worker.offlineFinished.connect(self._on_offline_finished)
        self.worker.offlineFailed.connect(self._on_offline_failed)

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
        self.camera_box.addKeyframe.connect(self.add_keyframe)
        self.camera_box.clearKeyframes.connect(self.clear_keyframes)
        self.camera_box.cameraChosen.connect(self.snap_to_camera)
        self.screenshot_box = ScreenshotBox()
        self.screenshot_box.set_size(self.screenshot_size)
        self.screenshot_box.sizeChanged.connect(self.set_screenshot_size)
        self.screenshot_box.invalidSize.connect(self._show_input_error)
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

        # --- status bar
        self.status_backend = QLabel("")
        self.status_res = QLabel("")
        self.statusBar().addPermanentWidget(self.status_res)
        self.statusBar().addPermanentWidget(self.status_backend)

        self._build_menus()
        self.training = TrainingController(self, self.train_menu)
        """Train menu, progress dock, live preview of a running job."""
        self.comparator = Comparator(self)
        """Compare mode (C): two backends on one camera, their quality, the benchmark."""
        self._size_window()
        self.update_hud()

    # --------------------------------------------------------------------------- building
    def _action(self, menu, text: str, slot, shortcut=None, checkable=False, checked=False) -> QAction:
        act = QAction(text, self)
        if shortcut:
            keys = shortcut if isinstance(shortcut, list) else [shortcut]
            act.setShortcuts([QKeySequence(k) for k in keys])
        act.setCheckable(checkable)
        if checkable:
            act.setChecked(checked)
            act.toggled.connect(slot)
        else:
            act.triggered.connect(lambda _=False: slot())
        menu.addAction(act)
        self.addAction(act)  # shortcuts work while the menu bar is hidden/unfocused too
        return act

    def _build_menus(self) -> None:
        mb = self.menuBar()
        file = mb.addMenu("&File")
        self._action(file, "&Open scene…", self.open_scene_dialog, QKeySequence.StandardKey.Open)
        self.recent_menu = file.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        file.addSeparator()
        self._action(file, "Save &screenshot", self.save_screenshot, "F12")
        self._action(file, "Save screenshot &as…", self.save_screenshot_as, "Shift+F12")
        self.shot_guides_action = self._action(
            file, "Scene &guides in screenshots", lambda on: self.settings.setValue("guides_in_screenshots", bool(on)),
            checkable=True, checked=self.settings.value("guides_in_screenshots", False, type=bool))
        self._action(file, "&Export video…", self.export_video_dialog, "Ctrl+E")
        file.addSeparator()
        self._action(file, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        view = mb.addMenu("&View")
        self.backend_menu = view.addMenu("&Backend")
        self.backend_actions: dict[str, QAction] = {}
        for i, name in enumerate(registry.BACKENDS):
            cls = registry.BACKENDS[name]
            act = self._action(self.backend_menu, cls.label or name, lambda n=name: self.set_backend(n),
                               str(i + 1) if i < 9 else None)
            self.backend_actions[name] = act
            self._label_backend_action(name)
        modes = view.addMenu("&Display")
        for mode in MODES:
            self._action(modes, MODE_LABELS[mode], lambda m=mode: self.set_mode(m))
        self._action(view, "Next display &mode", self.cycle_mode, "M")
        view.addSeparator()
        self.hud_action = self._action(view, "&HUD", self.set_hud_visible, "H", checkable=True,
                                       checked=not self.hud.isHidden())
        self.guides_action = self._action(view, "Dataset cameras and &bounds", self.set_guides_visible, "F",
                                          checkable=True, checked=self.settings.value("guides", False, type=bool))
        self.canvas.set_guides_visible(self.guides_action.isChecked())
        view.addAction(self.side_dock.toggleViewAction())

        cam = mb.addMenu("&Camera")
        self._action(cam, "&Reset view", self.reset_camera, "R")
        self._action(cam, "&Previous dataset camera", lambda: self.snap_camera(-1), "[")
        self._action(cam, "&Next dataset camera", lambda: self.snap_camera(1), "]")
        self._action(cam, "Narrower field of view", lambda: self.nudge_fov(-5.0), "-")
        self._action(cam, "Wider field of view", lambda: self.nudge_fov(5.0), ["=", "+"])
        cam.addSeparator()
        self._action(cam, "Add &keyframe", self.add_keyframe, "K")
        self._action(cam, "&Clear keyframes", self.clear_keyframes)

        self.train_menu = mb.addMenu("&Train")  # filled by TrainingController

        hlp = mb.addMenu("&Help")
        self._action(hlp, "&Controls", self.toggle_help, ["F1", "?"])

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
    def open_scene_dialog(self) -> None:
        start = self.settings.value("last_dir", str(Path.cwd()))
        path = QFileDialog.getExistingDirectory(self, "Open scene folder (holding scene.json)", start)
        if path:
            self.open_scene(path)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_scenes()
        if not recent:
            a = self.recent_menu.addAction("(none)")
            a.setEnabled(False)
        for p in recent:
            self.recent_menu.addAction(p, lambda p=p: self.open_scene(p))

    def recent_scenes(self) -> list[str]:
        v = self.settings.value("recent", [])
        if isinstance(v, str):
            v = [v]
        return [str(x) for x in (v or [])]

    def _remember(self, path: str) -> None:
        recent = [p for p in self.recent_scenes() if p != path]
        self.settings.setValue("recent", [path, *recent][:MAX_RECENT])
        self.settings.setValue("last_dir", str(Path(path).parent))

    def show_welcome(self) -> None:
        self.banner.show_message(
            "No scene loaded.  Open a scene folder with File → Open scene… (Ctrl+O).\n"
            "Make one with:  python main.py make-scene DATA  then  python main.py train DATA --out SCENE",
            "info")

    def open_scene(self, path: str | Path) -> bool:
        """Open a scene folder; on failure the window says why and keeps the previous scene."""
        path = str(Path(path).expanduser().resolve())
        try:
            scene = Scene.load(Path(path))
        except Exception as e:  # noqa: BLE001 - any failure becomes a message
            self.show_error(f"Could not open scene: {e}")
            return False
        self.scene = scene
        self.camera = OrbitCamera.for_scene(scene)
        self.canvas.camera = self.camera
        self.keyframes.clear()
        self.camera_box.keyframes.setText("Keyframes: 0")
        self.worker.clear_backends()
        self.infos.clear()
        self.last_frame = self.last_interactive = None
        self.fps_ema = None
        self.canvas.set_frame(None)
        self.colour_bar.set_range("rgb", (0.0, 1.0))
        self.canvas.set_guides(SceneGuides.for_scene(scene, dataset_cameras(scene)))
        self.camera_box.set_cameras(self.camera.dataset_labels)
        self._last_job_key = None
        available = []
        for name, cls in registry.BACKENDS.items():
            try:
                ok, reason = cls.availability(scene)
            except Exception as e:  # noqa: BLE001
                ok, reason = False, f"cannot check: {e}"
            self.backend_selector.set_availability(name, ok, reason)
            self._label_backend_action(name)
            if ok:
                available.append(name)
                self.backend_selector.set_note(name, "loading…")
        self.banner.hide()
        # keep the current backend across scenes; else the scene's suggestion (the demo names the
        # backend that is interactive on a CPU), else the fastest available one (KiloNeRF renders
        # a frame fastest on GPUs and CPUs alike, the NeRF teacher slowest)
        preferred = opening_backend(self.backend, scene.extra.get("default_backend"), available)
        self.backend = preferred
        self.compare_backend = None
        self.backend_selector.set_current(preferred)
        order = ([preferred] if preferred else []) + [n for n in available if n != preferred]
        for name in order:
            self.worker.load_backend(scene, name)
        if preferred is None:
            reasons = "; ".join(f"{registry.BACKENDS[n].label or n}: {self.backend_selector.reasons[n]}"
                                for n in registry.BACKENDS)
            self.show_error(f"This scene has no renderer weights yet ({reasons}). "
                            "Train it with: python main.py train DATA --out SCENE", kind="info")
        else:
            self._sync_modes()
        name = scene.root.name
        n_cams = sum(len(v) for v in scene.cameras.values())
        self.scene_label.setText(f"<b>{name}</b><br>{path}<br>{n_cams} dataset cameras · near {scene.near:g} "
                                 f"· far {scene.far:g}")
        self.setWindowTitle(f"{name} — {APP_NAME}")
        self._remember(path)
        self.camera_box.set_fov(self.camera.fov_deg)
        self.request_render()
        self.sceneOpened.emit(path)
        return True

    # ---------------------------------------------------------------------------- backends
    def set_backend(self, name: str) -> bool:
        """Switch the displayed backend (keys 1/2/3); False (with a message) if it is unavailable."""
        if name not in registry.BACKENDS:
            return False
        if not self.backend_selector.is_enabled(name):
            label = registry.BACKENDS[name].label or name
            self.statusBar().showMessage(f"{label}: {self.backend_selector.reasons.get(name, 'unavailable')}", 5000)
            self.backend_selector.set_current(self.backend)
            return False
        self.backend = name
        self.backend_selector.set_current(name)
        if self.banner.kind == "error":
            self.banner.hide()
        self._sync_modes()
        self.request_render()
        self.update_hud()  # the HUD names the new backend at once, not at its first frame
        self.backendChanged.emit(name)
        return True

    def _label_backend_action(self, name: str) -> None:
        # the action stays enabled so its key still answers with the reason in the status bar
        label = registry.BACKENDS[name].label or name
        reason = self.backend_selector.reasons.get(name, "")
        self.backend_actions[name].setText(f"{label}  ({reason})" if reason else label)

    def set_compare_backend(self, name: str | None) -> None:
        """Show ``name`` next to the current backend in a split view (None: single view)."""
        self.compare_backend = name if name and name != self.backend else None
        self._sync_modes()
        self.request_render()

    def _outputs_of(self, name: str) -> frozenset[str]:
        info = self.infos.get(name)
        return info.supported_outputs if info else frozenset(registry.BACKENDS[name].supported_outputs)

    def _sync_modes(self) -> None:
        if not self.backend:
            return
        outputs = self._outputs_of(self.backend)
        if self.compare_backend:
            outputs = outputs & self._outputs_of(self.compare_backend)
        self.display_box.set_supported(outputs, registry.BACKENDS[self.backend].label or self.backend)
        if self.mode != "rgb" and self.mode not in outputs:
            self.mode = "rgb"
            self.display_box.set_mode("rgb")

    def _on_backend_loaded(self, info: BackendInfo) -> None:
        self.infos[info.name] = info
        self.backend_selector.set_note(info.name, f"{info.device} · {info.parameters / 1e6:.2f} M params")
        if info.name in (self.backend, self.compare_backend):
            self._sync_modes()
        self.update_hud()

    def _on_backend_failed(self, name: str, message: str) -> None:
        self.backend_selector.set_availability(name, False, message)
        self._label_backend_action(name)
        label = registry.BACKENDS[name].label or name
        if name == self.backend:
            self.show_error(f"{label} could not be loaded: {message}")
        else:
            self.statusBar().showMessage(f"{label} could not be loaded: {message}", 8000)

    def _on_render_failed(self, name: str, message: str) -> None:
        label = registry.BACKENDS[name].label if name in registry.BACKENDS else name
        self.show_error(f"{label} failed to render: {message}")

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

    def _on_frame(self, frame: Frame) -> None:
        self.canvas.set_frame(frame)
        self.last_frame = frame
        self.colour_bar.set_range(frame.mode, frame.value_range)  # hidden in RGB
        if not frame.refining:
            self.last_interactive = frame
            now = time.perf_counter()
            if self._last_interactive_t is not None:
                dt = now - self._last_interactive_t
                if dt < 1.0:
                    fps = 1.0 / max(dt, 1e-6)
                    self.fps_ema = fps if self.fps_ema is None else 0.2 * fps + 0.8 * self.fps_ema
            self._last_interactive_t = now
        if self.banner.isVisible() and self.banner.kind == "error" and "failed to render" in self.banner.text():
            self.banner.hide()
        self.update_hud()

    def update_hud(self) -> None:
        f = self.last_frame
        win = self.canvas.render_size()
        if self.backend is None:
            self.hud.set_lines([("Backend", "none"), ("Window", f"{win[0]}x{win[1]}")])
            return
        info = self.infos.get(self.backend)
        label = registry.BACKENDS[self.backend].label or self.backend
        if self.compare_backend:
            label += f" | {registry.BACKENDS[self.compare_backend].label or self.compare_backend}"
        lines = [("Backend", label + ("" if info else "  (loading…)"))]
        if f is not None:
            fps = f"{self.fps_ema:5.1f}" if self.fps_ema is not None else "  -  "
            pct = 100.0 * f.width * f.height / max(f.full_width * f.full_height, 1)
            shown = (self.backend, self.compare_backend) if self.compare_backend else (self.backend,)
            if f.backends != shown:  # a slow backend's first frame is still rendering
                state = "waiting for its first frame"
            elif f.final and f.refining:
                state = f"final (refined in {f.frame_ms / 1000:.1f} s)"
            elif f.final:
                state = "final"
            elif f.refining:
                state = f"refining {100 * f.progress:.0f}% ({f.frame_ms / 1000:.1f} s)"
            else:
                state = "moving"
            i = self.last_interactive or f
            lines += [
                ("FPS (EMA)", f"{fps}   target {self.worker.target_fps:g}"),
                ("ms/frame", f"{i.render_ms:.1f} render, {i.frame_ms:.1f} total at {i.width}x{i.height}"),
                ("Resolution", f"{f.width}x{f.height} of {f.full_width}x{f.full_height} ({pct:.0f}%)"
                               + (f", {100 * self.render_scale:.0f}% of window" if self.render_scale < 1 else "")),
                ("State", state),
                ("Samples/ray", f"{f.samples_per_ray:.0f}"),
            ]
        else:
            lines += [("Resolution", f"window {win[0]}x{win[1]}")]
        lines += [("Device", info.device if info else "-"), ("Display", MODE_LABELS[self.mode])]
        self.hud.set_lines(lines)
        if f is not None:
            self.status_res.setText(f"{f.width}x{f.height} / {f.full_width}x{f.full_height}")
        self.status_backend.setText(label)

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
            self._show_input_error(f"Render resolution must be above 0% and at most 100% of the window, "
                                   f"not {100 * scale:g}%")
            self.performance_box.set_render_scale(self.render_scale)
            return
        self.render_scale = scale
        self.settings.setValue("render_scale", scale)
        self.performance_box.set_render_scale(scale)
        self.request_render()
        self.update_hud()

    def set_screenshot_size(self, size) -> bool:
        """Screenshots at ``size``: None (the window's size), (width, height) or "WxH". A size that
        cannot be used keeps the previous one and says why (returns False)."""
        try:
            if isinstance(size, str):
                size = parse_size(size)
            elif size is not None:
                size = parse_size(f"{int(size[0])}x{int(size[1])}")
        except (ValueError, TypeError, IndexError) as e:
            self._show_input_error(str(e) if isinstance(e, ValueError) else f"Screenshot size {size!r} is not "
                                   "a width and a height")
            self.screenshot_box.set_size(self.screenshot_size)
            return False
        self.screenshot_size = size
        self.screenshot_box.set_size(size)
        self.settings.setValue("screenshot_size", f"{size[0]}x{size[1]}" if size else "")
        return True

    def _show_input_error(self, message: str) -> None:
        self.banner.show_message(message, "error", 8000)
        self.statusBar().showMessage(message, 8000)

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

    def add_keyframe(self) -> None:
        if self.camera is None:
            return
        self.keyframes.append(self.camera.pose())
        self.camera_box.keyframes.setText(f"Keyframes: {len(self.keyframes)}")
        self.statusBar().showMessage(f"Keyframe {len(self.keyframes)} added", 2000)

    def clear_keyframes(self) -> None:
        self.keyframes.clear()
        self.camera_box.keyframes.setText("Keyframes: 0")

    # ------------------------------------------------------------------ screenshots / video
    def _default_output(self, suffix: str) -> Path:
        folder = Path(self.settings.value("output_dir", str(Path.cwd() / "captures")))
        stem = self.scene.root.name if self.scene else "view"
        return folder / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"

    def save_screenshot_as(self) -> None:
        if self.scene is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save screenshot", str(self._default_output(".png")), "PNG (*.png)")
        if path:
            self.save_screenshot(path)

    def screenshot_request(self):
        """The current view at the screenshot size (``screenshot_size``, else the window's)."""
        w, h = self.screenshot_size or self.canvas.view_size()
        return self.current_request(w, h)

    def save_screenshot(self, path: str | None = None) -> str | None:
        """Save the current view as PNG at the screenshot size (the window's full resolution
        unless a size is set), from the render alone: the HUD, colour bar and scene guides are
        not in it, unless File → Scene guides in screenshots draws the guides onto it.

        If the frame on screen is already the final render of exactly this request it is
        written at once; otherwise the worker renders it (progress dialog, cancellable).
        Returns the path, or None when there is nothing to show.
        """
        if self.scene is None or self.backend is None or self._offline_kind:
            return None
        path = str(path or self._default_output(".png"))
        if not path.lower().endswith(".png"):
            path += ".png"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        req = self.screenshot_request()
        self._shot_guides = req if self.shot_guides_action.isChecked() and self.canvas.guides is not None else None
        f = self.last_frame
        if f is not None and f.final and f.request == req and f.backends[0] == self.backend and f.mode == self.mode:
            import imageio.v2 as imageio

            from viewer.colormap import display_to_uint8

            try:
                imageio.imwrite(path, display_to_uint8(f.images[0], f.mode, f.value_range))
            except Exception as e:  # noqa: BLE001
                self.show_error(f"Could not save screenshot: {e}")
                return None
            self._on_screenshot_written(path)
            return path
        self._start_offline(OfflineJob("screenshot", [req], self.backend, path, self.mode), "screenshot",
                            f"Rendering a {req.width}x{req.height} screenshot…")
        return path

    def _paint_guides(self, path: str, request) -> None:
        """Draw the scene guides, as seen by ``request``, onto the PNG at ``path``."""
        from PyQt6.QtCore import QLineF
        from PyQt6.QtGui import QColor, QImage, QPainter, QPen

        img = QImage(path)
        if img.isNull():
            raise OSError(f"cannot read {path} back")
        seg, col = self.canvas.guides.segments(self.camera.dataset_index if self.camera else -1)
        px, idx = project_segments(seg, request)
        painter = QPainter(img)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        width = max(1.0, request.height / 720.0)
        colours = (np.asarray(col)[idx] * 255 + 0.5).astype(int)
        for c in np.unique(colours, axis=0):
            painter.setPen(QPen(QColor(*(int(v) for v in c)), width))
            painter.drawLines([QLineF(*p[0], *p[1]) for p in px[(colours == c).all(1)]])
        painter.end()
        if not img.save(path):
            raise OSError(f"cannot write {path}")

    def _on_screenshot_written(self, path: str) -> None:
        request, self._shot_guides = self._shot_guides, None
        if request is not None:
            try:
                self._paint_guides(path, request)
            except Exception as e:  # noqa: BLE001 - the render is saved; say what is missing
                self.show_error(f"Screenshot saved without the scene guides: {e}")
        self.banner.show_message(f"Screenshot saved: {path}", "info", 4000)
        self.statusBar().showMessage(f"Screenshot saved: {path}", 6000)
        self.screenshotSaved.emit(path)

    def export_video_dialog(self) -> None:
        if self.scene is None or self.backend is None:
            self.show_error("Open a scene with a trained renderer before exporting a video.", kind="info")
            return
        w, h = self.canvas.render_size()
        defaults = VideoSettings(str(self._default_output(".mp4")), "keyframes" if len(self.keyframes) >= 2 else "orbit",
                                 120, 30, w - w % 2, h - h % 2)
        dlg = VideoDialog(defaults, len(self.keyframes), self)
        if dlg.exec():
            self.export_video(dlg.settings())

    def export_video(self, settings: VideoSettings) -> bool:
        """Render a camera path to MP4/GIF on the worker (progress dialog with Cancel)."""
        if self.scene is None or self.backend is None or self.camera is None or self._offline_kind:
            return False
        if settings.source == "keyframes":
            if len(self.keyframes) < 2:
                self.show_error("Record at least two keyframes (K) to export a camera path.", kind="info")
                return False
            poses = interpolate_poses(self.keyframes, settings.frames)
        else:
            poses = orbit_path(self.camera, settings.frames)
        bg = tuple(float(x) for x in self.scene.background)
        reqs = [request_for_pose(p, settings.width, settings.height, *view_bounds(self.scene, p.c2w[:3, 3]),
                                 background=bg) for p in poses]
        Path(settings.path).parent.mkdir(parents=True, exist_ok=True)
        self._start_offline(OfflineJob("video", reqs, self.backend, settings.path, self.mode, settings.fps), "video",
                            f"Rendering {len(reqs)} frames to {Path(settings.path).name}…")
        return True

    def _start_offline(self, job: OfflineJob, kind: str, text: str) -> None:
        self._offline_kind = kind
        self._offline_path = job.path
        dlg = QProgressDialog(text, "Cancel", 0, len(job.requests), self)
        dlg.setWindowTitle("Export")
        dlg.setWindowModality(Qt.WindowModality.WindowModal)
        dlg.setMinimumDuration(300)
        dlg.setAutoClose(False)
        dlg.setAutoReset(False)
        dlg.setValue(0)
        # a lambda runs in the GUI thread at once (a bound method of the worker would be queued
        # to the busy render thread and arrive after the job)
        dlg.canceled.connect(lambda: self.worker.cancel_offline())
        self._progress = dlg
        self.worker.submit_offline(job)

    def cancel_export(self) -> None:
        self.worker.cancel_offline()

    def _close_progress(self) -> None:
        if self._progress is not None:
            self._progress.canceled.disconnect()
            self._progress.close()
            self._progress.deleteLater()
            self._progress = None
        self._offline_kind = None

    def _on_offline_progress(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress.setValue(done)

    def _on_offline_finished(self, path: str) -> None:
        kind = self._offline_kind
        self._close_progress()
        if kind == "screenshot":
            self._on_screenshot_written(path)
        else:
            self.banner.show_message(f"Video saved: {path}", "info", 5000)
            self.statusBar().showMessage(f"Video saved: {path}", 8000)
            self.videoSaved.emit(path)

    def _on_offline_failed(self, message: str) -> None:
        kind = self._offline_kind or "export"
        self._close_progress()
        self._shot_guides = None
        if message == "cancelled":
            self.banner.show_message(f"{kind.capitalize()} cancelled", "info", 3000)
        else:
            self.show_error(f"{kind.capitalize()} failed: {message}")
        self.offlineFailed.emit(message)

    # --------------------------------------------------------------------- training preview
    def show_training_snapshot(self, name: str, state: dict, config: dict | None, note: str = "",
                               final: bool = False) -> None:
        """Show a trainer's weights for backend ``name`` without blocking either thread.

        A backend the render thread has (or is loading) gets them hot-swapped; otherwise one is
        created there from them (``final``: a finished stage, loaded from the re-read scene folder).
        Either way the backend is selectable at once.
        """
        if self.scene is None or name not in registry.BACKENDS:
            return
        if final:
            try:
                self.scene = Scene.load(self.scene.root)  # the manifest now lists the new backend
            except Exception as e:  # noqa: BLE001
                self.show_error(f"Could not re-read the scene: {e}")
                return
        if self.backend_selector.is_enabled(name):
            self.worker.publish_weights(name, state, config)
        else:
            from viewer.train_worker import PreviewScene

            self.backend_selector.set_availability(name, True)
            self._label_backend_action(name)
            self.worker.load_backend(self.scene if final else PreviewScene(self.scene, name, state, config), name)
            if self.backend is None:
                if self.banner.isVisible() and self.banner.kind == "info":
                    self.banner.hide()
                self.set_backend(name)
        if note:
            self.backend_selector.set_note(name, note)

    # ------------------------------------------------------------------------------ errors
    def show_error(self, message: str, kind: str = "error") -> None:
        """Show a message in the window (banner + status bar); never raises."""
        self.banner.show_message(message, kind)
        self.statusBar().showMessage(message.splitlines()[0], 10000)

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
            return True
        self.worker.cancel_offline()
        self.worker.clear_backends()
        self.render_thread.quit()
        return self.render_thread.wait(self.SHUTDOWN_WAIT_MS)

    def closeEvent(self, event) -> None:
        if not self.training.confirm_close():  # a running job: ask, stop it, close when it ended
            event.ignore()
            return
        self.settings.setValue("geometry", self.saveGeometry())
        self.shutdown()
        super().closeEvent(event)
