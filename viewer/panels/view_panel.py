"""Side-panel groups: display mode, performance (target FPS, dynamic resolution), camera."""

from __future__ import annotations

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

MODE_LABELS = {"rgb": "RGB", "depth": "Depth", "acc": "Opacity"}


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

    def __init__(self, target_fps: float, parent: QWidget | None = None):
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
        form.addRow("Target", self.fps)
        form.addRow(self.dynamic)


class CameraBox(QGroupBox):
    fovChanged = pyqtSignal(float)
    resetRequested = pyqtSignal()
    snapRequested = pyqtSignal(int)
    addKeyframe = pyqtSignal()
    clearKeyframes = pyqtSignal()

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
        row = QHBoxLayout()
        self.keyframes = QLabel("Keyframes: 0")
        add = QPushButton("Add (K)")
        add.clicked.connect(self.addKeyframe.emit)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clearKeyframes.emit)
        row.addWidget(self.keyframes)
        row.addWidget(add)
        row.addWidget(clear)
        lay.addLayout(row)

    def set_fov(self, fov: float) -> None:
        self.fov.blockSignals(True)
        self.fov.setValue(fov)
        self.fov.blockSignals(False)
