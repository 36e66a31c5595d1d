"""The training progress panel (a dock): per-stage progress, live loss / PSNR plots, the latest
validation image beside its ground truth, a log, and the job's controls (pause / resume /
cancel, trainer share of the device).

Everything here runs on the GUI thread and stays cheap: events only store values; the widgets
(progress bars, plots, images) are updated by a timer at most 5 times per second. That matters:
in a window holding a QOpenGLWidget every repaint is composited through OpenGL (in software under
Xvfb), and QProgressBar.setValue repaints synchronously.

A job resumed from its checkpoints in the same window (same scene folder) continues the plots,
the validation view and the log of the run it continues; pausing never clears anything. The log
follows its newest line unless the user has scrolled up. Labels whose text changes have fixed
sizes, so nothing in the panel moves while a job reports.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QImage, QPixmap
from PyQt6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from models.training.engine import TrainEvent
from viewer.panels.plots import LivePlot
from viewer.panels.training_dialog import format_duration
from viewer.train_worker import STAGE_LABELS, TrainingSession

STAGE_COLOURS = {"teacher": (31, 119, 180), "kilonerf": (255, 127, 14), "r2l": (44, 160, 44)}
IMAGE_SIZE = 112
"""Longest side of the validation / ground-truth thumbnails (pixels)."""


class LogView(QPlainTextEdit):
    """A read-only log that follows its newest line as a terminal does: new lines scroll it to
    the bottom unless the user has scrolled up; scrolling back to the bottom follows again."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.following = True
        """True while the view sticks to the newest line."""
        self._adjusting = False
        bar = self.verticalScrollBar()
        bar.valueChanged.connect(self._scrolled)
        bar.rangeChanged.connect(self._range_changed)

    def append_line(self, line: str) -> None:
        follow = self.following
        self._adjusting = True  # scroll-bar changes made while appending are not the user's
        try:
            self.appendPlainText(line)
        finally:
            self._adjusting = False
        self.following = follow
        if follow:
            self.scroll_to_end()

    def clear_log(self) -> None:
        self.clear()
        self.following = True

    def scroll_to_end(self) -> None:
        bar = self.verticalScrollBar()
        self._adjusting = True
        try:
            bar.setValue(bar.maximum())
        finally:
            self._adjusting = False

    def _scrolled(self, value: int) -> None:
        if not self._adjusting:
            self.following = value >= self.verticalScrollBar().maximum()

    def _range_changed(self, _lo: int, _hi: int) -> None:
        # more lines, or a resize: stay at the end when following
        if self.following and not self._adjusting:
            self.scroll_to_end()


