"""Scene folder: round trip, atomic writes, clear errors for bad manifests and weights."""

import json

import pytest
import torch

from models.backends.base import BackendUnavailable
from models.backends.nerf import NerfBackend
from models.fields.nerf_mlp import NerfMLP, NerfMLPConfig
from models.scene import Scene, SceneError
from models.training.engine import module_tensors


def small_scene(tmp_path):
    scene = Scene(root=tmp_path / "s", near=2.0, far=6.0, aabb=[[-1.0] * 3, [1.0] * 3])
    cfg = NerfMLPConfig(depth=2, width=16, skips=(), pos_freqs=2, dir_freqs=1, view_width=8)
    torch.manual_seed(0)
    tensors = {**module_tensors(NerfMLP(cfg), "coarse"), **module_tensors(NerfMLP(cfg), "fine")}
    scene.save_model("nerf", tensors, {"mlp": cfg.to_dict(), "sampling": {"n_coarse": 8, "n_fine": 8}})
    return scene, tensors


def test_round_trip(tmp_path):
    scene, tensors = small_scene(tmp_path)
    again = Scene.load(scene.root)
    loaded, cfg = again.load_model("nerf")
    assert set(loaded) == set(tensors)
    for k in tensors:
        assert torch.equal(loaded[k], tensors[k])
    assert cfg["mlp"]["width"] == 16
    b = NerfBackend("cpu")
    b.load(again)
    assert b.parameter_count() == sum(v.numel() for v in tensors.values())
    # no temp files left behind by the atomic writes
    assert not [p for p in scene.root.iterdir() if p.name.startswith(".")]


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(SceneError, match="not found"):
        Scene.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SceneError, match="scene.json: file not found"):
        Scene.load(tmp_path / "empty")


def test_malformed_and_wrong_version(tmp_path):
    scene, _ = small_scene(tmp_path)
    path = scene.root / "scene.json"
    good = path.read_text()
    path.write_text(good[:-20])
    with pytest.raises(SceneError, match="malformed JSON"):
        Scene.load(scene.root)
    m = json.loads(good)
    m["version"] = 99
    path.write_text(json.dumps(m))
    with pytest.raises(SceneError, match="unsupported scene version 99"):
        Scene.load(scene.root)
    m["version"] = 1
    del m["near"]
    path.write_text(json.dumps(m))
    with pytest.raises(SceneError, match="malformed manifest"):
        Scene.load(scene.root)


def test_truncated_weights_are_a_clear_error(tmp_path):
    scene, _ = small_scene(tmp_path)
    w = scene.root / "nerf.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(SceneError, match="corrupt or truncated"):
        Scene.load(scene.root).load_model("nerf")
    b = NerfBackend("cpu")
    with pytest.raises(BackendUnavailable, match="corrupt or truncated"):
        b.load(Scene.load(scene.root))


def test_weights_of_wrong_shape(tmp_path):
    scene, tensors = small_scene(tmp_path)
    tensors["fine.sigma.weight"] = torch.zeros(1, 3)
    scene.save_model("nerf", tensors, scene.backends["nerf"]["config"])
    with pytest.raises(BackendUnavailable, match="do not match"):
        NerfBackend("cpu").load(Scene.load(scene.root))


def test_pickle_is_never_loaded(tmp_path):
    # a pickle renamed to .safetensors must be rejected, not unpickled
    scene, _ = small_scene(tmp_path)
    torch.save({"x": torch.zeros(1)}, scene.root / "nerf.safetensors")
    with pytest.raises(SceneError):
        Scene.load(scene.root).load_model("nerf")
