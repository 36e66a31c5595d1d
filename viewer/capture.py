"""Screenshots, the recorded camera path (keyframes) and videos of a main window's view.

A screenshot whose render is already on screen is written at once; anything else (a screenshot
at another size, a video of an orbit or of the camera path) is an ``OfflineJob`` rendered and
written by the render thread, behind a progress dialog whose Cancel stops it. One job at a time.
The camera path is a ``viewer.camera_path.CameraPath``, the one model the K key, the Camera box
and the camera-path panel (``viewer/panels/camera_path_panel.py``) edit; its video frames come
from ``CameraPath.poses``, the function the panel's preview samples too.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QObject, Qt
from PyQt6.QtWidgets import QFileDialog, QProgressDialog

from viewer.camera import CameraPose, orbit_path, request_for_pose, view_bounds
from viewer.camera_path import CameraPath
from viewer.panels.video_dialog import VideoDialog, VideoSettings
from viewer.panels.view_panel import parse_size
from viewer.render_worker import OfflineJob
from viewer.scene_guides import project_segments


class CaptureController(QObject):
    """The capture side of ``window`` (a MainWindow): File → Save screenshot, Export video, the
    Screenshot box's size and Camera → Add / Clear keyframes. Saved files are announced in the
    window (banner, status bar) and by its ``screenshotSaved`` / ``videoSaved`` signals; failed or
    cancelled jobs by ``offlineFailed``."""

    def __init__(self, window):
        super().__init__(window)
        self.win = window
        self.path = CameraPath()
        """The camera path: keyframes (K, the camera-path panel), duration, smoothness."""
        self.path.subscribe(self._on_path_changed)
        self.video_dialog: VideoDialog | None = None
        """The Export video dialog while it is open."""
        self.screenshot_size: tuple[int, int] | None = None
        """Width and height of screenshots (None: the window's render size)."""
        try:
            saved = str(window.settings.value("screenshot_size", "") or "")
            self.screenshot_size = parse_size(saved) if saved else None
        except ValueError:
            self.screenshot_size = None
        self.progress: QProgressDialog | None = None
        """The progress dialog of the job being rendered."""
        self._offline_kind: str | None = None
        """"screenshot" or "video" while a job runs."""
        self._shot_guides = None
        """The request of the screenshot being saved, when the scene guides are drawn onto it."""
        w = window.worker
        w.offlineProgress.connect(self._on_offline_progress)
        w.offlineFinished.connect(self._on_offline_finished)
        w.offlineFailed.connect(self._on_offline_failed)

    # ---------------------------------------------------------------------------- keyframes
    @property
    def keyframes(self) -> tuple[CameraPose, ...]:
        """The camera path's keyframes, in order."""
        return self.path.keyframes

    def add_keyframe(self) -> None:
        """Append the current view to the camera path."""
        win = self.win
        if win.camera is None:
            return
        self.path.append(win.camera.pose())
        win.statusBar().showMessage(f"Keyframe {len(self.path)} added", 2000)

    def clear_keyframes(self) -> None:
        self.path.clear()

    def _on_path_changed(self) -> None:
        self.win.camera_box.set_keyframe_count(len(self.path))

    # -------------------------------------------------------------------------- screenshots
    def set_screenshot_size(self, size) -> bool:
        """Screenshots at ``size``: None (the window's size), (width, height) or "WxH". A size that
        cannot be used keeps the previous one and says why (returns False)."""
        win = self.win
        try:
            if isinstance(size, str):
                size = parse_size(size)
            elif size is not None:
                size = parse_size(f"{int(size[0])}x{int(size[1])}")
        except (ValueError, TypeError, IndexError) as e:
            win.show_input_error(str(e) if isinstance(e, ValueError) else f"Screenshot size {size!r} is not "
                                 "a width and a height")
            win.screenshot_box.set_size(self.screenshot_size)
            return False
        self.screenshot_size = size
        win.screenshot_box.set_size(size)
        win.settings.setValue("screenshot_size", f"{size[0]}x{size[1]}" if size else "")
        return True

    def default_output(self, suffix: str) -> Path:
        """A new file in the output folder: the scene's name, the time and ``suffix``."""
        win = self.win
        folder = Path(win.settings.value("output_dir", str(Path.cwd() / "captures")))
        stem = win.scene.root.name if win.scene else "view"
        return folder / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"

    def save_screenshot_as(self) -> None:
        if self.win.scene is None:
            return
        path, _ = QFileDialog.getSaveFileName(self.win, "Save screenshot", str(self.default_output(".png")),
                                              "PNG (*.png)")
        if path:
            self.save_screenshot(path)

    def screenshot_request(self):
        """The current view at the screenshot size (``screenshot_size``, else the window's)."""
        w, h = self.screenshot_size or self.win.canvas.view_size()
        return self.win.current_request(w, h)

    def save_screenshot(self, path: str | None = None) -> str | None:
        """Save the current view as PNG at the screenshot size (the window's full resolution
        unless a size is set), from the render alone: the HUD, colour bar and scene guides are
        not in it, unless File → Scene guides in screenshots draws the guides onto it.

        If the frame on screen is already the final render of exactly this request it is
        written at once; otherwise the worker renders it (progress dialog, cancellable).
        Returns the path, or None when there is nothing to show.
        """
        win = self.win
        if win.scene is None or win.backend is None or self._offline_kind:
            return None
        path = str(path or self.default_output(".png"))
        if not path.lower().endswith(".png"):
            path += ".png"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        req = self.screenshot_request()
        self._shot_guides = req if win.shot_guides_action.isChecked() and win.canvas.guides is not None else None
        f = win.last_frame
        if f is not None and f.final and f.request == req and f.backends[0] == win.backend and f.mode == win.mode:
            import imageio.v2 as imageio

            from viewer.colormap import display_to_uint8

            try:
                imageio.imwrite(path, display_to_uint8(f.images[0], f.mode, f.value_range))
            except Exception as e:  # noqa: BLE001
                win.show_error(f"Could not save screenshot: {e}")
                return None
            self._on_screenshot_written(path)
            return path
        self._start_offline(OfflineJob("screenshot", [req], win.backend, path, win.mode), "screenshot",
                            f"Rendering a {req.width}x{req.height} screenshot…")
        return path

    def _paint_guides(self, path: str, request) -> None:
        """Draw the scene guides, as seen by ``request``, onto the PNG at ``path``."""
        from PyQt6.QtCore import QLineF
        from PyQt6.QtGui import QColor, QImage, QPainter, QPen

        img = QImage(path)
        if img.isNull():
            raise OSError(f"cannot read {path} back")
        camera = self.win.camera
        seg, col = self.win.canvas.guides.segments(camera.dataset_index if camera else -1)
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
        win = self.win
        request, self._shot_guides = self._shot_guides, None
        if request is not None:
            try:
                self._paint_guides(path, request)
            except Exception as e:  # noqa: BLE001 - the render is saved; say what is missing
                win.show_error(f"Screenshot saved without the scene guides: {e}")
        win.banner.show_message(f"Screenshot saved: {path}", "info", 4000)
        win.statusBar().showMessage(f"Screenshot saved: {path}", 6000)
        win.screenshotSaved.emit(path)

    # -------------------------------------------------------------------------------- video
    def export_video_dialog(self, source: str | None = None) -> VideoDialog | None:
        """Open the Export video dialog (window-modal, not blocking): ``source`` "keyframes" or
        "orbit" preselected (default: the camera path when it has two keyframes), its length the
        camera path's duration. OK renders the video; returns the dialog."""
        win = self.win
        if win.scene is None or win.backend is None:
            win.show_error("Open a scene with a trained renderer before exporting a video.", kind="info")
            return None
        if self.video_dialog is not None:
            self.video_dialog.raise_()
            return self.video_dialog
        w, h = win.canvas.render_size()
        fps = 30
        if source is None:
            source = "keyframes" if len(self.path) >= 2 else "orbit"
        defaults = VideoSettings(str(self.default_output(".mp4")), source, self.path.frame_count(fps), fps,
                                 w - w % 2, h - h % 2)
        dlg = VideoDialog(defaults, len(self.path), win)
        dlg.setWindowModality(Qt.WindowModality.WindowModal)
        self.video_dialog = dlg
        dlg.accepted.connect(lambda: self.export_video(dlg.settings()))
        dlg.finished.connect(lambda _result: self._video_dialog_closed(dlg))
        dlg.open()
        return dlg

    def _video_dialog_closed(self, dlg: VideoDialog) -> None:
        if self.video_dialog is dlg:
            self.video_dialog = None
        dlg.deleteLater()

    def export_video(self, settings: VideoSettings) -> bool:
        """Render a camera path to MP4/GIF on the worker (progress dialog with Cancel)."""
        win = self.win
        if win.scene is None or win.backend is None or win.camera is None or self._offline_kind:
            return False
        if settings.source == "keyframes":
            if len(self.path) < 2:
                win.show_error("Record at least two keyframes (K) to export a camera path.", kind="info")
                return False
            poses = self.path.poses(settings.frames)
        else:
            poses = orbit_path(win.camera, settings.frames)
        bg = tuple(float(x) for x in win.scene.background)
        reqs = [request_for_pose(p, settings.width, settings.height, *view_bounds(win.scene, p.c2w[:3, 3]),
                                 background=bg) for p in poses]
        Path(settings.path).parent.mkdir(parents=True, exist_ok=True)
        self._start_offline(OfflineJob("video", reqs, win.backend, settings.path, win.mode, settings.fps), "video",
                            f"Rendering {len(reqs)} frames to {Path(settings.path).name}…")
        return True

    # ------------------------------------------------------------------------- offline jobs
    def _start_offline(self, job: OfflineJob, kind: str, text: str) -> None:
        self._offline_kind = kind
        dlg = QProgressDialog(text, "Cancel", 0, len(job.requests), self.win)
        dlg.setWindowTitle("Export")
        dlg.setWindowModality(Qt.WindowModality.WindowModal)
        dlg.setMinimumDuration(300)
        dlg.setAutoClose(False)
        dlg.setAutoReset(False)
        dlg.setValue(0)
        # a lambda runs in the GUI thread at once (a bound method of the worker would be queued
        # to the busy render thread and arrive after the job)
        dlg.canceled.connect(lambda: self.win.worker.cancel_offline())
        self.progress = dlg
        self.win.worker.submit_offline(job)

    def cancel_export(self) -> None:
        self.win.worker.cancel_offline()

    def _close_progress(self) -> None:
        if self.progress is not None:
            self.progress.canceled.disconnect()
            self.progress.close()
            self.progress.deleteLater()
            self.progress = None
        self._offline_kind = None

    def _on_offline_progress(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress.setValue(done)

    def _on_offline_finished(self, path: str) -> None:
        kind = self._offline_kind
        self._close_progress()
        if kind == "screenshot":
            self._on_screenshot_written(path)
        else:
            win = self.win
            win.banner.show_message(f"Video saved: {path}", "info", 5000)
            win.statusBar().showMessage(f"Video saved: {path}", 8000)
            win.videoSaved.emit(path)

    def _on_offline_failed(self, message: str) -> None:
        kind = self._offline_kind or "export"
        self._close_progress()
        self._shot_guides = None
        if message == "cancelled":
            self.win.banner.show_message(f"{kind.capitalize()} cancelled", "info", 3000)
        else:
            self.win.show_error(f"{kind.capitalize()} failed: {message}")
        self.win.offlineFailed.emit(message)