class StageRow:
    """Progress bar and statistics of one stage."""

    def __init__(self, stage: str, grid: QGridLayout, row: int, budget_s: float = 0.0):
        self.stage = stage
        self.budget_s = budget_s
        """The stage's time budget (0: none): the ETA never exceeds what is left of it."""
        self.name = QLabel(STAGE_LABELS[stage])
        self.bar = QProgressBar()
        self.bar.setObjectName(f"progress-{stage}")
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setTextVisible(True)
        self.bar.setFormat("waiting")
        # its text changes every update: a changing size hint would re-lay out the whole window
        self.bar.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.bar.setMinimumWidth(160)
        self.stats = QLabel("")
        self.stats.setObjectName(f"stats-{stage}")
        self.stats.setStyleSheet("color: gray;")
        # changing text must not re-lay out the window (the GL view is in the same layout)
        self.stats.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.stats.setMinimumWidth(180)
        self.stats.setFixedHeight(2 * self.stats.fontMetrics().lineSpacing() + 2)
        grid.addWidget(self.name, row, 0)
        grid.addWidget(self.bar, row, 1)
        grid.addWidget(self.stats, row + 1, 1)
        self.step = 0
        self.total = 0
        self.steps_per_s = 0.0
        self.state = "waiting"

    def update(self, ev: TrainEvent) -> None:
        self.step, self.total = ev.step, max(ev.total_steps, 1)
        # QProgressBar.setValue repaints at once (a whole-window GL composition here); with updates
        # off it only schedules one, painted with the rest of the panel. The bar shows the job's
        # progress (by time for a time-bounded job), in per mille; the text says the steps.
        self.bar.setUpdatesEnabled(False)
        self.bar.setRange(0, 1000)
        self.bar.setValue(min(round(1000 * ev.progress), 1000) if ev.kind != "finished" else 1000)
        if ev.steps_per_s > 0:
            self.steps_per_s = ev.steps_per_s
        if ev.kind == "started":
            self.state = "running"
        elif ev.kind in ("paused", "resumed", "finished", "cancelled", "failed"):
            self.state = {"resumed": "running"}.get(ev.kind, ev.kind)
        self.bar.setFormat(f"step {self.step} · %p%{'' if self.state == 'running' else '  (' + self.state + ')'}")
        self.bar.setUpdatesEnabled(True)
        parts = []
        if self.steps_per_s > 0:
            parts.append(f"{self.steps_per_s:.3g} steps/s")
        if self.state == "running":
            eta = ev.eta_s
            if self.budget_s > 0:
                left = max(self.budget_s - ev.elapsed_s, 0.0)
                eta = min(eta, left) if math.isfinite(eta) else left
            parts.append(f"ETA {format_duration(eta)}" if math.isfinite(eta) else "ETA …")
        second = []
        if ev.elapsed_s > 0:
            second.append(f"{format_duration(ev.elapsed_s)} elapsed")
        psnr = ev.losses.get("psnr") if ev.losses else None
        if psnr is not None and math.isfinite(psnr):
            second.append(f"train PSNR {psnr:.2f} dB")
        self.stats.setText(" · ".join(parts) + "\n" + " · ".join(second))


