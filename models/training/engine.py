"""The one training loop: events, pause/cancel, throttling, atomic checkpoints, resume, NaN guard.

A ``TrainingJob`` knows how to do one optimisation step of one stage (teacher, KiloNeRF or R2L
distillation); ``run_job`` drives it and reports through a callback. The CLI turns the events
into a progress bar, the GUI's TrainWorker into Qt signals. Nothing here knows about either.
"""

from __future__ import annotations

import abc
import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from models.storage import StorageError, load_tensors, save_tensors


class TrainingError(Exception):
    """A job failed in a way the user should read (NaN loss, bad data, ...)."""


class JobCancelled(Exception):
    """Raised inside the loop when the user cancelled; the last checkpoint is kept."""


@dataclass
class TrainEvent:
    """What a job reports. ``kind`` is one of: started, step, validation, snapshot, checkpoint,
    log, paused, resumed, finished, cancelled, failed."""

    kind: str
    stage: str
    step: int = 0
    total_steps: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    psnr: float | None = None
    steps_per_s: float = 0.0
    eta_s: float = float("nan")
    elapsed_s: float = 0.0
    image: np.ndarray | None = None
    """Validation render (H, W, 3) uint8, on validation events."""
    target: np.ndarray | None = None
    """Ground truth of the validation view (H, W, 3) uint8."""
    snapshot: dict | None = None
    """On snapshot events: {"backend": name, "state": {name: cpu tensor}, "config": dict}."""
    message: str = ""
    metrics: dict = field(default_factory=dict)
    progress: float = 0.0
    """Fraction of the job done: by steps, or by time for a time-bounded job (``TimeBudget``)."""


EventCallback = Callable[[TrainEvent], None]


class _Box:
    """A plain ``.value`` holder (what ``multiprocessing.Value`` is across processes)."""

    def __init__(self, value):
        self.value = value


class JobControl:
    """Pause / resume / cancel flags, the trainer's share of the device, and the job's step count.

    Thread-safe; with a multiprocessing context ``ctx`` the flags live in shared memory, so a job
    running in a child process (the viewer's trainer) is steered from the parent.
    """

    def __init__(self, ctx=None):
        if ctx is None:
            self._run, self._cancel = threading.Event(), threading.Event()
            self._fraction, self._step = _Box(1.0), _Box(0)
        else:
            self._run, self._cancel = ctx.Event(), ctx.Event()
            self._fraction, self._step = ctx.Value("d", 1.0, lock=False), ctx.Value("q", 0, lock=False)
        self._run.set()

    @property
    def train_fraction(self) -> float:
        """Fraction of wall time the trainer may use (the rest is left idle for the viewer)."""
        return float(self._fraction.value)

    @train_fraction.setter
    def train_fraction(self, value: float) -> None:
        self._fraction.value = float(value)

    @property
    def step(self) -> int:
        """Steps the running job has completed (its resumed start included)."""
        return int(self._step.value)

    @step.setter
    def step(self, value: int) -> None:
        self._step.value = int(value)

    def pause(self):
        self._run.clear()

    def resume(self):
        self._run.set()

    def cancel(self):
        self._cancel.set()
        self._run.set()

    @property
    def paused(self) -> bool:
        return not self._run.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


@dataclass
class Validation:
    psnr: float
    image: np.ndarray | None = None
    target: np.ndarray | None = None
    metrics: dict = field(default_factory=dict)
    """Further numbers of the validation (e.g. R2L's PSNR against its teacher), in the event's metrics."""


