"""Side-panel groups: display mode, performance (target FPS, render resolution, dynamic
resolution), camera (with the list of dataset cameras), screenshot size."""

from __future__ import annotations

import re

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

MODE_LABELS = {"rgb": "RGB", "depth": "Depth", "acc": "Opacity"}
RENDER_SCALES = (1.0, 0.75, 0.5, 0.25)
"""Render resolution choices, as fractions of the window's width and height."""
MAX_SCREENSHOT_SIDE = 8192
"""Largest screenshot width or height (pixels)."""


def parse_size(text: str, max_side: int = MAX_SCREENSHOT_SIDE) -> tuple[int, int]:
    """``"1920x1080"`` (x, X, × or *, spaces allowed) -> (1920, 1080); ValueError with a message
    a user can act on otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×*]\s*(\d+)\s*", text or "")
    if m is None:
        raise ValueError(f"Screenshot size '{text}' is not WIDTHxHEIGHT in pixels, e.g. 1920x1080")
    w, h = int(m.group(1)), int(m.group(2))
    if not (1 <= w <= max_side and 1 <= h <= max_side):
        raise ValueError(f"Screenshot size {w}x{h} is out of range: width and height must be 1 to {max_side} pixels")
    return w, h


class DisplayModeBox(QGroupBox):
    modeChanged = pyqtSignal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Display", parent)
        lay = QHBoxLayout(self)
        self._group = QButtonGroup(self)
        self.buttons: dict[str, QRadioButton] = {}
        for mode, label in MODE_LABELS.items():
            b = QRadioButton(label)
            b.setObjectName(f"mode-{mode}")
            self._group.addButton(b)
            lay.addWidget(b)
            self.buttons[mode] = b
            b.toggled.connect(lambda on, m=mode: on and self.modeChanged.emit(m))
        self.buttons["rgb"].setChecked(True)

    def set_mode(self, mode: str) -> None:
        self.buttons[mode].setChecked(True)

    def set_supported(self, outputs: frozenset[str], backend_label: str) -> None:
        for mode, b in self.buttons.items():
            ok = mode == "rgb" or mode in outputs
            b.setEnabled(ok)
            b.setToolTip("" if ok else f"{backend_label} renders colour only")


class PerformanceBox(QGroupBox):
    targetFpsChanged = pyqtSignal(float)
    dynamicChanged = pyqtSignal(bool)
    renderScaleChanged = pyqtSignal(float)
    """Fraction of the window resolution views are rendered at (the full, refined resolution)."""

    def __init__(self, target_fps: float, parent: QWidget | None = None, render_scale: float = 1.0):
        super().__init__("Performance", parent)
        form = QFormLayout(self)
        self.fps = QSpinBox()
        self.fps.setRange(1, 240)
        self.fps.setValue(int(target_fps))
        self.fps.setSuffix(" FPS")
        self.fps.setToolTip("Frame rate held while the camera moves (render resolution adapts)")
        self.fps.valueChanged.connect(lambda v: self.targetFpsChanged.emit(float(v)))
        self.dynamic = QCheckBox("Dynamic resolution")
        self.dynamic.setChecked(True)
        self.dynamic.setToolTip("Off: every frame at full resolution, however slow")
        self.dynamic.toggled.connect(self.dynamicChanged.emit)
        self.scale = QComboBox()
        self.scale.setObjectName("render-scale")
        for s in RENDER_SCALES:
            self.scale.addItem(f"{100 * s:.0f}% of window", s)
        self.scale.setToolTip("Resolution a still view is refined to; dynamic resolution lowers it while "
                              "the camera moves")
        self.set_render_scale(render_scale)
        self.scale.currentIndexChanged.connect(lambda i: self.renderScaleChanged.emit(float(self.scale.itemData(i))))
        form.addRow("Target", self.fps)
        form.addRow("Resolution", self.scale)
        form.addRow(self.dynamic)

    def render_scale(self) -> float:
        return float(self.scale.currentData())

    def set_render_scale(self, scale: float) -> None:
        """Select the choice nearest ``scale`` (without emitting)."""
        i = min(range(len(RENDER_SCALES)), key=lambda k: abs(RENDER_SCALES[k] - scale))
        self.scale.blockSignals(True)
        self.scale.setCurrentIndex(i)
        self.scale.blockSignals(False)


class ScreenshotBox(QGroupBox):
    """Size of F12 screenshots: the window's (render) size, or a width x height typed in."""

    sizeChanged = pyqtSignal(object)
    """(width, height), or None for the window size."""
    invalidSize = pyqtSignal(str)
    """Message for a size that cannot be used (the previous size stays)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Screenshot", parent)
        form = QFormLayout(self)
        self.choice = QComboBox()
        self.choice.setObjectName("screenshot-size-choice")
        self.choice.addItems(["Window size", "Custom size"])
        self.custom = QLineEdit("1920x1080")
        self.custom.setObjectName("screenshot-size")
        self.custom.setPlaceholderText("WIDTHxHEIGHT")
        self.custom.setToolTip("Screenshot width x height in pixels (the view keeps its vertical field of view)")
        self.custom.setEnabled(False)
        self.size: tuple[int, int] | None = None
        """The accepted size (None: window size)."""
        self._accepted_text = self.custom.text()
        self.choice.currentIndexChanged.connect(self._on_choice)
        self.custom.editingFinished.connect(self._on_edited)
        form.addRow("Size", self.choice)
        form.addRow("Custom", self.custom)

    def _on_choice(self, index: int) -> None:
        self.custom.setEnabled(index == 1)
        if index == 0:
            self.size = None
            self.sizeChanged.emit(None)
        else:
            self._on_edited()

    def _on_edited(self) -> None:
        if self.choice.currentIndex() != 1:
            return
        try:
            size = parse_size(self.custom.text())
        except ValueError as e:
            self.custom.setStyleSheet("QLineEdit { border: 1px solid #d04040; }")
            self.invalidSize.emit(str(e))
            return
        self.custom.setStyleSheet("")
        self._accepted_text = self.custom.text()
        if size != self.size:
            self.size = size
            self.sizeChanged.emit(size)

    def set_size(self, size: tuple[int, int] | None) -> None:
        """Show ``size`` (None: window size) without emitting."""
        for w in (self.choice, self.custom):
            w.blockSignals(True)
        self.choice.setCurrentIndex(0 if size is None else 1)
        self.custom.setEnabled(size is not None)
        if size is not None:
            self.custom.setText(f"{size[0]}x{size[1]}")
            self.custom.setStyleSheet("")
        self.size = size
        for w in (self.choice, self.custom):
            w.blockSignals(False)


class CameraBox(QGroupBox):
    fovChanged = pyqtSignal(float)
    resetRequested = pyqtSignal()
    snapRequested = pyqtSignal(int)
    addKeyframe = pyqtSignal()
    clearKeyframes = pyqtSignal()
    editPath = pyqtSignal()
    """Show the camera-path panel."""
    cameraChosen = pyqtSignal(int)
    """Index of the dataset camera clicked in the list (the order [ ] walks)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Camera", parent)
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.fov = QDoubleSpinBox()
        self.fov.setRange(5.0, 150.0)
        self.fov.setDecimals(1)
        self.fov.setSuffix(" °")
        self.fov.setToolTip("Vertical field of view (- / = keys)")
        self.fov.valueChanged.connect(self.fovChanged.emit)
        form.addRow("Field of view", self.fov)
        self.dataset = QLabel("free")
        form.addRow("Dataset view", self.dataset)
        lay.addLayout(form)
        row = QHBoxLayout()
        for text, tip, slot in (("◀ [", "previous dataset camera", lambda: self.snapRequested.emit(-1)),
                                ("Reset", "initial view (R)", self.resetRequested.emit),
                                ("] ▶", "next dataset camera", lambda: self.snapRequested.emit(1))):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            row.addWidget(b)
        lay.addLayout(row)
        self.cameras = QListWidget()
        self.cameras.setObjectName("dataset-cameras")
        self.cameras.setToolTip("Dataset cameras: click one to view the scene from it")
        self.cameras.setMaximumHeight(150)
        self.cameras.itemClicked.connect(lambda item: self.cameraChosen.emit(self.cameras.row(item)))
        self.cameras.itemActivated.connect(lambda item: self.cameraChosen.emit(self.cameras.row(item)))
        lay.addWidget(self.cameras)
        row = QHBoxLayout()
        self.keyframes = QLabel("Keyframes: 0")
        self.keyframes.setObjectName("keyframe-count")
        add = QPushButton("Add (K)")
        add.setToolTip("Add the current view to the camera path")
        add.clicked.connect(self.addKeyframe.emit)
        clear = QPushButton("Clear")
        clear.setToolTip("Remove every keyframe of the camera path")
        clear.clicked.connect(self.clearKeyframes.emit)
        edit = QPushButton("Path…")
        edit.setObjectName("edit-camera-path")
        edit.setToolTip("The camera-path panel: reorder keyframes, preview, duration, smoothness, render")
        edit.clicked.connect(self.editPath.emit)
        row.addWidget(self.keyframes)
        row.addWidget(add)
        row.addWidget(clear)
        row.addWidget(edit)
        lay.addLayout(row)

    def set_fov(self, fov: float) -> None:
        self.fov.blockSignals(True)
        self.fov.setValue(fov)
        self.fov.blockSignals(False)

    def set_keyframe_count(self, count: int) -> None:
        """Show how many keyframes the camera path has."""
        self.keyframes.setText(f"Keyframes: {count}")

    def set_cameras(self, labels: list[str]) -> None:
        """Fill the dataset camera list (one label per camera, in [ ] order)."""
        self.cameras.clear()
        self.cameras.addItems(labels)
        self.cameras.setVisible(bool(labels))

    def set_current_camera(self, index: int) -> None:
        """Select the camera the view is snapped to (-1: none selected)."""
        self.cameras.blockSignals(True)
        if 0 <= index < self.cameras.count():
            self.cameras.setCurrentRow(index)
            self.cameras.scrollToItem(self.cameras.item(index))
        else:
            self.cameras.setCurrentRow(-1)
            self.cameras.clearSelection()
        self.cameras.blockSignals(False)
