"""Training from the viewer: the shared engine (``models.training``) in a child process.

The pipeline itself is ``models.training.pipeline`` (Qt-free, used by the CLI too): the
``TrainRequest`` the training dialog builds, ``run_training``, the saved-job record
(``checkpoints/training_job.json``, read back by ``read_saved_job`` so "Resume" continues the
same job), ``checkpoint_steps`` and the live-preview ``PreviewScene``. Stage names, labels and
backends come from the stage table, ``models.training.jobs.STAGE_TABLE``. This module adds the
GUI's process and thread plumbing, and re-exports the names the viewer's panels and window use:

- ``train_in_child``: the child process's entry (``torch.multiprocessing``, spawn): runs
  ``run_training`` and puts every engine event on a queue (weight snapshots travel as tensors in
  shared memory); its output goes to a log file.
- ``TrainWorker``: a QObject on a QThread of the GUI process that starts the child, turns what
  arrives on the queue into Qt signals (the engine already throttles step events to ~10 Hz), and
  turns a child that dies without a word (killed, crashed) into ``failed(message, log)``. No
  training step ever holds the GUI process's interpreter.
- ``TrainingSession``: the GUI thread's handle: owns the thread, the ``JobControl`` (pause /
  resume / cancel / train_fraction / step, in shared memory, checked by the engine between
  steps) and a log.
"""

from __future__ import annotations

import os
import queue as queue_module
import tempfile
import time
import traceback

from PyQt6.QtCore import QObject, QThread, pyqtSignal, pyqtSlot

from models.training.engine import JobCancelled, JobControl, TrainEvent
from models.training.jobs import STAGE_TABLE
from models.training.pipeline import (  # noqa: F401 - re-exported for the viewer's panels and window
    JOB_FILE,
    PreviewScene,
    TrainRequest,
    checkpoint_steps,
    describe_event,
    final_snapshot,
    read_saved_job,
    run_training,
    write_saved_job,
)

STAGE_BACKEND = {name: s.backend for name, s in STAGE_TABLE.items()}
"""Which renderer backend each training stage produces (a view of the stage table)."""
STAGE_LABELS = {name: s.label for name, s in STAGE_TABLE.items()}
"""Each training stage's human-readable name (a view of the stage table)."""


# ------------------------------------------------------------------------- the child process
def train_in_child(request_json: dict, events, control: JobControl, log_path: str, received) -> None:
    """The training child process: ``run_training`` with every event put on ``events``.

    Messages: ("scene", path), ("event", TrainEvent), then one of ("finished", results),
    ("cancelled", message), ("failed", message, details). stdout and stderr go to ``log_path``.
    Tensors travel in shared memory that this process serves, so it waits for ``received`` (the
    parent has taken the last message) before it ends.
    """
    log = open(log_path, "a", buffering=1, encoding="utf-8")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))  # leave a core to the GUI process
    request = TrainRequest.from_json(request_json)
    try:
        results = run_training(request, lambda ev: events.put(("event", ev)), control,
                               lambda path: events.put(("scene", path)))
    except JobCancelled:
        events.put(("cancelled", "cancelled; progress saved in a checkpoint (Train → New training… → Resume)"))
    except BaseException as e:  # noqa: BLE001 - every failure reaches the GUI, never a silent death
        events.put(("failed", _one_line(e), traceback.format_exc()))
    else:
        events.put(("finished", results))
    finally:
        received.wait(120)  # the parent has unpickled everything (shared tensors included)
        events.close()
        events.join_thread()


def _log_tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class TrainWorker(QObject):
    """Runs one ``TrainRequest`` in a child process; reports through signals (from its QThread)."""

    trainEvent = pyqtSignal(object)
    """TrainEvent (step events at most ~10 Hz; snapshot events carry CPU tensors)."""
    sceneReady = pyqtSignal(str)
    """The scene folder exists (created or opened): the viewer can show it."""
    finished = pyqtSignal(object)
    """{stage: metrics} when every stage finished."""
    cancelled = pyqtSignal(str)
    failed = pyqtSignal(str, str)
    """One-line message, details (traceback, or the end of the child's log)."""

    STOP_GRACE_S = 20.0
    """After a cancel, how long the child may take to write its checkpoint before it is killed."""

    def __init__(self, request: TrainRequest, control: JobControl, context):
        super().__init__()
        self.request = request
        self.control = control
        self.context = context
        self.process = None
        fd, self.log_path = tempfile.mkstemp(prefix="nsv-training-", suffix=".log")
        os.close(fd)

    @pyqtSlot()
    def run(self) -> None:
        events = self.context.Queue()
        self.received = self.context.Event()
        self.process = self.context.Process(target=train_in_child, name="nsv-training",
                                            args=(self.request.to_json(), events, self.control, self.log_path,
                                                  self.received),
                                            daemon=True)  # ends with the viewer, whatever happens
        try:
            self.process.start()
            self._relay(events)
            self.received.set()
        except BaseException as e:  # noqa: BLE001
            self.failed.emit(_one_line(e), traceback.format_exc())
        finally:
            self._reap()
            # end the thread from inside: the GUI thread may be blocked in stop() -> wait()
            QThread.currentThread().quit()

    def _relay(self, events) -> None:
        cancel_at = None
        while True:
            try:
                msg = events.get(timeout=0.2)
            except queue_module.Empty:
                if not self.process.is_alive():
                    try:  # the last messages may still be in the pipe
                        msg = events.get(timeout=1.0)
                    except queue_module.Empty:
                        code = self.process.exitcode
                        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited ({code})"
                        self.failed.emit(f"the training process {how} before the job ended",
                                         f"end of its log ({self.log_path}):\n{_log_tail(self.log_path)}")
                        return
                else:
                    if self.control.cancelled:
                        cancel_at = cancel_at or time.monotonic()
                        if time.monotonic() - cancel_at > self.STOP_GRACE_S:
                            self.process.kill()
                    continue
            kind = msg[0]
            if kind == "event":
                self.trainEvent.emit(msg[1])
            elif kind == "scene":
                self.sceneReady.emit(msg[1])
            elif kind == "finished":
                self.finished.emit(msg[1])
                return
            elif kind == "cancelled":
                self.cancelled.emit(msg[1])
                return
            elif kind == "failed":
                self.failed.emit(msg[1], msg[2])
                return

    def _reap(self) -> None:
        if self.process is None or self.process.pid is None:
            return
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)


