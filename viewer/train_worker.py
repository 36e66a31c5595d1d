"""Training from the viewer: the shared engine (``models.training``) in a child process.

- ``TrainRequest``: what the training dialog asks for (JSON-friendly; saved next to the
  checkpoints as ``checkpoints/training_job.json`` so "Resume" can continue the same job).
- ``run_training(request, on_event, control, on_scene)``: plain Python, no Qt. Loads the dataset,
  opens or creates the scene folder and calls ``models.training.jobs.run_pipeline``, exactly as
  ``main.py train`` / ``distill`` do (``models/cli.py``); the GUI is a front-end on that engine.
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
- ``PreviewScene``: a scene whose weights for one backend are a training snapshot, so the render
  worker can create a live-preview backend with its ordinary ``load_backend`` path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue as queue_module
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PyQt6.QtCore import QObject, QThread, pyqtSignal, pyqtSlot

from models.training.engine import JobCancelled, JobControl, TrainEvent

STAGE_BACKEND = {"teacher": "nerf", "kilonerf": "kilonerf", "r2l": "r2l"}
"""Which renderer backend each training stage produces."""
STAGE_LABELS = {"teacher": "NeRF teacher", "kilonerf": "KiloNeRF distillation", "r2l": "R2L distillation"}
JOB_FILE = "training_job.json"
"""The GUI's job description, in the scene's checkpoints folder (not exported with the scene)."""


# ------------------------------------------------------------------------------- the request
@dataclass
class TrainRequest:
    """One training pipeline as the dialog describes it (plain data; JSON round-trips)."""

    dataset: str
    """Dataset folder (Blender, LLFF, transforms.json or procedural)."""
    output: str
    """Scene folder to write (created, or opened to resume / add distillations)."""
    stages: list[str] = field(default_factory=lambda: ["teacher"])
    """In order: "teacher", then "kilonerf" and/or "r2l"."""
    preset: str = "standard"
    """Preset name shared by every stage (tiny / quick / standard / paper)."""
    steps: dict[str, int] = field(default_factory=dict)
    """Per-stage step overrides (absent: the preset's)."""
    device: str = "auto"
    """"auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:1", "mps"."""
    sparse_views: int = 0
    """Teacher: keep only this many training views (0: all)."""
    sparse_regularise: bool | str = False
    """Teacher with sparse views: "regnerf" (also True: depth smoothness, sample-space annealing,
    gradient clipping), "freenerf" (frequency and occlusion regularisation), "both", or False."""
    dataset_options: dict = field(default_factory=dict)
    """Loader options as in the CLI (half_res for Blender, factor for LLFF)."""
    snapshot_every_s: float | None = None
    """Seconds between live-preview snapshots (None: the preset's)."""
    checkpoint_every_s: float | None = None
    """Seconds between checkpoints (None: the preset's)."""
    resume: bool = False
    """Continue from the stages' checkpoints (False: start every stage over)."""

    def stage_specs(self) -> list:
        """The ``run_pipeline`` stage list; overrides built as ``cmd_train``/``cmd_distill`` build them."""
        from models.training.jobs import StageSpec, stage_overrides

        return [StageSpec(stage, self.preset, stage_overrides(
                    stage, self.preset, steps=self.steps.get(stage),
                    views=self.sparse_views if stage == "teacher" else None,
                    sparse_reg=(self.sparse_regularise or None) if stage == "teacher" else None,
                    snapshot_every_s=self.snapshot_every_s, checkpoint_every_s=self.checkpoint_every_s))
                for stage in self.stages]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(d: dict) -> "TrainRequest":
        names = {f.name for f in dataclasses.fields(TrainRequest)}
        return TrainRequest(**{k: v for k, v in d.items() if k in names})


def read_saved_job(scene_root: str | Path) -> tuple[TrainRequest, list[str]] | None:
    """(request, stages completed) of the GUI job that wrote this scene's checkpoints, or None."""
    path = Path(scene_root) / "checkpoints" / JOB_FILE
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return TrainRequest.from_json(d), [str(x) for x in d.get("completed", [])]
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def write_saved_job(scene_root: Path, request: TrainRequest, completed: list[str]) -> None:
    path = Path(scene_root) / "checkpoints" / JOB_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**request.to_json(), "resume": True, "completed": completed}, indent=1),
                   encoding="utf-8")
    tmp.replace(path)


def checkpoint_steps(scene_root: str | Path) -> dict[str, tuple[int, int]]:
    """{stage: (step, total_steps)} of the checkpoints in a scene folder (metadata only)."""
    from models.training.engine import checkpoint_path
    from models.training.jobs import STAGES

    out = {}
    for stage in STAGES:
        path = checkpoint_path(Path(scene_root), stage)
        if not path.is_file():
            continue
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            out[stage] = (int(meta.get("step", 0)), int(meta.get("total_steps", 0)))
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is reported by the engine on resume
            out[stage] = (0, 0)
    return out


