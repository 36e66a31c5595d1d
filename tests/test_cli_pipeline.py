"""``main.py pipeline``: the viewer's resumable training pipeline from the command line.

A tiny teacher + R2L pipeline on the procedural scene trains both models and records the finished
job, so the same command run again has nothing to do; a pipeline stopped by Ctrl-C in either stage
resumes from its checkpoint (the completed teacher is not trained again); ``train``, ``distill``,
``pipeline`` and a request as the training dialog makes it build equal stage configs from equal
settings; bad input is one ``error:`` line, exit status 2, and nothing written.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading

import pytest
from viewer_fixtures import one_torch_thread  # noqa: F401 - autouse fixture

from models import cli
from models.scene import Scene
from models.training.jobs import stage_config
from models.training.pipeline import TrainRequest, checkpoint_steps, read_saved_job


def _run(*argv) -> int:
    """``main.py ARGV`` in this process: its exit status (argparse errors included)."""
    try:
        return cli.run([str(a) for a in argv])
    except SystemExit as e:
        return int(e.code)


def _pipeline(data, out, *extra):
    return ["pipeline", data, "--out", out, "--preset", "tiny", "--device", "cpu", "--quiet", *extra]


def _digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".writer.lock"}


def _record(monkeypatch, events: list, then=None) -> None:
    """Keep every event the CLI's progress printer gets (and call ``then(event)`` after it)."""
    original = cli.Progress.__call__

    def record(self, ev):
        original(self, ev)
        events.append(ev)
        if then is not None:
            then(ev)

    monkeypatch.setattr(cli.Progress, "__call__", record)


# ------------------------------------------------------------------------------ a whole pipeline
def test_pipeline_trains_teacher_then_r2l_and_a_rerun_has_nothing_to_do(procedural_dataset, tmp_path, capsys,
                                                                        monkeypatch):
    out, events_file = tmp_path / "scene", tmp_path / "events.jsonl"
    argv = _pipeline(procedural_dataset, out, "--stages", "teacher,r2l", "--set", "teacher.steps=40",
                     "--set", "r2l.steps=20", "--events", events_file)
    assert _run(*argv) == 0, capsys.readouterr().err
    assert "teacher, r2l saved to" in capsys.readouterr().out
    scene = Scene.load(out)
    assert {"nerf", "r2l"} <= set(scene.backends)
    assert checkpoint_steps(out) == {"teacher": (40, 40), "r2l": (20, 20)}
    request, completed = read_saved_job(out)
    assert completed == ["teacher", "r2l"] and request.stages == ["teacher", "r2l"]
    assert request.settings == {"teacher": ["steps=40"], "r2l": ["steps=20"]}
    finished = [line for line in events_file.read_text().splitlines() if '"kind": "finished"' in line]
    assert len(finished) == 2 and '"stage": "teacher"' in finished[0] and '"stage": "r2l"' in finished[1]

    # the same command again: every stage is done, nothing is trained or written
    before = _digest(out)
    events: list = []
    _record(monkeypatch, events)
    assert _run(*argv) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert events == [] and _digest(out) == before

    # bad input against the finished scene leaves it as it was
    assert _run(*_pipeline(procedural_dataset, out, "--stages", "r2l", "--set", "r2l.lr=fast")) == 2
    assert capsys.readouterr().err.strip() == "error: --set r2l.lr=fast: not a valid float"
    assert _digest(out) == before

    # --restart trains the stages asked for again, from step 0
    assert _run(*_pipeline(procedural_dataset, out, "--stages", "teacher", "--set", "teacher.steps=5",
                           "--restart")) == 0
    started = [e for e in events if e.kind == "started"]
    assert [(e.stage, e.step, e.total_steps) for e in started] == [("teacher", 0, 5)]
    assert read_saved_job(out)[1] == ["teacher"] and checkpoint_steps(out)["teacher"] == (5, 5)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="Ctrl-C (SIGINT) is handled on the main thread only")
@pytest.mark.parametrize("stage", ["teacher", "r2l"])
def test_a_pipeline_stopped_by_ctrl_c_resumes_from_its_checkpoint(procedural_dataset, tmp_path, capsys,
                                                                  monkeypatch, stage):
    out = tmp_path / "scene"
    steps = {"teacher": 40, "r2l": 20}
    argv = _pipeline(procedural_dataset, out, "--stages", "teacher,r2l", "--set", "teacher.steps=40",
                     "--set", "r2l.steps=20", "--set", f"{stage}.checkpoint_every_s=0")
    interrupted: list[int] = []

    def ctrl_c(ev):  # Ctrl-C once this stage has written a checkpoint at step 5 or later
        if ev.kind == "checkpoint" and ev.stage == stage and ev.step >= 5 and not interrupted:
            interrupted.append(ev.step)
            os.kill(os.getpid(), signal.SIGINT)

    _record(monkeypatch, [], ctrl_c)
    assert _run(*argv) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert interrupted
    stopped_at = checkpoint_steps(out)[stage][0]
    assert interrupted[0] <= stopped_at < steps[stage]  # a checkpoint at the step it stopped at
    assert read_saved_job(out)[1] == (["teacher"] if stage == "r2l" else [])

    events: list = []
    _record(monkeypatch, events)
    assert _run(*argv) == 0, capsys.readouterr().err
    started = [(e.stage, e.step) for e in events if e.kind == "started"]
    if stage == "teacher":
        assert started == [("teacher", stopped_at), ("r2l", 0)]
    else:  # the completed teacher is not trained again
        assert started == [("r2l", stopped_at)]
        assert any(e.kind == "log" and "teacher already completed" in e.message for e in events)
    assert any(e.kind == "log" and f"resumed {stage} from step {stopped_at}" in e.message for e in events)
    assert checkpoint_steps(out) == {"teacher": (40, 40), "r2l": (20, 20)}
    assert read_saved_job(out)[1] == ["teacher", "r2l"]
    assert {"nerf", "r2l"} <= set(Scene.load(out).backends)


