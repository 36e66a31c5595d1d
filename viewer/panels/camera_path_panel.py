"""The camera-path panel: the keyframes of the path in a list, its duration and smoothness, a
preview in the viewport, the video, and the path's file.

``CameraPathPanel`` is the widget (a dock, tabbed beside the Scene panel). It shows a
``viewer.camera_path.CameraPath`` and edits it directly where no camera is involved (reorder by
drag and drop or Up / Down, delete, clear, duration, smoothness); everything that needs the
window goes out as a signal. ``CameraPathController`` wires the panel to a main window: "Add
current view" (the K key's action), "Go to" (double-click), "Update" (the selected keyframe
becomes the current view), the preview, "Render video…" (the Export video dialog on the path)
and saving / loading the path as JSON.

The preview plays the path in the viewport in real time: a QTimer sets the camera to
``CameraPath.pose_at(seconds since start)``, the function the video's frames come from. It
stops at the end of the path, when Preview is pressed again, when the path is edited, and as
soon as anything else moves the camera (a drag, the wheel, flying, a reset, a snap, a new scene).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QObject, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QFontDatabase
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from viewer.camera_path import MAX_DURATION, CameraPath, CameraPathError, pose_summary

PREVIEW_INTERVAL_MS = 33
"""How often the preview moves the camera (about 30 times a second)."""
PATH_FILE = "camera_path.json"
"""Default name of a saved camera path (in the scene's folder)."""
ORDER_ROLE = Qt.ItemDataRole.UserRole
"""Item data: the keyframe's index in the path when the list was last filled."""


def smoothness_label(percent: int) -> str:
    if percent <= 0:
        return "Linear"
    if percent >= 100:
        return "Catmull-Rom"
    return f"{percent}%"


class CameraPathPanel(QWidget):
    """The keyframe list and the path's controls; see the module docstring."""

    addRequested = pyqtSignal()
    """Add the current view at the end of the path."""
    goToRequested = pyqtSignal(int)
    """Move the camera to keyframe ``index``."""
    updateRequested = pyqtSignal(int)
    """Keyframe ``index`` becomes the current view."""
    previewRequested = pyqtSignal()
    """Preview pressed: start or stop playing the path in the viewport."""
    renderRequested = pyqtSignal()
    saveRequested = pyqtSignal()
    loadRequested = pyqtSignal()

    def __init__(self, path: CameraPath, parent: QWidget | None = None):
        super().__init__(parent)
        self.path = path
        self.reference = (np.zeros(3), np.array([0.0, 0.0, 1.0]))
        """Centre and up axis the keyframes' azimuth, elevation and distance are measured from."""
        self._filling = False
        lay = QVBoxLayout(self)

        self.list = QListWidget()
        self.list.setObjectName("camera-path-keyframes")
        self.list.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.list.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setToolTip("Keyframes in path order: drag to reorder, double-click to go to one")
        self.list.setMinimumHeight(120)
        self.list.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))  # columns line up
        self.list.itemActivated.connect(lambda item: self.goToRequested.emit(self.list.row(item)))
        self.list.currentRowChanged.connect(lambda _row: self._sync_buttons())
        model = self.list.model()
        model.rowsMoved.connect(self._schedule_order_sync)
        model.rowsRemoved.connect(self._schedule_order_sync)  # a drop done as insert + remove
        lay.addWidget(self.list)

        grid = QGridLayout()
        self.add_button = self._button("Add current view", "Add the current view at the end of the path (K)",
                                       self.addRequested.emit, "camera-path-add")
        self.update_button = self._button("Update", "Replace the selected keyframe with the current view",
                                          lambda: self._with_selected(self.updateRequested.emit), "camera-path-update")
        self.goto_button = self._button("Go to", "Move the camera to the selected keyframe (or double-click it)",
                                        lambda: self._with_selected(self.goToRequested.emit), "camera-path-goto")
        self.delete_button = self._button("Delete", "Remove the selected keyframe", self.delete_selected,
                                          "camera-path-delete")
        self.up_button = self._button("Up", "Move the selected keyframe earlier in the path",
                                      lambda: self.move_selected(-1), "camera-path-up")
        self.down_button = self._button("Down", "Move the selected keyframe later in the path",
                                        lambda: self.move_selected(1), "camera-path-down")
        self.clear_button = self._button("Clear", "Remove every keyframe", self.path.clear, "camera-path-clear")
        for i, b in enumerate((self.add_button, self.update_button, self.goto_button, self.delete_button,
                               self.up_button, self.down_button)):
            grid.addWidget(b, i // 2, i % 2)
        grid.addWidget(self.clear_button, 3, 0, 1, 2)
        lay.addLayout(grid)

        form = QFormLayout()
        self.duration = QDoubleSpinBox()
        self.duration.setObjectName("camera-path-duration")
        self.duration.setRange(0.1, MAX_DURATION)
        self.duration.setDecimals(1)
        self.duration.setSingleStep(0.5)
        self.duration.setSuffix(" s")
        self.duration.setToolTip("Time from the first keyframe to the last (preview and video); keyframes are "
                                 "spaced evenly in time")
        self.duration.setValue(path.duration)
        self.duration.setKeyboardTracking(False)  # typed values count once they are entered
        self.duration.valueChanged.connect(self._on_duration)
        form.addRow("Duration", self.duration)
        smooth_row = QHBoxLayout()
        self.smoothness = QSlider(Qt.Orientation.Horizontal)
        self.smoothness.setObjectName("camera-path-smoothness")
        self.smoothness.setRange(0, 100)
        self.smoothness.setValue(round(100 * path.smoothness))
        self.smoothness.setToolTip("Linear (0%): straight segments at constant speed, turning at each keyframe. "
                                   "Catmull-Rom (100%): a smooth curve through the keyframes")
        self.smoothness.valueChanged.connect(self._on_smoothness)
        self.smoothness_value = QLabel(smoothness_label(self.smoothness.value()))
        self.smoothness_value.setMinimumWidth(80)
        smooth_row.addWidget(self.smoothness, 1)
        smooth_row.addWidget(self.smoothness_value)
        form.addRow("Smoothness", smooth_row)
        lay.addLayout(form)

        row = QHBoxLayout()
        self.preview_button = self._button("Preview", "Play the path in the view (press again, or move the "
                                           "camera, to stop)", self.previewRequested.emit, "camera-path-preview")
        self.preview_button.setCheckable(True)
        self.render_button = self._button("Render video…", "Export a video of the path (File → Export video)",
                                          self.renderRequested.emit, "camera-path-render")
        row.addWidget(self.preview_button)
        row.addWidget(self.render_button)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.save_button = self._button("Save path…", "Save the keyframes, duration and smoothness as JSON",
                                        self.saveRequested.emit, "camera-path-save")
        self.load_button = self._button("Load path…", "Replace the path with one saved as JSON",
                                        self.loadRequested.emit, "camera-path-load")
        row.addWidget(self.save_button)
        row.addWidget(self.load_button)
        lay.addLayout(row)
        self.summary = QLabel()
        self.summary.setObjectName("camera-path-summary")
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("color: gray;")
        lay.addWidget(self.summary)
        lay.addStretch(1)
        path.subscribe(self.refresh)
        self.refresh()

    def _button(self, text: str, tip: str, slot, name: str) -> QPushButton:
        b = QPushButton(text)
        b.setObjectName(name)
        b.setToolTip(tip)
        b.clicked.connect(lambda _=False: slot())
        return b

    def _with_selected(self, slot) -> None:
        row = self.list.currentRow()
        if 0 <= row < len(self.path):
            slot(row)

    # ------------------------------------------------------------------------------ showing
    def item_text(self, index: int) -> str:
        """``#  az  el  d  time`` of keyframe ``index``."""
        az, el, dist = pose_summary(self.path[index], *self.reference)
        return f"{index + 1:>2}   az {az:6.1f}°  el {el:5.1f}°  d {dist:.2f}   {self.path.keyframe_time(index):.2f} s"

    def refresh(self, select: int | None = None) -> None:
        """Show the path as it is now (keeps the selected row, or selects ``select``)."""
        row = self.list.currentRow() if select is None else select
        self._filling = True
        self.list.clear()
        for i, pose in enumerate(self.path.keyframes):
            item = QListWidgetItem(self.item_text(i))
            item.setData(ORDER_ROLE, i)
            item.setToolTip(f"Keyframe {i + 1}: field of view {pose.fov_deg:.1f}°, at "
                            f"{self.path.keyframe_time(i):.2f} s. Double-click to go to it.")
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsDropEnabled)  # drop between items, never onto
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(min(max(row, 0), self.list.count() - 1) if row >= 0 else -1)
        self._filling = False
        for box, value in ((self.duration, self.path.duration), (self.smoothness, round(100 * self.path.smoothness))):
            if box.value() != value:
                box.blockSignals(True)
                box.setValue(value)
                box.blockSignals(False)
        self.smoothness_value.setText(smoothness_label(self.smoothness.value()))
        n = len(self.path)
        self.summary.setText(f"{n} keyframe{'s' if n != 1 else ''} · {self.path.duration:g} s"
                             + ("" if n >= 2 else " · add at least two keyframes to preview or render"))
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        n, row = len(self.path), self.list.currentRow()
        selected = 0 <= row < n
        for b in (self.update_button, self.goto_button, self.delete_button):
            b.setEnabled(selected)
        self.up_button.setEnabled(selected and row > 0)
        self.down_button.setEnabled(selected and row < n - 1)
        self.clear_button.setEnabled(n > 0)
        self.save_button.setEnabled(n > 0)
        self.render_button.setEnabled(n >= 2)
        self.preview_button.setEnabled(n >= 2 or self.preview_button.isChecked())

    def set_previewing(self, on: bool) -> None:
        """Show the Preview button as playing (Stop) or not."""
        self.preview_button.blockSignals(True)
        self.preview_button.setChecked(on)
        self.preview_button.blockSignals(False)
        self.preview_button.setText("Stop" if on else "Preview")
        self._sync_buttons()

    # ------------------------------------------------------------------------------ editing
    def delete_selected(self) -> None:
        row = self.list.currentRow()
        if 0 <= row < len(self.path):
            self.path.remove(row)
            self.refresh(select=min(row, len(self.path) - 1))

    def move_selected(self, step: int) -> None:
        """Move the selected keyframe ``step`` places (-1: earlier, 1: later)."""
        row = self.list.currentRow()
        to = row + step
        if 0 <= row < len(self.path) and 0 <= to < len(self.path):
            self.path.move(row, to)
            self.refresh(select=to)

    def _schedule_order_sync(self, *_args) -> None:
        if not self._filling:
            QTimer.singleShot(0, self._sync_order_from_list)

    def _sync_order_from_list(self) -> None:
        """After a drag and drop: put the path in the order the list shows."""
        if self._filling or self.list.count() != len(self.path):
            return
        order = [self.list.item(r).data(ORDER_ROLE) for r in range(self.list.count())]
        if order == list(range(len(order))):
            return
        row = self.list.currentRow()
        try:
            self.path.reorder(order)
        except ValueError:  # the list and the path disagree: show the path as it is
            pass
        self.refresh(select=row)

    def _on_duration(self, seconds: float) -> None:
        try:
            self.path.set_duration(seconds)
        except CameraPathError:
            self.refresh()

    def _on_smoothness(self, percent: int) -> None:
        self.smoothness_value.setText(smoothness_label(percent))
        self.path.set_smoothness(percent / 100.0)


