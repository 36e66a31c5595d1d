"""transforms.json loader (instant-ngp / nerfstudio) and format detection (models.data.detect)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.cameras import look_at
from models.data import DatasetError, load_dataset
from models.data.detect import describe_dataset, detect_kind
from models.data.transforms_json import closest_point_to_axes, estimate_bounds, load_transforms_json


def write_images(folder: Path, names: list[str], size=(8, 6), ext=".png", seed=0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{n}{ext}")


def ring_poses(n: int, centre=(0.0, 0.0, 0.0), radius: float = 4.0, height: float = 1.5) -> list[list[list[float]]]:
    c = torch.tensor(centre)
    out = []
    for i in range(n):
        a = 2 * math.pi * i / n
        eye = c + torch.tensor([radius * math.cos(a), radius * math.sin(a), height])
        out.append(look_at(eye, c, torch.tensor([0.0, 0.0, 1.0])).tolist())
    return out


def make_tj(root: Path, n: int = 10, **meta) -> Path:
    names = [f"{i:04d}" for i in range(n)]
    write_images(root / "images", names)
    poses = ring_poses(n)
    frames = [{"file_path": f"images/{nm}.png", "transform_matrix": p} for nm, p in zip(names, poses)]
    frames.reverse()  # listing order must not matter: frames are sorted by file_path
    m = {"fl_x": 7.0, "fl_y": 7.5, "cx": 4.0, "cy": 3.0, "w": 8, "h": 6, "frames": frames, **meta}
    (root / "transforms.json").write_text(json.dumps(m))
    return root


def edit(root: Path, fn) -> None:
    p = root / "transforms.json"
    m = json.loads(p.read_text())
    fn(m)
    p.write_text(json.dumps(m))


def expect_error(root: Path, *fragments: str) -> None:
    with pytest.raises(DatasetError) as e:
        load_transforms_json(root)
    msg = str(e.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg


# ---------------------------------------------------------------------------------- intrinsics
def test_global_and_per_frame_intrinsics(tmp_path):
    root = make_tj(tmp_path / "d")

    def override(m):
        for fr in m["frames"]:
            if fr["file_path"] == "images/0001.png":
                fr.update(fl_x=9.0, cx=3.5)  # fl_y, cy stay global
            if fr["file_path"] == "images/0002.png":
                fr.update(camera_angle_x=2 * math.atan(0.5))  # f = 0.5 * 8 / 0.5 = 8 beats global fl_x
                fr["file_path"] = "images/0002"  # no extension

    edit(root, override)
    data = load_transforms_json(root)
    tr = data.splits["train"]
    assert data.kind == "transforms_json"
    assert tr.names[:2] == ["images/0001.png", "images/0002.png"]
    assert tr.intrinsics[0].tolist() == [9.0, 7.5, 3.5, 3.0]
    assert tr.intrinsics[1].tolist() == pytest.approx([8.0, 7.5, 4.0, 3.0])
    assert tr.intrinsics[2].tolist() == [7.0, 7.5, 4.0, 3.0]


def test_camera_angle_and_declared_size_scaling(tmp_path):
    root = make_tj(tmp_path / "d", n=2)
    # declared 16x12 but images are 8x6 (a downscaled copy): everything halves
    edit(root, lambda m: [m.pop(k) for k in ("fl_x", "fl_y", "cx", "cy")] and m.update(w=16, h=12, camera_angle_x=2 * math.atan(0.5)))
    intr = load_transforms_json(root / "transforms.json").splits["train"].intrinsics[0]
    # f = 0.5 * 16 / tan(atan(0.5)) = 16 at 16 px -> 8 at 8 px; fy defaults to fx; c = centre
    assert intr.tolist() == pytest.approx([8.0, 8.0, 4.0, 3.0])


# ---------------------------------------------------------------------------------- splits
def test_every_eighth_frame_is_test(tmp_path):
    data = load_transforms_json(make_tj(tmp_path / "d", n=10))
    assert data.splits["test"].names == ["images/0000.png", "images/0008.png"]
    assert data.splits["val"].names == data.splits["test"].names
    assert len(data.splits["train"]) == 8 and "images/0001.png" in data.splits["train"].names


def test_nerfstudio_split_lists(tmp_path):
    root = make_tj(tmp_path / "d", n=4)
    edit(root, lambda m: m.update(train_filenames=["images/0000.png", "./images/0001"], val_filenames=["images/0003.png"]))
    data = load_transforms_json(root)
    assert data.splits["train"].names == ["images/0000.png", "images/0001.png"]
    assert data.splits["val"].names == data.splits["test"].names == ["images/0003.png"]
    edit(root, lambda m: m.update(val_filenames=["images/9999.png"]))
    expect_error(root, "val_filenames", "9999")


# ---------------------------------------------------------------------------------- bounds
def test_bounds_from_file_and_aabb_scale(tmp_path):
    root = make_tj(tmp_path / "d", n=3, aabb=[[-1, -1, -1], [1, 1, 1]], near=0.5, far=9.0)
    data = load_transforms_json(root)
    assert data.aabb.tolist() == [[-1, -1, -1], [1, 1, 1]] and (data.near, data.far) == (0.5, 9.0)
    edit(root, lambda m: [m.pop(k) for k in ("aabb", "near", "far")] and m.update(aabb_scale=2))
    data = load_transforms_json(root)
    # instant-ngp: cube [0.5 - 1, 0.5 + 1]^3 in its space = (q - 0.5) / 0.33 -> +-1/0.33
    assert data.aabb.flatten().tolist() == pytest.approx([-1 / 0.33] * 3 + [1 / 0.33] * 3)
    assert data.extra["aabb_source"] == "aabb_scale"


def test_estimated_bounds_centre_on_ring(tmp_path):
    poses = np.array(ring_poses(12, centre=(1.0, -2.0, 0.5)))
    centre, ok = closest_point_to_axes(poses[:, :3, 3], -poses[:, :3, 2])
    assert ok and centre.tolist() == pytest.approx([1.0, -2.0, 0.5], abs=1e-5)
    # R = |(4, 0, 1.5)| = 4.272; half-size = R tan(half_fov)
    box = estimate_bounds(poses, math.atan(0.25))
    assert (box[1] - box[0]).tolist() == pytest.approx([2 * math.hypot(4, 1.5) * 0.25] * 3, rel=1e-5)
    # loader: near/far enclose the box from every camera
    root = make_tj(tmp_path / "d", n=10)
    data = load_transforms_json(root)
    assert data.extra["aabb_source"] == "estimated"
    assert data.aabb.mean(0).tolist() == pytest.approx([0, 0, 0], abs=1e-4)
    assert 0 < data.near < math.hypot(4, 1.5) - float(data.aabb[1, 0]) < data.far
    assert data.up == (0.0, 0.0, 1.0)


def test_forward_facing_fallback():
    poses = np.stack([np.eye(4) for _ in range(4)])
    poses[:, 0, 3] = [0.0, 0.1, 0.2, 0.3]
    box = estimate_bounds(poses, 0.5)
    centre = box.mean(0)
    assert centre[2] < -0.9 and np.isfinite(box).all()  # in front of the cameras (-z)


# ---------------------------------------------------------------------------------- malformed
def test_differing_sizes_and_missing_files(tmp_path):
    root = make_tj(tmp_path / "d", n=3)
    write_images(root / "images", ["0001"], size=(10, 6))
    expect_error(root, "0001.png", "10x6", "same size")
    (root / "images" / "0001.png").unlink()
    expect_error(root, "0001.png", "not found")
    (root / "transforms.json").write_text("{")
    expect_error(root, "transforms.json", "malformed JSON")
    (root / "transforms.json").write_text("[]")
    expect_error(root, "transforms.json", "JSON object")


def test_missing_focal_and_bad_pose(tmp_path):
    root = make_tj(tmp_path / "d", n=2)
    edit(root, lambda m: [m.pop("fl_x"), m.pop("fl_y")])
    expect_error(root, "transforms.json", "focal")
    root = make_tj(tmp_path / "e", n=2)
    edit(root, lambda m: m["frames"][0].update(transform_matrix=[[1, 2], [3, 4]]))
    expect_error(root, "0001.png", "4x4 or 3x4")
    edit(root, lambda m: m["frames"][0].update(transform_matrix=[[float("inf")] * 4] * 4))
    expect_error(root, "0001.png", "NaN or inf")


# ---------------------------------------------------------------------------------- detection
def test_detect_each_kind(tmp_path, shared_data):
    tj = make_tj(tmp_path / "tj", n=2)
    assert detect_kind(tj) == ("transforms_json", tj)
    assert detect_kind(tj / "transforms.json") == ("transforms_json", tj)
    assert load_dataset(tj).kind == "transforms_json"
    assert describe_dataset(tj) == {
        "kind": "transforms_json", "root": str(tj), "splits": {"train": 1, "val": 1, "test": 1}, "width": 8, "height": 6,
    }
    lego = shared_data / "nerf_synthetic" / "lego"
    d = describe_dataset(lego)
    assert (d["kind"], d["splits"], d["width"], d["height"]) == ("blender", {"train": 100, "test": 25}, 800, 800)
    data = load_dataset(lego, split_names=("test",), max_images=1, half_res=True)
    assert data.kind == "blender" and data.splits["test"].images.shape == (1, 400, 400, 3)
    fern = shared_data / "nerf_llff_data" / "fern"
    d = describe_dataset(fern)
    assert (d["kind"], d["splits"]["test"], d["width"], d["height"]) == ("llff", 3, 504, 378)
    assert load_dataset(fern, half_res=False).kind == "llff"  # False/None options are dropped
    with pytest.raises(DatasetError, match="half_res"):
        load_dataset(fern, half_res=True)


def test_detect_non_dataset(tmp_path):
    (tmp_path / "junk.txt").write_text("x")
    msg = f"{tmp_path}: not a dataset folder (expected transforms_train.json, transforms.json or poses_bounds.npy)"
    for fn in (load_dataset, describe_dataset):
        with pytest.raises(DatasetError) as e:
            fn(tmp_path)
        assert str(e.value) == msg
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "missing")


def test_split_lists_that_hold_out_every_frame_are_an_error(tmp_path):
    root = make_tj(tmp_path / "d", n=4)
    meta = json.loads((root / "transforms.json").read_text())
    meta["test_filenames"] = [fr["file_path"] for fr in meta["frames"]]
    (root / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="leave no training frame"):
        load_transforms_json(root)
