"""The stage table, stage configs and pipelines: the same entry points for the CLI and the GUI.

Stages (``STAGE_TABLE``, in pipeline order): "teacher" (NeRF fit), "kilonerf" and "r2l"
(distillation from the scene's teacher). Each stage names the module holding its ``TrainingJob``
subclass and its ``PRESETS`` dict of frozen config dataclasses; every job's constructor takes
``(scene, data, config, device)`` (``Stage.make_job``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch

from models.data import SceneData, load_dataset
from models.dictconfig import config_replace
from models.scene import Scene, SceneError, SceneLock
from models.training.engine import (
    EventCallback,
    JobControl,
    TrainingJob,
    checkpoint_path,
    run_job,
)


def _load(target: str):
    """The object a ``"package.module:name"`` path names (imported on first use)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Stage:
    """One training stage: what it is called, what it trains and where its job and presets live."""

    name: str
    """Stage name used by the CLI, the GUI's requests and checkpoint file names."""
    label: str
    """Human-readable name (the viewer's training dialog and panel)."""
    backend: str
    """The renderer backend (``models.backends.registry`` name) whose weights the stage writes."""
    presets_at: str
    """``"module:name"`` of the stage's preset dict (preset name -> frozen config)."""
    job_at: str
    """``"module:name"`` of the stage's ``TrainingJob`` subclass."""
    distils_from: str | None = None
    """The stage whose trained model this one is distilled from; the scene must hold that
    stage's backend before this stage starts (None: trained from the dataset alone)."""

    def presets(self) -> dict:
        """The preset dict of the stage (name -> frozen config)."""
        return _load(self.presets_at)

    def job_class(self) -> type[TrainingJob]:
        """The stage's ``TrainingJob`` subclass."""
        return _load(self.job_at)

    def make_job(self, scene: Scene, data: SceneData, config, device: torch.device) -> TrainingJob:
        """The stage's job on ``scene`` and ``data`` with ``config`` (see ``stage_config``)."""
        return self.job_class()(scene, data, config, device)


STAGE_TABLE: dict[str, Stage] = {s.name: s for s in (
    Stage("teacher", "NeRF teacher", "nerf", "models.training.configs:TEACHER_PRESETS",
          "models.training.teacher:TeacherJob"),
    Stage("kilonerf", "KiloNeRF distillation", "kilonerf", "models.training.distill_kilonerf:PRESETS",
          "models.training.distill_kilonerf:KiloNerfDistillJob", distils_from="teacher"),
    Stage("r2l", "R2L distillation", "r2l", "models.training.distill_r2l:PRESETS",
          "models.training.distill_r2l:R2LDistillJob", distils_from="teacher"),
)}
"""Every training stage, in pipeline order (the teacher first, then the distillations)."""

STAGES = tuple(STAGE_TABLE)
"""The stage names, in pipeline order."""
DISTILL_STAGES = tuple(name for name, s in STAGE_TABLE.items() if s.distils_from)
"""The stages ``distill`` runs on a scene that has its teacher."""


