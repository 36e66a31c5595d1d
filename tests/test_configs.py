"""The training jobs' configs (``models.training.configs``): one ``ScheduleConfig`` shared by every
job config, one dict round trip (``models.dictconfig``) that also reads the flat dicts of files
written before the schedule's settings moved into it, and refuses what it does not know; the
schedule's settings keep their bare names for ``replace``, ``stage_config`` and ``--set``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from models.training.configs import JobConfig, ScheduleConfig, TeacherConfig
from models.training.distill_kilonerf import KiloNerfConfig
from models.training.jobs import STAGES, parse_settings, stage_config, stage_presets
from models.training.pipeline import JOB_FILE, TrainRequest, read_saved_job, write_saved_job

ALL_PRESETS = [(stage, name) for stage in STAGES for name in stage_presets(stage)]
SCHEDULE = [f.name for f in dataclasses.fields(ScheduleConfig)]
DEMO_SCENE = Path(__file__).resolve().parents[1] / "assets" / "demo_scene" / "scene.json"


def flat(d: dict) -> dict:
    """A ``to_dict`` dict as the versions before ``ScheduleConfig`` wrote it: the schedule's
    settings at the top level."""
    return {**{k: v for k, v in d.items() if k != "schedule"}, **d["schedule"]}


def test_every_job_config_holds_one_schedule_and_no_field_shadows_it():
    for stage in STAGES:
        cls = type(stage_presets(stage)["tiny"])
        assert issubclass(cls, JobConfig)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert isinstance(cls().schedule, ScheduleConfig)
        assert not set(SCHEDULE) & set(fields), f"{cls.__name__} repeats a schedule setting"
        for name in ("steps", "time_budget_s"):  # the run's length stays each job's own
            assert name in fields


@pytest.mark.parametrize("stage, preset", ALL_PRESETS)
def test_configs_round_trip_through_json_nested_and_flat(stage, preset):
    cfg = stage_presets(stage)[preset]
    d = json.loads(json.dumps(cfg.to_dict()))
    assert set(d["schedule"]) == set(SCHEDULE)
    assert type(cfg).from_dict(d) == cfg
    assert type(cfg).from_dict(flat(d)) == cfg  # a scene.json / checkpoint written before the move


def test_an_old_flat_dict_reads_back_as_the_config_it_was_written_from():
    old = {"steps": 600, "lr": 5e-3, "validate_every": 200, "validation_size": 48, "validation_views": 2,
           "checkpoint_every_s": 10.0, "snapshot_every_s": 1.0, "seed": 3}
    cfg = TeacherConfig.from_dict(old)
    assert cfg == TeacherConfig(steps=600, lr=5e-3, schedule=ScheduleConfig(200, 48, 2, 10.0, 1.0, 3))
    # settings left out keep the job's own default schedule (KiloNeRF validates every 2000 steps)
    assert KiloNerfConfig.from_dict({"steps": 5, "seed": 3}) == KiloNerfConfig(steps=5).replace(seed=3)
    assert KiloNerfConfig.from_dict({"steps": 5, "seed": 3}).schedule.validate_every == 2000
    assert KiloNerfConfig.from_dict({"schedule": {"seed": 3}}).schedule.validate_every == 2000


def test_the_bundled_demo_scene_written_flat_reads_back():
    """``assets/demo_scene`` was trained before ``ScheduleConfig``: its stored job configs are flat;
    every value they hold survives, in the schedule or at the top level."""
    backends = json.loads(DEMO_SCENE.read_text())["backends"]
    for backend, stage, key in (("nerf", "teacher", "teacher"), ("kilonerf", "kilonerf", "distill"),
                                ("r2l", "r2l", "distill")):
        raw = backends[backend]["config"][key]
        cfg = type(stage_presets(stage)["tiny"]).from_dict(raw)
        again = flat(json.loads(json.dumps(cfg.to_dict())))
        for k, v in raw.items():  # (nested network settings added since then take their defaults)
            assert again[k].items() >= v.items() if isinstance(v, dict) else again[k] == v, (stage, k)


@pytest.mark.parametrize("bad, message", [
    ({"future_knob": 3}, "TeacherConfig: unknown setting(s) future_knob"),
    ({"schedule": {"every_so_often": 3}}, "TeacherConfig: schedule: unknown setting(s) every_so_often"),
    ({"seed": 1, "schedule": {"seed": 2}}, "TeacherConfig: seed given both at the top level and in schedule"),
    ({"schedule": 5}, "TeacherConfig: schedule must be a JSON object"),
    ({"mlp": {"depth": 4, "colour": 1}}, "NeRF network shape: unknown setting(s) colour"),
    ([1, 2], "TeacherConfig: expected a JSON object"),
])
def test_unknown_and_contradictory_keys_are_one_error_naming_them(bad, message):
    with pytest.raises(ValueError) as e:
        TeacherConfig.from_dict(bad)
    assert str(e.value).startswith(message), str(e.value)


def test_replace_and_stage_config_take_the_schedule_settings_by_name():
    tiny = stage_presets("teacher")["tiny"]
    assert tiny.replace(validate_every=7) == tiny.replace(schedule=tiny.schedule.replace(validate_every=7))
    assert tiny.replace(validate_every=7).schedule.validation_size == 48  # the rest of the preset's schedule
    assert stage_config("teacher", "tiny", {"validate_every": 7}) == tiny.replace(validate_every=7)
    assert stage_config("teacher", "tiny", {"schedule.validate_every": 7}) == tiny.replace(validate_every=7)
    assert stage_config("r2l", "tiny", {"steps": 20, "seed": 4, "validate_every": None}).schedule.seed == 4
    with pytest.raises(ValueError, match=r"^teacher: unknown setting\(s\) every$"):
        stage_config("teacher", "tiny", {"every": 7})
    with pytest.raises(ValueError, match=r"^TeacherConfig: unknown setting\(s\) schedule.colour$"):
        tiny.replace(**{"schedule.colour": 1})


@pytest.mark.parametrize("stage", STAGES)
def test_set_takes_bare_and_dotted_schedule_names(stage):
    bare = parse_settings(stage, "tiny", ["validate_every=7", "checkpoint_every_s=2.5", "seed=3"])
    dotted = parse_settings(stage, "tiny", ["schedule.validate_every=7", "schedule.checkpoint_every_s=2.5",
                                            "schedule.seed=3"])
    assert bare == dotted == {"validate_every": 7, "checkpoint_every_s": 2.5, "seed": 3}
    s = stage_config(stage, "tiny", bare).schedule
    assert (s.validate_every, s.checkpoint_every_s, s.seed) == (7, 2.5, 3)
    for item, message in (("schedule.seed=-1", "--set schedule.seed=-1: must not be negative"),
                          ("schedule.seed=x", "--set schedule.seed=x: not a valid int"),
                          ("schedule=3", "--set schedule: only scalar settings can be set this way"),
                          ("schedule.colour=1", f"--set schedule.colour: {stage} has no setting 'schedule.colour'")):
        with pytest.raises(ValueError) as e:
            parse_settings(stage, "tiny", [item])
        assert str(e.value).startswith(message), str(e.value)


def test_presets_keep_their_schedules():
    """The tiny presets' schedules (what the CPU tests rely on), as they were before the move."""
    expect = {"teacher": ScheduleConfig(200, 48, 2, 10.0, 1.0, 0), "kilonerf": ScheduleConfig(750, 48, 2, 10.0, 1.0, 0),
              "r2l": ScheduleConfig(250, 0, 2, 10.0, 1.0, 0)}
    for stage, schedule in expect.items():
        assert stage_presets(stage)["tiny"].schedule == schedule
    assert [stage_presets("kilonerf")[p].schedule.validate_every for p in ("quick", "standard", "long", "paper")] == \
        [2000, 5000, 10000, 50000]
    assert stage_presets("r2l")["long"].schedule.checkpoint_every_s == 300.0


def test_saved_job_records_refuse_unknown_keys(tmp_path):
    req = TrainRequest(dataset="data", output=str(tmp_path), stages=["teacher"], preset="tiny",
                       settings={"teacher": ["validate_every=7", "schedule.seed=2"]})
    assert TrainRequest.from_json(json.loads(json.dumps(req.to_json()))) == req
    with pytest.raises(ValueError, match=r"training request: unknown setting\(s\) future_field"):
        TrainRequest.from_json({**req.to_json(), "future_field": 1})
    write_saved_job(tmp_path, req, ["teacher"])
    assert read_saved_job(tmp_path)[1] == ["teacher"]
    path = tmp_path / "checkpoints" / JOB_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), "future_field": 1}))
    assert read_saved_job(tmp_path) is None  # not resumed as a different job