class TrainingPanel(QWidget):
    """Shows one TrainingSession at a time (``attach``)."""

    trainFractionChanged = pyqtSignal(float)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.session: TrainingSession | None = None
        self.rows: dict[str, StageRow] = {}
        self.curves: dict[str, dict[str, list]] = {}
        """Per stage: "step", "loss", "psnr" (training batches) and "val_step", "val_psnr"."""
        self.job_folder: str | None = None
        """The scene folder of the job shown (a resumed job of the same folder continues its plots)."""
        self._dirty = False
        self._pending_rows: dict[str, TrainEvent] = {}
        self._pending_validation: TrainEvent | None = None
        self.redraws = 0
        """How many times the plots were redrawn (tests: the plot moves)."""

        # --- left: title, controls, stage rows
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel("No training job")
        self.title.setObjectName("training-title")
        self.title.setWordWrap(True)
        ll.addWidget(self.title)
        buttons = QHBoxLayout()
        self.pause_button = QPushButton("Pause")
        self.pause_button.setObjectName("training-pause")
        self.pause_button.setCheckable(True)
        self.pause_button.toggled.connect(self._pause_toggled)
        # wide enough for either caption: the buttons beside it must not move when it changes
        self.pause_button.setMinimumWidth(max(self.pause_button.fontMetrics().horizontalAdvance(t)
                                              for t in ("Pause", "Resume")) + 24)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("training-cancel")
        self.cancel_button.setToolTip("Stop the job at the next step and save a checkpoint there (Resume continues)")
        self.cancel_button.clicked.connect(self._cancel)
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        ll.addLayout(buttons)
        share = QHBoxLayout()
        share.addWidget(QLabel("Trainer share"))
        self.share = QSlider(Qt.Orientation.Horizontal)
        self.share.setObjectName("training-share")
        self.share.setRange(10, 100)
        self.share.setSingleStep(5)
        self.share.setPageStep(10)
        self.share.setValue(100)
        self.share.setToolTip("How much of the device's time the trainer may use; the rest is left to the viewer "
                              "(the trainer sleeps after each step in proportion)")
        self.share_label = QLabel("100%")
        self.share_label.setFixedWidth(40)
        self.share.valueChanged.connect(self._share_changed)
        share.addWidget(self.share, 1)
        share.addWidget(self.share_label)
        ll.addLayout(share)
        self.grid = QGridLayout()
        self.grid.setColumnStretch(1, 1)
        ll.addLayout(self.grid)
        ll.addStretch(1)
        left.setMinimumWidth(250)
        left.setMaximumWidth(340)

        # --- plots (painted with QPainter: see viewer/panels/plots.py for why not a plotting library)
        self.loss_plot = LivePlot("Loss", log_y=True, legend="top-right")
        self.loss_plot.setObjectName("training-loss-plot")
        self.psnr_plot = LivePlot("PSNR (dB)", legend="bottom-right")
        self.psnr_plot.setObjectName("training-psnr-plot")
        plots = QHBoxLayout()
        plots.addWidget(self.loss_plot, 1)
        plots.addWidget(self.psnr_plot, 1)
        plots_w = QWidget()
        plots_w.setLayout(plots)
        plots.setContentsMargins(0, 0, 0, 0)

        # --- validation image and ground truth
        images = QGroupBox("Validation view")
        il = QGridLayout(images)
        self.val_image = QLabel()
        self.val_image.setObjectName("validation-image")
        self.gt_image = QLabel()
        self.gt_image.setObjectName("ground-truth-image")
        for lab in (self.val_image, self.gt_image):
            lab.setFixedSize(IMAGE_SIZE, IMAGE_SIZE)
            lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
            lab.setStyleSheet("background: #222; color: #aaa;")
            lab.setText("—")
        render_caption = QLabel("render")
        gt_caption = QLabel("ground truth")
        # the validation's numbers: two lines under both images, of a fixed size, so the panel's
        # layout never moves when they appear or change
        self.val_caption = QLabel("")
        self.val_caption.setObjectName("validation-caption")
        self.val_caption.setWordWrap(True)
        self.val_caption.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.val_caption.setFixedHeight(2 * self.val_caption.fontMetrics().lineSpacing() + 2)
        for lab in (render_caption, gt_caption, self.val_caption):
            lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
        il.addWidget(self.val_image, 0, 0)
        il.addWidget(self.gt_image, 0, 1)
        il.addWidget(render_caption, 1, 0)
        il.addWidget(gt_caption, 1, 1)
        il.addWidget(self.val_caption, 2, 0, 1, 2)
        images.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)

        # --- log
        self.log = LogView()
        self.log.setObjectName("training-log")
        self.log.setMaximumBlockCount(5000)
        self.log.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.log.setMinimumWidth(180)

        lay = QHBoxLayout(self)
        lay.addWidget(left, 0)
        lay.addWidget(plots_w, 3)
        lay.addWidget(images, 0)
        lay.addWidget(self.log, 2)

        self._redraw_timer = QTimer(self)
        self._redraw_timer.setInterval(200)
        self._redraw_timer.timeout.connect(self._redraw)
        self._set_running(False)

    # ------------------------------------------------------------------------------ session
    def attach(self, session: TrainingSession) -> None:
        """Show ``session``. A job resuming the shown job (same scene folder) keeps the plots,
        validation view and log, trimmed to where each stage resumes; any other clears them."""
        if self.session is not None and self.session is not session:
            for signal, slot in ((self.session.trainEvent, self.on_event), (self.session.logLine, self.log.append_line),
                                 (self.session.stopped, self._on_stopped)):
                try:
                    signal.disconnect(slot)
                except (TypeError, RuntimeError):  # never connected, or the session is gone
                    pass
        self.session = session
        r = session.request
        folder = _folder_key(r.output)
        keep = bool(r.resume) and folder == self.job_folder
        self.job_folder = folder
        for row in self.rows.values():
            for w in (row.name, row.bar, row.stats):
                self.grid.removeWidget(w)
                w.deleteLater()
        self.rows.clear()
        for i, spec in enumerate(r.stage_specs()):
            self.rows[spec.stage] = StageRow(spec.stage, self.grid, 2 * i, _budget(spec))
        kept = {st: c for st, c in self.curves.items() if c["step"] or c["val_step"]} if keep else {}
        self.curves.clear()
        self._pending_rows.clear()
        self._pending_validation = None
        self.loss_plot.clear()
        self.psnr_plot.clear()
        # stages in pipeline order: those of this job, and (resuming) those shown before it
        order = [st for st in STAGE_LABELS if st in r.stages or st in kept]
        for i, stage in enumerate(order):
            colour = STAGE_COLOURS[stage]
            self.curves[stage] = kept.get(stage) or {"step": [], "loss": [], "psnr": [], "val_step": [],
                                                     "val_psnr": []}
            self.loss_plot.add_series(stage, STAGE_LABELS[stage], colour, 1.5)
            self.psnr_plot.add_series(stage, "training batch" if i == 0 else None, colour, 1.0)
            self.psnr_plot.add_series(stage + ":val", "validation" if i == 0 else None, colour, markers=True)
        if keep:
            self.log.append_line("— resumed —")
        else:
            self.log.clear_log()
            for lab in (self.val_image, self.gt_image):
                lab.clear()
                lab.setText("—")
            self.val_caption.setText("")
        for line in session.log:
            self.log.append_line(line)
        what = "resume" if r.resume else "new"
        self.title.setText(f"<b>{' → '.join(STAGE_LABELS[s] for s in r.stages)}</b> ({what}, preset {r.preset}, "
                           f"device {r.device})<br><span style='color: gray'>{r.output}</span>")
        session.trainEvent.connect(self.on_event)
        session.logLine.connect(self.log.append_line)
        session.stopped.connect(self._on_stopped)
        self.pause_button.setChecked(False)
        session.set_train_fraction(self.share.value() / 100.0)
        self._set_running(True)
        self._dirty = True  # the kept curves are drawn by the first redraw
        self._redraw()
        self._redraw_timer.start()

    def _set_running(self, running: bool) -> None:
        self.pause_button.setEnabled(running)
        self.cancel_button.setEnabled(running)
        if not running:
            self.pause_button.blockSignals(True)
            self.pause_button.setChecked(False)
            self.pause_button.setText("Pause")
            self.pause_button.blockSignals(False)

    def _on_stopped(self, outcome: str) -> None:
        self._set_running(False)
        self._redraw()
        self._redraw_timer.stop()
        for row in self.rows.values():
            if row.state in ("waiting", "running", "paused"):
                row.state = {"finished": "finished"}.get(outcome, outcome if row.state != "waiting" else "not run")
                row.bar.setFormat(f"step {row.step} · %p%  ({row.state})" if row.total else row.state)

    # ------------------------------------------------------------------------------ events
    def on_event(self, ev: TrainEvent) -> None:
        row = self.rows.get(ev.stage)
        if row is None:
            return
        if ev.kind in ("started", "paused", "resumed", "finished", "cancelled", "failed"):
            row.update(ev)  # state changes show at once (rare)
            self._pending_rows.pop(ev.stage, None)
        elif ev.kind in ("step", "checkpoint", "validation"):
            self._pending_rows[ev.stage] = ev  # progress: shown by the next redraw
            self._dirty = True
        c = self.curves[ev.stage]
        if ev.kind == "started":
            _trim(c, ev.step)  # a resumed stage continues from its checkpoint's step
            self._dirty = True
        if ev.kind == "step" and ev.losses:
            loss = ev.losses.get("loss")
            if loss is not None and math.isfinite(loss) and loss > 0:
                c["step"].append(ev.step)
                c["loss"].append(loss)
                psnr = ev.losses.get("psnr", float("nan"))
                c["psnr"].append(psnr if math.isfinite(psnr) else np.nan)
                self._dirty = True
        elif ev.kind == "validation" and ev.psnr is not None:
            c["val_step"].append(ev.step)
            c["val_psnr"].append(ev.psnr)
            self._dirty = True
            self._pending_validation = ev
        if ev.kind == "paused":
            self.pause_button.blockSignals(True)
            self.pause_button.setChecked(True)
            self.pause_button.setText("Resume")
            self.pause_button.blockSignals(False)
        elif ev.kind == "resumed":
            self.pause_button.blockSignals(True)
            self.pause_button.setChecked(False)
            self.pause_button.setText("Pause")
            self.pause_button.blockSignals(False)

    def show_validation(self, ev: TrainEvent) -> None:
        if ev.image is not None:
            self.val_image.setPixmap(_pixmap(ev.image))
        if ev.target is not None:
            self.gt_image.setPixmap(_pixmap(ev.target))
        gap = ev.metrics.get("psnr_vs_teacher") if ev.metrics else None
        self.val_caption.setText(f"{STAGE_LABELS[ev.stage].split()[0]} step {ev.step}: {ev.psnr:.2f} dB"
                                 + (f"\n{gap:.2f} dB against the teacher" if gap is not None else ""))

    def _redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self.redraws += 1
        for stage, ev in self._pending_rows.items():
            self.rows[stage].update(ev)
        self._pending_rows.clear()
        if self._pending_validation is not None:
            self.show_validation(self._pending_validation)
            self._pending_validation = None
        for stage, c in self.curves.items():
            self.loss_plot.set_data(stage, c["step"], c["loss"])
            self.psnr_plot.set_data(stage, c["step"], c["psnr"])
            self.psnr_plot.set_data(stage + ":val", c["val_step"], c["val_psnr"])
        self.loss_plot.update()
        self.psnr_plot.update()

    # ----------------------------------------------------------------------------- controls
    def _pause_toggled(self, on: bool) -> None:
        if self.session is None:
            return
        if on:
            self.session.pause()
            self.pause_button.setText("Resume")
        else:
            self.session.resume()
            self.pause_button.setText("Pause")

    def _cancel(self) -> None:
        if self.session is not None and self.session.running:
            self.session.cancel()
            self.cancel_button.setEnabled(False)
            self.pause_button.setEnabled(False)
            self.log.append_line("cancelling at the next step …")

    def _share_changed(self, value: int) -> None:
        self.share_label.setText(f"{value}%")
        if self.session is not None:
            self.session.set_train_fraction(value / 100.0)
        self.trainFractionChanged.emit(value / 100.0)


def _folder_key(path: str) -> str:
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError):
        return str(path)


def _trim(curves: dict[str, list], step: int) -> None:
    """Drop the points after ``step`` (a stage resumed from an earlier checkpoint redoes them)."""
    for xs, ys in (("step", ("loss", "psnr")), ("val_step", ("val_psnr",))):
        n = len(curves[xs])
        while n and curves[xs][n - 1] > step:
            n -= 1
        del curves[xs][n:]
        for y in ys:
            del curves[y][n:]


def _budget(spec) -> float:
    from models.training.jobs import stage_config

    try:
        return float(getattr(stage_config(spec.stage, spec.preset, spec.overrides), "time_budget_s", 0.0) or 0.0)
    except ValueError:
        return 0.0


def _pixmap(image: np.ndarray) -> QPixmap:
    """A (H, W, 3) uint8 image as a pixmap scaled (nearest) to fit the thumbnail."""
    img = np.ascontiguousarray(image[..., :3].astype(np.uint8))
    h, w = img.shape[:2]
    q = QImage(img.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(q).scaled(IMAGE_SIZE, IMAGE_SIZE, Qt.AspectRatioMode.KeepAspectRatio,
                                       Qt.TransformationMode.FastTransformation)
