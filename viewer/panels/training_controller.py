"""Connects training jobs to the main window: the Train menu, the progress dock, the live
preview and the close/shutdown rules. One job at a time.

- Train → New training… opens ``TrainingDialog`` (non-blocking); Start/Resume starts a
  ``TrainingSession`` (its own QThread running the shared engine).
- When the job's scene folder exists the window shows it; every weight snapshot of the job goes
  to ``MainWindow.show_training_snapshot`` (the render thread loads or hot-swaps it), and a
  finished stage's saved weights make its backend selectable at once.
- A failed job becomes an error dialog holding the log and the traceback.
- Closing the window while a job runs asks first; on "Stop and close" the job is cancelled at its
  next step (the last checkpoint stays) and the window closes once the thread has ended.
- When a stage ends (finished, or cancelled after it ran), its average speed over the run (steps
  per second of training, pauses left out, undoing a reduced trainer share) is stored per stage,
  preset and device for the dialog's next estimate (``record_rate``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from PyQt6.QtCore import QObject, Qt, pyqtSignal
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import QDockWidget, QMessageBox

from models.training.engine import TrainEvent
from viewer.panels.training_dialog import TrainingDialog, record_rate
from viewer.panels.training_panel import TrainingPanel
from viewer.train_worker import STAGE_LABELS, TrainingSession, TrainRequest


DOCK_HEIGHT = 270
"""Initial height of the progress dock (pixels)."""
MIN_RATE_SECONDS = 1.0
"""A stage's speed is learned only from at least this many seconds of training (less is noise)."""


class StageClock:
    """One stage's run as its events tell it: steps done and seconds trained, pauses left out."""

    def __init__(self, start_step: int):
        self.start_step = start_step
        self.step = start_step
        self.elapsed_s = 0.0
        self.paused_s = 0.0
        self.paused_at: float | None = None
        self.recorded = False

    def update(self, ev: TrainEvent) -> None:
        if ev.kind == "started":
            return
        self.step = max(self.step, ev.step)
        self.elapsed_s = max(self.elapsed_s, ev.elapsed_s)
        if ev.kind == "paused" and self.paused_at is None:
            self.paused_at = ev.elapsed_s
        elif ev.kind == "resumed" and self.paused_at is not None:
            self.paused_s += max(ev.elapsed_s - self.paused_at, 0.0)
            self.paused_at = None

    def average_rate(self) -> float:
        """Steps per second over the run (0 when too short to tell)."""
        active = self.elapsed_s - self.paused_s
        if self.paused_at is not None:  # ended while paused
            active -= max(self.elapsed_s - self.paused_at, 0.0)
        steps = self.step - self.start_step
        return steps / active if steps > 0 and active >= MIN_RATE_SECONDS else 0.0