class TrainingJob(abc.ABC):
    """One stage of training. Subclasses hold their models, optimiser and data."""

    stage: str = ""
    """"teacher", "kilonerf" or "r2l"."""
    total_steps: int = 0
    validate_every: int = 0
    """Steps between validations (0: never during training). The jobs take this and the two
    intervals below from their config's ``schedule`` (``ScheduleConfig``)."""
    snapshot_every_s: float = 0.0
    """Seconds between weight snapshots for live preview (0: none)."""
    checkpoint_every_s: float = 60.0
    """Seconds between checkpoints."""

    @abc.abstractmethod
    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        """One optimisation step; returns losses as 0-d tensors ("loss" is the total)."""

    @abc.abstractmethod
    def validate(self) -> Validation:
        """Render the validation view and compute its PSNR."""

    @abc.abstractmethod
    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """Everything needed to resume: model weights, optimiser state, RNG-free extras."""

    @abc.abstractmethod
    def restore(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of ``checkpoint_tensors``."""

    @abc.abstractmethod
    def finish(self) -> dict:
        """Write the final model into the scene folder; returns metrics for the event."""

    def done(self, step: int) -> bool:
        """True to stop before ``total_steps`` (e.g. a time budget ran out)."""
        return False

    def snapshot(self) -> dict | None:
        """Weights for live preview: {"backend", "state", "config"} or None."""
        return None

    def close(self) -> None:
        """Free resources (called after finishing, cancelling or failing)."""


# ------------------------------------------------------------------------- optimiser state I/O
def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str = "optim") -> dict[str, torch.Tensor]:
    """Flatten an optimiser's per-parameter state (Adam: step, exp_avg, exp_avg_sq) to tensors."""
    out = {}
    sd = opt.state_dict()
    for pid, st in sd["state"].items():
        for k, v in st.items():
            out[f"{prefix}.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str = "optim") -> None:
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if not key.startswith(prefix + "."):
            continue
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def module_tensors(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach() for k, v in module.state_dict().items()}


def strip_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


# ------------------------------------------------------------------------------- checkpoints
def checkpoint_path(scene_root: Path, stage: str) -> Path:
    return Path(scene_root) / "checkpoints" / f"{stage}.safetensors"


class TimeBudget:
    """``elapsed`` / ``progress`` / ``done`` for a job whose config has ``steps`` and
    ``time_budget_s``: a time-bounded run follows progress = max(step / steps, elapsed / budget),
    so its schedules still complete, and ends when the budget is spent. The job sets
    ``elapsed_before`` (seconds of earlier, resumed runs) and ``started`` (perf_counter)."""

    elapsed_before: float = 0.0
    started: float = 0.0

    def elapsed(self) -> float:
        """Seconds this job has run, earlier (resumed) runs included."""
        return self.elapsed_before + time.perf_counter() - self.started

    def progress(self, step: int) -> float:
        """Fraction of the run done: by steps, or by time when a time budget is set."""
        p = step / self.config.steps
        if self.config.time_budget_s > 0:
            p = max(p, self.elapsed() / self.config.time_budget_s)
        return min(p, 1.0)

    def done(self, step: int) -> bool:
        return self.config.time_budget_s > 0 and self.elapsed() >= self.config.time_budget_s


def write_checkpoint(path: Path, job: TrainingJob, step: int) -> None:
    tensors = {k: v.detach().cpu() for k, v in job.checkpoint_tensors().items()}
    save_tensors(path, tensors, metadata={"stage": job.stage, "step": str(step), "total_steps": str(job.total_steps)})


def read_checkpoint(path: Path) -> tuple[int, dict[str, torch.Tensor]] | None:
    """(step, tensors) of a checkpoint, or None if there is none. Corrupt files raise TrainingError."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_tensors(path)
    except (StorageError, Exception) as e:  # noqa: BLE001 - any unreadable file is one error
        raise TrainingError(f"{path}: checkpoint unreadable ({e}); delete it to start over") from None
    try:
        step = int(meta.get("step", 0))
    except (TypeError, ValueError):
        raise TrainingError(f"{path}: checkpoint records step {meta.get('step')!r}, not a number; "
                            "delete it to start over") from None
    return step, tensors


# --------------------------------------------------------------------------------------- loop
def run_job(
    job: TrainingJob,
    on_event: EventCallback,
    control: JobControl | None = None,
    checkpoint: Path | None = None,
    resume: bool = True,
    event_interval_s: float = 0.1,
) -> dict:
    """Run ``job`` from its last checkpoint (if ``resume``) to ``total_steps``.

    Emits events through ``on_event`` (step events at most every ``event_interval_s``). Returns the
    job's final metrics. Raises JobCancelled (after emitting "cancelled") or TrainingError (after
    emitting "failed"); the last good checkpoint stays on disk in both cases.
    """
    control = control or JobControl()
    start_step = 0
    if checkpoint is not None and resume:
        found = read_checkpoint(checkpoint)
        if found is not None:
            start_step, tensors = found
            try:
                job.restore(tensors)
            except TrainingError:
                raise
            except (RuntimeError, ValueError, KeyError) as e:  # e.g. a checkpoint of another preset
                raise TrainingError(f"{checkpoint}: the checkpoint does not match this job's configuration "
                                    f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200]}); "
                                    "rerun with --restart to start over") from None
            if start_step < 0:
                raise TrainingError(f"{checkpoint}: the checkpoint records step {start_step}; rerun with --restart")
            on_event(TrainEvent("log", job.stage, start_step, job.total_steps,
                                message=f"resumed {job.stage} from step {start_step} ({checkpoint})"))
    control.step = start_step
    on_event(TrainEvent("started", job.stage, start_step, job.total_steps))
    for note in getattr(job, "notes", ()):
        on_event(TrainEvent("log", job.stage, start_step, job.total_steps, message=note))
    t_start = time.perf_counter()
    last_event = last_ckpt = last_snap = t_start
    rate_t, rate_step = t_start, start_step
    steps_per_s = 0.0
    step = start_step
    last_losses: dict[str, float] = {}
    latest: dict | None = None  # the last step's losses (device tensors), checked before a cancel-save

    budget = float(getattr(getattr(job, "config", None), "time_budget_s", 0.0) or 0.0)

    def emit(kind, **kw):
        now = time.perf_counter()
        remaining = job.total_steps - step
        eta = remaining / steps_per_s if steps_per_s > 0 else float("nan")
        if budget > 0 and isinstance(job, TimeBudget):  # a time-bounded job ends with its budget
            left = max(budget - job.elapsed(), 0.0)
            eta = min(eta, left) if math.isfinite(eta) else left
        progress = job.progress(step) if isinstance(job, TimeBudget) else step / max(job.total_steps, 1)
        on_event(TrainEvent(kind, job.stage, step, job.total_steps, steps_per_s=steps_per_s, eta_s=eta,
                            elapsed_s=now - t_start, progress=min(progress, 1.0), **kw))

    def save_ckpt():
        if checkpoint is not None and getattr(job, "is_main", True):  # distributed: rank 0 writes
            write_checkpoint(checkpoint, job, step)
            emit("checkpoint", message=str(checkpoint))

    try:
        while step < job.total_steps and not job.done(step):
            if control.cancelled:
                raise JobCancelled()
            if control.paused:
                emit("paused")
                while control.paused and not control.cancelled:
                    time.sleep(0.02)
                if control.cancelled:
                    raise JobCancelled()
                emit("resumed")
                rate_t, rate_step = time.perf_counter(), step
            t_step = time.perf_counter()
            losses = job.train_step(step)
            step += 1
            control.step = step
            latest = losses
            now = time.perf_counter()
            if now - last_event >= event_interval_s or step == job.total_steps:
                last_losses = {k: float(v) for k, v in losses.items()}
                if not all(math.isfinite(v) for v in last_losses.values()):
                    raise TrainingError(
                        f"{job.stage}: loss became NaN/inf at step {step}; training stopped "
                        f"(last good checkpoint kept{': ' + str(checkpoint) if checkpoint else ''}). "
                        "Try a lower learning rate."
                    )
                if now - rate_t > 0.5:
                    inst = (step - rate_step) / (now - rate_t)
                    steps_per_s = inst if steps_per_s == 0 else 0.7 * steps_per_s + 0.3 * inst
                    rate_t, rate_step = now, step
                elif steps_per_s == 0:
                    steps_per_s = (step - start_step) / max(now - t_start, 1e-9)
                emit("step", losses=last_losses)
                last_event = now
            if job.validate_every and (step % job.validate_every == 0 or step == job.total_steps):
                v = job.validate()
                if not math.isfinite(v.psnr):
                    raise TrainingError(f"{job.stage}: validation produced NaN at step {step}; stopped")
                emit("validation", psnr=v.psnr, image=v.image, target=v.target, losses=last_losses, metrics=v.metrics)
            if job.snapshot_every_s and now - last_snap >= job.snapshot_every_s:
                snap = job.snapshot()
                if snap is not None:
                    emit("snapshot", snapshot=snap)
                last_snap = now
            if checkpoint is not None and now - last_ckpt >= job.checkpoint_every_s:
                save_ckpt()
                last_ckpt = time.perf_counter()
            if control.train_fraction < 1.0:
                busy = time.perf_counter() - t_step
                time.sleep(busy * (1.0 - control.train_fraction) / max(control.train_fraction, 0.05))
        save_ckpt()
        metrics = job.finish()
        emit("finished", metrics=metrics, message=json.dumps(metrics))
        return metrics
    except JobCancelled:
        # keep the work done since the last periodic checkpoint, unless the latest step went bad
        kept = "last checkpoint kept"
        if checkpoint is not None and step > start_step and latest is not None:
            if all(math.isfinite(float(v)) for v in latest.values()):
                save_ckpt()
                kept = f"checkpoint written at step {step}"
        emit("cancelled", message=f"{job.stage} cancelled at step {step}; {kept}")
        raise
    except TrainingError as e:
        emit("failed", message=str(e))
        raise
    except Exception as e:  # any other failure becomes a readable event, then propagates
        emit("failed", message=f"{job.stage} failed at step {step}: {type(e).__name__}: {e}")
        raise TrainingError(f"{job.stage} failed at step {step}: {type(e).__name__}: {e}") from e
    finally:
        job.close()