# --------------------------------------------------------------------------- the job itself
def run_training(request: TrainRequest, on_event: Callable[[TrainEvent], None], control: JobControl,
                 on_scene: Callable[[str], None] | None = None) -> dict:
    """Run ``request`` to completion on the calling thread (the engine does the work).

    Raises what the engine raises: JobCancelled when cancelled (a checkpoint is written at that step), TrainingError
    and friends on failure.
    """
    from models import devices
    from models.data import load_dataset
    from models.training.jobs import open_or_create_scene, run_pipeline

    if not request.stages:
        raise ValueError("no training stage selected")
    device = devices.resolve_device(None if request.device in ("", "auto") else request.device)
    first = request.stages[0]
    log = lambda msg: on_event(TrainEvent("log", first, message=msg))  # noqa: E731
    log(f"loading dataset {request.dataset} …")
    t0 = time.perf_counter()
    data = load_dataset(request.dataset, **request.dataset_options)
    train = data.splits["train"]
    log(f"{data.kind} dataset: {len(train)} train views, {train.width}x{train.height} "
        f"(loaded in {time.perf_counter() - t0:.1f} s); device {devices.describe(device)}")
    if control.cancelled:
        raise JobCancelled()
    scene = open_or_create_scene(Path(request.output), data)
    scene.dataset["options"] = dict(request.dataset_options)
    scene.save_manifest()
    completed: list[str] = []
    write_saved_job(scene.root, request, completed)
    if on_scene is not None:
        on_scene(str(scene.root))
    stages = ", ".join(request.stages)
    log(f"pipeline: {stages} (preset {request.preset}{', resuming from checkpoints' if request.resume else ''}); "
        f"scene folder {scene.root}")

    def forward(ev: TrainEvent) -> None:
        on_event(ev)
        if ev.kind == "finished":
            completed.append(ev.stage)  # "Resume" continues with the stages after it
            write_saved_job(scene.root, request, completed)
            on_event(final_snapshot(scene, ev))  # the trained weights, as saved, for the viewer

    return run_pipeline(scene, data, request.stage_specs(), device, forward, control, resume=request.resume)


def final_snapshot(scene, ev: TrainEvent) -> TrainEvent:
    """A snapshot event holding the weights a finished stage saved (read back from the scene
    folder, so the viewer shows exactly what a later ``open_scene`` would load)."""
    backend = STAGE_BACKEND[ev.stage]
    state, config = scene.load_model(backend, "cpu")
    if backend == "nerf":
        grid = scene.load_occupancy("cpu")
        if grid is not None:
            state["occupancy.occupied"] = grid
    return TrainEvent("snapshot", ev.stage, ev.step, ev.total_steps, elapsed_s=ev.elapsed_s, metrics=ev.metrics,
                      snapshot={"backend": backend, "state": state, "config": config, "final": True})


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


def describe_event(ev: TrainEvent) -> str:
    """A log line for an engine event (step and snapshot events are not logged)."""
    stamp = time.strftime("%H:%M:%S")
    where = f"[{ev.stage}]"
    if ev.kind == "started":
        return f"{stamp} {where} started at step {ev.step} of {ev.total_steps}"
    if ev.kind == "validation":
        return f"{stamp} {where} step {ev.step}: validation PSNR {ev.psnr:.2f} dB"
    if ev.kind == "checkpoint":
        return f"{stamp} {where} checkpoint at step {ev.step}"
    if ev.kind in ("paused", "resumed"):
        return f"{stamp} {where} {ev.kind} at step {ev.step}"
    if ev.kind == "finished":
        return f"{stamp} {where} finished at step {ev.step}: {ev.message}"
    if ev.kind in ("log", "cancelled", "failed"):
        return f"{stamp} {where} {ev.message}"
    return ""


# ------------------------------------------------------------------------------ live preview
class PreviewScene:
    """A scene whose weights for ``backend`` come from a training snapshot (live preview).

    Everything else (bounds, NDC, cameras, the other backends' weights) is the real scene's, so
    ``backend.load(PreviewScene(...))`` builds exactly the backend the finished stage will give.
    """

    def __init__(self, scene, backend: str, state: dict, config: dict | None):
        self._scene = scene
        self._backend = backend
        self._state = state
        self._config = dict(config or {})

    def __getattr__(self, name):
        return getattr(self._scene, name)

    def load_model(self, name: str, device="cpu"):
        if name != self._backend:
            return self._scene.load_model(name, device)
        return {k: v.to(device) for k, v in self._state.items()}, dict(self._config)

    def load_occupancy(self, device="cpu"):
        # a snapshot carries its own occupancy ("occupancy.occupied"); a stale file must not win
        if self._backend == "nerf":
            return None
        return self._scene.load_occupancy(device)
