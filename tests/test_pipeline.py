"""The stage table and the headless training pipeline (``models.training.pipeline``): every stage
resolves to a registered backend, its presets and its job; saved-job records and checkpoint
progress round-trip and are written atomically; a request runs to a finished, loadable teacher."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest
import torch

from models.backends.registry import BACKENDS
from models.scene import Scene, SceneError
from models.storage import save_tensors
from models.training import jobs, pipeline
from models.training.engine import JobCancelled, JobControl, TrainingJob, checkpoint_path
from models.training.jobs import DISTILL_STAGES, STAGE_TABLE, STAGES, StageSpec, stage_entry, stage_overrides
from models.training.pipeline import (
    JOB_FILE,
    TrainRequest,
    checkpoint_steps,
    read_saved_job,
    run_training,
    write_saved_job,
)
from viewer_fixtures import one_torch_thread  # noqa: F401 - autouse fixture


# ------------------------------------------------------------------------------ stage table
def test_stage_table_lists_every_stage_once_in_pipeline_order():
    assert STAGES == ("teacher", "kilonerf", "r2l")
    assert DISTILL_STAGES == ("kilonerf", "r2l")
    assert [s.name for s in STAGE_TABLE.values()] == list(STAGES)
    assert {s.backend for s in STAGE_TABLE.values()} == set(BACKENDS)  # each stage trains one backend
    assert len({s.label for s in STAGE_TABLE.values()}) == len(STAGES)
    for s in STAGE_TABLE.values():
        assert s.distils_from is None or STAGE_TABLE[s.distils_from].distils_from is None


@pytest.mark.parametrize("name", STAGES)
def test_each_stage_resolves_presets_and_a_job_taking_scene_data_config_device(name):
    entry = stage_entry(name)
    presets = entry.presets()
    assert {"tiny", "quick", "standard", "paper"} <= set(presets)
    assert all(dataclasses.is_dataclass(cfg) for cfg in presets.values())
    assert jobs.stage_presets(name) is presets
    cls = entry.job_class()
    assert issubclass(cls, TrainingJob) and jobs.job_class(name) is cls
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    assert tuple(params) == ("scene", "data", "config", "device")  # one order for every job


class RecordingJob:
    """Stands in for a job class: remembers the arguments its constructor got, by position."""

    def __init__(self, *args):
        self.args = args


def test_make_job_passes_scene_data_config_device():
    entry = dataclasses.replace(STAGE_TABLE["teacher"], job_at=f"{__name__}:RecordingJob")
    job = entry.make_job("S", "D", "C", "X")
    assert job.args == ("S", "D", "C", "X")


def test_unknown_stages_are_one_error_naming_the_known_ones():
    for call in (lambda: stage_entry("nerf"), lambda: jobs.stage_presets("nerf"), lambda: jobs.job_class("nerf"),
                 lambda: stage_overrides("nerf", "tiny"), lambda: jobs.stage_config("nerf", "tiny")):
        with pytest.raises(ValueError, match="unknown stage 'nerf' \\(choose from teacher, kilonerf, r2l\\)"):
            call()


def test_viewer_names_are_views_of_the_table():
    from viewer import train_worker

    assert train_worker.STAGE_LABELS == {n: s.label for n, s in STAGE_TABLE.items()}
    assert train_worker.STAGE_BACKEND == {n: s.backend for n, s in STAGE_TABLE.items()}
    for name in ("TrainRequest", "checkpoint_steps", "read_saved_job", "run_training", "PreviewScene", "JOB_FILE"):
        assert getattr(train_worker, name) is getattr(pipeline, name)


# ------------------------------------------------------------------------------- requests
def test_request_stage_specs_are_built_by_stage_overrides():
    req = TrainRequest(dataset="d", output="o", stages=["teacher", "r2l"], preset="tiny",
                       steps={"teacher": 40, "r2l": 30}, sparse_views=3, sparse_regularise="freenerf",
                       checkpoint_every_s=2.0, snapshot_every_s=0.5)
    assert req.stage_specs() == [
        StageSpec("teacher", "tiny", stage_overrides("teacher", "tiny", steps=40, views=3, sparse_reg="freenerf",
                                                     checkpoint_every_s=2.0, snapshot_every_s=0.5)),
        StageSpec("r2l", "tiny", stage_overrides("r2l", "tiny", steps=30, checkpoint_every_s=2.0,
                                                 snapshot_every_s=0.5)),
    ]
    assert TrainRequest.from_json(json.loads(json.dumps(req.to_json()))) == req


# -------------------------------------------------------------------------- saved-job records
def test_saved_job_round_trips_and_is_replaced_atomically(tmp_path):
    req = TrainRequest(dataset="data", output=str(tmp_path), stages=["teacher", "kilonerf"], preset="tiny")
    assert read_saved_job(tmp_path) is None  # no record yet
    write_saved_job(tmp_path, req, [])
    write_saved_job(tmp_path, req, ["teacher"])
    back, completed = read_saved_job(tmp_path)
    assert completed == ["teacher"]
    assert back == dataclasses.replace(req, resume=True)  # a saved job is resumed when it is read back
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [JOB_FILE]

    # a record that cannot be written leaves the previous one whole, and no temporary file
    broken = dataclasses.replace(req, dataset_options={"factor": object()})
    with pytest.raises(TypeError):
        write_saved_job(tmp_path, broken, ["teacher", "kilonerf"])
    assert read_saved_job(tmp_path)[1] == ["teacher"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [JOB_FILE]


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"dataset": "d"}', '{"dataset": "d", "output": "o", '
                                  '"completed": 3}'])
def test_unreadable_saved_jobs_read_as_none(tmp_path, text):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / JOB_FILE).write_text(text)
    assert read_saved_job(tmp_path) is None


def test_checkpoint_steps_reads_only_metadata(tmp_path):
    save_tensors(checkpoint_path(tmp_path, "teacher"), {"w": torch.zeros(2)},
                 metadata={"stage": "teacher", "step": "120", "total_steps": "600"})
    checkpoint_path(tmp_path, "r2l").write_bytes(b"not a safetensors file")
    assert checkpoint_steps(tmp_path) == {"teacher": (120, 600), "r2l": (0, 0)}
    assert checkpoint_steps(tmp_path / "nothing") == {}


# ----------------------------------------------------------------------------- running one
def test_run_training_fits_a_teacher_and_records_the_finished_stage(tmp_path, procedural_dataset):
    torch.manual_seed(0)
    out = tmp_path / "scene"
    req = TrainRequest(dataset=str(procedural_dataset), output=str(out), stages=["teacher"], preset="tiny",
                       steps={"teacher": 30}, device="cpu", snapshot_every_s=0.0)
    events, scenes = [], []
    results = run_training(req, events.append, JobControl(), scenes.append)
    assert scenes == [str(out)]
    kinds = [e.kind for e in events]
    assert kinds[0] == "log" and "started" in kinds and "finished" in kinds
    final = events[-1]
    assert final.kind == "snapshot" and final.snapshot["final"] and final.snapshot["backend"] == "nerf"
    assert kinds.index("finished") < len(kinds) - 1
    assert set(results) == {"teacher"}
    scene = Scene.load(out)
    assert "nerf" in scene.backends and scene.dataset["options"] == {}
    state, _ = scene.load_model("nerf")
    assert all(torch.equal(state[k], final.snapshot["state"][k]) for k in state)
    back, completed = read_saved_job(out)
    assert completed == ["teacher"] and back.stages == ["teacher"] and back.resume
    assert checkpoint_steps(out)["teacher"][0] == 30


def test_run_training_refuses_what_it_cannot_run(tmp_path, procedural_dataset):
    with pytest.raises(ValueError, match="no training stage"):
        run_training(TrainRequest(dataset=str(procedural_dataset), output=str(tmp_path / "a"), stages=[]),
                     lambda e: None, JobControl())
    control = JobControl()
    control.cancel()
    with pytest.raises(JobCancelled):  # cancelled while the dataset loaded: no scene folder is made
        run_training(TrainRequest(dataset=str(procedural_dataset), output=str(tmp_path / "b"), device="cpu"),
                     lambda e: None, control)
    assert not (tmp_path / "b").exists()
    req = TrainRequest(dataset=str(procedural_dataset), output=str(tmp_path / "c"), stages=["kilonerf"],
                       preset="tiny", device="cpu")
    with pytest.raises(SceneError, match="distilling kilonerf needs a trained NeRF teacher first"):
        run_training(req, lambda e: None, JobControl())
    assert read_saved_job(tmp_path / "c")[1] == []