class CameraPathController(QObject):
    """The camera-path panel of ``window`` (a MainWindow), its dock and preview; the path itself
    is ``window.capture.path``."""

    previewStarted = pyqtSignal()
    previewStopped = pyqtSignal(bool)
    """The preview stopped: True when it reached the end of the path, False when interrupted."""
    pathSaved = pyqtSignal(str)
    pathLoaded = pyqtSignal(str)

    def __init__(self, window):
        super().__init__(window)
        self.win = window
        self.path: CameraPath = window.capture.path
        self.panel = CameraPathPanel(self.path)
        self.dock = QDockWidget("Camera path", window)
        self.dock.setObjectName("camera-path-dock")
        scroll = QScrollArea()
        scroll.setWidget(self.panel)
        scroll.setWidgetResizable(True)
        self.dock.setWidget(scroll)
        self.dock.setFeatures(window.side_dock.features())
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        window.tabifyDockWidget(window.side_dock, self.dock)
        window.side_dock.raise_()
        self.toggle_action = self.dock.toggleViewAction()
        self.toggle_action.setText("Camera &path panel")
        self.toggle_action.triggered.connect(lambda on: on and self.dock.raise_())
        self.message_box: QMessageBox | None = None
        """The last error message box (window-modal, not blocking)."""
        self.last_file: str | None = None
        """The file the path was last saved to or loaded from."""

        self._timer = QTimer(self)
        self._timer.setInterval(PREVIEW_INTERVAL_MS)
        self._timer.timeout.connect(self._step)
        self._start = 0.0
        self._camera = None
        self._expected = None
        """The camera state the preview set last (anything else means someone moved the camera)."""

        p = self.panel
        p.addRequested.connect(window.capture.add_keyframe)
        p.goToRequested.connect(self.go_to)
        p.updateRequested.connect(self.update_keyframe)
        p.previewRequested.connect(self.toggle_preview)
        p.renderRequested.connect(self.render_video)
        p.saveRequested.connect(self.save_dialog)
        p.loadRequested.connect(self.load_dialog)
        self.path.subscribe(self._on_path_changed)
        window.canvas.viewChanged.connect(self._on_user_moved)
        window.sceneOpened.connect(self._on_scene_opened)

    # ------------------------------------------------------------------------------ panel
    def show_panel(self) -> None:
        self.dock.show()
        self.dock.raise_()

    def _on_path_changed(self) -> None:
        self.stop_preview()  # the panel follows the path by itself

    def _on_scene_opened(self, _path: str) -> None:
        self.stop_preview()
        cam = self.win.camera
        if cam is not None:
            self.panel.reference = (cam.scene_center.copy(), cam.up.copy())
        self.panel.refresh()

    def _set_camera(self, pose) -> None:
        cam = self.win.camera
        cam.set_pose(pose)
        cam.dataset_index = -1
        self.win.request_render()

    def go_to(self, index: int) -> None:
        """Move the camera to keyframe ``index``."""
        if self.win.camera is None or not 0 <= index < len(self.path):
            return
        self.stop_preview()
        self._set_camera(self.path[index])
        self.win.statusBar().showMessage(f"At keyframe {index + 1} of {len(self.path)}", 2000)

    def update_keyframe(self, index: int) -> None:
        """Keyframe ``index`` becomes the current view."""
        if self.win.camera is None or not 0 <= index < len(self.path):
            return
        self.path.replace(index, self.win.camera.pose())
        self.panel.refresh(select=index)
        self.win.statusBar().showMessage(f"Keyframe {index + 1} updated", 2000)

    # ---------------------------------------------------------------------------- preview
    @property
    def previewing(self) -> bool:
        return self._timer.isActive()

    def toggle_preview(self) -> None:
        if self.previewing:
            self.stop_preview()
        else:
            self.start_preview()

    def start_preview(self) -> bool:
        """Play the path in the viewport from its first keyframe; False (with a message) when
        there is nothing to play."""
        win = self.win
        if win.camera is None or len(self.path) < 2:
            win.statusBar().showMessage("Add at least two keyframes (K) to preview the camera path", 4000)
            self.panel.set_previewing(False)
            return False
        self._camera = win.camera
        self._expected = None
        self._start = time.perf_counter()
        self._timer.start()
        self.panel.set_previewing(True)
        self.previewStarted.emit()
        self._show(0.0)  # the first frame is the first keyframe, exactly
        return True

    def _moved_by_someone_else(self) -> bool:
        cam = self.win.camera
        if cam is None or cam is not self._camera:
            return True
        if self._expected is None:
            return False
        rot, target, distance, fov = cam.state()
        e_rot, e_target, e_distance, e_fov = self._expected
        return not (np.array_equal(rot, e_rot) and np.array_equal(target, e_target)
                    and distance == e_distance and fov == e_fov)

    def _step(self) -> None:
        if not self.previewing:
            return
        if self._moved_by_someone_else():
            self.stop_preview()
            return
        self._show(min(time.perf_counter() - self._start, self.path.duration))

    def _show(self, seconds: float) -> None:
        """The preview's frame ``seconds`` into the path; the last one ends the preview."""
        self._set_camera(self.path.pose_at(seconds))
        self._expected = self.win.camera.state()
        if seconds >= self.path.duration:
            self.stop_preview(finished=True)

    def _on_user_moved(self) -> None:
        if self.previewing:
            self.stop_preview()

    def stop_preview(self, finished: bool = False) -> None:
        """Stop the preview where it is (``finished``: it reached the end)."""
        if not self.previewing:
            self.panel.set_previewing(False)
            return
        self._timer.stop()
        self._camera = self._expected = None
        self.panel.set_previewing(False)
        self.previewStopped.emit(finished)

    # ------------------------------------------------------------------------------ video
    def render_video(self) -> None:
        """The Export video dialog on the path, at the panel's duration."""
        self.stop_preview()
        if len(self.path) < 2:
            self.win.show_error("Record at least two keyframes (K) to render the camera path.", kind="info")
            return
        self.win.capture.export_video_dialog(source="keyframes")

    # ------------------------------------------------------------------------------ files
    def _default_file(self) -> str:
        if self.last_file:
            return self.last_file
        scene = self.win.scene
        return str((scene.root if scene is not None else Path.cwd()) / PATH_FILE)

    def _warn(self, title: str, text: str) -> None:
        if self.message_box is not None:
            self.message_box.close()
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self.win)
        box.setObjectName("camera-path-error")
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()
        self.message_box = box

    def save_dialog(self) -> None:
        if not len(self.path):
            self.win.statusBar().showMessage("The camera path has no keyframes to save", 4000)
            return
        file, _ = QFileDialog.getSaveFileName(self.win, "Save camera path", self._default_file(),
                                              "Camera path (*.json)")
        if file:
            self.save(file)

    def load_dialog(self) -> None:
        file, _ = QFileDialog.getOpenFileName(self.win, "Load camera path", self._default_file(),
                                              "Camera path (*.json);;All files (*)")
        if file:
            self.load(file)

    def save(self, file: str | Path) -> bool:
        """Write the path to ``file`` (".json" added when it has no suffix), atomically; a
        message box says why when it cannot be written."""
        file = Path(file)
        if not file.suffix:
            file = file.with_suffix(".json")
        scene = self.win.scene.root.name if self.win.scene is not None else None
        try:
            self.path.save(file, scene)
        except Exception as e:  # noqa: BLE001 - any failure becomes a message
            self._warn("Could not save the camera path", str(e))
            return False
        self.last_file = str(file)
        self.win.statusBar().showMessage(f"Camera path saved: {file}", 6000)
        self.pathSaved.emit(str(file))
        return True

    def load(self, file: str | Path) -> bool:
        """Replace the path with the one in ``file``; a file that cannot be used leaves the path
        as it was and a message box says why."""
        try:
            loaded = CameraPath.load(file)
        except CameraPathError as e:
            self._warn("Could not load the camera path", str(e))
            return False
        except Exception as e:  # noqa: BLE001 - any failure becomes a message
            self._warn("Could not load the camera path", f"{file}: {type(e).__name__}: {e}")
            return False
        self.stop_preview()
        self.path.assign(loaded)
        self.panel.refresh(select=0)
        self.last_file = str(file)
        n = len(self.path)
        self.win.statusBar().showMessage(f"Camera path loaded: {n} keyframes, {self.path.duration:g} s", 6000)
        self.pathLoaded.emit(str(file))
        return True
