"""Exported scenes store masks as bits and leave out derivable tensors; loading restores them exactly."""

import pytest
import torch

from models.occupancy import empty_space_distance
from models.scene import Scene, SceneError, pack_masks, unpack_masks

from conftest import copy_scene


def test_pack_unpack_roundtrip_exact():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(41, 43, 47, generator=g) > 0.8).to(torch.uint8)  # numel not a multiple of 8
    other = torch.randn(5, 3)
    packed = pack_masks({"ess.occupied": mask, "w": other, "small": torch.ones(4, dtype=torch.uint8)})
    assert "ess.occupied" not in packed and packed["ess.occupied__bits"].numel() == (mask.numel() + 7) // 8
    assert torch.equal(packed["small"], torch.ones(4, dtype=torch.uint8))  # small tensors stay as they are
    back = unpack_masks(packed)
    assert torch.equal(back["ess.occupied"], mask) and torch.equal(back["w"], other)


def test_non_binary_uint8_is_not_packed():
    t = torch.arange(70000, dtype=torch.int64).remainder(7).to(torch.uint8)
    assert torch.equal(pack_masks({"d": t})["d"], t)


def test_scipy_distance_equals_dilation_reference():
    g = torch.Generator().manual_seed(1)
    occ = torch.rand(30, 26, 34, generator=g) > 0.995
    fast = empty_space_distance(occ, cap=12)  # scipy on CPU
    # the reference: ring k is where a (2k+1)^3 max-pool of the occupancy first turns on
    ref = torch.full(occ.shape, 12, dtype=torch.uint8)
    ref[occ] = 0
    for k in range(11, 0, -1):
        grown = torch.nn.functional.max_pool3d(occ[None, None].float(), 2 * k + 1, stride=1, padding=k)[0, 0] > 0
        ref[grown & ~occ] = k
    assert torch.equal(fast, ref)
    assert torch.equal(empty_space_distance(torch.zeros(4, 4, 4, dtype=torch.bool), cap=5),
                       torch.full((4, 4, 4), 5, dtype=torch.uint8))


def test_export_packs_kilonerf_and_renders_identically(tiny_teacher_scene, tmp_path):
    from models.backends.base import RenderRequest
    from models.backends.kilonerf import KiloNerfBackend
    from models.training.jobs import dataset_for_scene, make_job, stage_config
    from models.training.engine import run_job

    src = Scene.load(copy_scene(tiny_teacher_scene, tmp_path / "scene"))
    data = dataset_for_scene(src, None)
    cfg = stage_config("kilonerf", "tiny", {"steps": 60, "validate_every": 0})
    run_job(make_job("kilonerf", src, data, cfg, torch.device("cpu")), lambda e: None)
    out = Scene.load(src.root).export(tmp_path / "exported")
    tensors, _ = out.load_model("kilonerf")
    assert "ess.distance" not in tensors and tensors["ess.occupied"].dtype == torch.uint8
    cam = out.camera_list("test")[0].scaled(24, 24)
    req = RenderRequest.from_camera(cam, out.near, out.far, background=tuple(out.background))
    a, b = KiloNerfBackend("cpu"), KiloNerfBackend("cpu")
    a.load(Scene.load(src.root))
    b.load(out)
    assert torch.equal(a.ess.distance, b.ess.distance)
    ra, rb = a.render(req), b.render(req)
    # float16 weights: small differences only
    assert float((ra.rgb - rb.rgb).abs().max()) < 2e-2


def test_truncated_bits_give_scene_error(tmp_path):
    from models.storage import save_tensors

    s = Scene(root=tmp_path, near=2.0, far=6.0, aabb=[[-1, -1, -1], [1, 1, 1]])
    mask = torch.ones(64, 64, 32, dtype=torch.uint8)
    packed = pack_masks({"ess.occupied": mask})
    packed["ess.occupied__bits"] = packed["ess.occupied__bits"][:100]
    save_tensors(tmp_path / "kilonerf.safetensors", packed)
    s.backends["kilonerf"] = {"weights": "kilonerf.safetensors", "config": {}}
    with pytest.raises(SceneError, match="packed mask"):
        s.load_model("kilonerf")


# ----------------------------------------------------------------------------- export safety
def _manifest_bytes(root):
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def test_export_never_writes_into_its_source(tiny_teacher_scene, tmp_path):
    src = copy_scene(tiny_teacher_scene, tmp_path / "scene")
    before = _manifest_bytes(src)
    for target in (src, src / "inner", tmp_path):
        with pytest.raises(SceneError, match="itself, inside it or around it"):
            Scene.load(src).export(target)
    assert _manifest_bytes(src) == before and (src / "checkpoints").is_dir()


def test_export_over_a_scene_needs_force_and_replaces_it_whole(tiny_teacher_scene, tmp_path):
    src = Scene.load(copy_scene(tiny_teacher_scene, tmp_path / "scene"))
    other = copy_scene(tiny_teacher_scene, tmp_path / "other")
    (other / "checkpoints" / "keep.txt").write_text("mine")
    with pytest.raises(SceneError, match="pass --force"):
        src.export(other)
    assert (other / "checkpoints" / "keep.txt").read_text() == "mine"  # untouched
    out = src.export(other, force=True)
    assert out.backends.keys() == src.backends.keys() and not (other / "checkpoints").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no work folders left


def test_export_rejects_unknown_backends(tiny_teacher_scene, tmp_path):
    with pytest.raises(SceneError, match="no trained backend nonsense"):
        Scene.load(tiny_teacher_scene).export(tmp_path / "out", backends=["nonsense"])
    assert not (tmp_path / "out").exists()


def test_a_killed_export_leaves_both_scenes_recoverable(tiny_teacher_scene, tmp_path):
    import os

    from models.scene import remove_stale_work_folders

    src = Scene.load(copy_scene(tiny_teacher_scene, tmp_path / "scene"))
    # a replace killed between moving the old scene aside and renaming the new one in, by a
    # process that no longer runs: the next export into that folder puts the old scene back first
    dead = 2**22 + 12345  # a pid that is not running
    assert not os.path.exists(f"/proc/{dead}")
    copy_scene(tiny_teacher_scene, tmp_path / f".out.replaced-{dead}")
    (tmp_path / f".out.export-{dead}").mkdir()  # and a half-written copy
    remove_stale_work_folders(tmp_path, "out")
    assert Scene.load(tmp_path / "out").backends.keys() == src.backends.keys()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
