"""Opening scene folders in a main window and loading their backends on the render thread.

A scene opens on the GUI thread (its JSON manifest only): the window gets an orbit camera, the
dataset cameras (the Camera box's list, the guides' frustums) and every backend the scene has
weights for is loaded by the render thread, the one shown first (``opening_backend``) first.
Weights a training job publishes reach the same backends (``show_training_snapshot``).
"""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QObject
from PyQt6.QtWidgets import QFileDialog

from models.backends import registry
from models.scene import Scene
from viewer.camera import OrbitCamera, dataset_cameras
from viewer.panels.backends import backend_label
from viewer.render_worker import BackendInfo
from viewer.scene_guides import SceneGuides

MAX_RECENT = 8
"""Scenes listed in File → Open recent."""

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


class SceneController(QObject):
    """The scene side of ``window`` (a MainWindow): File → Open scene and Open recent, the
    backends' availability, loading and failures (the backend selector, the View → Backend
    actions, the messages), and the live preview of a training job's weights. Windows are titled
    "scene — ``app_name``"."""

    def __init__(self, window, app_name: str):
        super().__init__(window)
        self.win = window
        self.app_name = app_name
        w = window.worker
        w.backendLoaded.connect(self._on_backend_loaded)
        w.backendFailed.connect(self._on_backend_failed)
        w.renderFailed.connect(self._on_render_failed)

    # ------------------------------------------------------------------------------- scenes
    def open_scene_dialog(self) -> None:
        start = self.win.settings.value("last_dir", str(Path.cwd()))
        path = QFileDialog.getExistingDirectory(self.win, "Open scene folder (holding scene.json)", start)
        if path:
            self.win.open_scene(path)

    def recent_scenes(self) -> list[str]:
        """Recently opened scene folders, the last one first."""
        v = self.win.settings.value("recent", [])
        if isinstance(v, str):
            v = [v]
        return [str(x) for x in (v or [])]

    def _remember(self, path: str) -> None:
        recent = [p for p in self.recent_scenes() if p != path]
        self.win.settings.setValue("recent", [path, *recent][:MAX_RECENT])
        self.win.settings.setValue("last_dir", str(Path(path).parent))

    def show_welcome(self) -> None:
        self.win.banner.show_message(
            "No scene loaded.  Open a scene folder with File → Open scene… (Ctrl+O).\n"
            "Make one with:  python main.py make-scene DATA  then  python main.py train DATA --out SCENE",
            "info")

    def open_scene(self, path: str | Path) -> bool:
        """Open a scene folder; on failure the window says why and keeps the previous scene."""
        win = self.win
        path = str(Path(path).expanduser().resolve())
        try:
            scene = Scene.load(Path(path))
        except Exception as e:  # noqa: BLE001 - any failure becomes a message
            win.show_error(f"Could not open scene: {e}")
            return False
        win.scene = scene
        win.camera = OrbitCamera.for_scene(scene)
        win.canvas.camera = win.camera
        win.capture.clear_keyframes()
        win.worker.clear_backends()
        win.clear_view_state()
        win.canvas.set_guides(SceneGuides.for_scene(scene, dataset_cameras(scene)))
        win.camera_box.set_cameras(win.camera.dataset_labels)
        available = self._check_backends(scene)
        win.banner.hide()
        # keep the current backend across scenes; else the scene's suggestion (the demo names the
        # backend that is interactive on a CPU), else the fastest available one (KiloNeRF renders
        # a frame fastest on GPUs and CPUs alike, the NeRF teacher slowest)
        preferred = opening_backend(win.backend, scene.extra.get("default_backend"), available)
        win.backend = preferred
        win.compare_backend = None
        win.backend_selector.set_current(preferred)
        order = ([preferred] if preferred else []) + [n for n in available if n != preferred]
        for name in order:
            win.worker.load_backend(scene, name)
        if preferred is None:
            reasons = "; ".join(f"{backend_label(n)}: {win.backend_selector.reasons[n]}" for n in registry.BACKENDS)
            win.show_error(f"This scene has no renderer weights yet ({reasons}). "
                           "Train it with: python main.py train DATA --out SCENE", kind="info")
        else:
            win.sync_modes()
        name = scene.root.name
        n_cams = sum(len(v) for v in scene.cameras.values())
        win.scene_label.setText(f"<b>{name}</b><br>{path}<br>{n_cams} dataset cameras · near {scene.near:g} "
                                f"· far {scene.far:g}")
        win.setWindowTitle(f"{name} — {self.app_name}")
        self._remember(path)
        win.camera_box.set_fov(win.camera.fov_deg)
        win.request_render()
        win.sceneOpened.emit(path)
        return True

    def _check_backends(self, scene: Scene) -> list[str]:
        """Show which backends ``scene`` has weights for (the others greyed out with the reason);
        returns the available ones in registry order."""
        win = self.win
        available = []
        for name, cls in registry.BACKENDS.items():
            try:
                ok, reason = cls.availability(scene)
            except Exception as e:  # noqa: BLE001
                ok, reason = False, f"cannot check: {e}"
            win.backend_selector.set_availability(name, ok, reason)
            win.menus.label_backend_action(name)
            if ok:
                available.append(name)
                win.backend_selector.set_note(name, "loading…")
        return available

    # ----------------------------------------------------------------------------- backends
    def _on_backend_loaded(self, info: BackendInfo) -> None:
        win = self.win
        win.infos[info.name] = info
        path = "" if info.accel == "auto" else f" · {info.accel} path"
        win.backend_selector.set_note(info.name, f"{info.device}{path} · {info.parameters / 1e6:.2f} M params")
        if info.name in (win.backend, win.compare_backend):
            win.sync_modes()
        win.update_hud()

    def _on_backend_failed(self, name: str, message: str) -> None:
        win = self.win
        win.backend_selector.set_availability(name, False, message)
        win.menus.label_backend_action(name)
        label = backend_label(name)
        if name == win.backend:
            win.show_error(f"{label} could not be loaded: {message}")
        else:
            win.statusBar().showMessage(f"{label} could not be loaded: {message}", 8000)

    def _on_render_failed(self, name: str, message: str) -> None:
        label = registry.BACKENDS[name].label if name in registry.BACKENDS else name
        self.win.show_error(f"{label} failed to render: {message}")

    # --------------------------------------------------------------------- training preview
    def show_training_snapshot(self, name: str, state: dict, config: dict | None, note: str = "",
                               final: bool = False) -> None:
        """Show a trainer's weights for backend ``name`` without blocking either thread.

        A backend the render thread has (or is loading) gets them hot-swapped; otherwise one is
        created there from them (``final``: a finished stage, loaded from the re-read scene folder).
        Either way the backend is selectable at once.
        """
        win = self.win
        if win.scene is None or name not in registry.BACKENDS:
            return
        if final:
            try:
                win.scene = Scene.load(win.scene.root)  # the manifest now lists the new backend
            except Exception as e:  # noqa: BLE001
                win.show_error(f"Could not re-read the scene: {e}")
                return
        if win.backend_selector.is_enabled(name):
            win.worker.publish_weights(name, state, config)
        else:
            from viewer.train_worker import PreviewScene

            win.backend_selector.set_availability(name, True)
            win.menus.label_backend_action(name)
            win.worker.load_backend(win.scene if final else PreviewScene(win.scene, name, state, config), name)
            if win.backend is None:
                if win.banner.isVisible() and win.banner.kind == "info":
                    win.banner.hide()
                win.set_backend(name)
        if note:
            win.backend_selector.set_note(name, note)
