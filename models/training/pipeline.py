"""A training pipeline as a request: the stages to run on a dataset, run headless on the engine.

- ``TrainRequest``: which stages, preset, steps, per-stage ``KEY=VALUE`` settings, device, sparse
  views and intervals (plain data; JSON round-trips). The viewer's training dialog and ``main.py
  pipeline`` produce one; ``stage_specs`` builds its stage configs through
  ``models.training.jobs.stage_overrides``, as ``main.py train`` / ``distill`` do.
- ``parse_stages`` / ``stage_settings`` (the CLI's ``--stages`` and ``--set STAGE.KEY=VALUE``) and
  ``check_request``: a request that cannot run is refused before anything is written.
- ``run_training(request, on_event, control, on_scene)``: loads the dataset, opens or creates the
  scene folder (``open_training_scene``, shared with ``main.py train``) and runs the stages with
  ``models.training.jobs.run_pipeline`` on the calling thread.
- Saved-job records: ``checkpoints/training_job.json`` in the scene folder holds the request
  and the stages completed, so a job can be resumed later (``read_saved_job``; ``stages_done``:
  the stages a rerun of the same request skips); checkpoint progress per stage without loading
  the tensors: ``checkpoint_steps``.
- ``final_snapshot`` / ``PreviewScene``: the weights of a finished stage as a snapshot event, and a
  scene whose weights for one backend are a snapshot (live preview of a running job).
- ``describe_event``: one log line per engine event.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from models.data import SceneData
from models.dictconfig import config_from_dict
from models.scene import Scene, SceneError
from models.storage import StorageError, read_json, write_json
from models.training.engine import JobCancelled, JobControl, TrainEvent, checkpoint_path
from models.training.jobs import (
    STAGE_TABLE,
    STAGES,
    StageSpec,
    open_or_create_scene,
    stage_config,
    stage_entry,
    stage_overrides,
)

JOB_FILE = "training_job.json"
"""The saved-job record, in the scene's checkpoints folder (not exported with the scene)."""


# ------------------------------------------------------------------------------- the request
@dataclass
class TrainRequest:
    """One training pipeline as the dialog describes it (plain data; JSON round-trips)."""

    dataset: str
    """Dataset folder (Blender, LLFF, transforms.json or procedural)."""
    output: str
    """Scene folder to write (created, or opened to resume / add distillations)."""
    stages: list[str] = field(default_factory=lambda: ["teacher"])
    """In order: "teacher", then "kilonerf" and/or "r2l" (names in ``jobs.STAGE_TABLE``)."""
    preset: str = "standard"
    """Preset name shared by every stage (tiny / quick / standard / paper)."""
    steps: dict[str, int] = field(default_factory=dict)
    """Per-stage step overrides (absent: the preset's)."""
    settings: dict[str, list[str]] = field(default_factory=dict)
    """Per-stage ``KEY=VALUE`` settings of the stage's config (``--set``; see
    ``jobs.parse_settings``), applied after every other field."""
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

    def stage_specs(self) -> list[StageSpec]:
        """The ``run_pipeline`` stage list; overrides built as ``cmd_train``/``cmd_distill`` build them."""
        return [self.stage_spec(stage) for stage in self.stages]

    def stage_spec(self, stage: str) -> StageSpec:
        """One stage of ``stage_specs``: its overrides from ``jobs.stage_overrides``."""
        return StageSpec(stage, self.preset, stage_overrides(
            stage, self.preset, steps=self.steps.get(stage),
            views=self.sparse_views if stage == "teacher" else None,
            sparse_reg=(self.sparse_regularise or None) if stage == "teacher" else None,
            snapshot_every_s=self.snapshot_every_s, checkpoint_every_s=self.checkpoint_every_s,
            settings=self.settings.get(stage)))

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(d: dict) -> TrainRequest:
        """The request ``to_json`` wrote; a key it does not know (a record written by a newer
        version) is a ValueError naming it, not silently dropped."""
        return config_from_dict(TrainRequest, d, "training request")


def parse_stages(text: str) -> list[str]:
    """``"teacher,r2l"`` -> ["teacher", "r2l"]: known stage names, each once, in pipeline order
    (ValueError naming the problem otherwise)."""
    stages = [s.strip() for s in str(text).split(",") if s.strip()]
    if not stages:
        raise ValueError(f"--stages {text!r}: name at least one stage ({', '.join(STAGES)})")
    for name in stages:
        stage_entry(name)  # unknown: an error naming the known stages
    dupes = sorted({s for s in stages if stages.count(s) > 1}, key=STAGES.index)
    if dupes:
        raise ValueError(f"--stages {text}: {', '.join(dupes)} given more than once")
    if stages != sorted(stages, key=STAGES.index):
        ordered = ",".join(sorted(stages, key=STAGES.index))
        raise ValueError(f"--stages {text}: stages run in the order {', '.join(STAGES)} "
                         f"(the students are distilled from the teacher); write {ordered}")
    return stages