class TrainingController(QObject):
    jobStarted = pyqtSignal(object)
    """TrainingSession"""
    jobStopped = pyqtSignal(str)
    """"finished", "cancelled" or "failed"."""

    def __init__(self, window, menu=None):
        super().__init__(window)
        self.window = window
        self.settings = window.settings
        self.session: TrainingSession | None = None
        self.dialog: TrainingDialog | None = None
        self.error_box: QMessageBox | None = None
        self._close_after_stop = False
        self._rates: dict[str, float] = {}
        """The engine's latest steps/s per stage (a fallback for a run too short to average)."""
        self._clocks: dict[str, StageClock] = {}
        self._device_label = ""
        self._scene_root: Path | None = None
        """The running job's scene folder (snapshots are shown only while the window shows it)."""

        self.panel = TrainingPanel()
        self.panel.share.setValue(int(self.settings.value("training/share", 100, type=int)))
        self.panel.trainFractionChanged.connect(lambda f: self.settings.setValue("training/share", round(f * 100)))
        self.dock = QDockWidget("Training", window)
        self.dock.setObjectName("training-dock")
        self.dock.setWidget(self.panel)
        window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.dock)
        self.dock.hide()

        menu = menu if menu is not None else window.menuBar().addMenu("&Train")
        self.new_action = self._action(menu, "&New training…", self.new_training, "Ctrl+T")
        menu.addSeparator()
        self.pause_action = self._action(menu, "&Pause / resume training", self.toggle_pause)
        self.cancel_action = self._action(menu, "&Cancel training", self.cancel)
        menu.addSeparator()
        toggle = self.dock.toggleViewAction()
        toggle.setText("Training &progress panel")
        menu.addAction(toggle)
        self._sync_actions()

    def _action(self, menu, text, slot, shortcut=None) -> QAction:
        act = QAction(text, self.window)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        act.triggered.connect(lambda _=False: slot())
        menu.addAction(act)
        self.window.addAction(act)
        return act

    def _sync_actions(self) -> None:
        running = self.running
        self.pause_action.setEnabled(running)
        self.cancel_action.setEnabled(running)

    @property
    def running(self) -> bool:
        return self.session is not None and self.session.running

    # -------------------------------------------------------------------------------- dialog
    def new_training(self) -> TrainingDialog | None:
        """Open the dialog (non-modal); Start/Resume in it starts the job."""
        if self.running:
            QMessageBox.information(self.window, "Training", "A training job is running. Cancel it (Train → Cancel "
                                    "training) before starting another.")
            return None
        if self.dialog is not None:
            self.dialog.raise_()
            return self.dialog
        dataset = str(self.settings.value("training/dataset", ""))
        output = str(self.settings.value("training/output", ""))
        dlg = TrainingDialog(self.settings, self.window, dataset=dataset, output=output)
        preset = str(self.settings.value("training/preset", ""))
        if preset:
            i = dlg.preset.findData(preset)
            if i >= 0:
                dlg.preset.setCurrentIndex(i)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.accepted.connect(lambda: self.start(dlg.result_request))
        dlg.finished.connect(lambda _=0: setattr(self, "dialog", None))
        self.dialog = dlg
        dlg.open()
        return dlg

    # ------------------------------------------------------------------------------ the job
    def start(self, request: TrainRequest) -> TrainingSession | None:
        from models import devices

        if request is None or self.running:
            return None
        self.settings.setValue("training/dataset", request.dataset)
        self.settings.setValue("training/output", request.output)
        self.settings.setValue("training/preset", request.preset)
        try:
            dev = devices.resolve_device(None if request.device == "auto" else request.device)
            self._device_label = devices.describe(dev)
        except ValueError as e:
            self.window.show_error(str(e))
            return None
        if self.session is not None:  # the previous, ended job
            # its thread may still be reaping the child (at most TrainWorker's join timeouts, usually
            # milliseconds): deleting it under a running thread, or spawning beside it, can hang
            self.session.train_thread.wait(20_000)
            self.session.deleteLater()
        self._rates = {}
        self._clocks = {}
        self._scene_root = None
        self._close_after_stop = False
        s = TrainingSession(request, self)
        s.sceneReady.connect(self._on_scene_ready)
        s.trainEvent.connect(self._on_event)
        s.failed.connect(self._on_failed)
        s.stopped.connect(self._on_stopped)
        self.session = s
        self.panel.attach(s)
        first = self.dock.isHidden()
        self.dock.show()
        self.dock.raise_()
        if first:  # a strip under the view, not half the window
            self.window.resizeDocks([self.dock], [DOCK_HEIGHT], Qt.Orientation.Vertical)
        s.start()
        self._sync_actions()
        self.window.statusBar().showMessage(f"Training started: {' → '.join(request.stages)} "
                                            f"(preset {request.preset})", 5000)
        self.jobStarted.emit(s)
        return s

    def toggle_pause(self) -> None:
        if self.running:
            self.panel.pause_button.toggle()

    def cancel(self) -> None:
        if self.running:
            self.panel._cancel()

    def _on_scene_ready(self, path: str) -> None:
        w = self.window
        self._scene_root = Path(path).resolve()
        if not self._showing_job_scene() and not w.open_scene(path):
            return
        every = self.session.request.snapshot_every_s if self.session else None
        if w.backend is None:
            w.banner.show_message(
                "Training… the live preview appears here with the first weight snapshot"
                + (f" (every {every:g} s)." if every else "."), "info")

    def _showing_job_scene(self) -> bool:
        w = self.window
        return (w.scene is not None and self._scene_root is not None
                and Path(w.scene.root).resolve() == self._scene_root)

    def _on_event(self, ev: TrainEvent) -> None:
        if ev.kind == "started":
            self._clocks[ev.stage] = StageClock(ev.step)
        elif ev.stage in self._clocks and ev.kind in ("step", "validation", "checkpoint", "paused", "resumed",
                                                       "finished", "cancelled"):
            self._clocks[ev.stage].update(ev)
        if ev.kind == "step" and ev.steps_per_s > 0:
            self._rates[ev.stage] = ev.steps_per_s
        elif ev.kind == "snapshot" and ev.snapshot and self._showing_job_scene():
            snap = ev.snapshot
            final = bool(snap.get("final"))
            if final:
                psnr = (ev.metrics or {}).get("val_psnr")
                note = "trained" + (f" · val PSNR {psnr:.2f} dB" if isinstance(psnr, (int, float)) else "")
            else:
                note = f"live preview · {STAGE_LABELS[ev.stage].split()[0]} step {ev.step}"
            self.window.show_training_snapshot(snap["backend"], snap["state"], snap.get("config"), note, final)
        elif ev.kind == "finished":
            self._remember_rate(ev.stage)
            label = STAGE_LABELS[ev.stage]
            psnr = (ev.metrics or {}).get("val_psnr")
            self.window.statusBar().showMessage(
                f"{label} finished" + (f": validation PSNR {psnr:.2f} dB" if isinstance(psnr, (int, float)) else "")
                + " — its renderer is selectable now", 10000)

    def _remember_rate(self, stage: str) -> None:
        """Store the stage's speed of this run for the dialog's next estimate (once per run)."""
        s = self.session
        clock = self._clocks.get(stage)
        if s is None or clock is None or clock.recorded:
            return
        rate = clock.average_rate() or self._rates.get(stage, 0.0)
        if not (rate > 0 and math.isfinite(rate)):
            return
        clock.recorded = True
        frac = max(s.control.train_fraction, 0.05)
        # the measured rate includes the sleeps of a reduced trainer share; undo that
        record_rate(self.settings, stage, s.request.preset, self._device_label, rate / frac)

    def _on_failed(self, message: str, details: str) -> None:
        log = "\n".join(self.session.log) if self.session else ""
        if self.session is not None:
            log = f"request: {json.dumps(self.session.request.to_json())}\n{log}"
        self.window.show_error(f"Training failed: {message}")
        box = QMessageBox(QMessageBox.Icon.Critical, "Training failed", f"Training failed:\n\n{message}",
                          QMessageBox.StandardButton.Ok, self.window)
        box.setObjectName("training-error")
        box.setInformativeText("The last checkpoint (if any) is kept. The log and the traceback are under "
                               "“Show Details…”.")
        box.setDetailedText(f"{log}\n\n{details}".strip())
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.destroyed.connect(lambda _=None: setattr(self, "error_box", None))
        self.error_box = box
        box.show()

    def _on_stopped(self, outcome: str) -> None:
        s = self.session
        if outcome == "cancelled" and s is not None:
            for stage in s.request.stages:
                self._remember_rate(stage)  # the stages that ran (a finished one is stored already)
            self.window.statusBar().showMessage("Training cancelled; progress saved in a checkpoint "
                                                "(Train → New training… → Resume continues it)", 10000)
        elif outcome == "finished":
            self.window.statusBar().showMessage("Training finished", 10000)
        self._sync_actions()
        self.jobStopped.emit(outcome)
        if self._close_after_stop:
            self._close_after_stop = False
            self.window.close()

    # ------------------------------------------------------------------------------ closing
    def ask_stop(self) -> bool:
        """Ask whether to stop the running job (tests replace this)."""
        answer = QMessageBox.question(
            self.window, "Training in progress",
            "A training job is running. Stop it and close?\n\nThe job stops at its next step and keeps its last "
            "checkpoint; Train → New training… → Resume continues it later.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def confirm_close(self) -> bool:
        """For closeEvent: True to close now. With a job running, asks; on yes cancels the job and
        closes the window once its thread has ended (the UI stays responsive meanwhile)."""
        if not self.running:
            return True
        if self._close_after_stop:
            return False
        if not self.ask_stop():
            return False
        self._close_after_stop = True
        self.session.cancel()
        self.window.statusBar().showMessage("Stopping the training job…")
        return False

    def shutdown(self, timeout_ms: int = 60_000) -> None:
        """Cancel a running job and wait for its thread (application exit)."""
        if self.session is not None and self.session.train_thread.isRunning():
            self.session.stop(timeout_ms)
