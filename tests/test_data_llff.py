"""LLFF loader: fern (images_8) against a transcription of the NeRF reference code; malformed copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.data import DatasetError
from models.data.llff import load_llff, poses_avg


# ------------------------------------------------------------------ the reference, transcribed
def _ref_normalize(x):
    return x / np.linalg.norm(x)


def _ref_viewmatrix(z, up, pos):
    vec2 = _ref_normalize(z)
    vec0 = _ref_normalize(np.cross(up, vec2))
    vec1 = _ref_normalize(np.cross(vec2, vec0))
    return np.stack([vec0, vec1, vec2, pos], 1)


def _ref_poses_avg(poses):
    hwf = poses[0, :3, -1:]
    center = poses[:, :3, 3].mean(0)
    vec2 = _ref_normalize(poses[:, :3, 2].sum(0))
    up = poses[:, :3, 1].sum(0)
    return np.concatenate([_ref_viewmatrix(vec2, up, center), hwf], 1)


def _ref_recenter_poses(poses):
    poses_ = poses + 0
    bottom = np.reshape([0, 0, 0, 1.0], [1, 4])
    c2w = _ref_poses_avg(poses)
    c2w = np.concatenate([c2w[:3, :4], bottom], -2)
    bottom = np.tile(np.reshape(bottom, [1, 1, 4]), [poses.shape[0], 1, 1])
    poses = np.concatenate([poses[:, :3, :4], bottom], -2)
    poses = np.linalg.inv(c2w) @ poses
    poses_[:, :3, :4] = poses[:, :3, :4]
    return poses_


def reference_llff(poses_arr: np.ndarray, factor: int):
    """load_llff.py (nerf-pytorch) steps for poses and bounds: returns poses (N,3,5), bds (N,2)."""
    poses = poses_arr[:, :-2].reshape([-1, 3, 5]).transpose([1, 2, 0])
    bds = poses_arr[:, -2:].transpose([1, 0])
    poses[2, 4, :] = poses[2, 4, :] * 1.0 / factor
    poses = np.concatenate([poses[:, 1:2, :], -poses[:, 0:1, :], poses[:, 2:, :]], 1)
    poses = np.moveaxis(poses, -1, 0).astype(np.float32)
    bds = np.moveaxis(bds, -1, 0).astype(np.float32)
    sc = 1.0 / (bds.min() * 0.75)
    poses[:, :3, 3] *= sc
    bds *= sc
    return _ref_recenter_poses(poses), bds


# ---------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def fern(shared_data):
    return load_llff(shared_data / "nerf_llff_data" / "fern", factor=8)


def test_fern_shapes_splits_ndc(fern):
    assert fern.kind == "llff"
    assert fern.splits["train"].images.shape == (17, 378, 504, 3)
    assert fern.extra["test_indices"] == [0, 8, 16]
    assert fern.splits["test"].names == ["image000.png", "image008.png", "image016.png"]
    assert fern.splits["val"] is fern.splits["test"]
    assert "image001.png" in fern.splits["train"].names and "image008.png" not in fern.splits["train"].names
    # focal of the 4032-wide originals is 3260.526 (poses_bounds.npy); images_8 -> / 8 = 407.566
    assert fern.ndc == {"width": 504, "height": 378, "focal": pytest.approx(3260.5263 / 8, rel=1e-5), "near": 1.0}
    assert fern.splits["train"].intrinsics[0].tolist() == pytest.approx([407.5658, 407.5658, 252.0, 189.0], rel=1e-5)
    assert (fern.near, fern.far) == (0.0, 1.0)
    assert fern.aabb.tolist() == [[-1.5, -1.5, -1.0], [1.5, 1.5, 1.0]]
    assert fern.up == (0.0, 1.0, 0.0)


def test_fern_matches_reference_code(fern, shared_data):
    arr = np.load(shared_data / "nerf_llff_data" / "fern" / "poses_bounds.npy")
    ref_poses, ref_bds = reference_llff(arr.copy(), 8)
    ours = torch.zeros(20, 4, 4)
    test = fern.extra["test_indices"]
    train = [i for i in range(20) if i not in test]
    ours[test] = fern.splits["test"].c2w
    ours[train] = fern.splits["train"].c2w
    np.testing.assert_allclose(ours[:, :3, :4].numpy(), ref_poses[:, :3, :4], atol=1e-5)
    np.testing.assert_allclose(fern.extra["bounds"].numpy(), ref_bds, rtol=1e-6)
    assert float(fern.extra["bounds"].min()) == pytest.approx(1 / 0.75)  # bd_factor rescale
    assert ref_poses[0, 2, 4] == pytest.approx(fern.ndc["focal"], rel=1e-6)
    # after recentering, the average pose is the identity
    np.testing.assert_allclose(poses_avg(ours[:, :3].numpy().astype(np.float64)), np.eye(4)[:3], atol=1e-5)


def test_fern_images_are_rgb_in_unit_range(fern, shared_data):
    img = np.asarray(Image.open(shared_data / "nerf_llff_data" / "fern" / "images_8" / "image008.png"))[..., :3]
    assert torch.equal(fern.splits["test"].images[1], torch.from_numpy(img.astype(np.float32) / 255.0))


# ---------------------------------------------------------------------------------- malformed
def small_llff(tmp_path: Path, shared_data: Path, n: int = 3) -> Path:
    src = shared_data / "nerf_llff_data" / "fern"
    root = tmp_path / "fern3"
    (root / "images_8").mkdir(parents=True)
    for i in range(n):
        (root / "images_8" / f"image{i:03d}.png").symlink_to(src / "images_8" / f"image{i:03d}.png")
    np.save(root / "poses_bounds.npy", np.load(src / "poses_bounds.npy")[:n])
    return root


def expect_error(root: Path, *fragments: str, **kw) -> None:
    with pytest.raises(DatasetError) as e:
        load_llff(root, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg


def test_small_copy_loads(tmp_path, shared_data):
    data = load_llff(small_llff(tmp_path, shared_data), holdout=2)
    assert data.extra["test_indices"] == [0, 2] and len(data.splits["train"]) == 1


def test_count_mismatch(tmp_path, shared_data):
    root = small_llff(tmp_path, shared_data)
    np.save(root / "poses_bounds.npy", np.load(root / "poses_bounds.npy")[:2])
    expect_error(root, "poses_bounds.npy", "2 poses but 3 images")


def test_bad_shape_and_nan(tmp_path, shared_data):
    root = small_llff(tmp_path, shared_data)
    arr = np.load(root / "poses_bounds.npy")
    np.save(root / "poses_bounds.npy", arr[:, :15])
    expect_error(root, "poses_bounds.npy", "(N, 17)", "(3, 15)")
    arr[1, 3] = np.nan
    np.save(root / "poses_bounds.npy", arr)
    expect_error(root, "poses_bounds.npy", "row 1", "NaN")
    (root / "poses_bounds.npy").write_bytes(b"junk")
    expect_error(root, "poses_bounds.npy", "not a NumPy .npy array file")


def test_missing_folder_and_corrupt_image(tmp_path, shared_data):
    root = small_llff(tmp_path, shared_data)
    expect_error(root, "images_4", "not found", "images_8", factor=4)
    (root / "images_8" / "image001.png").unlink()
    (root / "images_8" / "image001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    expect_error(root, "image001.png")
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path / "empty", "poses_bounds.npy", "not found")


def test_singular_poses_and_object_arrays_are_named(tmp_path, shared_data):
    root = small_llff(tmp_path, shared_data)
    arr = np.load(root / "poses_bounds.npy")
    bad = arr.copy()
    bad[2, :15] = 0.0
    np.save(root / "poses_bounds.npy", bad)
    expect_error(root, "poses_bounds.npy", "row 2", "singular rotation")
    np.save(root / "poses_bounds.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    expect_error(root, "poses_bounds.npy", "Python objects, which are never loaded")