def stage_settings(items: list[str] | None, stages: list[str]) -> dict[str, list[str]]:
    """``--set STAGE.KEY=VALUE`` strings -> {stage: ["KEY=VALUE", ...]} for ``TrainRequest.settings``.

    Every setting names its stage, which must be one of ``stages``; the keys and values are
    checked when the stage configs are built (``check_request``)."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        head, sep, _ = item.partition("=")
        stage, dot, key = head.strip().partition(".")
        if not sep or not dot or not key.strip():
            raise ValueError(f"--set {item!r}: expected STAGE.KEY=VALUE naming one of the stages run, "
                             f"e.g. {stages[-1]}.lr=1e-3")
        stage = stage.strip()
        stage_entry(stage)
        if stage not in stages:
            raise ValueError(f"--set {item}: {stage} is not one of the stages run ({', '.join(stages)})")
        out.setdefault(stage, []).append(item.split(".", 1)[1].strip())
    return out


def check_request(request: TrainRequest) -> None:
    """Refuse a request that cannot run, before anything is loaded or written.

    Checks the stages (known, each once, in pipeline order), that settings are given only for
    stages of the request, that every stage's config builds (preset, steps, ``KEY=VALUE``
    settings), that the dataset path is a dataset folder, that a scene already at the output can
    be read, and that every distillation has its teacher: a stage of the request before it, or
    trained in the output scene. Raises ValueError, DatasetError or SceneError naming the problem.
    """
    from models.data.detect import detect_kind

    if not request.stages:
        raise ValueError("no training stage selected")
    parse_stages(",".join(request.stages))
    stray = [s for s in request.settings if s not in request.stages]
    if stray:
        raise ValueError(f"settings for {', '.join(stray)}, which is not one of the stages run "
                         f"({', '.join(request.stages)})")
    for stage in request.stages:
        try:
            spec = request.stage_spec(stage)
            stage_config(spec.stage, spec.preset, spec.overrides)
        except ValueError as e:  # a setting's message names it as the user wrote it: --set STAGE.KEY
            msg = str(e)
            raise ValueError(f"--set {stage}.{msg[len('--set '):]}" if msg.startswith("--set ") else msg) from None
    detect_kind(request.dataset)
    out = Path(request.output)
    trained: set[str] = set()
    if (out / Scene.MANIFEST).is_file():
        trained = set(Scene.load(out).backends)
    for name in request.stages:
        teacher = stage_entry(name).distils_from
        if teacher and teacher not in request.stages and STAGE_TABLE[teacher].backend not in trained:
            raise SceneError(f"{name} is distilled from the {STAGE_TABLE[teacher].label}, which {out} does not "
                             f"hold: add {teacher} to the stages, or write into a scene that has one")


def stages_done(request: TrainRequest) -> list[str]:
    """The stages of ``request`` that a rerun of it skips: those the saved job in its output folder
    completed on the same dataset with the same preset, overrides and loader options, whose
    weights the scene still holds and whose teacher (if any) is not trained again by this
    request. Empty without a saved job (or with one that cannot be read)."""
    saved = read_saved_job(request.output)
    if saved is None:
        return []
    old, completed = saved
    try:
        if (Path(old.dataset).resolve() != Path(request.dataset).resolve()
                or old.dataset_options != request.dataset_options):
            return []
        before = {spec.stage: spec for spec in old.stage_specs()}
        trained = set(Scene.load(Path(request.output)).backends)
    except (ValueError, TypeError, AttributeError, SceneError, StorageError, OSError):
        return []
    done: list[str] = []
    for spec in request.stage_specs():
        entry = stage_entry(spec.stage)
        if (spec.stage in completed and before.get(spec.stage) == spec and entry.backend in trained
                and (entry.distils_from is None or entry.distils_from in done
                     or entry.distils_from not in request.stages)):
            done.append(spec.stage)
    return done


# --------------------------------------------------------------------------- saved-job records
def saved_job_path(scene_root: str | Path) -> Path:
    return Path(scene_root) / "checkpoints" / JOB_FILE


def read_saved_job(scene_root: str | Path) -> tuple[TrainRequest, list[str]] | None:
    """(request, stages completed) of the job that wrote this scene's checkpoints, or None
    (no record, or one that cannot be read: not JSON, or holding settings this version does not
    know)."""
    try:
        d = dict(read_json(saved_job_path(scene_root)))
        completed = d.pop("completed", [])
        return TrainRequest.from_json(d), [str(x) for x in completed]
    except (StorageError, ValueError, TypeError, AttributeError):
        return None


def write_saved_job(scene_root: str | Path, request: TrainRequest, completed: list[str]) -> None:
    """Record ``request`` (to be resumed) and the stages it has completed, atomically."""
    write_json(saved_job_path(scene_root), {**request.to_json(), "resume": True, "completed": list(completed)})


def checkpoint_steps(scene_root: str | Path) -> dict[str, tuple[int, int]]:
    """{stage: (step, total_steps)} of the checkpoints in a scene folder (metadata only)."""
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


# --------------------------------------------------------------------------- running a request
def open_training_scene(out: str | Path, data: SceneData, dataset_options: dict,
                        allow_mismatch: bool = False) -> Scene:
    """The scene folder ``out`` opened (resume) or created for ``data``, with the dataset loader
    options recorded in its manifest (so later commands load the data the same way)."""
    scene = open_or_create_scene(Path(out), data, allow_mismatch)
    scene.dataset["options"] = dict(dataset_options)
    scene.save_manifest()
    return scene


def run_training(request: TrainRequest, on_event: Callable[[TrainEvent], None], control: JobControl,
                 on_scene: Callable[[str], None] | None = None, done: list[str] | tuple[str, ...] = (),
                 allow_mismatch: bool = False) -> dict:
    """Run ``request`` to completion on the calling thread (the engine does the work).

    Keeps the scene's saved-job record up to date (written before the first stage, then after
    each finished stage) and follows every ``finished`` event with ``final_snapshot``. Stages in
    ``done`` (completed by an earlier run: ``stages_done``) are not run again and stay recorded as
    completed. ``allow_mismatch``: train into a scene made from other data (``check_scene_data``).
    Raises what the engine raises: JobCancelled when cancelled (a checkpoint is written at that
    step), TrainingError and friends on failure.
    """
    from models import devices
    from models.data import load_dataset
    from models.training import jobs

    if not request.stages:
        raise ValueError("no training stage selected")
    device = devices.resolve_device(None if request.device in ("", "auto") else request.device)
    first = request.stages[0]
    log = lambda msg: on_event(TrainEvent("log", first, message=msg))
    log(f"loading dataset {request.dataset} …")
    t0 = time.perf_counter()
    data = load_dataset(request.dataset, **request.dataset_options)
    train = data.splits["train"]
    log(f"{data.kind} dataset: {len(train)} train views, {train.width}x{train.height} "
        f"(loaded in {time.perf_counter() - t0:.1f} s); device {devices.describe(device)}")
    if control.cancelled:
        raise JobCancelled()
    scene = open_training_scene(request.output, data, request.dataset_options, allow_mismatch)
    completed: list[str] = [s for s in request.stages if s in done]
    write_saved_job(scene.root, request, completed)
    if on_scene is not None:
        on_scene(str(scene.root))
    stages = ", ".join(request.stages)
    log(f"pipeline: {stages} (preset {request.preset}{', resuming from checkpoints' if request.resume else ''}); "
        f"scene folder {scene.root}")
    if completed:
        log(f"{', '.join(completed)} already completed by this job; not run again")

    def forward(ev: TrainEvent) -> None:
        on_event(ev)
        if ev.kind == "finished":
            completed.append(ev.stage)  # a resumed job continues with the stages after it
            write_saved_job(scene.root, request, completed)
            on_event(final_snapshot(scene, ev))  # the trained weights, as saved, for the viewer

    specs = [spec for spec in request.stage_specs() if spec.stage not in completed]
    return jobs.run_pipeline(scene, data, specs, device, forward, control, resume=request.resume)


# ------------------------------------------------------------------------------ snapshots
def final_snapshot(scene, ev: TrainEvent) -> TrainEvent:
    """A snapshot event holding the weights a finished stage saved (read back from the scene
    folder, so the viewer shows exactly what a later ``open_scene`` would load)."""
    backend = stage_entry(ev.stage).backend
    state, config = scene.load_model(backend, "cpu")
    if backend == "nerf":
        grid = scene.load_occupancy("cpu")
        if grid is not None:
            state["occupancy.occupied"] = grid
    return TrainEvent("snapshot", ev.stage, ev.step, ev.total_steps, elapsed_s=ev.elapsed_s, metrics=ev.metrics,
                      snapshot={"backend": backend, "state": state, "config": config, "final": True})


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


# ------------------------------------------------------------------------------ log lines
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