def _one_line(exc: BaseException) -> str:
    from models.training.engine import TrainingError

    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, TrainingError) or type(exc).__name__ in ("DatasetError", "SceneError", "StorageError"):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class TrainingSession(QObject):
    """A running (or finished) job as the GUI thread sees it: thread, control flags and log."""

    trainEvent = pyqtSignal(object)
    sceneReady = pyqtSignal(str)
    finished = pyqtSignal(object)
    cancelled = pyqtSignal(str)
    failed = pyqtSignal(str, str)
    stopped = pyqtSignal(str)
    """"finished", "cancelled" or "failed", after the thread has ended."""
    logLine = pyqtSignal(str)

    def __init__(self, request: TrainRequest, parent: QObject | None = None):
        super().__init__(parent)
        self.request = request
        self.outcome: str | None = None
        """None while running, then "finished", "cancelled" or "failed"."""
        self.log: list[str] = []
        self.started_at = time.time()
        import torch.multiprocessing as mp

        context = mp.get_context("spawn")  # a fresh interpreter: no Qt state, no CUDA context copied
        self.control = JobControl(context)
        self.train_thread = QThread(self)
        self.train_thread.setObjectName("train")
        self.worker = TrainWorker(request, self.control, context)
        self.worker.moveToThread(self.train_thread)
        self.train_thread.started.connect(self.worker.run)
        self.worker.trainEvent.connect(self._on_event)
        self.worker.sceneReady.connect(self.sceneReady)
        # bound methods of this GUI-thread object: queued to the GUI thread (lambdas might not be)
        self.worker.finished.connect(self._on_finished)
        self.worker.cancelled.connect(self._on_cancelled)
        self.worker.failed.connect(self._on_failed)
        self.train_thread.finished.connect(self._thread_done)

    # ------------------------------------------------------------------------------ control
    def start(self) -> None:
        self.add_log(f"{time.strftime('%H:%M:%S')} job started")
        self.train_thread.start()

    @property
    def running(self) -> bool:
        return self.outcome is None and self.train_thread.isRunning()

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def cancel(self) -> None:
        self.control.cancel()

    def set_train_fraction(self, fraction: float) -> None:
        """Share of wall time the trainer may use; the engine sleeps the rest after each step."""
        self.control.train_fraction = float(min(max(fraction, 0.05), 1.0))

    @property
    def pid(self) -> int | None:
        """The training child process, once started."""
        return self.worker.process.pid if self.worker.process is not None else None

    def stop(self, timeout_ms: int = 60_000) -> bool:
        """Cancel and wait for the job to end (the child stops at its next step, writes a checkpoint
        and exits; it is killed if it has not after ``TrainWorker.STOP_GRACE_S``); True if it ended."""
        self.control.cancel()
        return self.train_thread.wait(timeout_ms) if self.train_thread.isRunning() else True

    # ------------------------------------------------------------------------------ events
    def add_log(self, line: str) -> None:
        self.log.append(line)
        self.logLine.emit(line)

    def _on_event(self, ev: TrainEvent) -> None:
        line = describe_event(ev)
        if line:
            self.add_log(line)
        self.trainEvent.emit(ev)

    def _on_finished(self, results) -> None:
        self._end("finished", results)

    def _on_cancelled(self, message: str) -> None:
        self._end("cancelled", message)

    def _on_failed(self, message: str, details: str) -> None:
        self._end("failed", (message, details))

    def _end(self, outcome: str, payload) -> None:
        self.outcome = outcome
        if outcome == "finished":
            self.add_log("all stages finished")
            self.finished.emit(payload)
        elif outcome == "cancelled":
            self.add_log(payload)
            self.cancelled.emit(payload)
        else:
            msg, details = payload
            self.add_log(f"FAILED: {msg}")
            self.failed.emit(msg, details)
        self.train_thread.quit()

    def _thread_done(self) -> None:
        self.worker.deleteLater()
        self.stopped.emit(self.outcome or "failed")