# ------------------------------------------------------------------------ one config builder
def test_cli_and_dialog_build_equal_stage_configs(procedural_dataset, tmp_path):
    parser = cli.build_parser()
    out = str(tmp_path / "scene")
    data = str(procedural_dataset)

    def configs(request: TrainRequest) -> dict:
        return {s.stage: stage_config(s.stage, s.preset, s.overrides) for s in request.stage_specs()}

    # options: train --steps / distill --steps and the dialog's per-stage step fields
    train = parser.parse_args(["train", data, "--out", out, "--preset", "tiny", "--steps", "40",
                               "--checkpoint-every", "2", "--time-budget", "30", "--set", "lr=1e-3"])
    distill = parser.parse_args(["distill", out, "--backend", "r2l", "--preset", "tiny", "--steps", "30",
                                 "--checkpoint-every", "2", "--batch-rays", "512"])
    dialog = TrainRequest(dataset=data, output=out, stages=["teacher", "r2l"], preset="tiny",
                          steps={"teacher": 40, "r2l": 30}, checkpoint_every_s=2.0,
                          settings={"teacher": ["time_budget_s=30", "lr=1e-3"], "r2l": ["batch_rays=512"]})
    assert configs(dialog) == {"teacher": stage_config("teacher", "tiny", cli.train_overrides(train)),
                               "r2l": stage_config("r2l", "tiny", cli.distill_overrides(distill))}

    # --set: the same KEY=VALUE for train / distill and STAGE.KEY=VALUE for pipeline
    train = parser.parse_args(["train", data, "--out", out, "--preset", "tiny", "--set", "steps=40",
                               "--set", "validate_every=7"])
    distill = parser.parse_args(["distill", out, "--backend", "kilonerf", "--preset", "tiny", "--set", "distill_lr=2e-3"])
    piped = cli.pipeline_request(parser.parse_args(_pipeline(data, out, "--stages", "teacher,kilonerf", "--set",
                                                             "teacher.steps=40", "--set", "teacher.validate_every=7",
                                                             "--set", "kilonerf.distill_lr=2e-3")))
    assert configs(piped) == {"teacher": stage_config("teacher", "tiny", cli.train_overrides(train)),
                              "kilonerf": stage_config("kilonerf", "tiny", cli.distill_overrides(distill))}
    assert configs(piped)["teacher"].schedule.validate_every == 7 and configs(piped)["kilonerf"].distill_lr == 2e-3


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args, message", [
    (["--stages", "nerf"], "error: unknown stage 'nerf' (choose from teacher, kilonerf, r2l)"),
    (["--stages", "r2l,teacher"], "error: --stages r2l,teacher: stages run in the order teacher, kilonerf, r2l"),
    (["--stages", "teacher,r2l,teacher"], "error: --stages teacher,r2l,teacher: teacher given more than once"),
    (["--stages", ","], "error: --stages ',': name at least one stage"),
    (["--stages", "kilonerf"], "error: kilonerf is distilled from the NeRF teacher, which"),
    (["--set", "lr=1e-3"], "error: --set 'lr=1e-3': expected STAGE.KEY=VALUE"),
    (["--stages", "teacher", "--set", "r2l.lr=1e-3"], "error: --set r2l.lr=1e-3: r2l is not one of the stages run"),
    (["--set", "nerf.lr=1e-3"], "error: unknown stage 'nerf'"),
    (["--set", "teacher.no_such=1"], "error: --set teacher.no_such: teacher has no setting 'no_such'"),
    (["--set", "r2l.lr=fast"], "error: --set r2l.lr=fast: not a valid float"),
    (["--set", "teacher.lr=-1"], "error: --set teacher.lr=-1: must not be negative"),
    (["--set", "kilonerf.steps=0"], "error: --set kilonerf.steps=0: must be at least 1"),
    (["--set", "teacher.mlp=W64D8"], "error: --set teacher.mlp: only scalar settings can be set this way"),
    (["--preset", "nonsense"], "error: unknown teacher preset 'nonsense'"),
    (["--device", "tpu"], "error: pipeline: argument --device: must be cuda, cuda:N, mps or cpu"),
    (["--checkpoint-every", "0"], "error: pipeline: argument --checkpoint-every: must be a positive"),
    ("missing dataset", "error: {data}: no such file or folder"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(procedural_dataset, tmp_path, capsys, args, message):
    out, events = tmp_path / "scene", tmp_path / "events.jsonl"
    data = tmp_path / "nowhere" if args == "missing dataset" else procedural_dataset
    extra = [] if args == "missing dataset" else args
    assert _run(*_pipeline(data, out, *extra, "--events", events)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message.format(data=data)) and len(err.splitlines()) == 1, err
    assert not out.exists() and not events.exists()
