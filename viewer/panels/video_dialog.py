"""The "Export video" dialog: camera path, length, frame rate, size and output file.

Frames, frame rate and duration are linked: frames = duration x frame rate. Editing the frames
or the duration changes the other; changing the frame rate keeps the duration."""

from __future__ import annotations

from dataclasses import dataclass

from PyQt6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)


@dataclass
class VideoSettings:
    path: str
    source: str = "orbit"
    """"orbit" (a turn around the target) or "keyframes" (the recorded path)."""
    frames: int = 120
    fps: int = 30
    width: int = 640
    height: int = 480


class VideoDialog(QDialog):
    def __init__(self, defaults: VideoSettings, keyframes: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export video")
        form = QFormLayout(self)
        self.source = QComboBox()
        self.source.addItem("Orbit around the target", "orbit")
        self.source.addItem(f"Recorded keyframes ({keyframes})", "keyframes")
        if keyframes < 2:
            self.source.model().item(1).setEnabled(False)
            self.source.setToolTip("Record at least two keyframes with K to use a camera path")
        else:
            self.source.setCurrentIndex(1 if defaults.source == "keyframes" else 0)
        self.frames = QSpinBox()
        self.frames.setObjectName("video-frames")
        self.frames.setRange(2, 10000)
        self.frames.setValue(defaults.frames)
        self.fps = QSpinBox()
        self.fps.setObjectName("video-fps")
        self.fps.setRange(1, 120)
        self.fps.setValue(defaults.fps)
        self._seconds = self.frames.value() / self.fps.value()
        """The video's length, kept exact (the duration box shows it rounded)."""
        self.duration = QDoubleSpinBox()
        self.duration.setObjectName("video-duration")
        self.duration.setRange(0.01, 3600.0)
        self.duration.setDecimals(2)
        self.duration.setSingleStep(0.5)
        self.duration.setSuffix(" s")
        self.duration.setToolTip("Length of the video (frames / frame rate); the camera path is spread over it")
        self.duration.setValue(self._seconds)
        self.frames.valueChanged.connect(self._on_frames)
        self.fps.valueChanged.connect(self._on_fps)
        self.duration.valueChanged.connect(self._on_duration)
        self.width_ = QSpinBox()
        self.width_.setRange(16, 7680)
        self.width_.setValue(defaults.width)
        self.height_ = QSpinBox()
        self.height_.setRange(16, 4320)
        self.height_.setValue(defaults.height)
        size = QHBoxLayout()
        size.addWidget(self.width_)
        size.addWidget(self.height_)
        self.path = QLineEdit(defaults.path)
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        out = QHBoxLayout()
        out.addWidget(self.path)
        out.addWidget(browse)
        form.addRow("Camera path", self.source)
        form.addRow("Frames", self.frames)
        form.addRow("Frame rate", self.fps)
        form.addRow("Duration", self.duration)
        form.addRow("Size (w × h)", size)
        form.addRow("File (.mp4 / .gif)", out)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _set_frames(self, frames: int) -> None:
        self.frames.blockSignals(True)
        self.frames.setValue(max(2, frames))
        self.frames.blockSignals(False)

    def _show_duration(self) -> None:
        self.duration.blockSignals(True)
        self.duration.setValue(self._seconds)
        self.duration.blockSignals(False)

    def _on_frames(self, frames: int) -> None:
        self._seconds = frames / self.fps.value()
        self._show_duration()

    def _on_fps(self, fps: int) -> None:
        self._set_frames(round(self._seconds * fps))

    def _on_duration(self, seconds: float) -> None:
        self._seconds = float(seconds)
        self._set_frames(round(seconds * self.fps.value()))

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export video", self.path.text(), "Video (*.mp4 *.gif)")
        if path:
            self.path.setText(path)

    def settings(self) -> VideoSettings:
        path = self.path.text().strip()
        if not path.lower().endswith((".mp4", ".gif")):
            path += ".mp4"
        return VideoSettings(path, self.source.currentData(), self.frames.value(), self.fps.value(),
                             self.width_.value(), self.height_.value())
