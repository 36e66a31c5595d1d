"""LLFF loader against a transcription of the NeRF reference code, and its one-line errors.

Two sources: fern from the shared data (those tests skip when it is absent), and the synthetic
forward-facing scene of ``conftest.write_llff_dataset`` (a textured plane seen by 10 cameras,
written in the test session), on which loading, the split, the intrinsics and every error path
are tested everywhere.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LLFF_FULL_HWF, LLFF_PLANE_DEPTH, LLFF_VIEWS, REPO_ROOT, llff_camera_poses, llff_plane_colour
from PIL import Image

from models.cameras import Camera, camera_rays, ndc_rays
from models.cli import run as run_cli
from models.data import DatasetError, load_dataset
from models.data.detect import describe_dataset
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


# ------------------------------------------------------------------ synthetic scene: loading
def _all_c2w(data) -> torch.Tensor:
    """(N, 4, 4) poses of every image in file order, reassembled from the train/test splits."""
    n = len(data.splits["train"]) + len(data.splits["test"])
    test = data.extra["test_indices"]
    out = torch.zeros(n, 4, 4)
    out[test] = data.splits["test"].c2w
    out[[i for i in range(n) if i not in test]] = data.splits["train"].c2w
    return out


@pytest.mark.parametrize("factor", [8, 4])
def test_synthetic_shapes_splits_and_scaled_intrinsics(llff_dataset, factor):
    data = load_llff(llff_dataset, factor=factor)
    h, w, f = (int(LLFF_FULL_HWF[0]) // factor, int(LLFF_FULL_HWF[1]) // factor, LLFF_FULL_HWF[2] / factor)
    assert data.kind == "llff" and data.extra["factor"] == factor
    # every 8th image (0 and 8 of 10) is held out; "val" is the test split itself
    assert data.extra["test_indices"] == [0, 8]
    assert data.splits["test"].names == ["image000.png", "image008.png"]
    assert data.splits["train"].names == [f"image{i:03d}.png" for i in (1, 2, 3, 4, 5, 6, 7, 9)]
    assert data.splits["val"] is data.splits["test"]
    assert data.splits["train"].images.shape == (8, h, w, 3) and data.splits["test"].images.shape == (2, h, w, 3)
    # the focal of the 320-wide originals (280 px) divided by the downsampling factor; centred principal point
    for split in ("train", "test"):
        assert data.splits[split].intrinsics.tolist() == [[f, f, w / 2, h / 2]] * len(data.splits[split])
    assert data.ndc == {"width": w, "height": h, "focal": pytest.approx(f), "near": 1.0}
    assert (data.near, data.far) == (0.0, 1.0) and data.up == (0.0, 1.0, 0.0)
    assert data.aabb.tolist() == [[-1.5, -1.5, -1.0], [1.5, 1.5, 1.0]]
    img = np.asarray(Image.open(llff_dataset / f"images_{factor}" / "image008.png"))
    assert torch.equal(data.splits["test"].images[1], torch.from_numpy(img.astype(np.float32) / 255.0))


@pytest.mark.parametrize("factor", [8, 4])
def test_synthetic_poses_and_bounds_match_reference_code(llff_dataset, factor):
    data = load_llff(llff_dataset, factor=factor)
    arr = np.load(llff_dataset / "poses_bounds.npy")
    ref_poses, ref_bds = reference_llff(arr.copy(), factor)
    ours = _all_c2w(data)
    np.testing.assert_allclose(ours[:, :3, :4].numpy(), ref_poses[:, :3, :4], atol=1e-5)
    np.testing.assert_allclose(ours[:, 3].numpy(), np.tile([0.0, 0.0, 0.0, 1.0], (LLFF_VIEWS, 1)))
    np.testing.assert_allclose(data.extra["bounds"].numpy(), ref_bds, rtol=1e-6)
    assert ref_poses[0, 2, 4] == pytest.approx(data.ndc["focal"], rel=1e-6)
    # bd_factor: the nearest bound becomes 1 / 0.75, i.e. everything lies beyond the NDC near plane
    assert data.extra["scale"] == pytest.approx(1.0 / (arr[:, 15:].min() * 0.75))
    assert float(data.extra["bounds"].min()) == pytest.approx(1 / 0.75)
    np.testing.assert_allclose(poses_avg(ours[:, :3].numpy().astype(np.float64)), np.eye(4)[:3], atol=1e-5)


@pytest.mark.parametrize("factor", [8, 4])
def test_synthetic_pixels_agree_with_the_loaded_cameras(llff_dataset, factor):
    """The ray of every pixel, built from the loaded pose and intrinsics, hits the textured plane
    where the texture has that pixel's colour, and the hit lies inside the NDC box.

    The loaded world frame is the generator's frame scaled by ``extra["scale"]`` and expressed
    relative to the average pose (computed here with the reference code's ``poses_avg``), so a
    wrong axis conversion, focal, principal point or image order shows up as wrong colours.
    """
    data = load_llff(llff_dataset, factor=factor)
    sc = data.extra["scale"]
    gl = llff_camera_poses()
    gl[:, :3, 3] *= sc
    avg = np.concatenate([_ref_poses_avg(gl)[:, :4], [[0.0, 0.0, 0.0, 1.0]]], 0)  # loaded -> scaled original
    rot, shift = torch.from_numpy(avg[:3, :3]), torch.from_numpy(avg[:3, 3])
    lo, hi = data.aabb.double()
    for split in ("train", "test"):
        s = data.splits[split]
        for img, c2w, (fx, fy, cx, cy) in zip(s.images, s.c2w, s.intrinsics.tolist()):
            o, d = camera_rays(Camera(c2w, s.width, s.height, fx, fy, cx, cy))
            o, d = o.double().reshape(-1, 3), d.double().reshape(-1, 3)
            o_gen, d_gen = (o @ rot.T + shift) / sc, d @ rot.T / sc
            t = (-LLFF_PLANE_DEPTH - o_gen[:, 2]) / d_gen[:, 2]
            hit = o_gen + t[:, None] * d_gen
            expected = llff_plane_colour(hit[:, 0].numpy(), hit[:, 1].numpy())
            np.testing.assert_allclose(img.reshape(-1, 3).numpy(), expected, atol=0.6 / 255)  # 8-bit rounding
            # NDC: the hit is at NDC ray parameter t in (0, 1) and inside the NDC box
            o_n, d_n = ndc_rays(data.ndc["height"], data.ndc["width"], data.ndc["focal"], data.ndc["near"],
                                o.float(), d.float())
            p = o + t[:, None] * d  # the hit in the loaded frame
            z = 1.0 + 2.0 * data.ndc["near"] / p[:, 2]
            t_ndc = (z - o_n[:, 2].double()) / d_n[:, 2].double()
            assert ((t_ndc > 0) & (t_ndc < 1)).all()
            p_ndc = o_n.double() + t_ndc[:, None] * d_n.double()
            assert ((p_ndc >= lo) & (p_ndc <= hi)).all()


def test_synthetic_holdout_and_format_detection(llff_dataset):
    data = load_llff(llff_dataset, holdout=3)
    assert data.extra["test_indices"] == [0, 3, 6, 9] and len(data.splits["train"]) == 6
    for bad in (1, 0, -8, 2.5, True):
        with pytest.raises(ValueError, match="holdout must be an integer >= 2"):
            load_llff(llff_dataset, holdout=bad)
    for path in (llff_dataset, llff_dataset / "poses_bounds.npy"):
        found = load_dataset(path, factor=4, half_res=False)
        assert found.kind == "llff" and found.splits["train"].width == 80
    with pytest.raises(DatasetError, match="half_res do not apply to a llff dataset"):
        load_dataset(llff_dataset, half_res=True)
    assert describe_dataset(llff_dataset) == {
        "kind": "llff", "root": str(llff_dataset), "splits": {"train": 8, "val": 2, "test": 2},
        "width": 40, "height": 30, "image_folder": "images_8"}


def test_describe_summarises_another_image_folder_when_images_8_is_missing(llff_dataset, tmp_path):
    root = Path(shutil.copytree(llff_dataset, tmp_path / "scene"))
    shutil.rmtree(root / "images_8")
    assert describe_dataset(root)["image_folder"] == "images_4" and describe_dataset(root)["width"] == 80
    with pytest.raises(DatasetError, match="images_8: image folder not found"):
        load_llff(root)


# ------------------------------------------------------------------ synthetic scene: errors
def _edit_poses(edit):
    """A mutation that rewrites poses_bounds.npy with ``edit(array)``."""
    def mutate(root: Path) -> None:
        arr = np.load(root / "poses_bounds.npy")
        np.save(root / "poses_bounds.npy", edit(arr), allow_pickle=True)
    return mutate


def _set(index, value):
    def edit(arr):
        arr[index] = value
        return arr
    return edit


def _write(rel: str, data):
    def mutate(root: Path) -> None:
        (root / rel).write_bytes(data(root / rel) if callable(data) else data)
    return mutate


def _remove(*rels: str):
    def mutate(root: Path) -> None:
        for rel in rels:
            p = root / rel
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return mutate


def _empty_images_8(root: Path) -> None:
    for p in (root / "images_8").iterdir():
        p.unlink()
    (root / "images_8" / "notes.txt").write_text("not an image")


def _resize_image_6(root: Path) -> None:
    Image.open(root / "images_8" / "image000.png").resize((41, 30)).save(root / "images_8" / "image006.png")


# (id, mutation of a fresh copy, load_llff options, file the message names, fragments of the message)
ERROR_CASES = [
    ("no-poses-file", _remove("poses_bounds.npy"), {}, "poses_bounds.npy", ["file not found"]),
    ("not-npy", _write("poses_bounds.npy", b"junk"), {}, "poses_bounds.npy", ["not a NumPy .npy array file"]),
    ("truncated-npy", _write("poses_bounds.npy", lambda p: p.read_bytes()[:200]), {}, "poses_bounds.npy",
     ["unreadable (", "not fully written"]),
    ("object-array", _edit_poses(lambda a: np.array([{"a": 1}], dtype=object)), {}, "poses_bounds.npy",
     ["holds Python objects, which are never loaded"]),
    ("15-columns", _edit_poses(lambda a: a[:, :15]), {}, "poses_bounds.npy", ["(N, 17)", "got shape (10, 15)"]),
    ("flat", _edit_poses(lambda a: a.reshape(-1)), {}, "poses_bounds.npy", ["got shape (170,)"]),
    ("no-rows", _edit_poses(lambda a: a[:0]), {}, "poses_bounds.npy", ["got shape (0, 17)"]),
    ("text", _edit_poses(lambda a: a.astype(str)), {}, "poses_bounds.npy", ["expected real numbers, got dtype <U"]),
    ("complex", _edit_poses(lambda a: a + 1j), {}, "poses_bounds.npy", ["expected real numbers, got dtype complex128"]),
    ("timedelta", _edit_poses(lambda a: a.astype("timedelta64[s]")), {}, "poses_bounds.npy",
     ["expected real numbers, got dtype timedelta64[s]"]),
    ("nan", _edit_poses(_set((3, 7), np.nan)), {}, "poses_bounds.npy", ["row 3 contains NaN or inf"]),
    ("inf-bound", _edit_poses(_set((7, 16), np.inf)), {}, "poses_bounds.npy", ["row 7 contains NaN or inf"]),
    ("zero-near", _edit_poses(_set((5, 15), 0.0)), {}, "poses_bounds.npy",
     ["near/far bounds must be positive with near < far"]),
    ("near-beyond-far", _edit_poses(_set((4, 15), 9.0)), {}, "poses_bounds.npy",
     ["near/far bounds must be positive with near < far"]),
    ("singular-rotation", _edit_poses(_set((2, [0, 1, 2, 5, 6, 7, 10, 11, 12]), 0.0)), {}, "poses_bounds.npy",
     ["row 2 has a singular rotation"]),
    ("zero-focal", _edit_poses(_set((0, 14), 0.0)), {}, "poses_bounds.npy",
     ["image height, width and focal (the 5th column) must be positive"]),
    ("aspect-ratio", _edit_poses(_set((slice(None), 4), 320.0)), {}, "images_8",
     ["images are 40x30 but poses_bounds.npy describes 320x320 (aspect ratios differ)"]),
    ("missing-folder", lambda root: None, {"factor": 2}, "images_2",
     ["image folder not found (available: images_4, images_8)"]),
    ("no-image-folders", _remove("images_4", "images_8"), {}, "images_8", ["image folder not found (available: none)"]),
    ("empty-folder", _empty_images_8, {}, "images_8", ["no .png/.jpg images"]),
    ("missing-image", _remove("images_8/image009.png"), {}, "poses_bounds.npy",
     ["10 poses but 9 images in images_8/ (counts must match)"]),
    ("extra-image", _write("images_8/image010.png", lambda p: (p.parent / "image000.png").read_bytes()), {},
     "poses_bounds.npy", ["10 poses but 11 images in images_8/"]),
    ("corrupt-image", _write("images_8/image004.png", b"\x89PNG\r\n\x1a\n broken"), {}, "images_8/image004.png",
     ["not a readable image"]),
    ("truncated-image", _write("images_8/image005.png", lambda p: p.read_bytes()[:300]), {}, "images_8/image005.png",
     ["corrupt or truncated image"]),
    ("image-size", _resize_image_6, {}, "images_8/image006.png", ["image is 41x30", "but image000.png is 40x30"]),
]


@pytest.fixture
def llff_copy(llff_dataset, tmp_path) -> Path:
    """A fresh copy of the synthetic LLFF scene for a test that breaks it."""
    return Path(shutil.copytree(llff_dataset, tmp_path / "scene"))


@pytest.mark.parametrize("mutate, options, names, fragments", [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_malformed_dataset_gives_one_line_naming_the_file(llff_copy, tmp_path, mutate, options, names, fragments):
    mutate(llff_copy)
    with pytest.raises(DatasetError) as e:
        load_llff(llff_copy, **options)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{llff_copy / names}: "), msg
    for f in fragments:
        assert f in msg, msg
    # the CLI prints what the loader (found by format detection) says: one `error:` line, status 2,
    # before any scene folder is made
    with pytest.raises(DatasetError) as e:
        load_dataset(llff_copy, **options)
    expected = str(e.value)
    if names == "poses_bounds.npy" and "file not found" in msg:
        assert expected == f"{llff_copy}: not a dataset folder (expected transforms_train.json, " \
                           "transforms.json or poses_bounds.npy)"
    else:
        assert expected == msg
    out = tmp_path / "out"
    argv = ["train", str(llff_copy), "--out", str(out), "--quiet"]
    if "factor" in options:
        argv += ["--factor", str(options["factor"])]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_cli(argv) == 2
    assert err.getvalue() == f"error: {expected}\n"
    assert not out.exists()


def test_main_py_train_reports_a_broken_dataset_in_one_line(llff_copy, tmp_path):
    (llff_copy / "images_8" / "image003.png").unlink()
    out = subprocess.run([sys.executable, "main.py", "train", str(llff_copy), "--out", str(tmp_path / "trained")],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2, out.stderr
    assert out.stderr == f"error: {llff_copy / 'poses_bounds.npy'}: 10 poses but 9 images in images_8/ " \
                         "(counts must match)\n", out.stderr
    assert not (tmp_path / "trained").exists()
