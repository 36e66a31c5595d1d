"""Blender loader: the real lego scene (a few images), hand-made tiny datasets, malformed input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.data import DatasetError
from models.data.blender import load_blender
from models.data.images import box_downsample, premultiply

LEGO_ANGLE = 0.6911112070083618


# ---------------------------------------------------------------------------------- helpers
def make_blender(root: Path, n: int = 2, size: tuple[int, int] = (4, 4), seed: int = 0, **extra) -> Path:
    """A tiny Blender dataset: n random RGBA images (W, H) = size in train/, identity-ish poses."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    frames = []
    for i in range(n):
        img = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
        Image.fromarray(img).save(root / "train" / f"r_{i}.png")
        pose = np.eye(4)
        pose[:3, 3] = [0.0, 0.0, 4.0 + i]
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": pose.tolist()})
    meta = {"camera_angle_x": 0.5, "frames": frames, **extra}
    (root / "transforms_train.json").write_text(json.dumps(meta))
    return root


def edit_json(path: Path, fn) -> None:
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def expect_error(root: Path, *fragments: str, **kw) -> str:
    with pytest.raises(DatasetError) as e:
        load_blender(root, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg
    return msg


# ---------------------------------------------------------------------------------- real data
def test_lego_full_res_focal_and_background(shared_data):
    root = shared_data / "nerf_synthetic" / "lego"
    data = load_blender(root, split_names=("train", "test"), max_images=2)
    train = data.splits["train"]
    assert data.kind == "blender"
    assert train.images.shape == (2, 800, 800, 3) and train.images.dtype == torch.float32
    assert train.alpha.shape == (2, 800, 800)
    # f = 0.5 * 800 / tan(0.5 * 0.6911112) = 400 / 0.36 = 1111.11
    assert train.intrinsics[0].tolist() == pytest.approx([1111.1111, 1111.1111, 400.0, 400.0], rel=1e-5)
    assert train.names == ["train/r_0.png", "train/r_1.png"]
    assert data.near == 2.0 and data.far == 6.0
    assert data.aabb.tolist() == [[-1.5] * 3, [1.5] * 3]
    assert "val" not in data.splits and len(data.splits["test"]) == 2  # no transforms_val.json
    assert train.depth is None  # lego's depth PNGs are ignored
    # corner pixels are empty -> white; images in [0, 1]
    assert train.images[:, 0, 0].tolist() == [[1.0, 1.0, 1.0]] * 2
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    pose = json.loads((root / "transforms_train.json").read_text())["frames"][0]["transform_matrix"]
    assert torch.allclose(train.c2w[0], torch.tensor(pose, dtype=torch.float32))


def test_lego_half_res_matches_400_copy(shared_data):
    full = load_blender(shared_data / "nerf_synthetic" / "lego", ("train",), half_res=True, max_images=1)
    small = load_blender(shared_data / "nerf_synthetic_400" / "lego", ("train",), max_images=1)
    a, b = full.splits["train"], small.splits["train"]
    assert a.images.shape == b.images.shape == (1, 400, 400, 3)
    # f = 0.5 * 400 / tan(0.5 * 0.6911112) = 555.56, for both routes
    assert a.intrinsics[0].tolist() == pytest.approx([555.5556, 555.5556, 200.0, 200.0], rel=1e-5)
    assert b.intrinsics[0].tolist() == pytest.approx(a.intrinsics[0].tolist(), rel=1e-6)
    # The 400 copy is a straight-alpha box average stored in 8 bits; ours is premultiplied: they
    # differ only by 8-bit rounding and on silhouette pixels (~57 dB measured).
    mse = float(((a.images - b.images) ** 2).mean())
    assert -10 * math.log10(mse) > 50


def test_lego_black_background(shared_data):
    data = load_blender(shared_data / "nerf_synthetic_400" / "lego", ("test",), background=(0, 0, 0), max_images=1)
    assert data.splits["test"].images[0, 0, 0].tolist() == [0.0, 0.0, 0.0]
    assert data.background == (0.0, 0.0, 0.0)


# ---------------------------------------------------------------------------------- hand-made
def test_half_res_is_premultiplied_box_average(tmp_path):
    # one 2x2 block: two opaque red pixels, two fully transparent pixels with junk green rgb
    img = np.array([[[255, 0, 0, 255], [0, 255, 0, 0]], [[255, 0, 0, 255], [0, 255, 0, 0]]], np.uint8)
    root = make_blender(tmp_path / "d", n=1, size=(2, 2))
    Image.fromarray(img).save(root / "train" / "r_0.png")
    data = load_blender(root, half_res=True)
    # premultiplied: rgb = mean(rgb * a) = (0.5, 0, 0), a = 0.5; over white: (0.5, 0, 0) + 0.5 = (1, .5, .5)
    # (a straight average would give rgb (0.5, 0.5, 0) * 0.5 + 0.5 = (0.75, 0.75, 0.5))
    assert data.splits["train"].images[0, 0, 0].tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert data.splits["train"].alpha[0, 0, 0].item() == pytest.approx(0.5)
    # full res: transparent pixel -> white, opaque red stays red
    full = load_blender(root).splits["train"].images[0]
    assert full[0, 0].tolist() == [1.0, 0.0, 0.0] and full[0, 1].tolist() == [1.0, 1.0, 1.0]


def test_box_downsample_helpers():
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert box_downsample(x, 2).tolist() == [[2.5, 4.5], [10.5, 12.5]]  # (0+1+4+5)/4 = 2.5
    rgba = np.array([[[1.0, 0.5, 0.0, 0.5]]], np.float32)
    assert premultiply(rgba).tolist() == [[[0.5, 0.25, 0.0, 0.5]]]


def test_optional_keys_intrinsics_and_depth(tmp_path):
    root = make_blender(tmp_path / "d", n=2, size=(4, 2), near=0.5, far=3.0, aabb=[[-1, -2, -3], [1, 2, 3]])
    edit_json(root / "transforms_train.json", lambda m: m.update(fl_x=10.0, fl_y=12.0, cx=1.5))
    depth = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.save(root / "train" / "r_0_depth.npy", depth)  # found by name
    np.save(root / "train" / "other.npy", depth + 1)
    edit_json(root / "transforms_train.json", lambda m: m["frames"][1].update(depth_path="./train/other.npy"))
    data = load_blender(root)
    assert (data.near, data.far) == (0.5, 3.0)
    assert data.aabb.tolist() == [[-1, -2, -3], [1, 2, 3]]
    split = data.splits["train"]
    assert split.intrinsics[0].tolist() == [10.0, 12.0, 1.5, 1.0]  # cy defaults to H/2
    assert split.depth.shape == (2, 2, 4)
    assert split.depth[1].tolist() == (depth + 1).tolist()
    half = load_blender(root, half_res=True).splits["train"]
    assert half.intrinsics[0].tolist() == [5.0, 6.0, 0.75, 0.5]
    assert half.depth[0].tolist() == [[2.5, 4.5]]  # 2x2 means of 0..7 laid out 2x4


def test_missing_val_test_ok_and_rgb_images(tmp_path):
    root = make_blender(tmp_path / "d", n=1)
    Image.fromarray(np.full((4, 4, 3), 128, np.uint8)).save(root / "train" / "r_0.png")
    data = load_blender(root)
    assert list(data.splits) == ["train"]
    assert data.splits["train"].alpha.min().item() == 1.0
    # f = 0.5 * 4 / tan(0.25)
    assert data.splits["train"].intrinsics[0, 0].item() == pytest.approx(2.0 / math.tan(0.25))


# ---------------------------------------------------------------------------------- malformed
def test_missing_train_file(tmp_path):
    (tmp_path / "d").mkdir()
    expect_error(tmp_path / "d", "transforms_train.json", "not found")


def test_missing_image(tmp_path):
    root = make_blender(tmp_path / "d")
    (root / "train" / "r_1.png").unlink()
    expect_error(root, "r_1.png", "not found")


def test_corrupt_and_truncated_image(tmp_path):
    root = make_blender(tmp_path / "d", size=(64, 64))
    data = (root / "train" / "r_1.png").read_bytes()
    (root / "train" / "r_1.png").write_bytes(data[: len(data) // 2])
    expect_error(root, "r_1.png", "corrupt")
    (root / "train" / "r_1.png").write_bytes(b"not a png at all")
    expect_error(root, "r_1.png", "not a readable image")


def test_bad_matrices(tmp_path):
    root = make_blender(tmp_path / "d")
    tf = root / "transforms_train.json"
    edit_json(tf, lambda m: m["frames"][1].update(transform_matrix=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]))
    expect_error(root, "transforms_train.json", "r_1", "4x4 or 3x4", "(3, 3)")
    edit_json(tf, lambda m: m["frames"][1].update(transform_matrix=[[1, 0, 0, float("nan")], [0, 1, 0, 0], [0, 0, 1, 0]]))
    expect_error(root, "r_1", "NaN or inf")
    edit_json(tf, lambda m: m["frames"][1].update(transform_matrix="identity"))
    expect_error(root, "r_1", "transform_matrix")


def test_3x4_matrix_accepted(tmp_path):
    root = make_blender(tmp_path / "d")
    edit_json(root / "transforms_train.json", lambda m: m["frames"][1].update(transform_matrix=m["frames"][1]["transform_matrix"][:3]))
    c2w = load_blender(root).splits["train"].c2w
    assert c2w.shape == (2, 4, 4) and c2w[1, 3].tolist() == [0, 0, 0, 1]


def test_malformed_json_and_missing_keys(tmp_path):
    root = make_blender(tmp_path / "d")
    tf = root / "transforms_train.json"
    good = tf.read_text()
    tf.write_text(good[:-5])
    expect_error(root, "transforms_train.json", "malformed JSON", "line")
    tf.write_text(good)
    edit_json(tf, lambda m: m.pop("camera_angle_x"))
    expect_error(root, "camera_angle_x")
    tf.write_text(good)
    edit_json(tf, lambda m: m.pop("frames"))
    expect_error(root, "'frames'")
    tf.write_text(good)
    edit_json(tf, lambda m: m["frames"][0].pop("file_path"))
    expect_error(root, "frame 0", "file_path")
    tf.write_text(good)
    edit_json(tf, lambda m: m.update(aabb=[1, 2, 3]))
    expect_error(root, "aabb")
    tf.write_text(good)
    edit_json(tf, lambda m: m.update(near=5.0, far=1.0))
    expect_error(root, "'far'")


def test_inconsistent_image_sizes(tmp_path):
    root = make_blender(tmp_path / "d", n=3)
    Image.fromarray(np.zeros((6, 4, 4), np.uint8)).save(root / "train" / "r_2.png")
    expect_error(root, "r_2.png", "4x6", "r_0.png is 4x4")


def test_bad_depth_file(tmp_path):
    root = make_blender(tmp_path / "d", n=1)
    np.save(root / "train" / "r_0_depth.npy", np.zeros((3, 3), np.float32))
    expect_error(root, "r_0_depth.npy", "shape")
    (root / "train" / "r_0_depth.npy").write_bytes(b"garbage")
    expect_error(root, "r_0_depth.npy", "unreadable")


def test_symlinked_real_images_subset(tmp_path, shared_data):
    """Two symlinked lego images with a trimmed transforms file load like the originals."""
    src = shared_data / "nerf_synthetic_400" / "lego"
    root = tmp_path / "lego2"
    (root / "train").mkdir(parents=True)
    meta = json.loads((src / "transforms_train.json").read_text())
    meta["frames"] = meta["frames"][:2]
    for fr in meta["frames"]:
        name = Path(fr["file_path"]).name + ".png"
        (root / "train" / name).symlink_to(src / "train" / name)
    (root / "transforms_train.json").write_text(json.dumps(meta))
    a = load_blender(root).splits["train"]
    b = load_blender(src, ("train",), max_images=2).splits["train"]
    assert torch.equal(a.images, b.images) and torch.equal(a.c2w, b.c2w)
    shutil.rmtree(root)


# ------------------------------------------------------------------------ limits and escapes
def test_frames_outside_the_dataset_folder_are_refused(tmp_path):
    root = make_blender(tmp_path / "d")
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((4, 4, 4), dtype=np.uint8)).save(outside)
    for path in ("../secret", str(outside)):
        edit_json(root / "transforms_train.json", lambda m: m["frames"][0].update(file_path=path))
        expect_error(root, "lies outside the dataset folder")


def test_impossible_cameras_are_refused(tmp_path):
    root = make_blender(tmp_path / "d")
    edit_json(root / "transforms_train.json", lambda m: m.update(camera_angle_x=math.pi))
    expect_error(root, "camera_angle_x must be below pi")
    root = make_blender(tmp_path / "e")
    edit_json(root / "transforms_train.json", lambda m: m["frames"][1].update(transform_matrix=np.zeros((4, 4)).tolist()))
    expect_error(root, "frame 1", "singular rotation")


def test_images_larger_than_the_limit_are_refused_from_their_header(tmp_path, monkeypatch):
    root = make_blender(tmp_path / "d", size=(20, 10))
    monkeypatch.setenv("NSV_MAX_IMAGE_PIXELS", "199")
    expect_error(root, "20x10 pixels is more than this build reads", "NSV_MAX_IMAGE_PIXELS")
    monkeypatch.setenv("NSV_MAX_IMAGE_PIXELS", "200")
    assert load_blender(root).splits["train"].width == 20


def test_json_nested_too_deeply_is_an_error(tmp_path):
    root = make_blender(tmp_path / "d")
    (root / "transforms_train.json").write_text("[" * 200_000 + "]" * 200_000)
    expect_error(root, "nested too deeply")


def test_datasets_larger_than_the_memory_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    root = make_blender(tmp_path / "d", n=3, size=(8, 8))
    monkeypatch.setenv("NSV_MAX_DATASET_BYTES", str(3 * 8 * 8 * 4 * 4 - 1))  # one byte short of 3 RGBA images
    expect_error(root, "3 images of 8x8", "NSV_MAX_DATASET_BYTES")
    monkeypatch.setenv("NSV_MAX_DATASET_BYTES", str(3 * 8 * 8 * 4 * 4))
    assert len(load_blender(root).splits["train"]) == 3