def stage_entry(name: str) -> Stage:
    """The table entry of stage ``name``; ValueError naming the known stages otherwise."""
    try:
        return STAGE_TABLE[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown stage '{name}' (choose from {', '.join(STAGES)})") from None


def stage_presets(name: str) -> dict:
    """The preset dict of a stage (name -> frozen config)."""
    return stage_entry(name).presets()


def stage_overrides(stage: str, preset: str, *, steps: int | None = None, views: int | None = None,
                    sparse_reg: bool | str | None = None, time_budget_s: float | None = None,
                    checkpoint_every_s: float | None = None, snapshot_every_s: float | None = None,
                    cuda_graph: bool | None = None, samples_per_step: int | None = None,
                    variant: str | None = None, batch_rays: int | None = None, pseudo: str | None = None,
                    pseudo_teacher: str | None = None, settings: list[str] | None = None) -> dict:
    """The config overrides of one stage from the settings a user gives, for ``stage_config``.

    The one place where the CLI's options (``train`` / ``distill`` / ``pipeline``) and the training
    dialog's fields become overrides: ``steps`` (a teacher outside the ``paper`` preset then decays
    its learning rate over exactly those steps, so a shortened run still ends at the low rate),
    sparse views (teacher only: ``views`` kept, ``sparse_reg`` regnerf / freenerf / both, ``True`` =
    regnerf), time budget, checkpoint and live-preview intervals; teacher only: ``cuda_graph`` and
    ``samples_per_step`` (the adaptive batch's target); r2l only: ``variant`` (student network
    name), ``batch_rays``, ``pseudo`` (pseudo-ray source) and ``pseudo_teacher`` (the renderer that
    labels them). ``settings`` are ``KEY=VALUE`` strings (``--set``, see ``parse_settings``), applied
    last, so an explicit setting wins over an option for the same key. Unset values are left to the
    preset.
    """
    stage_entry(stage)  # an unknown stage is an error
    out: dict = {}
    if steps:
        out["steps"] = int(steps)
        if stage == "teacher" and preset != "paper":
            out["lr_decay_steps"] = int(steps)
    if sparse_reg and not views:
        raise ValueError("--sparse-reg needs --views N (the number of training views to keep)")
    if views:
        if stage != "teacher":
            raise ValueError(f"sparse views apply to the teacher, not to {stage}")
        from models.training.configs import TeacherConfig

        out["sparse"] = TeacherConfig.sparse_settings(int(views), sparse_reg)
    if time_budget_s is not None:
        out["time_budget_s"] = float(time_budget_s)
    if checkpoint_every_s is not None:
        out["checkpoint_every_s"] = float(checkpoint_every_s)
    if snapshot_every_s is not None:
        out["snapshot_every_s"] = float(snapshot_every_s)
    teacher_only = {"--cuda-graph": cuda_graph or None, "--samples-per-step": samples_per_step}
    used = [k for k, v in teacher_only.items() if v is not None]
    if used and stage != "teacher":
        raise ValueError(f"{', '.join(used)} apply to the teacher only")
    if cuda_graph:
        out["cuda_graph"] = True
    if samples_per_step:
        out["target_samples"] = int(samples_per_step)
    r2l_only = {"--variant": variant, "--pseudo": pseudo, "--teacher": pseudo_teacher, "--batch-rays": batch_rays}
    used = [k for k, v in r2l_only.items() if v is not None]
    if used and stage != "r2l":
        raise ValueError(f"{', '.join(used)} apply to --backend r2l only")
    if variant is not None:
        from models.fields.r2l_mlp import R2LMLPConfig

        out["mlp"] = R2LMLPConfig.from_name(variant)
    if batch_rays is not None:
        out["batch_rays"] = int(batch_rays)
    if pseudo is not None:
        out["pseudo_source"] = pseudo
    if pseudo_teacher is not None:
        out["pseudo_renderer"] = pseudo_teacher
    out.update(parse_settings(stage, preset, settings))
    return out


def _parse_scalar(kind: str, text: str):
    """``text`` as a ``kind`` ("bool", "int", "float", "str") value; None when it does not parse."""
    if kind == "str":
        return text
    if kind == "bool":
        low = text.lower()
        return None if low not in ("true", "false", "1", "0", "yes", "no") else low in ("true", "1", "yes")
    try:
        value = int(text) if kind == "int" else float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def parse_settings(stage: str, preset: str, items: list[str] | None) -> dict:
    """``KEY=VALUE`` strings (``train`` / ``distill --set``) -> overrides of the stage's config.

    Only scalar settings (int, float, bool, str) can be set this way; each value is parsed as its
    field's type (bool: true/false/1/0/yes/no). The schedule's settings (``ScheduleConfig``) go by
    their bare names (``validate_every``) or as ``schedule.validate_every``; either way the
    override is keyed by the bare name. Unknown keys, nested settings and values that do not parse
    are errors naming the key. The result is validated by building the config.
    """
    out: dict = {}
    if not items:
        return out
    presets = stage_presets(stage)
    if preset not in presets:
        raise ValueError(f"unknown {stage} preset '{preset}' (choose from {', '.join(presets)})")
    fields = presets[preset].settings()
    for item in items:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        if key not in fields:
            raise ValueError(f"--set {key}: {stage} has no setting '{key}' (see the stage's config for its names)")
        name = fields[key].name  # the bare name ("schedule.seed" -> "seed")
        kind = fields[key].type if isinstance(fields[key].type, str) else getattr(fields[key].type, "__name__", "")
        if kind not in ("bool", "int", "float", "str"):
            raise ValueError(f"--set {key}: only scalar settings can be set this way ({key} is {kind})")
        value = _parse_scalar(kind, text)
        if value is None:
            raise ValueError(f"--set {key}={text}: not a valid {kind}")
        if kind in ("int", "float") and value < 0:
            raise ValueError(f"--set {key}={text}: must not be negative")
        if name == "steps" and value < 1:
            raise ValueError(f"--set {key}={text}: must be at least 1")
        if kind == "float" and ("fraction" in name or name.endswith("_share") or name.endswith("_start")) and value > 1:
            raise ValueError(f"--set {key}={text}: a fraction, at most 1")
        if kind == "float" and name.endswith("lr") and value == 0:
            raise ValueError(f"--set {key}=0: a learning rate must be positive")
        out[name] = value
    try:
        stage_config(stage, preset, out)
    except (TypeError, ValueError) as e:
        raise ValueError(f"--set: {e}") from None
    return out


def stage_config(stage: str, preset: str, overrides: dict | None = None):
    """The config of ``stage``: its preset ``preset`` with ``overrides`` ({setting: value}; None
    values are left to the preset) applied as the config's ``replace`` applies them, so the
    schedule's settings may be named bare (``validate_every``) or dotted
    (``schedule.validate_every``). Unknown presets and settings are ValueErrors naming them."""
    presets = stage_presets(stage)
    if preset not in presets:
        raise ValueError(f"unknown {stage} preset '{preset}' (choose from {', '.join(presets)})")
    cfg = presets[preset]
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if overrides:
        cfg = config_replace(cfg, overrides, stage, flat=cfg.FLAT)
    return cfg


def job_class(name: str) -> type[TrainingJob]:
    """The ``TrainingJob`` subclass of a stage."""
    return stage_entry(name).job_class()


def make_job(name: str, scene: Scene, data: SceneData, config, device: torch.device) -> TrainingJob:
    """The job of stage ``name`` on ``scene`` and ``data`` with ``config``."""
    return stage_entry(name).make_job(scene, data, config, device)


def data_mismatch(scene: Scene, data: SceneData) -> str | None:
    """Why ``data`` is not the dataset ``scene`` was made from (kind, training cameras, image
    size), or None when it is. The scene's manifest records the dataset's cameras."""
    kind = scene.dataset.get("kind")
    if kind and kind != data.kind:
        return f"it was made from a {kind} dataset, this is {data.kind}"
    stored = scene.cameras.get("train")
    train = data.splits.get("train")
    if not stored or train is None:
        return None
    if len(stored) != len(train):
        return f"it was made from {len(stored)} training views, this dataset has {len(train)}"
    if (int(stored[0]["width"]), int(stored[0]["height"])) != (train.width, train.height):
        return (f"its training images are {stored[0]['width']}x{stored[0]['height']}, this dataset's "
                f"{train.width}x{train.height}")
    c2w = torch.tensor([c["c2w"] for c in stored], dtype=torch.float32)
    if not torch.allclose(c2w, train.c2w.float(), atol=1e-3):
        return "its training cameras differ from this dataset's"
    return None


def check_scene_data(scene: Scene, data: SceneData, allow_mismatch: bool = False) -> None:
    """Refuse to train, distil or evaluate ``scene`` on data it was not made from."""
    why = data_mismatch(scene, data)
    if why is not None and not allow_mismatch:
        raise SceneError(f"{scene.root}: {data.root} is not this scene's dataset ({why}); "
                         "pass --data-mismatch-ok to use it anyway")


def open_or_create_scene(out: Path, data: SceneData, allow_mismatch: bool = False) -> Scene:
    """Open the scene folder ``out`` if it exists (resume), else create it for ``data``."""
    out = Path(out)
    if (out / Scene.MANIFEST).exists():
        scene = Scene.load(out)
        check_scene_data(scene, data, allow_mismatch)
        return scene
    if out.exists() and any(out.iterdir()):
        raise SceneError(f"{out}: folder exists, is not empty and holds no scene.json; choose another output")
    return Scene.create(out, data)


def dataset_for_scene(scene: Scene, data_path: str | Path | None = None, allow_mismatch: bool = False,
                      **options) -> SceneData:
    """Load the dataset a scene was trained on (or ``data_path`` when given, if it is the same
    data: see ``check_scene_data``)."""
    path = data_path or scene.dataset.get("path")
    if not path:
        raise SceneError(f"{scene.root}: scene.json names no dataset; pass --data")
    opts = dict(scene.dataset.get("options", {}))
    opts.update(options)
    data = load_dataset(path, **opts)
    check_scene_data(scene, data, allow_mismatch)
    return data


@dataclass
class StageSpec:
    """One stage of a pipeline: which, with which preset and overrides."""

    stage: str
    preset: str = "standard"
    overrides: dict | None = None


def run_pipeline(
    scene: Scene,
    data: SceneData,
    stages: list[StageSpec],
    device: torch.device,
    on_event: EventCallback,
    control: JobControl | None = None,
    resume: bool = True,
) -> dict:
    """Run stages in order (teacher, then distillations), each resumable from its checkpoint.

    The scene folder is locked while the stages run (``SceneLock``: a second writer gets an error);
    under torchrun only rank 0 writes, and only it takes the lock."""
    from models.training import distributed

    if not distributed.current().is_main:
        return _run_stages(scene, data, stages, device, on_event, control, resume)
    what = "training (" + ", ".join(s.stage for s in stages) + ")"
    with SceneLock(scene.root, what):
        return _run_stages(scene, data, stages, device, on_event, control, resume)


def _run_stages(scene, data, stages, device, on_event, control, resume) -> dict:
    results = {}
    for spec in stages:
        entry = stage_entry(spec.stage)
        cfg = stage_config(spec.stage, spec.preset, spec.overrides)
        teacher = STAGE_TABLE[entry.distils_from] if entry.distils_from else None
        if teacher is not None and teacher.backend not in scene.backends:
            raise SceneError(f"{scene.root}: distilling {spec.stage} needs a trained {teacher.label} first (run train)")
        job = entry.make_job(scene, data, cfg, device)
        results[spec.stage] = run_job(job, on_event, control, checkpoint_path(scene.root, spec.stage), resume)
    return results
