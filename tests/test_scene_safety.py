"""A scene has one writer at a time and is trained only on the data it was made from."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copy_scene
from models.scene import Scene, SceneError, SceneLock

ROOT = Path(__file__).resolve().parents[1]


def _main(*args):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tiny_teacher_scene, tmp_path):
    scene = copy_scene(tiny_teacher_scene, tmp_path / "scene")
    with SceneLock(scene, "a test job"):
        out = _main("distill", str(scene), "--backend", "r2l", "--preset", "tiny", "--steps", "2", "--quiet")
        assert out.returncode == 2 and out.stderr.startswith("error:"), out.stderr
        assert f"a test job (process {os.getpid()}" in out.stderr
        with pytest.raises(SceneError, match="is writing this scene"):
            with SceneLock(scene):
                pass
    assert not (scene / SceneLock.FILE).exists()
    # a lock left by a killed process (its pid no longer runs) does not block the next job
    (scene / SceneLock.FILE).write_text(json.dumps({"pid": 2**22 + 4321, "what": "a killed job"}))
    out = _main("distill", str(scene), "--backend", "r2l", "--preset", "tiny", "--steps", "2", "--quiet", "--restart")
    assert out.returncode == 0, out.stderr
    assert not (scene / SceneLock.FILE).exists()


def test_export_does_not_replace_a_scene_being_written(tiny_teacher_scene, tmp_path):
    src = Scene.load(copy_scene(tiny_teacher_scene, tmp_path / "scene"))
    target = copy_scene(tiny_teacher_scene, tmp_path / "target")
    with SceneLock(target, "a test job"):
        with pytest.raises(SceneError, match="is writing this scene"):
            src.export(target, force=True)
    assert Scene.load(target).backends.keys() == src.backends.keys() and (target / "checkpoints").is_dir()


def test_other_data_is_refused_unless_asked(tiny_teacher_scene, tmp_path):
    scene = copy_scene(tiny_teacher_scene, tmp_path / "scene")
    other = tmp_path / "other"
    out = _main("make-scene", str(other), "--size", "32", "--views", "20,4,4")
    assert out.returncode == 0, out.stderr
    for args in (["distill", str(scene), "--backend", "r2l", "--preset", "tiny", "--steps", "2", "--data", str(other)],
                 ["eval", str(scene), "--max-views", "1", "--data", str(other)],
                 ["train", str(other), "--out", str(scene), "--preset", "tiny", "--steps", "2"]):
        out = _main(*args, "--quiet")
        assert out.returncode == 2 and "is not this scene's dataset" in out.stderr, (args, out.stderr)
        assert "--data-mismatch-ok" in out.stderr
    out = _main("eval", str(scene), "--max-views", "1", "--data", str(other), "--data-mismatch-ok", "--quiet")
    assert out.returncode == 0, out.stderr


def test_manifest_keys_of_newer_versions_survive_a_rewrite(tiny_teacher_scene, tmp_path):
    scene = copy_scene(tiny_teacher_scene, tmp_path / "scene")
    m = json.loads((scene / "scene.json").read_text())
    m["annotations"] = {"author": "someone", "notes": [1, 2]}
    m["backends"]["nerf"]["colour_space"] = "srgb"
    (scene / "scene.json").write_text(json.dumps(m))
    s = Scene.load(scene)
    s.set_metrics("nerf", {"test_psnr": 1.0})
    back = json.loads((scene / "scene.json").read_text())
    assert back["annotations"] == m["annotations"] and back["backends"]["nerf"]["colour_space"] == "srgb"


@pytest.mark.parametrize("weights", ["../../elsewhere.safetensors", "/etc/passwd", "sub/nerf.safetensors", 5, None, ""])
def test_manifest_file_entries_stay_inside_the_scene(tiny_teacher_scene, tmp_path, weights):
    scene = copy_scene(tiny_teacher_scene, tmp_path / "scene")
    m = json.loads((scene / "scene.json").read_text())
    m["backends"]["nerf"]["weights"] = weights
    (scene / "scene.json").write_text(json.dumps(m))
    with pytest.raises(SceneError, match="expected a file name in the scene folder"):
        Scene.load(scene)
    if weights == "/etc/passwd":  # and the CLI says so in one line
        out = _main("eval", str(scene), "--max-views", "1", "--quiet")
        assert out.returncode == 2 and out.stderr.startswith("error:") and "Traceback" not in out.stderr, out.stderr


def test_doctor_lists_every_problem_of_a_scene(tiny_teacher_scene, tmp_path):
    scene = copy_scene(tiny_teacher_scene, tmp_path / "scene")
    out = _main("doctor", str(scene))
    assert out.returncode == 0 and "0 problems found" in out.stdout, out.stdout + out.stderr
    (scene / "nerf.safetensors").write_bytes(b"not weights")
    (scene / "checkpoints" / "teacher.safetensors").write_bytes(b"")
    out = _main("doctor", str(scene))
    assert out.returncode == 2 and "2 problems found" in out.stdout, out.stdout
    assert "problem  nerf weights" in out.stdout and "problem  checkpoint teacher.safetensors" in out.stdout
    out = _main("doctor", str(tmp_path / "nothing"))
    assert out.returncode == 2 and "no such file or folder" in out.stdout


def test_an_unexpected_error_is_one_line_and_a_log(tmp_path, monkeypatch):
    from models import cli

    def broken(a):
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "doctor", broken)
    monkeypatch.setenv("NSV_LOG_DIR", str(tmp_path))
    assert cli.run(["doctor", "x"]) == 1
    logs = list(tmp_path.glob("nsv-crash-*.log"))
    assert len(logs) == 1 and "ZeroDivisionError: a bug" in logs[0].read_text() and "Traceback" in logs[0].read_text()


@pytest.mark.parametrize("backend, edit", [
    ("nerf", lambda c: c["mlp"].update(width=1_000_000)),
    ("r2l", lambda c: c["mlp"].update(width=1_000_000, depth=1000)),
])
def test_a_manifest_naming_a_huge_network_is_refused_before_allocating(distilled_r2l_scene, tmp_path, backend, edit):
    # built as the manifest says, these networks would need terabytes: the check compares shapes
    # on the meta device first
    from models.backends.base import BackendUnavailable
    from models.backends.registry import create

    scene = copy_scene(distilled_r2l_scene, tmp_path / "scene")
    m = json.loads((scene / "scene.json").read_text())
    edit(m["backends"][backend]["config"])
    (scene / "scene.json").write_text(json.dumps(m))
    with pytest.raises(BackendUnavailable, match="do not match the manifest's network"):
        create(backend, "cpu").load(Scene.load(scene))


@pytest.fixture(scope="module")
def distilled_r2l_scene(tiny_teacher_scene, tmp_path_factory):
    scene = copy_scene(tiny_teacher_scene, tmp_path_factory.mktemp("r2l_small") / "scene")
    out = _main("distill", str(scene), "--backend", "r2l", "--preset", "tiny", "--steps", "2", "--quiet")
    assert out.returncode == 0, out.stderr
    return scene


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="needs /dev/full")
def test_writing_to_devices_never_replaces_them():
    from models.storage import StorageError, write_json

    write_json(Path("/dev/null"), {"a": 1})  # written into, as a shell would
    with pytest.raises(StorageError, match="/dev/full: cannot write"):
        write_json(Path("/dev/full"), {"a": 1})  # a full disk: one line naming the file
    assert Path("/dev/null").is_char_device() and Path("/dev/full").is_char_device()


@pytest.mark.parametrize("cls_path, good", [
    ("models.fields.nerf_mlp:NerfMLPConfig", {"depth": 4, "width": 32, "skips": [2]}),
    ("models.fields.r2l_mlp:R2LMLPConfig", {"width": 32, "depth": 4}),
    ("models.fields.kilonerf_grid:KiloNerfFieldConfig", {"hidden_width": 16}),
    ("models.backends.kilonerf:KiloNerfRenderConfig", {"ert_threshold": 0.01}),
])
def test_stored_configs_refuse_unknown_settings(cls_path, good):
    """A scene's network settings load as written, or fail naming what they cannot honour; an
    unknown key (a newer version's setting) is never dropped silently."""
    import importlib

    mod, name = cls_path.split(":")
    cls = getattr(importlib.import_module(mod), name)
    cfg = cls.from_dict(good)
    assert cls.from_dict(cfg.to_dict() if hasattr(cfg, "to_dict") else dict(good)) == cfg
    with pytest.raises(ValueError, match="unknown setting.*future_knob"):
        cls.from_dict({**good, "future_knob": 3})
    with pytest.raises(ValueError, match="expected a JSON object"):
        cls.from_dict([1, 2])
